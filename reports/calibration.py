"""Calibration report: are the probabilities honest, overall and per channel, segment, band?

Input: one scored lead per row (``probability``, ``label`` 0/1 whether it converted, ``band``
and the lead's ``source_channel``, ``industry``, ``company_size``, ``region``), from
:mod:`reports.data`: never in-sample scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports.model import ColumnFormat, Report, ReportFilter, Section, Table
from reports.settings import ReportSettings
from training.evaluate import expected_calibration_error, reliability_table, wilson_interval

SEGMENTS: tuple[tuple[str, str], ...] = (
    ("source_channel", "channel"),
    ("industry", "industry"),
    ("company_size", "company size"),
    ("region", "region"),
    ("band", "band"),
)
SUMMARY_COLUMNS = [
    "by",
    "group",
    "leads",
    "conversions",
    "mean_predicted",
    "observed",
    "ci_low",
    "ci_high",
    "gap",
    "ece",
    "brier",
    "status",
]
SLICE_COLUMNS = ["slice", "leads", "mean_predicted", "observed", "ci_low", "ci_high", "verdict"]
SLICE_WIDTH = 0.1
MIN_SLICE_LEADS = 30


@dataclass(frozen=True)
class Sufficiency:
    """Whether a set of scored leads is enough to draw calibration from."""

    leads: int
    conversions: int

    def problem(self, cfg: ReportSettings) -> str | None:
        """Why the data is too little (None when it is enough)."""
        if self.leads == 0:
            return "No scored lead with a known outcome matches: nothing to show."
        non = self.leads - self.conversions
        if self.leads < cfg.min_leads or min(self.conversions, non) < cfg.min_conversions:
            return (
                f"Too little data to judge calibration: {self.leads} scored leads with an "
                f"outcome, {self.conversions} converted. At least {cfg.min_leads} leads and "
                f"{cfg.min_conversions} conversions and non-conversions are needed; with fewer, "
                "the intervals are too wide to read, so no chart is drawn."
            )
        return None


def _summary_row(
    kind: str, group: str, y: np.ndarray, p: np.ndarray, cfg: ReportSettings
) -> dict[str, object]:
    n = len(y)
    observed = float(y.mean())
    low, high = wilson_interval(np.array([observed]), np.array([n]))
    predicted = float(p.mean())
    ece = expected_calibration_error(y, p, n_bins=min(cfg.n_bins, max(1, n // 10)))
    judged = n >= cfg.min_group_leads
    flagged = judged and ece > cfg.flag_ece
    return {
        "by": kind,
        "group": group,
        "leads": n,
        "conversions": int(y.sum()),
        "mean_predicted": predicted,
        "observed": observed,
        "ci_low": float(low[0]),
        "ci_high": float(high[0]),
        "gap": observed - predicted,
        "ece": ece,
        "brier": float(np.mean((p - y) ** 2)),
        "status": ("off" if flagged else "ok") if judged else "too few leads",
    }


def calibration_tables(scores: pd.DataFrame, cfg: ReportSettings) -> dict[str, pd.DataFrame]:
    """The calibration report's tables.

    Args:
        scores: One row per scored lead: ``probability``, ``label`` and the segment columns.
        cfg: Bins, group minimum and flag threshold.

    Returns:
        ``summary`` (overall, then per channel, industry, company size, region and band:
        leads, conversions, mean predicted, observed rate with its Wilson 95% interval, gap,
        ECE over ``n_bins`` equal-mass bins (fewer for groups under ``10 * n_bins`` leads),
        Brier score and ``status``: ``ok``, ``off`` (ECE above ``flag_ece``) or ``too few
        leads`` (under ``min_group_leads``)); ``reliability`` (equal-mass bins: mean
        predicted, observed, interval); ``slices`` (10-point score slices with a verdict in
        words). Empty frames when there are no scores.
    """
    y = scores["label"].to_numpy(dtype=np.int64)
    p = scores["probability"].to_numpy(dtype=np.float64)
    if len(y) == 0:
        return {
            "summary": pd.DataFrame(columns=SUMMARY_COLUMNS),
            "reliability": pd.DataFrame(
                columns=["bin", "n", "mean_predicted", "observed", "ci_low", "ci_high"]
            ),
            "slices": pd.DataFrame(columns=SLICE_COLUMNS),
        }
    rows = [_summary_row("all", "all leads", y, p, cfg)]
    for column, kind in SEGMENTS:
        if column not in scores:
            continue
        groups = scores[column].astype(object).fillna("(none)")
        for group, index in groups.groupby(groups).groups.items():
            mask = scores.index.isin(index)
            rows.append(_summary_row(kind, str(group), y[mask], p[mask], cfg))
    summary = pd.DataFrame(rows)
    reliability = reliability_table(y, p, n_bins=min(cfg.n_bins, len(y)))
    return {"summary": summary, "reliability": reliability, "slices": score_slices(y, p)}


def score_slices(y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    """Leads per 10-point slice of the score and how often they converted, in words."""
    edges = np.arange(0, 1 + SLICE_WIDTH / 2, SLICE_WIDTH)
    # The small nudge keeps 0.3 in 30-40% (0.3 / 0.1 is 2.999... in floating point).
    index = np.clip(np.floor(p / SLICE_WIDTH + 1e-9).astype(int), 0, len(edges) - 2)
    rows = []
    for i in np.unique(index):
        mask = index == i
        n = int(mask.sum())
        observed = float(y[mask].mean())
        low, high = wilson_interval(np.array([observed]), np.array([n]))
        name = f"{edges[i]:.0%}-{edges[i + 1]:.0%}"
        if n < MIN_SLICE_LEADS:
            verdict = f"{n} leads scored {name}: too few to say how often they convert."
        else:
            verdict = (
                f"Leads scored {name} converted {observed:.0%} of the time "
                f"(95% interval {low[0]:.0%}-{high[0]:.0%}, {n} leads)."
            )
        rows.append(
            {
                "slice": name,
                "leads": n,
                "mean_predicted": float(p[mask].mean()),
                "observed": observed,
                "ci_low": float(low[0]),
                "ci_high": float(high[0]),
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows)


_SUMMARY_FORMATS: dict[str, ColumnFormat] = {
    "leads": "int",
    "conversions": "int",
    "mean_predicted": "pct",
    "observed": "pct",
    "ci_low": "pct",
    "ci_high": "pct",
    "gap": "pct",
    "ece": "float3",
    "brier": "float3",
}


def calibration_report(
    scores: pd.DataFrame,
    cfg: ReportSettings,
    *,
    source: str,
    filters: ReportFilter | None = None,
) -> Report:
    """The calibration report: reliability diagram, ECE and Brier, verdicts and flags.

    Args:
        scores: Scored leads (see :func:`calibration_tables`).
        cfg: Report settings.
        source: Which scores these are, in words (shown at the top).
        filters: The filters the scores were selected with.
    """
    from reports import charts

    filters = filters or ReportFilter()
    tables = calibration_tables(scores, cfg)
    enough = Sufficiency(len(scores), int(scores["label"].sum()) if len(scores) else 0)
    problem = enough.problem(cfg)
    intro = [
        "Whether the scores can be read as probabilities: among leads given 30%, about 30% "
        "should convert.",
        f"Scores: {source}. Leads: {filters.describe()}.",
    ]
    overall = Section("Overall")
    if problem:
        overall.notices.append(problem)
    if not tables["summary"].empty:
        first = tables["summary"].to_dict("records")[0]
        overall.paragraphs.append(
            f"{int(first['leads'])} scored leads, {int(first['conversions'])} converted: "
            f"predicted {first['mean_predicted']:.1%} on average, observed {first['observed']:.1%} "
            f"(95% interval {first['ci_low']:.1%}-{first['ci_high']:.1%}). Expected calibration "
            f"error {first['ece']:.3f} ({cfg.n_bins} equal-mass bins), Brier score "
            f"{first['brier']:.4f}."
        )
    rates: dict[str, ColumnFormat] = {
        "n": "int",
        "leads": "int",
        "mean_predicted": "pct",
        "observed": "pct",
        "ci_low": "pct",
        "ci_high": "pct",
    }
    if problem is None:
        overall.charts.append(charts.reliability_chart(tables["reliability"]))
    overall.tables.append(
        Table(
            "reliability",
            "Reliability: predicted against observed in equal-mass bins",
            tables["reliability"],
            dict(rates),
        )
    )
    verdicts = Section("In plain words")
    verdicts.paragraphs.extend(tables["slices"]["verdict"].tolist())
    verdicts.tables.append(Table("slices", "Score slices", tables["slices"], dict(rates)))
    groups = Section("By channel, segment and band")
    summary = tables["summary"]
    if not summary.empty:
        off = summary[summary["status"] == "off"]
        for row in off.to_dict("records"):
            direction = "over-predicts" if row["gap"] < 0 else "under-predicts"
            groups.notices.append(
                f"Calibration off for {row['by']} {row['group']}: ECE {row['ece']:.3f} above "
                f"{cfg.flag_ece} (the score {direction}: predicted {row['mean_predicted']:.1%}, "
                f"observed {row['observed']:.1%}, {row['leads']} leads)."
            )
        if off.empty and problem is None:
            groups.paragraphs.append(
                f"No channel or segment with at least {cfg.min_group_leads} leads has an ECE "
                f"above {cfg.flag_ece}."
            )
        groups.paragraphs.append(
            f"Groups with fewer than {cfg.min_group_leads} leads are listed but not judged."
        )
        judged = summary[(summary["status"] != "too few leads") & (summary["by"] != "all")]
        if problem is None and not judged.empty:
            groups.charts.append(charts.group_calibration_chart(judged))
    groups.tables.append(Table("groups", "Calibration per group", summary, dict(_SUMMARY_FORMATS)))
    return Report("calibration", "Calibration", intro, [overall, verdicts, groups], filters=filters)
