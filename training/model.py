"""Fit the LightGBM scorer and calibrate its probabilities on the later calibration slice.

Calibration maps the booster's raw margin (log-odds) to a probability. Two maps are fitted on
the calibration slice, which follows the training period in time:

- ``sigmoid``: Platt scaling, a logistic regression on the margin (two parameters);
- ``isotonic``: the best non-decreasing step function of the margin
  (``IsotonicRegression(out_of_bounds="clip")``), which also fixes miscalibration that is not
  logistic in shape, at the price of more variance.

``auto`` compares them by cross-fitting within the slice (:data:`CV_FOLDS` stratified folds:
fit on four fifths, predict the fifth) and keeps the one with the lower pooled out-of-fold log
loss, then refits it on the whole slice. Isotonic is only a candidate with at least
:data:`MIN_ISOTONIC_CLASS` examples of each outcome in the slice: with fewer events its steps
follow noise (Niculescu-Mizil & Caruana, 2005, saw it overfit below about a thousand
calibration examples) and five folds of a few dozen events make the comparison itself noisy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

from leadscore.bands import band_policy as fit_band_policy
from leadscore.feature_catalog import FeatureSpec
from leadscore.preprocessing import FeatureEncoder
from leadscore.scorer import CalibrationMap, IsotonicCalibration, LeadScorer
from leadscore.settings import BandSettings

logger = logging.getLogger(__name__)

CalibrationMethod = Literal["auto", "sigmoid", "isotonic"]

MIN_ISOTONIC_CLASS = 200
"""Fewest won, and fewest not-won, calibration examples for ``auto`` to consider isotonic."""
CV_FOLDS = 5
"""Folds of the cross-fitting that compares the calibration methods."""
ISOTONIC_CLIP = 1e-4
"""Isotonic probabilities are kept within [this, 1 - this]: a step without a single won (or
lost) example is not a certainty, and a log loss must stay finite."""
DEFAULT_FEATURE_FRACTION = 0.9


def lightgbm_params(params: Mapping[str, float | int], *, seed: int) -> dict[str, Any]:
    """LightGBM training parameters from the model parameters (without ``n_estimators``).

    Args:
        params: ``num_leaves``, ``learning_rate``, ``min_child_samples``, optionally
            ``lambda_l2`` (default 0) and ``feature_fraction`` (default 0.9).
        seed: Random seed.
    """
    return {
        "objective": "binary",
        "num_leaves": int(params["num_leaves"]),
        "learning_rate": float(params["learning_rate"]),
        "min_child_samples": int(params["min_child_samples"]),
        "lambda_l2": float(params.get("lambda_l2", 0.0)),
        "feature_fraction": float(params.get("feature_fraction", DEFAULT_FEATURE_FRACTION)),
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        # Categories with few leads (e.g. rare countries) otherwise get splits of their own
        # that fit noise: smooth them toward the prior and demand enough leads per group.
        "cat_smooth": 50.0,
        "cat_l2": 10.0,
        "min_data_per_group": 200,
        "seed": seed,
        "deterministic": True,
        "num_threads": 0,
        "verbose": -1,
    }


def fit_encoder(train: pd.DataFrame, specs: Sequence[FeatureSpec]) -> FeatureEncoder:
    """The feature encoder of ``specs`` fitted on the training examples."""
    names = [s.name for s in specs]
    categorical = [s.name for s in specs if s.kind == "categorical"]
    return FeatureEncoder(features=names, categorical=categorical).fit(train)


def lightgbm_dataset(
    encoder: FeatureEncoder, frame: pd.DataFrame, *, reference: lgb.Dataset | None = None
) -> lgb.Dataset:
    """A LightGBM dataset of encoded examples (categoricals declared, ``label`` as target)."""
    return lgb.Dataset(
        encoder.transform(frame),
        label=frame["label"].to_numpy(),
        feature_name=list(encoder.features),
        categorical_feature=encoder.categorical_indices_,
        reference=reference,
        free_raw_data=True,
    )


# -- calibration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationReport:
    """How the calibration was chosen.

    Attributes:
        requested: The configured method (``auto``, ``sigmoid`` or ``isotonic``).
        method: The method fitted (``sigmoid`` or ``isotonic``).
        cv_log_loss: Pooled out-of-fold log loss per method within the calibration slice
            (NaN when it could not be cross-fitted).
        folds: Folds of the cross-fitting (0: none).
        n: Calibration examples.
        positives: Won examples among them.
        isotonic_eligible: Enough of each outcome for ``auto`` to consider isotonic.
        reason: Why ``method`` was fitted, in a sentence.
    """

    requested: CalibrationMethod
    method: Literal["sigmoid", "isotonic"]
    cv_log_loss: dict[str, float]
    folds: int
    n: int
    positives: int
    isotonic_eligible: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (also kept with the model as ``calibration_report``)."""
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """The cross-fitted log losses, named for MLflow (``calibration_cv_log_loss_<m>``)."""
        return {f"calibration_cv_log_loss_{k}": v for k, v in self.cv_log_loss.items()}


def fit_platt(margin: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Platt scaling: ``(slope, intercept)`` of a logistic regression on the raw margin."""
    platt = LogisticRegression(C=1e6, max_iter=1000)
    platt.fit(np.asarray(margin, dtype=np.float64).reshape(-1, 1), labels)
    return float(platt.coef_[0, 0]), float(platt.intercept_[0])


def fit_isotonic_regression(margin: np.ndarray, labels: np.ndarray) -> IsotonicRegression:
    """The scikit-learn isotonic regression of the labels on the raw margin (clipped ends)."""
    isotonic = IsotonicRegression(
        out_of_bounds="clip", y_min=ISOTONIC_CLIP, y_max=1.0 - ISOTONIC_CLIP, increasing=True
    )
    return isotonic.fit(np.asarray(margin, dtype=np.float64), np.asarray(labels, np.float64))


def fit_isotonic(margin: np.ndarray, labels: np.ndarray) -> IsotonicCalibration:
    """Isotonic calibration as two arrays evaluated with ``np.interp`` (equal to sklearn's)."""
    isotonic = fit_isotonic_regression(margin, labels)
    return IsotonicCalibration(isotonic.X_thresholds_, isotonic.y_thresholds_)


def _fit_map(
    method: Literal["sigmoid", "isotonic"], margin: np.ndarray, labels: np.ndarray
) -> CalibrationMap:
    return fit_platt(margin, labels) if method == "sigmoid" else fit_isotonic(margin, labels)


def apply_calibration(calibration: CalibrationMap, margin: np.ndarray) -> np.ndarray:
    """Probabilities of raw margins under a calibration map (as :class:`LeadScorer` does)."""
    if isinstance(calibration, IsotonicCalibration):
        return calibration(margin)
    slope, intercept = calibration
    return np.asarray(1.0 / (1.0 + np.exp(-(slope * margin + intercept))))


def _log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    p = np.clip(probabilities, 1e-15, 1.0 - 1e-15)
    return float(log_loss(labels, p, labels=[0, 1]))


def _cross_fitted_log_loss(
    margin: np.ndarray, labels: np.ndarray, *, folds: int, seed: int
) -> dict[str, float]:
    methods: tuple[Literal["sigmoid", "isotonic"], ...] = ("sigmoid", "isotonic")
    out_of_fold = {m: np.empty(len(labels)) for m in methods}
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_idx, held_idx in splitter.split(margin.reshape(-1, 1), labels):
        for method, predicted in out_of_fold.items():
            fitted = _fit_map(method, margin[fit_idx], labels[fit_idx])
            predicted[held_idx] = apply_calibration(fitted, margin[held_idx])
    return {m: _log_loss(labels, p) for m, p in out_of_fold.items()}


def fit_calibration(
    margin: np.ndarray,
    labels: np.ndarray,
    *,
    method: CalibrationMethod = "auto",
    seed: int = 0,
) -> tuple[CalibrationMap, CalibrationReport]:
    """Fit the calibration of raw margins on the calibration slice, choosing it under ``auto``.

    Both methods are always cross-fitted (when each fold can hold both outcomes) so that their
    log losses can be logged whichever is fitted. An explicit ``isotonic`` is honoured even
    with few events, with a warning.

    Args:
        margin: Raw booster margins of the calibration examples.
        labels: Their 0/1 labels.
        method: ``auto``, ``sigmoid`` or ``isotonic``.
        seed: Seed of the cross-fitting folds.

    Returns:
        The calibration map fitted on all of ``margin`` and the report of the choice.

    Raises:
        ValueError: ``method`` is unknown, or the labels hold a single class.
    """
    if method not in ("auto", "sigmoid", "isotonic"):
        raise ValueError(f"calibration method must be auto, sigmoid or isotonic, not {method!r}")
    x = np.asarray(margin, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    positives = int(y.sum())
    minority = min(positives, len(y) - positives)
    if minority == 0:
        raise ValueError("calibration needs won and not-won examples in the calibration slice")
    eligible = minority >= MIN_ISOTONIC_CLASS
    folds = min(CV_FOLDS, minority)
    if folds >= 2:
        cv = _cross_fitted_log_loss(x, y, folds=folds, seed=seed)
    else:
        folds, cv = 0, {"sigmoid": float("nan"), "isotonic": float("nan")}
    counts = f"{positives} won and {len(y) - positives} not won calibration examples"
    chosen: Literal["sigmoid", "isotonic"]
    if method != "auto":
        chosen = method
        reason = f"{method} as configured"
        if method == "isotonic" and not eligible:
            logger.warning(
                "isotonic calibration on %s (fewer than %d of an outcome) may follow noise",
                counts,
                MIN_ISOTONIC_CLASS,
            )
            reason += f" (only {counts})"
    elif not eligible:
        chosen = "sigmoid"
        reason = f"sigmoid: isotonic needs {MIN_ISOTONIC_CLASS} of each outcome, not {counts}"
    elif cv["isotonic"] < cv["sigmoid"]:
        chosen = "isotonic"
        reason = "isotonic: lower cross-fitted log loss"
    else:
        chosen = "sigmoid"
        reason = "sigmoid: lower or equal cross-fitted log loss"
    report = CalibrationReport(
        requested=method,
        method=chosen,
        cv_log_loss=cv,
        folds=folds,
        n=len(y),
        positives=positives,
        isotonic_eligible=eligible,
        reason=reason,
    )
    logger.info("calibration: %s (cross-fitted log loss %s)", reason, cv)
    return _fit_map(chosen, x, y), report


# -- the scorer ----------------------------------------------------------------------------
def fit_scorer(
    *,
    train: pd.DataFrame,
    calibration: pd.DataFrame,
    specs: Sequence[FeatureSpec],
    params: Mapping[str, float | int],
    bands: Mapping[str, float],
    feature_service: str,
    seed: int,
    calibration_method: CalibrationMethod = "auto",
    band_settings: BandSettings | None = None,
    dask_scheduler: str | None = None,
    dask_partitions: int = 4,
) -> LeadScorer:
    """Train LightGBM on ``train`` and calibrate it on the later ``calibration`` slice.

    The classes are not re-weighted (no ``scale_pos_weight`` or ``is_unbalance``): the model
    is trained for probabilities, and re-weighting would inflate every probability of a won
    lead by the weight, which the calibration would then have to undo from the few examples of
    its slice; ranking quality does not need it with gradient boosting. Both calibration maps
    are non-decreasing in the raw margin, so the ranking (and every explanation's sign) is
    unchanged.

    Args:
        train: Examples with feature columns and ``label``.
        calibration: Later examples used only to calibrate (and, with ``band_settings``, to
            set the band cut-offs: they need ``event_timestamp`` for ``top_n_per_day`` and are
            counted once per ``lead_id`` when that column is present).
        specs: The model's features.
        params: ``n_estimators``, ``num_leaves``, ``learning_rate``, ``min_child_samples``,
            optionally ``lambda_l2`` (default 0) and ``feature_fraction`` (default 0.9).
        bands: Band cut-offs stored with the model (used when ``band_settings`` is None).
        feature_service: Feast feature service the model reads.
        seed: Random seed.
        calibration_method: ``auto`` (the lower cross-fitted log loss on the calibration
            slice), ``sigmoid`` or ``isotonic``; see :func:`fit_calibration`.
        band_settings: A band policy to apply instead of ``bands``: its cut-offs are computed
            from the calibrated probabilities of the calibration slice and recorded in
            ``scorer.band_policy``.
        dask_scheduler: Train the booster on Dask (``local`` or a scheduler address; see
            :mod:`training.distributed`) instead of in process.
        dask_partitions: Row chunks on Dask.

    Returns:
        The fitted scorer; ``scorer.calibration_method`` is the method fitted and
        ``scorer.calibration_report`` the choice (:meth:`CalibrationReport.as_dict`).
    """
    encoder = fit_encoder(train, specs)
    if dask_scheduler:
        from training.distributed import train_on_dask

        booster = train_on_dask(
            X=encoder.transform(train),
            y=train["label"].to_numpy(),
            params=lightgbm_params(params, seed=seed),
            num_boost_round=int(params["n_estimators"]),
            feature_names=list(encoder.features),
            categorical_indices=encoder.categorical_indices_,
            scheduler=dask_scheduler,
            partitions=dask_partitions,
        )
    else:
        booster = lgb.train(
            lightgbm_params(params, seed=seed),
            lightgbm_dataset(encoder, train),
            num_boost_round=int(params["n_estimators"]),
        )
    margin = np.asarray(booster.predict(encoder.transform(calibration), raw_score=True))
    calibration_map, report = fit_calibration(
        margin, calibration["label"].to_numpy(), method=calibration_method, seed=seed
    )
    scorer = LeadScorer(
        encoder=encoder,
        booster=booster,
        calibration=calibration_map,
        bands=bands,
        specs=specs,
        feature_service=feature_service,
        calibration_report=report.as_dict(),
    )
    if band_settings is not None:
        policy = fit_band_policy(
            band_settings,
            scorer.calibrate(margin),
            calibration.get("event_timestamp"),
            lead_ids=calibration.get("lead_id"),
        )
        scorer.set_bands(policy, policy={**policy, "reference": "calibration slice"})
    return scorer
