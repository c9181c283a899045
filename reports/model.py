"""What a report is made of: sections of text, notices, tables and charts.

The four reports build a :class:`Report`; :mod:`reports.render` turns it into an HTML page
(served under ``/reports`` or written by ``leadscore report --out``) and each table into CSV.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import pandas as pd

ColumnFormat = Literal["int", "pct", "float", "float3", "days", "text"]
REPORT_NAMES: tuple[str, ...] = ("calibration", "bands", "channels", "drift")


@dataclass(frozen=True)
class ReportFilter:
    """The filters a reader sets: leads created in a date range, from one channel.

    Attributes:
        start: First day of lead creation included (UTC), or None.
        end: Last day included (UTC), or None.
        channel: Only leads of this source channel, or None for all.
        scores: ``holdout`` or ``served`` scores (None: the report settings' choice).
    """

    start: date | None = None
    end: date | None = None
    channel: str | None = None
    scores: Literal["holdout", "served"] | None = None

    def __post_init__(self) -> None:
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start: {self.start} is after end {self.end}")

    def leads(self, leads: pd.DataFrame, *, time_column: str = "created_at") -> pd.DataFrame:
        """The rows of ``leads`` (any frame with ``time_column`` and ``source_channel``) kept."""
        keep = pd.Series(True, index=leads.index)
        day = pd.to_datetime(leads[time_column], utc=True).dt.date
        if self.start is not None:
            keep &= day >= self.start
        if self.end is not None:
            keep &= day <= self.end
        if self.channel is not None:
            keep &= leads["source_channel"] == self.channel
        return leads[keep]

    def describe(self) -> str:
        """The filters in words (``all leads`` when none is set)."""
        parts = []
        if self.channel:
            parts.append(f"channel {self.channel}")
        if self.start or self.end:
            parts.append(f"created {self.start or 'any time'} to {self.end or 'now'}")
        return ", ".join(parts) if parts else "all leads"

    def query(self) -> str:
        """The filters as a URL query string (empty when none is set)."""
        pairs = [
            (k, str(v))
            for k, v in (
                ("start", self.start),
                ("end", self.end),
                ("channel", self.channel),
                ("scores", self.scores),
            )
            if v
        ]
        return "&".join(f"{k}={v}" for k, v in pairs)


@dataclass
class Table:
    """A table of a report, downloadable as CSV under its ``name``.

    Attributes:
        name: Slug (``reliability``): the CSV file name and route.
        title: Heading above the table.
        frame: The rows (the CSV holds them all, the page the first ``max_rows``).
        formats: How a column is shown on the page (``pct``, ``int``, ``days`` ...).
        max_rows: Rows shown on the page.
    """

    name: str
    title: str
    frame: pd.DataFrame
    formats: dict[str, ColumnFormat] = field(default_factory=dict)
    max_rows: int = 60


@dataclass
class Chart:
    """A PNG chart.

    Attributes:
        name: Slug (the file name in an export: ``<name>.png``).
        title: Caption.
        png: The image.
        alt: What the chart shows, in words.
    """

    name: str
    title: str
    png: bytes
    alt: str


@dataclass
class Section:
    """A part of a report: text, notices (too little data, flags), charts and tables."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


@dataclass
class Report:
    """One report.

    Attributes:
        name: ``calibration``, ``bands``, ``channels`` or ``drift``.
        title: Page title.
        intro: What the report shows and which data it uses.
        sections: Its parts, in order.
        filters: The filters it was computed with.
    """

    name: str
    title: str
    intro: list[str]
    sections: list[Section]
    filters: ReportFilter = field(default_factory=ReportFilter)

    def tables(self) -> dict[str, Table]:
        """Every table by name."""
        return {t.name: t for s in self.sections for t in s.tables}

    def charts(self) -> list[Chart]:
        """Every chart, in order."""
        return [c for s in self.sections for c in s.charts]
