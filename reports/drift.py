"""Drift report: how far recent scoring moved from the training period, and live performance.

The population stability index of a feature compares its distribution in the training period
(expected, ``e``) with recent scoring (actual, ``a``) over the same bins:
``PSI = sum_bins (a - e) * ln(a / e)``, each share floored at :data:`PSI_FLOOR` so that an
empty bin counts as rare rather than infinite. Numeric features use ``psi_bins`` quantile bins
of the training values (fewer when values repeat), categorical ones one bin per category;
missing values have a bin of their own. Rule of thumb: under 0.1 stable, 0.1-0.25 watch,
above 0.25 moved.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from reports.model import ColumnFormat, Report, ReportFilter, Section, Table
from reports.settings import ReportSettings

PSI_FLOOR = 1e-4
MISSING = "(missing)"
SCORE = "score"


def _bins(
    expected: pd.Series, actual: pd.Series, *, kind: str, bins: int
) -> tuple[pd.Series, pd.Series, list[str]]:
    """Bin labels of both sides (text), on bins fitted to ``expected``, and the bins' order."""
    if kind == "categorical":
        e_labels = expected.astype(object).where(expected.notna(), MISSING).astype(str)
        a_labels = actual.astype(object).where(actual.notna(), MISSING).astype(str)
        order = list(e_labels.value_counts().index)
        order += sorted(set(a_labels) - set(order))
        return e_labels, a_labels, order
    e = pd.to_numeric(expected, errors="coerce").astype(float)
    a = pd.to_numeric(actual, errors="coerce").astype(float)
    finite = e[np.isfinite(e)].to_numpy()
    inner = (
        np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1))[1:-1])
        if finite.size
        else np.array([])
    )
    names = (
        [f"<= {inner[0]:.4g}"]
        + [f"({lo:.4g}, {hi:.4g}]" for lo, hi in itertools.pairwise(inner)]
        + [f"> {inner[-1]:.4g}"]
        if inner.size
        else ["all values"]
    )

    def label(values: pd.Series) -> pd.Series:
        index = np.searchsorted(inner, values.to_numpy(), side="left")
        out = pd.Series([names[i] for i in np.minimum(index, len(names) - 1)], index=values.index)
        return out.where(np.isfinite(values), MISSING)

    return label(e), label(a), [*names, MISSING]


def population_stability(
    expected: pd.Series, actual: pd.Series, *, kind: str = "numeric", bins: int = 10
) -> tuple[float, pd.DataFrame]:
    """PSI of ``actual`` against ``expected`` and the shares per bin.

    Args:
        expected: Values of the training period.
        actual: Values of recent scoring.
        kind: ``categorical`` (one bin per value) or anything else (numeric quantile bins).
        bins: Quantile bins of a numeric feature.

    Returns:
        The PSI and one row per bin: ``bin``, ``expected_share``, ``actual_share``,
        ``contribution``.

    Raises:
        ValueError: One side has no values.
    """
    if len(expected) == 0 or len(actual) == 0:
        raise ValueError(
            f"PSI needs values on both sides, not {len(expected)} expected and {len(actual)} actual"
        )
    e_bins, a_bins, order = _bins(expected, actual, kind=kind, bins=bins)
    e_share = e_bins.value_counts(normalize=True)
    a_share = a_bins.value_counts(normalize=True)
    table = pd.concat([e_share.rename("expected_share"), a_share.rename("actual_share")], axis=1)
    present = [b for b in order if b in table.index]
    table = table.reindex(present).fillna(0.0).rename_axis("bin").reset_index()
    e = np.maximum(table["expected_share"].to_numpy(), PSI_FLOOR)
    a = np.maximum(table["actual_share"].to_numpy(), PSI_FLOOR)
    table["contribution"] = (a - e) * np.log(a / e)
    return float(table["contribution"].sum()), table


def _status(psi: float, cfg: ReportSettings) -> str:
    if psi >= cfg.psi_alert:
        return "moved"
    return "watch" if psi >= cfg.psi_watch else "stable"


def drift_tables(
    train: pd.DataFrame,
    recent: pd.DataFrame,
    kinds: Mapping[str, str],
    cfg: ReportSettings,
) -> dict[str, pd.DataFrame]:
    """PSI of every feature (and of the score, column ``score``) present on both sides.

    Args:
        train: Training-period rows (features and ``score``).
        recent: Recent scoring rows.
        kinds: Feature name -> ``numeric``, ``flag`` or ``categorical``.
        cfg: Bins and thresholds.

    Returns:
        ``psi``: one row per feature, most moved first: ``feature``, ``kind``, ``psi``,
        ``status`` (stable, watch, moved), ``missing_train``, ``missing_recent`` (shares) and
        ``biggest_change`` (the bin whose share moved most); ``bins``: the per-bin shares of
        every feature.
    """
    rows, bins = [], []
    columns = [c for c in [SCORE, *kinds] if c in train and c in recent]
    for column in dict.fromkeys(columns):
        kind = "score" if column == SCORE else kinds[column]
        psi, table = population_stability(
            train[column],
            recent[column],
            kind="categorical" if kind == "categorical" else "numeric",
            bins=cfg.psi_bins,
        )
        moved = table.iloc[(table["actual_share"] - table["expected_share"]).abs().argmax()]
        rows.append(
            {
                "feature": column,
                "kind": kind,
                "psi": psi,
                "status": _status(psi, cfg),
                "missing_train": float(train[column].isna().mean()),
                "missing_recent": float(recent[column].isna().mean()),
                "biggest_change": f"{moved['bin']}: {moved['expected_share']:.1%} -> "
                f"{moved['actual_share']:.1%}",
            }
        )
        bins.append(table.assign(feature=column))
    psi_table = pd.DataFrame(rows)
    if not psi_table.empty:
        psi_table = psi_table.sort_values("psi", ascending=False, ignore_index=True)
    bins_table = (
        pd.concat(bins, ignore_index=True)[
            ["feature", "bin", "expected_share", "actual_share", "contribution"]
        ]
        if bins
        else pd.DataFrame()
    )
    return {"psi": psi_table, "bins": bins_table}


LIVE_METRICS: tuple[tuple[str, str], ...] = (
    ("roc_auc", "higher"),
    ("brier", "lower"),
    ("ece", "lower"),
    ("base_rate", "none"),
    ("mean_probability", "none"),
)


def live_performance(
    training: Mapping[str, float], live: pd.DataFrame, cfg: ReportSettings
) -> tuple[pd.DataFrame, str | None]:
    """Live metrics of served scores whose outcome matured, against the training-time ones.

    Args:
        training: The champion's training-run metrics (``test_roc_auc``,
            ``test_roc_auc_ci_low`` ...).
        live: ``probability`` and ``label`` of served scores with a matured outcome.
        cfg: ``min_leads`` and ``min_conversions`` decide whether live metrics are shown.

    Returns:
        One row per metric (``metric``, ``training``, ``training_ci_low``,
        ``training_ci_high``, ``live``, ``verdict``) and why live metrics are missing (None
        when they are there).
    """
    from training.evaluate import evaluate_probabilities, expected_calibration_error

    n = len(live)
    positives = int(live["label"].sum()) if n else 0
    problem = None
    if n < cfg.min_leads or min(positives, n - positives) < cfg.min_conversions:
        problem = (
            f"Live performance needs matured outcomes: {n} served scores have one "
            f"({positives} converted); at least {cfg.min_leads} with {cfg.min_conversions} "
            "conversions and non-conversions are needed."
        )
    values: dict[str, float] = {}
    if problem is None:
        y = live["label"].to_numpy(dtype=np.int64)
        p = live["probability"].to_numpy(dtype=np.float64)
        values = evaluate_probabilities(labels=y, probabilities=p)
        values["ece"] = expected_calibration_error(y, p, n_bins=cfg.n_bins)
    rows = []
    for metric, better in LIVE_METRICS:
        train_value = training.get(f"test_{metric}", math.nan)
        low = training.get(f"test_{metric}_ci_low", math.nan)
        high = training.get(f"test_{metric}_ci_high", math.nan)
        value = values.get(metric, math.nan)
        verdict = ""
        if not math.isnan(value) and better != "none" and not math.isnan(low):
            if low <= value <= high:
                verdict = "within the training interval"
            elif (value > high) == (better == "higher"):
                verdict = "better than at training"
            else:
                verdict = "worse than at training"
        rows.append(
            {
                "metric": metric,
                "training": train_value,
                "training_ci_low": low,
                "training_ci_high": high,
                "live": value,
                "verdict": verdict,
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["n"] = n
    return table, problem


_PSI_FORMATS: dict[str, ColumnFormat] = {
    "psi": "float3",
    "missing_train": "pct",
    "missing_recent": "pct",
    "expected_share": "pct",
    "actual_share": "pct",
    "contribution": "float3",
}


def drift_report(
    train: pd.DataFrame,
    recent: pd.DataFrame,
    kinds: Mapping[str, str],
    cfg: ReportSettings,
    *,
    training_metrics: Mapping[str, float],
    live: pd.DataFrame,
    describe_train: str,
    describe_recent: str,
    filters: ReportFilter | None = None,
) -> Report:
    """The drift report: PSI per feature and for the score, then live against training."""
    from reports import charts

    filters = filters or ReportFilter()
    intro = [
        "How far the leads scored recently differ from those the model learned from "
        "(population stability index, most moved first), and, once outcomes mature, how the "
        "model performs live against its training-time test metrics.",
        f"Training period: {describe_train}. Recent scoring: {describe_recent}. Leads: "
        f"{filters.describe()} (the periods are fixed: a date range does not apply here).",
    ]
    shift = Section("Shift per feature")
    shift.paragraphs.append(
        f"PSI under {cfg.psi_watch} is stable, {cfg.psi_watch}-{cfg.psi_alert} worth "
        f"watching, above {cfg.psi_alert} moved."
    )
    if len(train) < cfg.min_leads or len(recent) < cfg.min_leads:
        shift.notices.append(
            f"Too little data to compare distributions: {len(train)} training-period and "
            f"{len(recent)} recent rows (at least {cfg.min_leads} each are needed)."
        )
        tables = {"psi": pd.DataFrame(), "bins": pd.DataFrame()}
    else:
        tables = drift_tables(train, recent, kinds, cfg)
    psi = tables["psi"]
    if not psi.empty:
        moved = psi[psi["status"] == "moved"]
        if not moved.empty:
            shift.notices.append(
                "Moved most: "
                + ", ".join(
                    f"{r['feature']} (PSI {r['psi']:.2f})" for r in moved.head(5).to_dict("records")
                )
                + "."
            )
        shift.charts.append(
            charts.psi_chart(psi.head(25), watch=cfg.psi_watch, alert=cfg.psi_alert)
        )
        if SCORE in train and SCORE in recent:
            shift.charts.append(
                charts.distribution_chart(
                    train[SCORE].to_numpy(dtype=float),
                    recent[SCORE].to_numpy(dtype=float),
                    name="score_distribution",
                    title="Score distribution",
                    xlabel="probability",
                )
            )
        shift.tables.append(Table("psi", "PSI per feature", psi, dict(_PSI_FORMATS)))
        shift.tables.append(
            Table("bins", "Shares per bin", tables["bins"], dict(_PSI_FORMATS), max_rows=40)
        )
    performance = Section("Live performance against training")
    table, problem = live_performance(training_metrics, live, cfg)
    if problem:
        performance.notices.append(problem)
    else:
        performance.paragraphs.append(
            f"{len(live)} served scores whose outcome has matured, against the champion's "
            "test-period metrics at training (95% bootstrap interval)."
        )
    performance.tables.append(
        Table(
            "live",
            "Live against training",
            table,
            {
                "training": "float3",
                "training_ci_low": "float3",
                "training_ci_high": "float3",
                "live": "float3",
            },
        )
    )
    return Report("drift", "Drift", intro, [shift, performance], filters=filters)
