"""Review charts of a trained scorer, as matplotlib figures (no pyplot state).

Every function returns a :class:`matplotlib.figure.Figure` built directly (not through
``pyplot``), so nothing is drawn on screen and nothing global changes; ``fig.savefig(path)``
writes it and :func:`log_figures` stores figures with the active MLflow run.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence

import lightgbm as lgb
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

import mlflow
from training.evaluate import EPSILON, expected_calibration_error, reliability_table

CONVERTED = "#d62728"
NOT_CONVERTED = "#1f77b4"
MODEL = "#2ca02c"
REFERENCE = "#7f7f7f"


def reliability_diagram(
    labels: np.ndarray, probabilities: np.ndarray, *, n_bins: int = 10
) -> Figure:
    """Observed against predicted conversion per equal-mass bin, with the predictions below.

    Args:
        labels: 0/1 outcome per lead.
        probabilities: Calibrated probability per lead.
        n_bins: Number of bins (each holds the same number of leads).

    Returns:
        Two stacked axes: the bins' observed rate (Wilson 95% error bars) against their mean
        prediction with the diagonal of perfect calibration, and a histogram of predictions.
    """
    y = np.asarray(labels)
    p = np.asarray(probabilities, dtype=np.float64)
    table = reliability_table(y, p, n_bins=n_bins)
    ece = expected_calibration_error(y, p, n_bins=n_bins)
    figure = Figure(figsize=(6.5, 7.0), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    limit = min(1.0, 1.05 * max(float(p.max()), float(table["ci_high"].max()), 0.01))
    top.plot([0, limit], [0, limit], linestyle="--", color=REFERENCE, label="perfectly calibrated")
    top.errorbar(
        table["mean_predicted"],
        table["observed"],
        # Wilson bounds of a 0% or 100% bin can land a rounding error past the rate itself.
        yerr=np.clip(
            [table["observed"] - table["ci_low"], table["ci_high"] - table["observed"]], 0, None
        ),
        fmt="o-",
        color=MODEL,
        capsize=3,
        label=f"model ({len(table)} groups of equal size, 95% intervals)",
    )
    top.set_xlim(0, limit)
    top.set_ylim(0, limit)
    top.set_ylabel("Share of leads that converted")
    top.set_title(f"Do predicted probabilities come true? (calibration error {ece:.3f})")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.hist(p, bins=np.linspace(0, limit, 41), color=REFERENCE)
    bottom.set_xlabel("Predicted probability of converting")
    bottom.set_ylabel("Leads")
    return figure


def lift_gain_chart(labels: np.ndarray, probabilities: np.ndarray) -> Figure:
    """Cumulative gain against random targeting, and the lift of each tenth of the leads.

    Leads are ordered by score, highest first (ties in row order); the tenths are those of
    ``lift_top_decile``: the first holds ``ceil(n / 10)`` leads.

    Args:
        labels: 0/1 outcome per lead.
        probabilities: Calibrated probability per lead.

    Returns:
        Two axes side by side: the gain curve and the lift bars.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    ranked = y[order]
    n = len(ranked)
    positives = max(float(ranked.sum()), EPSILON)
    contacted = np.arange(n + 1) / max(n, 1)
    gained = np.r_[0.0, np.cumsum(ranked)] / positives
    figure = Figure(figsize=(11.0, 4.8), layout="constrained")
    gain, lift = figure.subplots(1, 2)
    gain.plot(contacted * 100, gained * 100, color=MODEL, label="by score")
    gain.plot([0, 100], [0, 100], linestyle="--", color=REFERENCE, label="at random")
    best = min(1.0, positives / max(n, 1))
    gain.plot([0, best * 100, 100], [0, 100, 100], linestyle=":", color="black", label="ideal")
    gain.set_xlabel("Share of leads contacted, highest scores first (%)")
    gain.set_ylabel("Share of all conversions reached (%)")
    gain.set_title("Conversions reached by working the best-scored leads first")
    gain.legend(loc="lower right")
    gain.grid(alpha=0.3)
    tenth = max(math.ceil(n / 10), 1)
    groups = [ranked[i : i + tenth] for i in range(0, n, tenth)]
    base = ranked.mean() if n else math.nan
    ratios = [g.mean() / base if base > 0 else math.nan for g in groups]
    positions = np.arange(1, len(groups) + 1)
    lift.bar(positions, ratios, color=MODEL)
    lift.axhline(1.0, linestyle="--", color=REFERENCE, label="average lead")
    lift.set_xticks(positions)
    lift.set_xlabel("Tenth of the leads by score (1 = highest scores)")
    lift.set_ylabel("Conversion rate against the average lead (x)")
    lift.set_title("How much better each tenth converts than the average")
    lift.legend(loc="upper right")
    lift.grid(alpha=0.3, axis="y")
    return figure


def score_distribution(
    labels: np.ndarray, probabilities: np.ndarray, *, log_x: bool = False, bins: int = 50
) -> Figure:
    """Distributions of the scores of converted and not converted leads.

    Args:
        labels: 0/1 outcome per lead.
        probabilities: Calibrated probability per lead.
        log_x: Logarithmic probability axis (useful when most scores are small).
        bins: Number of histogram bins.

    Returns:
        One axes with both histograms, each as shares of its own group (summing to 100%).
    """
    y = np.asarray(labels)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON)
    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    axes = figure.subplots()
    low, high = float(p.min()), float(p.max())
    if log_x:
        edges = np.geomspace(low, high if high > low else low * 10, bins + 1)
        axes.set_xscale("log")
    else:
        edges = np.linspace(0.0, high if high > 0 else 1.0, bins + 1)
    for value, name, colour in ((0, "did not convert", NOT_CONVERTED), (1, "converted", CONVERTED)):
        scores = p[y == value]
        if scores.size:
            axes.hist(
                scores,
                bins=edges.tolist(),
                weights=np.full(scores.size, 100 / scores.size),
                histtype="stepfilled",
                alpha=0.45,
                color=colour,
                edgecolor=colour,
                label=f"{name} ({scores.size:,} leads)",
            )
    axes.set_xlabel("Predicted probability of converting" + (" (log scale)" if log_x else ""))
    axes.set_ylabel("Share of the group's leads (%)")
    axes.set_title("Scores of leads that converted and of those that did not")
    axes.legend(loc="upper right")
    axes.grid(alpha=0.3)
    return figure


def feature_importance(
    booster: lgb.Booster, feature_names: Sequence[str] | None = None, top: int = 20
) -> Figure:
    """The features that carry most of the model's gain, as horizontal bars.

    Args:
        booster: Trained LightGBM booster.
        feature_names: Names (or plain-language labels) in the booster's feature order;
            default: the booster's own names.
        top: Most features shown.

    Returns:
        One axes with each feature's share of the total gain, largest on top.

    Raises:
        ValueError: ``feature_names`` does not have one name per booster feature.
    """
    gain = np.asarray(booster.feature_importance(importance_type="gain"), dtype=np.float64)
    names = list(booster.feature_name() if feature_names is None else feature_names)
    if len(names) != len(gain):
        raise ValueError(f"{len(names)} feature names for a booster with {len(gain)} features")
    share = gain / gain.sum() * 100 if gain.sum() > 0 else gain
    order = np.argsort(-share, kind="stable")[:top][::-1]
    figure = Figure(figsize=(8.0, max(0.3 * len(order) + 1.5, 3.0)), layout="constrained")
    axes = figure.subplots()
    axes.barh([names[i] for i in order], share[order], color=MODEL)
    axes.set_xlabel("Share of the model's total gain (%)")
    axes.set_title(f"What the model relies on most (top {len(order)} of {len(names)} features)")
    axes.grid(alpha=0.3, axis="x")
    return figure


def shap_summary(
    contributions: np.ndarray,
    feature_names: Sequence[str],
    values: np.ndarray | pd.DataFrame | None = None,
    top: int = 20,
    *,
    max_points: int = 2000,
    seed: int = 0,
) -> Figure:
    """Mean absolute SHAP value per feature, and every lead's contributions as dots.

    Args:
        contributions: LightGBM ``pred_contrib`` matrix (leads x features, in log-odds)
            WITHOUT its last (bias) column.
        feature_names: Names or labels in the matrix's column order.
        values: The leads' feature values (same shape); colours each dot by the rank of the
            lead's value among all leads (missing or non-numeric values in grey). ``None``
            draws every dot in one colour.
        top: Most features shown (by mean absolute contribution).
        max_points: Most leads drawn as dots (a seeded sample; the bars use every lead).
        seed: Seed of that sample and of the dots' vertical jitter.

    Returns:
        Two axes side by side: the bars and the dots (one row per feature).

    Raises:
        ValueError: Shapes do not match (e.g. the bias column was left in).
    """
    phi = np.asarray(contributions, dtype=np.float64)
    names = list(feature_names)
    if phi.ndim != 2 or phi.shape[1] != len(names):
        hint = " (drop pred_contrib's last, bias column)" if phi.shape[-1] == len(names) + 1 else ""
        raise ValueError(f"contributions of shape {phi.shape} for {len(names)} feature names{hint}")
    ranks = None
    if values is not None:
        raw = values.to_numpy(dtype=object) if isinstance(values, pd.DataFrame) else values
        frame = pd.DataFrame(np.asarray(raw, dtype=object))
        if frame.shape != phi.shape:
            raise ValueError(f"values of shape {frame.shape} for contributions {phi.shape}")
        numeric = frame.apply(pd.to_numeric, errors="coerce")
        ranks = numeric.rank(pct=True).to_numpy(dtype=np.float64)
    strength = np.abs(phi).mean(axis=0)
    order = np.argsort(-strength, kind="stable")[:top][::-1]  # strongest at the top
    rng = np.random.default_rng(seed)
    rows = np.arange(len(phi))
    if len(rows) > max_points:
        rows = np.sort(rng.choice(rows, size=max_points, replace=False))
    figure = Figure(figsize=(13.0, max(0.35 * len(order) + 1.8, 3.5)), layout="constrained")
    bars, dots = figure.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1, 1.6]})
    positions = np.arange(len(order))
    bars.barh(positions, strength[order], color=MODEL)
    bars.set_yticks(positions, [names[j] for j in order])
    bars.set_xlabel("Average size of the feature's effect on the score (log-odds)")
    bars.set_title("Features that move scores the most")
    bars.grid(alpha=0.3, axis="x")
    scatter = None
    for position, j in zip(positions, order, strict=True):
        jitter = rng.uniform(-0.3, 0.3, size=len(rows))
        colour = None if ranks is None else ranks[rows, j]
        if colour is None:
            dots.scatter(phi[rows, j], position + jitter, s=6, color=MODEL, alpha=0.5)
        else:
            missing = np.isnan(colour)
            dots.scatter(
                phi[rows[missing], j], position + jitter[missing], s=6, color="#bbbbbb", alpha=0.5
            )
            scatter = dots.scatter(
                phi[rows[~missing], j],
                position + jitter[~missing],
                s=6,
                c=colour[~missing],
                cmap="coolwarm",
                vmin=0,
                vmax=1,
                alpha=0.7,
            )
    dots.axvline(0.0, color=REFERENCE, linewidth=1)
    dots.set_xlabel("Effect on this lead's score (log-odds; right raises it)")
    dots.set_title(f"Each lead's effects ({len(rows):,} leads)")
    dots.grid(alpha=0.3, axis="x")
    if scatter is not None:
        bar = figure.colorbar(scatter, ax=dots, ticks=[0, 1])
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("Feature value (grey: missing)")
    return figure


def log_figures(figures: Mapping[str, Figure], *, run_id: str | None = None) -> None:
    """Store figures with an MLflow run as ``plots/<name>.png`` and close them.

    Args:
        figures: Figures by name.
        run_id: The run to log to; default: the active run.

    Raises:
        RuntimeError: No ``run_id`` and no active run (nothing is logged, no run is started).
    """
    if run_id is None and mlflow.active_run() is None:
        raise RuntimeError("no active MLflow run to log the figures to: start one or pass run_id")
    for name, figure in figures.items():
        artifact = f"plots/{name}.png"
        if run_id is None:
            mlflow.log_figure(figure, artifact)
        else:
            MlflowClient().log_figure(run_id, figure, artifact)
        _close(figure)


def _close(figure: Figure) -> None:
    """Release a figure; also from pyplot's registry if it was made there."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(figure)
    figure.clear()
