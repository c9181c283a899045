"""The scoring model as registered in MLflow: the contract between training and serving.

A :class:`LeadScorer` holds everything a served score needs: the fitted preprocessing, the
LightGBM booster, the calibration map, the band thresholds, the feature service that feeds it
and the plain-language labels of its features. Training builds one and logs it as an MLflow
pyfunc model; serving loads ``models:/<name>@champion`` and calls :meth:`LeadScorer.score_rows`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from leadscore.feature_catalog import FeatureSpec
from leadscore.preprocessing import FeatureEncoder

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


class LeadScorer(PythonModel):
    """Preprocessing + LightGBM + Platt calibration + bands + explanation labels.

    Args:
        encoder: Fitted feature encoder (defines the model's feature order).
        booster: Trained LightGBM booster on the encoded features.
        calibration: ``(slope, intercept)`` mapping the raw margin to a calibrated logit.
        bands: ``{"hot_min": p, "warm_min": p}`` probability cut-offs.
        specs: Feature specs (names, kinds, reason labels) of the model's features.
        feature_service: Feast feature service serving must read.
    """

    def __init__(
        self,
        *,
        encoder: FeatureEncoder,
        booster: lgb.Booster,
        calibration: tuple[float, float],
        bands: Mapping[str, float],
        specs: Sequence[FeatureSpec],
        feature_service: str,
    ) -> None:
        self.encoder = encoder
        self.booster = booster
        self.calibration = (float(calibration[0]), float(calibration[1]))
        self.bands = {"hot_min": float(bands["hot_min"]), "warm_min": float(bands["warm_min"])}
        self.specs = {s.name: s for s in specs}
        self.feature_service = feature_service

    @property
    def features(self) -> list[str]:
        """Model features, in order."""
        return list(self.encoder.features)

    # -- probabilities -------------------------------------------------------------------
    def margin(self, X: np.ndarray, *, num_threads: int = 1) -> np.ndarray:
        """Raw (uncalibrated) log-odds of encoded rows."""
        return np.asarray(self.booster.predict(X, raw_score=True, num_threads=num_threads))

    def calibrate(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated probability from the raw margin."""
        slope, intercept = self.calibration
        return _sigmoid(slope * margin + intercept)

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
        removed. Up to ``top_k`` reasons are returned, positive and negative, strongest first.
        """
        X = self.encoder.encode_rows(rows)
        contrib = np.asarray(self.booster.predict(X, pred_contrib=True, num_threads=num_threads))
        margin = contrib.sum(axis=1)
        probability = self.calibrate(margin)
        bands = self.band_of(probability)
        phi = contrib[:, :-1]
        effect = probability[:, None] - self.calibrate(margin[:, None] - phi)
        names = self.features
        scores = []
        for i, row in enumerate(rows):
            order = np.argsort(-np.abs(effect[i]))[:top_k]
            reasons = [
                Reason(
                    feature=names[j],
                    label=self.specs[names[j]].describe(row.get(names[j])),
                    value=_rounded(row.get(names[j])),
                    contribution=round(float(effect[i, j]), 4),
                )
                for j in order
                if phi[i, j] != 0.0
            ]
            scores.append(LeadScore(float(probability[i]), str(bands[i]), reasons))
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
        same order, factors with no SHAP value left out), computed with one LightGBM
        ``pred_contrib`` call per chunk of ``chunk_rows`` rows.

        Args:
            frame: One row per lead with every model feature (missing values as NaN/None).
            top_k: Most reasons per row.
            num_threads: LightGBM threads (0: its default, all cores).
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
            contrib = np.asarray(
                self.booster.predict(X, pred_contrib=True, num_threads=num_threads)
            )
            margin = contrib.sum(axis=1)
            probability = self.calibrate(margin)
            phi = contrib[:, :-1]
            effect = probability[:, None] - self.calibrate(margin[:, None] - phi)
            order = np.argsort(-np.abs(effect), axis=1)[:, :top_k]
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
