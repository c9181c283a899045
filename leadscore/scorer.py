"""The scoring model as registered in MLflow: the contract between training and serving.

A :class:`LeadScorer` holds everything a served score needs: the fitted preprocessing, the
LightGBM booster, the calibration map (Platt scaling or isotonic, both evaluated with numpy),
the band thresholds and the policy that set them, the feature service that feeds it and the
plain-language labels of its features. Training builds one and logs it as an MLflow
pyfunc model; serving loads ``models:/<name>@champion`` and calls :meth:`LeadScorer.score_rows`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel
from numba import njit

from leadscore.feature_catalog import FeatureSpec
from leadscore.preprocessing import FeatureEncoder
from leadscore.treeshap import TreeShapEngine

BANDS = ("hot", "warm", "cold")


@dataclass(frozen=True)
class Reason:
    """One factor behind a score.

    Attributes:
        feature: Model feature name.
        label: Plain-language description with the lead's value.
        value: The lead's value of the feature.
        contribution: Change in probability this factor causes (signed).
    """

    feature: str
    label: str
    value: Any
    contribution: float


@dataclass(frozen=True)
class LeadScore:
    """A calibrated probability with its band and reasons."""

    probability: float
    band: str
    reasons: list[Reason]


def _rounded(value: Any) -> Any:
    """Numbers as a person reads them (recency of 12.4655... days is 12.47 days)."""
    return round(value, 2) if isinstance(value, float) else value


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class IsotonicCalibration:
    """An isotonic calibration map, evaluated with :func:`numpy.interp` (no scikit-learn).

    ``x`` and ``y`` are a fitted ``IsotonicRegression(out_of_bounds="clip")``'s
    ``X_thresholds_`` and ``y_thresholds_``: between two thresholds the probability is
    interpolated linearly, beyond the first or the last it stays at the end value, exactly as
    ``IsotonicRegression.predict`` does.

    The map is a staircase: a lead whose margin moves within one step keeps its probability.
    Reasons would then give most factors no effect at all, so probability *changes* are read on
    the centred map instead (:meth:`smooth`): the line through the middle of each step (centred
    isotonic regression), drawn in log-odds so that beyond the first and last middles it
    continues with the map's overall slope instead of going flat. It rises strictly, so every
    factor with a log-odds contribution moves it, in the same direction.

    Args:
        x: Margin thresholds, strictly increasing.
        y: Calibrated probability at each threshold, non-decreasing, within [0, 1].

    Raises:
        ValueError: The arrays are empty, differ in length or are not monotone.
    """

    def __init__(self, x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> None:
        self.x = np.asarray(x, dtype=np.float64).copy()
        self.y = np.asarray(y, dtype=np.float64).copy()
        if self.x.ndim != 1 or self.x.shape != self.y.shape or len(self.x) == 0:
            raise ValueError("isotonic calibration needs two 1-d arrays of the same, non-zero size")
        if np.any(np.diff(self.x) <= 0) or np.any(np.diff(self.y) < 0):
            raise ValueError("isotonic calibration needs increasing x and non-decreasing y")
        if self.y[0] < 0.0 or self.y[-1] > 1.0:
            raise ValueError("isotonic calibration probabilities must lie within [0, 1]")
        # One point per step: its middle margin and its probability (as log-odds).
        starts = np.flatnonzero(np.r_[True, np.diff(self.y) > 0])
        ends = np.r_[starts[1:], len(self.y)] - 1
        self.centre_x = (self.x[starts] + self.x[ends]) / 2.0
        centre_y = np.clip(self.y[starts], 1e-6, 1.0 - 1e-6)
        self.centre_logit = np.log(centre_y / (1.0 - centre_y))
        span = self.centre_x[-1] - self.centre_x[0]
        self.tail_slope = (
            float((self.centre_logit[-1] - self.centre_logit[0]) / span) if span > 0 else 0.0
        )

    def __call__(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated probability of raw margins (any shape)."""
        return np.interp(margin, self.x, self.y)

    @property
    def curve(self) -> tuple[Any, ...]:
        """The centred map as the compiled kernels take it (see :func:`_reason_probability`)."""
        return (True, self.centre_x, self.centre_logit, float(self.tail_slope), 0.0, 0.0)

    def smooth(self, margin: np.ndarray) -> np.ndarray:
        """The centred map (for reasons): through the middle of each step, linear tails."""
        margin = np.asarray(margin, dtype=np.float64)
        out = np.empty(margin.size)
        _reason_probabilities(np.ascontiguousarray(margin).ravel(), self.curve, out)
        return out.reshape(margin.shape)

    def __repr__(self) -> str:
        return f"IsotonicCalibration({len(self.x)} thresholds)"


CalibrationMap = tuple[float, float] | IsotonicCalibration
"""Platt scaling as ``(slope, intercept)`` of the raw margin, or an isotonic map."""


_NO_CENTRES = np.zeros(1)  # the centred map's arrays when the calibration is Platt scaling


@njit(cache=True, nogil=True)
def _reason_probability(margin: float, curve: tuple[Any, ...]) -> float:
    """The probability reasons are read on: Platt scaling, or the isotonic map's centred map
    (:meth:`IsotonicCalibration.smooth`, the same formula).

    ``curve``: ``(isotonic, centre_x, centre_logit, tail_slope, slope, intercept)``.
    """
    isotonic, cx, cl, tail, slope, intercept = curve
    if not isotonic:
        logit = slope * margin + intercept
    elif margin < cx[0]:
        logit = cl[0] + tail * (margin - cx[0])
    elif margin > cx[-1]:
        logit = cl[-1] + tail * (margin - cx[-1])
    else:
        logit = np.interp(margin, cx, cl)
    return 1.0 / (1.0 + np.exp(-logit))


@njit(cache=True, nogil=True)
def _reason_probabilities(margin: np.ndarray, curve: tuple[Any, ...], out: np.ndarray) -> None:
    """:func:`_reason_probability` of each margin."""
    for i in range(margin.shape[0]):
        out[i] = _reason_probability(margin[i], curve)


@njit(cache=True, nogil=True)
def _rank_reasons(
    margin: np.ndarray,
    phi: np.ndarray,
    curve: tuple[Any, ...],
    effect: np.ndarray,
    order: np.ndarray,
) -> None:
    """Each factor's probability change (``effect``, rows x factors) and the factors ranked
    strongest first (``order``, rows x k): by absolute change, ties by absolute log-odds, then
    by position (what ``np.lexsort((-|phi|, -|effect|))`` gives), compiled: for one lead this is
    a few microseconds instead of a dozen numpy calls."""
    n, f = phi.shape
    k = order.shape[1]
    for i in range(n):
        base = _reason_probability(margin[i], curve)
        for j in range(f):
            effect[i, j] = base - _reason_probability(margin[i] - phi[i, j], curve)
        by_phi = np.argsort(-np.abs(phi[i]), kind="mergesort")
        by_effect = np.argsort(-np.abs(effect[i][by_phi]), kind="mergesort")
        for r in range(k):
            order[i, r] = by_phi[by_effect[r]]


def _checked_bands(bands: Mapping[str, float]) -> dict[str, float]:
    hot, warm = float(bands["hot_min"]), float(bands["warm_min"])
    if not 0.0 <= warm < hot <= 1.0:
        raise ValueError(
            f"band thresholds must satisfy 0 <= warm_min < hot_min <= 1, not "
            f"warm_min={warm}, hot_min={hot}"
        )
    return {"hot_min": hot, "warm_min": warm}


class LeadScorer(PythonModel):
    """Preprocessing + LightGBM + calibration (Platt or isotonic) + bands + explanation labels.

    Args:
        encoder: Fitted feature encoder (defines the model's feature order).
        booster: Trained LightGBM booster on the encoded features.
        calibration: ``(slope, intercept)`` mapping the raw margin to a calibrated logit (Platt
            scaling), or an :class:`IsotonicCalibration` of the raw margin.
        bands: ``{"hot_min": p, "warm_min": p}`` probability cut-offs.
        specs: Feature specs (names, kinds, reason labels) of the model's features.
        feature_service: Feast feature service serving must read.
        band_policy: How the cut-offs were chosen (``{"policy": ..., ...}``); default: fixed
            cut-offs.
        calibration_report: How the calibration was chosen (methods compared and their
            cross-fitted log losses), kept with the model for the record.

    Raises:
        ValueError: The band thresholds are not ordered ``0 <= warm_min < hot_min <= 1``.
    """

    def __init__(
        self,
        *,
        encoder: FeatureEncoder,
        booster: lgb.Booster,
        calibration: CalibrationMap,
        bands: Mapping[str, float],
        specs: Sequence[FeatureSpec],
        feature_service: str,
        band_policy: Mapping[str, Any] | None = None,
        calibration_report: Mapping[str, Any] | None = None,
    ) -> None:
        self.encoder = encoder
        self.booster = booster
        # The reasons' engine: prepared once here and pickled with the model (leadscore.treeshap)
        self.explainer = TreeShapEngine.from_booster(booster)
        self.calibration: CalibrationMap = (
            calibration
            if isinstance(calibration, IsotonicCalibration)
            else (float(calibration[0]), float(calibration[1]))
        )
        self.specs = {s.name: s for s in specs}
        self.feature_service = feature_service
        self.calibration_report: dict[str, Any] = dict(calibration_report or {})
        self.bands: dict[str, float] = {}
        self.band_policy: dict[str, Any] = {}
        self.set_bands(bands, policy=band_policy)
        self._warm_up()

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Load pickles of older versions (fixed cut-offs, no calibration report, no engine)."""
        state.setdefault("calibration_report", {})
        state.setdefault("band_policy", {"policy": "cutoffs", **state.get("bands", {})})
        self.__dict__.update(state)
        if "explainer" not in state:  # prepared once, at load, never per request
            self.explainer = TreeShapEngine.from_booster(self.booster)
        self._warm_up()

    def _warm_up(self) -> None:
        """Compile the reasons' kernel (or load it from numba's disk cache) at load, not on
        the first request."""
        self._ranked(np.zeros(1), np.zeros((1, 1)), 1)

    def contributions(self, X: np.ndarray, *, num_threads: int = 1) -> np.ndarray:
        """SHAP values (log-odds) of encoded rows, the bias column last.

        Exactly LightGBM's ``pred_contrib`` (to floating-point rounding), from the prepared
        engine (:class:`leadscore.treeshap.TreeShapEngine`); each row sums to the raw margin.

        Args:
            X: Encoded rows (:meth:`FeatureEncoder.transform` or ``encode_rows``).
            num_threads: 1 in the calling thread; 0 every core.
        """
        return self.explainer.contributions(X, num_threads=num_threads)

    def set_bands(
        self, bands: Mapping[str, float], *, policy: Mapping[str, Any] | None = None
    ) -> None:
        """Replace the band thresholds and record the policy that chose them.

        Args:
            bands: ``hot_min`` and ``warm_min`` (other keys are ignored).
            policy: The policy and its inputs (e.g. from :func:`leadscore.bands.band_policy`);
                default: fixed cut-offs.

        Raises:
            ValueError: The thresholds are not ordered ``0 <= warm_min < hot_min <= 1``.
        """
        self.bands = _checked_bands(bands)
        self.band_policy = {"policy": "cutoffs", **dict(policy or {}), **self.bands}

    @property
    def calibration_method(self) -> Literal["sigmoid", "isotonic"]:
        """``sigmoid`` (Platt scaling) or ``isotonic``."""
        return "isotonic" if isinstance(self.calibration, IsotonicCalibration) else "sigmoid"

    @property
    def features(self) -> list[str]:
        """Model features, in order."""
        return list(self.encoder.features)

    # -- probabilities -------------------------------------------------------------------
    def margin(self, X: np.ndarray, *, num_threads: int = 1) -> np.ndarray:
        """Raw (uncalibrated) log-odds of encoded rows."""
        return np.asarray(self.booster.predict(X, raw_score=True, num_threads=num_threads))

    def calibrate(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated probability from the raw margin (any shape)."""
        calibration = self.calibration
        if isinstance(calibration, IsotonicCalibration):
            return calibration(margin)
        slope, intercept = calibration
        return _sigmoid(slope * margin + intercept)

    def _ranked(self, margin: np.ndarray, phi: np.ndarray, top_k: int) -> tuple[Any, Any]:
        """Probability change each factor causes (with it minus without its log-odds), and the
        ``top_k`` strongest factors of each row, strongest first (ties: larger log-odds first).

        Platt scaling is strictly increasing, so the change is read on the served probability.
        An isotonic map is a staircase, on which most factors would change nothing; its
        centred map (:meth:`IsotonicCalibration.smooth`) is used instead.

        Returns:
            ``effect`` (rows x factors) and ``order`` (rows x ``min(top_k, factors)``).
        """
        calibration = self.calibration
        effect = np.empty(phi.shape)
        order = np.empty((phi.shape[0], max(min(top_k, phi.shape[1]), 0)), dtype=np.int64)
        if isinstance(calibration, IsotonicCalibration):
            curve = calibration.curve
        else:
            curve = (False, _NO_CENTRES, _NO_CENTRES, 0.0, *calibration)
        _rank_reasons(
            np.ascontiguousarray(margin, dtype=np.float64),
            np.ascontiguousarray(phi, dtype=np.float64),
            curve,
            effect,
            order,
        )
        return effect, order

    def band_of(self, probability: np.ndarray) -> np.ndarray:
        """Band name of each probability."""
        return np.where(
            probability >= self.bands["hot_min"],
            "hot",
            np.where(probability >= self.bands["warm_min"], "warm", "cold"),
        )

    def predict_proba_frame(self, frame: pd.DataFrame, *, num_threads: int = 0) -> np.ndarray:
        """Calibrated probabilities of a frame of features (batch path)."""
        return self.calibrate(self.margin(self.encoder.transform(frame), num_threads=num_threads))

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Calibrated probabilities of feature rows (dicts), without pandas or reasons."""
        return self.calibrate(self.margin(self.encoder.encode_rows(rows)))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """MLflow pyfunc entry point: ``probability`` and ``band`` per input row."""
        probability = self.predict_proba_frame(model_input)
        return pd.DataFrame({"probability": probability, "band": self.band_of(probability)})

    # -- explained scores ----------------------------------------------------------------
    def score_rows(
        self, rows: Sequence[Mapping[str, Any]], *, top_k: int = 5, num_threads: int = 1
    ) -> list[LeadScore]:
        """Score and explain feature rows (dicts) without pandas: the serving path.

        Each reason's contribution is the probability change the factor causes: the
        calibrated probability minus the one obtained with that factor's SHAP value (in log-odds)
        removed (read on the centred map when the calibration is isotonic). Up to ``top_k``
        reasons are returned, positive and negative, strongest first (ties: larger log-odds
        contribution first).
        """
        X = self.encoder.encode_rows(rows)
        contrib = self.contributions(X, num_threads=num_threads)
        margin = contrib.sum(axis=1)
        probability = self.calibrate(margin).tolist()
        phi = contrib[:, :-1]
        effect, order = self._ranked(margin, phi, top_k)
        names = self.features
        hot, warm = self.bands["hot_min"], self.bands["warm_min"]
        scores = []
        for i, row in enumerate(rows):
            reasons = [
                Reason(
                    feature=names[j],
                    label=self.specs[names[j]].describe(row.get(names[j])),
                    value=_rounded(row.get(names[j])),
                    contribution=round(float(effect[i, j]), 4),
                )
                for j in order[i].tolist()
                if phi[i, j] != 0.0
            ]
            p = probability[i]  # the band as band_of gives it
            band = "hot" if p >= hot else "warm" if p >= warm else "cold"
            scores.append(LeadScore(p, band, reasons))
        return scores

    def explain_frame(
        self,
        frame: pd.DataFrame,
        *,
        top_k: int = 5,
        num_threads: int = 0,
        chunk_rows: int = 50_000,
    ) -> pd.DataFrame:
        """Score and explain every row of a frame of features: the batch path.

        The same probabilities, bands and reasons as :meth:`score_rows` (same contribution,
        same order, factors with no SHAP value left out), the SHAP values computed by the
        engine on every core for each chunk of ``chunk_rows`` rows.

        Args:
            frame: One row per lead with every model feature (missing values as NaN/None).
            top_k: Most reasons per row.
            num_threads: Explanation threads (0: every core).
            chunk_rows: Rows explained at a time (bounds the memory of the SHAP matrix).

        Returns:
            ``probability`` (float), ``band`` (str) and ``reasons`` (a list of
            ``{"feature", "label", "contribution"}`` dicts, strongest first) per row, with
            ``frame``'s index.

        Raises:
            ValueError: ``frame`` lacks model feature columns.
        """
        missing = [name for name in self.features if name not in frame.columns]
        if missing:
            raise ValueError(f"feature frame lacks model feature columns: {missing}")
        if chunk_rows <= 0:
            raise ValueError(f"chunk_rows must be positive, not {chunk_rows}")
        names = self.features
        specs = [self.specs[name] for name in names]
        probabilities: list[np.ndarray] = []
        reasons: list[list[dict[str, Any]]] = []
        for start in range(0, len(frame), chunk_rows):
            chunk = frame.iloc[start : start + chunk_rows]
            X = self.encoder.transform(chunk)
            contrib = self.contributions(X, num_threads=num_threads)
            margin = contrib.sum(axis=1)
            probability = self.calibrate(margin)
            phi = contrib[:, :-1]
            effect, order = self._ranked(margin, phi, top_k)
            values: dict[int, np.ndarray] = {}  # feature index -> the chunk's raw values
            for i in range(len(chunk)):
                row_reasons = []
                for j in order[i]:
                    if phi[i, j] == 0.0:
                        continue
                    if j not in values:
                        column = chunk[names[j]].astype(object)
                        values[j] = column.where(column.notna(), None).to_numpy()
                    row_reasons.append(
                        {
                            "feature": names[j],
                            "label": specs[j].describe(values[j][i]),
                            "contribution": round(float(effect[i, j]), 4),
                        }
                    )
                reasons.append(row_reasons)
            probabilities.append(probability)
        probability = np.concatenate(probabilities) if probabilities else np.empty(0)
        return pd.DataFrame(
            {
                "probability": probability,
                "band": self.band_of(probability).astype(object),
                "reasons": pd.Series(reasons, index=frame.index, dtype=object),
            },
            index=frame.index,
        )
