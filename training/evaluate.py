"""Metrics of calibrated probabilities on a held-out period, with bootstrap intervals.

Every metric here is computed from the probabilities clipped to ``[1e-6, 1 - 1e-6]`` (as the
log loss needs) and, inside this module, from one weighted formula per metric over the rows
sorted by probability: a bootstrap resample is the same rows with integer weights (how often
each row was drawn), so 200 resamples of 50,000 rows need no sorting and no per-resample
library call. The point estimates use the same formulas with every weight 1 (ROC AUC, PR AUC,
Brier score and log loss still come from scikit-learn, which they match to rounding).

Definitions:

- ``ece``: expected calibration error over ``n_bins`` equal-mass bins of the rows ordered by
  probability, ``sum_bins n_bin / n * |mean prediction - observed rate|``. Rows with the same
  probability that straddle a bin boundary are shared between the two bins in proportion, each
  part with the tied rows' observed rate, so the result does not depend on the order of rows.
- ``lift_top_decile``: conversion rate among the ``ceil(n / 10)`` highest-scored rows (ties
  at the boundary taken in row order: a stable sort) divided by the base rate.
- ``capture_top_decile``: share of all conversions among those same rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from leadscore.scorer import BANDS

EPSILON = 1e-6
N_BINS = 10
TOP_SHARE = 0.1
WILSON_Z = 1.959963984540054  # the normal quantile of a two-sided 95% interval
# Metrics given a bootstrap interval (plus ``<band>_conversion`` for each band).
INTERVAL_METRICS = (
    "roc_auc",
    "pr_auc",
    "brier",
    "log_loss",
    "ece",
    "lift_top_decile",
    "capture_top_decile",
)
# Rows x resamples held in memory at a time by the bootstrap (a few arrays of this many floats).
_BOOTSTRAP_CELLS = 2_000_000


def evaluate_probabilities(
    *, labels: np.ndarray, probabilities: np.ndarray, bands: np.ndarray | None = None
) -> dict[str, float]:
    """Discrimination, calibration, top-decile and band metrics.

    Args:
        labels: 0/1 outcome per row.
        probabilities: Calibrated probability per row.
        bands: Band name (``hot``, ``warm``, ``cold``) per row; ``None`` leaves the band
            metrics out.

    Returns:
        ``roc_auc``, ``pr_auc``, ``brier``, ``log_loss``, ``base_rate``,
        ``mean_probability``, ``n``, ``ece``, ``lift_top_decile``, ``capture_top_decile``
        and, when ``bands`` is given, per band its share of leads (``hot_share``) and its
        observed conversion rate (``hot_conversion``, NaN when the band is empty).

    Raises:
        ValueError: The labels hold only one class (ROC AUC is undefined).
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON)
    metrics = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "base_rate": float(y.mean()),
        "mean_probability": float(p.mean()),
        "n": float(len(y)),
    }
    sample = _SortedSample(y, p, None)
    weighted = sample.metrics(np.ones((1, len(y))))
    for name in ("ece", "lift_top_decile", "capture_top_decile"):
        metrics[name] = float(weighted[name][0])
    if bands is not None:
        band_array = np.asarray(bands)
        for band in BANDS:
            mask = band_array == band
            metrics[f"{band}_share"] = float(mask.mean())
            metrics[f"{band}_conversion"] = float(y[mask].mean()) if mask.any() else math.nan
    return metrics


def bootstrap_intervals(
    *,
    labels: np.ndarray,
    probabilities: np.ndarray,
    bands: np.ndarray | None = None,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the test metrics.

    Rows are resampled with replacement ``n_boot`` times (seeded: the same inputs and seed
    give the same intervals). A metric undefined on a resample (an AUC when it holds one
    class, a band's conversion when the band is empty) is left out of that metric's
    percentiles; a metric undefined on every resample gets ``(nan, nan)``.

    Args:
        labels: 0/1 outcome per row.
        probabilities: Calibrated probability per row.
        bands: Band name per row; ``None`` leaves the band conversions out.
        n_boot: Number of resamples.
        seed: Seed of the resampling.
        level: Coverage of the intervals (0.95: the 2.5th and 97.5th percentiles).

    Returns:
        ``(low, high)`` of ``roc_auc``, ``pr_auc``, ``brier``, ``log_loss``, ``ece``,
        ``lift_top_decile``, ``capture_top_decile`` and, with ``bands``, each band's
        ``<band>_conversion``.

    Raises:
        ValueError: No rows, mismatched lengths, ``n_boot < 1`` or ``level`` not in (0, 1).
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, not {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    y = np.asarray(labels, dtype=np.int64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON)
    band_array = None if bands is None else np.asarray(bands)
    sample = _SortedSample(y, p, band_array)
    n = len(y)
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CELLS // n)
    draws: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        # How often each (sorted) row is drawn in each resample of this chunk.
        picks = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        weights = np.bincount(picks.ravel(), minlength=size * n).reshape(size, n)
        for name, values in sample.metrics(weights.astype(np.float64)).items():
            draws.setdefault(name, []).append(values)
    tail = (1 - level) / 2
    intervals: dict[str, tuple[float, float]] = {}
    for name, parts in draws.items():
        values = np.concatenate(parts)
        values = values[np.isfinite(values)]
        if values.size == 0:
            intervals[name] = (math.nan, math.nan)
        else:
            low, high = np.quantile(values, [tail, 1 - tail])
            intervals[name] = (float(low), float(high))
    return intervals


@dataclass(frozen=True)
class Evaluation:
    """Test metrics with their bootstrap intervals.

    Attributes:
        metrics: Point estimates (see :func:`evaluate_probabilities`).
        intervals: ``(low, high)`` per metric that has one (see :func:`bootstrap_intervals`).
        level: Coverage of the intervals.
        n_boot: Number of bootstrap resamples.
    """

    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    level: float = 0.95
    n_boot: int = 200

    def as_mlflow_metrics(self, prefix: str = "test_") -> dict[str, float]:
        """Flat MLflow metrics: ``<prefix><name>``, ``..._ci_low`` and ``..._ci_high``.

        NaN values (an empty band, a metric undefined on every resample) are left out.
        """
        flat: dict[str, float] = {}
        for name, value in self.metrics.items():
            if not math.isnan(value):
                flat[f"{prefix}{name}"] = float(value)
            low, high = self.intervals.get(name, (math.nan, math.nan))
            if not math.isnan(low):
                flat[f"{prefix}{name}_ci_low"] = float(low)
            if not math.isnan(high):
                flat[f"{prefix}{name}_ci_high"] = float(high)
        return flat

    def table(self) -> pd.DataFrame:
        """One row per metric: ``metric``, ``value``, ``low``, ``high`` (NaN without interval)."""
        rows = [
            {
                "metric": name,
                "value": value,
                "low": self.intervals.get(name, (math.nan, math.nan))[0],
                "high": self.intervals.get(name, (math.nan, math.nan))[1],
            }
            for name, value in self.metrics.items()
        ]
        return pd.DataFrame(rows, columns=["metric", "value", "low", "high"])


def metrics_with_intervals(
    *,
    labels: np.ndarray,
    probabilities: np.ndarray,
    bands: np.ndarray | None = None,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> Evaluation:
    """:func:`evaluate_probabilities` and :func:`bootstrap_intervals` of the same rows."""
    metrics = evaluate_probabilities(labels=labels, probabilities=probabilities, bands=bands)
    intervals = bootstrap_intervals(
        labels=labels,
        probabilities=probabilities,
        bands=bands,
        n_boot=n_boot,
        seed=seed,
        level=level,
    )
    return Evaluation(metrics=metrics, intervals=intervals, level=level, n_boot=n_boot)


def reliability_table(
    labels: np.ndarray, probabilities: np.ndarray, n_bins: int = N_BINS
) -> pd.DataFrame:
    """Predicted against observed conversion in equal-mass bins of the rows.

    The bins are those of ``ece``: consecutive runs of ``n / n_bins`` rows ordered by
    probability (tied rows straddling a boundary shared in proportion, so a bin's count of
    conversions can be fractional). Empty bins (fewer rows than bins) are left out.

    Args:
        labels: 0/1 outcome per row.
        probabilities: Calibrated probability per row.
        n_bins: Number of bins.

    Returns:
        One row per bin, lowest predictions first: ``bin`` (0-based), ``n`` (rows),
        ``mean_predicted``, ``observed`` (conversion rate) and ``ci_low``, ``ci_high`` (the
        Wilson 95% interval of the observed rate).

    Raises:
        ValueError: No rows, mismatched lengths or ``n_bins < 1``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, not {n_bins}")
    y = np.asarray(labels, dtype=np.int64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON)
    sample = _SortedSample(y, p, None)
    ones = np.ones((1, len(y)))
    counts, positives, predicted = sample.bin_sums(ones, n_bins)
    keep = counts[0] > 0
    n = counts[0][keep]
    observed = positives[0][keep] / n
    low, high = wilson_interval(observed, n)
    return pd.DataFrame(
        {
            "bin": np.flatnonzero(keep),
            "n": n.astype(np.int64),
            "mean_predicted": predicted[0][keep] / n,
            "observed": observed,
            "ci_low": low,
            "ci_high": high,
        }
    )


def expected_calibration_error(
    labels: np.ndarray, probabilities: np.ndarray, n_bins: int = N_BINS
) -> float:
    """The ``ece`` of :func:`evaluate_probabilities` alone (defined for one class too).

    Args:
        labels: 0/1 outcome per row.
        probabilities: Calibrated probability per row.
        n_bins: Number of equal-mass bins.

    Returns:
        ``sum_bins n_bin / n * |mean prediction - observed rate|``.

    Raises:
        ValueError: No rows, mismatched lengths or ``n_bins < 1``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, not {n_bins}")
    y = np.asarray(labels, dtype=np.int64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON)
    _, positives, predicted = _SortedSample(y, p, None).bin_sums(np.ones((1, len(y))), n_bins)
    return float(np.abs(predicted - positives).sum() / len(y))


def wilson_interval(
    rate: np.ndarray, n: np.ndarray, z: float = WILSON_Z
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of observed rates (95% by default).

    Args:
        rate: Observed rates.
        n: Number of trials behind each rate (positive).
        z: Normal quantile of the two-sided coverage.

    Returns:
        Lower and upper bounds, within ``[0, 1]``.
    """
    rate = np.asarray(rate, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    denominator = 1 + z**2 / n
    centre = (rate + z**2 / (2 * n)) / denominator
    half = z * np.sqrt(rate * (1 - rate) / n + z**2 / (4 * n**2)) / denominator
    # The bounds hold the rate itself (rounding can put them a hair past a 0% or 100% rate).
    low = np.minimum(np.clip(centre - half, 0.0, 1.0), rate)
    high = np.maximum(np.clip(centre + half, 0.0, 1.0), rate)
    return low, high


class _SortedSample:
    """Rows sorted by probability, with everything the weighted metrics need.

    Ascending by probability, ties in reverse row order: read backwards, this is the stable
    descending order of the top decile. Rows with the same probability form a group
    (contiguous in this order): the ranking metrics and the bins work on groups.
    """

    def __init__(self, y: np.ndarray, p: np.ndarray, bands: np.ndarray | None) -> None:
        if y.ndim != 1 or y.shape != p.shape:
            raise ValueError(
                f"labels and probabilities must be 1-D of the same length, not {y.shape} "
                f"and {p.shape}"
            )
        if len(y) == 0:
            raise ValueError("no rows to evaluate")
        if bands is not None and bands.shape != y.shape:
            raise ValueError(f"bands must have one value per row, not shape {bands.shape}")
        order = np.argsort(-p, kind="stable")[::-1]
        self.n = len(y)
        self.y = y[order].astype(np.float64)
        self.p = np.clip(p[order], EPSILON, 1 - EPSILON)
        self.starts = np.flatnonzero(np.r_[True, self.p[1:] != self.p[:-1]])
        self.group_p = self.p[self.starts]
        self.squared_error = (self.y - self.p) ** 2
        self.row_log_loss = -np.where(self.y == 1, np.log(self.p), np.log1p(-self.p))
        self.band_masks: dict[str, np.ndarray] = {}
        if bands is not None:
            sorted_bands = bands[order]
            for band in BANDS:
                self.band_masks[band] = (sorted_bands == band).astype(np.float64)
        self.top = math.ceil(self.n * TOP_SHARE)

    def metrics(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every weighted metric, one value per row of ``weights`` (resamples x rows)."""
        total = weights.sum(axis=1)
        group_w = np.add.reduceat(weights, self.starts, axis=1)
        group_pos = np.add.reduceat(weights * self.y, self.starts, axis=1)
        group_neg = group_w - group_pos
        positives = group_pos.sum(axis=1)
        negatives = group_neg.sum(axis=1)
        both = (positives > 0) & (negatives > 0)
        some = positives > 0
        cum_pos = np.cumsum(group_pos, axis=1)
        cum_neg = np.cumsum(group_neg, axis=1)
        # ROC AUC: each positive beats the negatives of lower groups and ties half of its own.
        wins = (group_pos * (cum_neg - 0.5 * group_neg)).sum(axis=1)
        roc_auc = _ratio(wins, positives * negatives, both)
        # Average precision: precision at each distinct threshold, weighted by recall gained.
        true_pos = positives[:, None] - cum_pos + group_pos
        flagged = true_pos + negatives[:, None] - cum_neg + group_neg
        precision = np.divide(true_pos, flagged, out=np.zeros_like(true_pos), where=flagged > 0)
        pr_auc = _ratio((group_pos * precision).sum(axis=1), positives, some)
        brier = weights @ self.squared_error / total
        row_log_loss = weights @ self.row_log_loss / total
        # Calibration error over equal-mass bins: |sum of (prediction - outcome)| per bin.
        _, bin_pos, bin_pred = self.bin_sums(weights, N_BINS, group_w, group_pos)
        ece = np.abs(bin_pred - bin_pos).sum(axis=1) / total
        # Top decile: the first ``top`` rows of the descending order (copies of a row count).
        # Only the highest rows can be among them: look at the last 2 x top (all if short).
        tail = min(self.n, 2 * self.top + 100)
        if (weights[:, self.n - tail :].sum(axis=1) < self.top).any():
            tail = self.n
        reversed_w = weights[:, self.n - tail :][:, ::-1]
        before = np.cumsum(reversed_w, axis=1) - reversed_w
        taken = np.clip(self.top - before, 0.0, reversed_w)
        top_pos = taken @ self.y[::-1][:tail]
        lift = _ratio(top_pos / self.top, positives / total, some)
        capture = _ratio(top_pos, positives, some)
        result = {
            "roc_auc": roc_auc,
            "pr_auc": pr_auc,
            "brier": brier,
            "log_loss": row_log_loss,
            "ece": ece,
            "lift_top_decile": lift,
            "capture_top_decile": capture,
        }
        for band, mask in self.band_masks.items():
            in_band = weights @ mask
            result[f"{band}_conversion"] = _ratio(weights @ (mask * self.y), in_band, in_band > 0)
        return result

    def bin_sums(
        self,
        weights: np.ndarray,
        n_bins: int,
        group_w: np.ndarray | None = None,
        group_pos: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, conversions and summed predictions of each equal-mass bin.

        A resample's rows (with their copies) take the positions ``0..total`` in order; bin
        ``k`` holds positions ``[k * total // n_bins, (k + 1) * total // n_bins)``. Within a
        group of tied rows, conversions and predictions are spread evenly over its positions.

        Returns:
            Three arrays of shape (resamples, n_bins).
        """
        if group_w is None or group_pos is None:
            group_w = np.add.reduceat(weights, self.starts, axis=1)
            group_pos = np.add.reduceat(weights * self.y, self.starts, axis=1)
        resamples, n_groups = group_w.shape
        total = np.rint(group_w.sum(axis=1)).astype(np.int64)
        bounds = (np.arange(n_bins + 1)[None, :] * total[:, None]) // n_bins
        ends = np.cumsum(group_w, axis=1)  # position after each group's last row
        # One sorted array for every resample: offset resample r by r * (largest total + 1).
        offset = (np.arange(resamples) * (int(total.max()) + 1))[:, None]
        flat = np.searchsorted((ends + offset).ravel(), (bounds + offset).ravel(), side="left")
        group = np.minimum(
            flat.reshape(bounds.shape) - np.arange(resamples)[:, None] * n_groups, n_groups - 1
        )
        rows = np.arange(resamples)[:, None]
        start = ends[rows, group] - group_w[rows, group]
        share = np.divide(
            bounds - start,
            group_w[rows, group],
            out=np.zeros(bounds.shape),
            where=group_w[rows, group] > 0,
        )

        def at_bounds(per_group: np.ndarray) -> np.ndarray:
            cumulative = np.cumsum(per_group, axis=1)
            value = cumulative[rows, group] - per_group[rows, group] * (1 - share)
            value[bounds == 0] = 0.0
            return value

        counts = np.diff(bounds, axis=1).astype(np.float64)
        positives = np.diff(at_bounds(group_pos), axis=1)
        predicted = np.diff(at_bounds(group_w * self.group_p), axis=1)
        return counts, positives, predicted


def _ratio(numerator: np.ndarray, denominator: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` where ``defined``, NaN elsewhere."""
    return np.divide(
        numerator,
        denominator,
        out=np.full(np.shape(numerator), np.nan),
        where=defined,
    )
