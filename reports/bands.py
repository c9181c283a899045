"""Band report: what each band (hot / warm / cold) holds and how it converts, week by week.

Input: the same scored leads as the calibration report (one row per lead: ``probability``,
``band``, ``label``, ``scored_at``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.model import ColumnFormat, Report, ReportFilter, Section, Table
from reports.settings import ReportSettings
from training.evaluate import wilson_interval

BAND_ORDER: tuple[str, ...] = ("hot", "warm", "cold")
BAND_COLUMNS: tuple[str, ...] = (
    "leads",
    "conversions",
    "mean_predicted",
    "conversion",
    "ci_low",
    "ci_high",
    "lift",
    "capture",
    "share_of_leads",
)


def _band_rows(frame: pd.DataFrame, *, total_conversions: int, base_rate: float) -> pd.DataFrame:
    grouped = frame.groupby("band", sort=False)
    table = pd.DataFrame(
        {
            "leads": grouped.size(),
            "conversions": grouped["label"].sum().astype(np.int64),
            "mean_predicted": grouped["probability"].mean(),
        }
    )
    present = [b for b in BAND_ORDER if b in table.index]
    others = sorted(b for b in table.index if b not in BAND_ORDER)
    table = table.reindex(present + others)
    table["conversion"] = table["conversions"] / table["leads"]
    low, high = wilson_interval(table["conversion"].to_numpy(), table["leads"].to_numpy())
    table["ci_low"], table["ci_high"] = low, high
    table["lift"] = table["conversion"] / base_rate if base_rate > 0 else np.nan
    table["capture"] = table["conversions"] / total_conversions if total_conversions > 0 else np.nan
    table["share_of_leads"] = table["leads"] / len(frame)
    return table.rename_axis("band").reset_index()


def band_tables(scores: pd.DataFrame, cfg: ReportSettings) -> dict[str, pd.DataFrame]:
    """The band report's tables.

    Args:
        scores: One row per scored lead: ``probability``, ``band``, ``label``, ``scored_at``.
        cfg: ``max_interval_width`` decides which weekly rates are readable.

    Returns:
        ``bands``: per band ``leads``, ``conversions``, ``mean_predicted``, ``conversion``
        with its Wilson 95% interval (``ci_low``, ``ci_high``), ``lift`` (conversion over the
        average conversion of all scored leads), ``capture`` (share of all conversions) and
        ``share_of_leads``; ``weekly``: the same per week of the score (Monday, UTC) and
        band, with ``readable`` False where the interval is wider than
        ``max_interval_width`` (lift and capture relative to that week).
    """
    if scores.empty:
        return {
            "bands": pd.DataFrame(columns=["band", *BAND_COLUMNS]),
            "weekly": pd.DataFrame(columns=["week", "band", *BAND_COLUMNS, "readable"]),
        }
    frame = scores[["band", "label", "probability", "scored_at"]].copy()
    frame["label"] = frame["label"].astype(np.int64)
    total = int(frame["label"].sum())
    bands = _band_rows(frame, total_conversions=total, base_rate=total / len(frame))
    scored = pd.to_datetime(frame["scored_at"], utc=True).dt.tz_localize(None)
    frame["week"] = scored.dt.to_period("W-SUN").dt.start_time.dt.date.astype(str)
    parts = []
    for week, rows in frame.groupby("week", sort=True):
        conversions = int(rows["label"].sum())
        part = _band_rows(rows, total_conversions=conversions, base_rate=conversions / len(rows))
        part.insert(0, "week", week)
        parts.append(part)
    weekly = pd.concat(parts, ignore_index=True)
    weekly["readable"] = (weekly["ci_high"] - weekly["ci_low"]) <= cfg.max_interval_width
    return {"bands": bands, "weekly": weekly}


_FORMATS: dict[str, ColumnFormat] = {
    "leads": "int",
    "conversions": "int",
    "mean_predicted": "pct",
    "conversion": "pct",
    "ci_low": "pct",
    "ci_high": "pct",
    "lift": "float",
    "capture": "pct",
    "share_of_leads": "pct",
}


def band_report(
    scores: pd.DataFrame,
    cfg: ReportSettings,
    *,
    source: str,
    filters: ReportFilter | None = None,
) -> Report:
    """The band report: per band leads, conversion with interval, lift, capture; per week."""
    from reports import charts

    filters = filters or ReportFilter()
    tables = band_tables(scores, cfg)
    intro = [
        "How many leads each band holds, how often they actually convert, how much better "
        "than the average (lift) and which share of all conversions each band captures.",
        f"Scores: {source}. Leads: {filters.describe()}.",
    ]
    overall = Section("Bands")
    bands = tables["bands"]
    n = len(scores)
    conversions = int(scores["label"].sum()) if n else 0
    if n == 0:
        overall.notices.append("No scored lead with a known outcome matches: nothing to show.")
    elif n < cfg.min_leads or conversions < cfg.min_conversions:
        overall.notices.append(
            f"Too little data for a band chart: {n} scored leads, {conversions} converted "
            f"(at least {cfg.min_leads} leads and {cfg.min_conversions} conversions are "
            "needed; the intervals would be too wide to read)."
        )
    for row in bands.to_dict("records"):
        if row["ci_high"] - row["ci_low"] > cfg.max_interval_width:
            overall.paragraphs.append(
                f"{row['band']}: {row['leads']} leads, too few to say how often they convert."
            )
        else:
            overall.paragraphs.append(
                f"{row['band']}: {row['leads']} leads ({row['share_of_leads']:.0%}), "
                f"{row['conversion']:.1%} converted (95% interval {row['ci_low']:.1%}-"
                f"{row['ci_high']:.1%}), {row['lift']:.1f}x the average, "
                f"{row['capture']:.0%} of all conversions."
            )
    if not overall.notices:
        overall.charts.append(charts.band_chart(bands))
    overall.tables.append(Table("bands", "Per band", bands, dict(_FORMATS)))
    weekly_section = Section("Week by week")
    weekly = tables["weekly"]
    if not weekly.empty:
        readable = weekly[weekly["readable"]]
        hidden = len(weekly) - len(readable)
        if hidden:
            weekly_section.notices.append(
                f"{hidden} band-weeks have intervals wider than {cfg.max_interval_width:.0%} "
                "(too few leads): they are in the table but not drawn."
            )
        if len(readable) >= 2:
            weekly_section.charts.append(charts.weekly_band_chart(readable))
        else:
            weekly_section.notices.append("Too few readable weeks to draw a trend.")
        weekly = weekly.sort_values(["week", "band"], ascending=[False, True])
    weekly_section.tables.append(Table("weekly", "Per week and band", weekly, dict(_FORMATS)))
    return Report("bands", "Bands", intro, [overall, weekly_section], filters=filters)
