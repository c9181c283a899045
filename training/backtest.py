"""Rolling-origin backtests: how the model would have done on each of the latest periods.

The newest ``n_folds * test_share`` of the examples (by snapshot moment) is cut into
``n_folds`` consecutive test periods. Fold ``k`` (1 = the oldest of them, ``n_folds`` = the
newest) tests on its period, calibrates on the ``calibration_share`` of examples just before
it and trains on everything before that (an expanding window): each fold is scored as if the
model had been trained at the start of its test period, never seeing later examples. Cut points
fall on snapshot moments, so no moment is on both sides of a boundary.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from training.evaluate import evaluate_probabilities

logger = logging.getLogger(__name__)

Predictor = Callable[[pd.DataFrame], np.ndarray]
"""Calibrated probabilities of the rows of a frame."""
FitFunction = Callable[[pd.DataFrame, pd.DataFrame], Predictor]
"""``fit(train, calibration)``: fit and calibrate a model, return its predictor."""
BandFunction = Callable[[np.ndarray], np.ndarray]
"""Band name of each probability (e.g. ``LeadScorer.band_of``)."""

SUMMARY_METRICS = ("roc_auc", "pr_auc", "brier", "log_loss", "ece")
_PERIODS = ("train", "calibration", "test")
_TOLERANCE = 1e-9  # shares like 1 - 3 * 0.1 are not exact in floating point


class BacktestDataError(ValueError):
    """The examples cannot support the requested folds."""


@dataclass(frozen=True)
class BacktestResult:
    """Per-fold metrics of a rolling-origin backtest.

    Attributes:
        folds: One dict per fold, oldest first: ``fold`` (1-based), the first and last snapshot
            moment of each period (``train_start``, ``train_end``, ``calibration_start``,
            ``calibration_end``, ``test_start``, ``test_end``), ``n_train``,
            ``n_calibration``, ``n_test``, ``train_positives``, ``positives`` (of the test
            period) and every metric of :func:`~training.evaluate.evaluate_probabilities`.
        test_share: Share of all examples in each test period.
        calibration_share: Share of all examples in each calibration slice.
    """

    folds: list[dict[str, Any]]
    test_share: float
    calibration_share: float

    @property
    def n_folds(self) -> int:
        """Number of folds."""
        return len(self.folds)

    def table(self) -> pd.DataFrame:
        """One row per fold (oldest first), columns as in :attr:`folds`."""
        return pd.DataFrame(self.folds)

    def summary(self, metrics: Sequence[str] = SUMMARY_METRICS) -> pd.DataFrame:
        """Mean and standard deviation (``ddof=1``; NaN with one fold) across folds.

        Args:
            metrics: Metrics summarised; default ``roc_auc``, ``pr_auc``, ``brier``,
                ``log_loss``, ``ece``.

        Returns:
            Index ``metric``, columns ``mean`` and ``std``.
        """
        table = self.table()
        rows = {
            name: {"mean": float(table[name].mean()), "std": float(table[name].std(ddof=1))}
            for name in metrics
        }
        frame = pd.DataFrame.from_dict(rows, orient="index", columns=["mean", "std"])
        frame.index.name = "metric"
        return frame

    def as_mlflow_metrics(self, prefix: str = "backtest_") -> dict[str, float]:
        """Flat MLflow metrics, NaN left out.

        Returns:
            ``<prefix>fold<k>_<name>`` for every number of each fold (metrics and counts) and
            ``<prefix><metric>_mean`` / ``_std`` for the summarised metrics.
        """
        flat: dict[str, float] = {}
        for fold in self.folds:
            for name, value in fold.items():
                if name == "fold" or not _is_number(value) or math.isnan(value):
                    continue
                flat[f"{prefix}fold{fold['fold']}_{name}"] = float(value)
        summary = self.summary()
        for metric in summary.index:
            for statistic in ("mean", "std"):
                value = float(summary.loc[metric, statistic])
                if not math.isnan(value):
                    flat[f"{prefix}{metric}_{statistic}"] = value
        return flat

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready document (moments as ISO strings, NaN as null), e.g. for ``log_dict``."""
        summary = self.summary()
        return {
            "n_folds": self.n_folds,
            "test_share": self.test_share,
            "calibration_share": self.calibration_share,
            "folds": [{k: _json_value(v) for k, v in fold.items()} for fold in self.folds],
            "summary": {
                str(name): {k: _json_value(v) for k, v in row.items()}
                for name, row in summary.iterrows()
            },
        }


def rolling_origin_backtest(
    frame: pd.DataFrame,
    *,
    fit: FitFunction,
    n_folds: int = 4,
    test_share: float = 0.1,
    calibration_share: float = 0.1,
    band_of: BandFunction | None = None,
) -> BacktestResult:
    """Fit, calibrate and test once per fold on successively later periods.

    Every fold's periods are checked before anything is fitted.

    Args:
        frame: Examples with ``event_timestamp`` (snapshot moment), ``label`` (0/1) and the
            feature columns ``fit`` needs, in any order.
        fit: ``fit(train, calibration)`` returning a function that gives the calibrated
            probability of each row of a frame.
        n_folds: Number of folds (test periods).
        test_share: Share of all examples in each test period.
        calibration_share: Share of all examples in the calibration slice before each test
            period.
        band_of: Band name of each probability; when given, the folds also carry the band
            shares and conversions.

    Returns:
        The folds' periods, counts and test metrics, oldest first.

    Raises:
        BacktestDataError: (a ``ValueError``) the shares leave no training data, or a fold's
            training, calibration or test period is empty or lacks one outcome (the message
            names the fold, the period and its counts).
        ValueError: ``frame`` lacks ``event_timestamp`` or ``label``, an example has no
            moment, or a predictor returns the wrong number of probabilities.
    """
    missing = [c for c in ("event_timestamp", "label") if c not in frame.columns]
    if missing:
        raise ValueError(f"the examples lack the columns {missing}")
    if frame["event_timestamp"].isna().any():
        raise ValueError("some examples have no event_timestamp: they cannot be placed in time")
    if n_folds < 1:
        raise BacktestDataError(f"n_folds must be at least 1, not {n_folds}")
    if test_share <= 0 or calibration_share <= 0:
        raise BacktestDataError(
            f"test_share ({test_share}) and calibration_share ({calibration_share}) must be "
            "positive"
        )
    if n_folds * test_share + calibration_share >= 1 - _TOLERANCE:
        raise BacktestDataError(
            f"{n_folds} test periods of {test_share:.0%} and a calibration slice of "
            f"{calibration_share:.0%} leave nothing to train on the first fold"
        )
    ordered = frame.sort_values("event_timestamp", kind="stable", ignore_index=True)
    plans = [
        _plan_fold(ordered, k, n_folds, test_share, calibration_share)
        for k in range(1, n_folds + 1)
    ]
    folds = []
    for k, parts in enumerate(plans, start=1):
        train, calibration, test = parts
        predict = fit(train, calibration)
        probabilities = np.asarray(predict(test), dtype=np.float64)
        if probabilities.shape != (len(test),):
            raise ValueError(
                f"backtest fold {k}: the predictor returned shape {probabilities.shape} for "
                f"{len(test)} test examples"
            )
        labels = test["label"].to_numpy()
        metrics = evaluate_probabilities(
            labels=labels,
            probabilities=probabilities,
            bands=None if band_of is None else np.asarray(band_of(probabilities)),
        )
        record: dict[str, Any] = {"fold": k}
        for name, part in zip(_PERIODS, parts, strict=True):
            record[f"{name}_start"] = part["event_timestamp"].iloc[0]
            record[f"{name}_end"] = part["event_timestamp"].iloc[-1]
        record.update(
            n_train=len(train),
            n_calibration=len(calibration),
            n_test=len(test),
            train_positives=int(train["label"].sum()),
            positives=int(labels.sum()),
            **metrics,
        )
        logger.info(
            "backtest fold %d/%d: test %s to %s, %d examples, ROC AUC %.3f, ECE %.4f",
            k,
            n_folds,
            record["test_start"],
            record["test_end"],
            len(test),
            metrics["roc_auc"],
            metrics["ece"],
        )
        folds.append(record)
    return BacktestResult(folds=folds, test_share=test_share, calibration_share=calibration_share)


def _plan_fold(
    ordered: pd.DataFrame, k: int, n_folds: int, test_share: float, calibration_share: float
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Training, calibration and test examples of fold ``k``, checked."""
    times = ordered["event_timestamp"]
    n = len(ordered)

    def moment(share_before: float) -> Any:
        """The snapshot moment at which the given share of examples lies before."""
        return times.iloc[min(math.floor(n * share_before + _TOLERANCE), n - 1)] if n else None

    later = n_folds - k  # test periods after this fold's
    test_start = moment(1 - (later + 1) * test_share)
    calibration_start = moment(1 - (later + 1) * test_share - calibration_share)
    in_test = times >= test_start
    if later:
        in_test &= times < moment(1 - later * test_share)
    parts = (
        ordered[times < calibration_start],
        ordered[(times >= calibration_start) & (times < test_start)],
        ordered[in_test],
    )
    for name, part in zip(_PERIODS, parts, strict=True):
        positives = int(part["label"].sum())
        if part.empty or positives in (0, len(part)):
            span = (
                f"{part['event_timestamp'].iloc[0]} to {part['event_timestamp'].iloc[-1]}"
                if len(part)
                else "no snapshot moment: too many examples share a moment"
            )
            raise BacktestDataError(
                f"backtest fold {k} of {n_folds}: the {name} period ({span}) has {len(part)} "
                f"examples, {positives} converted and {len(part) - positives} not, and needs "
                "both outcomes; use fewer folds, smaller shares or a longer history"
            )
    return parts


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _json_value(value: Any) -> Any:
    """A JSON-ready copy: timestamps as ISO strings, NaN as None, numpy scalars as Python."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
