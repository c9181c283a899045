"""Static reports for e-mail or archiving: ``leadscore report NAME --out DIR``.

Each report becomes ``DIR/<name>.html`` with its charts beside it as ``<name>-<chart>.png``
and each table as ``<name>-<table>.csv``, linked from the page: a folder that opens without a
server or a network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from reports.build import TITLES, build_report
from reports.data import ReportData
from reports.model import REPORT_NAMES, Chart, ReportFilter, Table
from reports.render import render_report, table_csv


@dataclass
class Exported:
    """The files one report was written to."""

    name: str
    page: Path
    charts: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)


def _file_name(report: str, suffix: str, part: Chart | Table) -> str:
    return f"{report}-{part.name}.{suffix}"


def export_reports(
    names: Sequence[str],
    data: ReportData,
    out_dir: Path,
    *,
    filters: ReportFilter | None = None,
) -> list[Exported]:
    """Write the named reports as static HTML, PNG charts and CSV tables.

    Args:
        names: Report names (``calibration``, ``bands``, ``channels``, ``drift``).
        data: The loaded report inputs.
        out_dir: The folder (created if missing; files of the same names are replaced).
        filters: Date range and channel.

    Raises:
        KeyError: An unknown report name.
    """
    unknown = [n for n in names if n not in REPORT_NAMES]
    if unknown:
        raise KeyError(f"report: {unknown[0]!r} is not one of {', '.join(REPORT_NAMES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    nav = [(n, TITLES[n], f"{n}.html") for n in names]
    written = []
    for name in names:
        report = build_report(name, data, filters)  # scores: data.cfg.scores
        done = Exported(name, out_dir / f"{name}.html")
        for chart in report.charts():
            path = out_dir / f"{name}-{chart.name}.png"
            path.write_bytes(chart.png)
            done.charts.append(path)
        for table in report.tables().values():
            path = out_dir / f"{name}-{table.name}.csv"
            path.write_text(table_csv(table), encoding="utf-8")
            done.tables.append(path)
        html = render_report(
            report,
            nav=nav,
            chart_src=partial(_file_name, name, "png"),
            csv_href=partial(_file_name, name, "csv"),
        )
        done.page.write_text(html, encoding="utf-8")
        written.append(done)
    return written
