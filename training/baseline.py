"""A logistic-regression baseline: the yardstick logged next to LightGBM, never served.

If the boosted model cannot beat a plain, well-preprocessed logistic regression on the same
examples and the same time split, its complexity buys nothing. The baseline is one
scikit-learn estimator, so that it logs and loads with ``mlflow.sklearn`` (``log_model(...,
pyfunc_predict_fn="predict_proba", skops_trusted_types=SKOPS_TRUSTED_TYPES)``, which
:func:`log_baseline` does):

- numeric and flag features: median imputation, a missing-value indicator for every column
  with missing values at fit time, then ``StandardScaler``;
- categorical features: to text with missing as ``"missing"``, then one-hot encoding
  (categories seen fewer than :data:`MIN_CATEGORY_COUNT` times grouped as infrequent, unknown
  categories ignored);
- ``LogisticRegression`` (lbfgs, ``C=1``: with standardised inputs and thousands of examples
  the penalty barely matters, and tuning it would need another slice of data);
- Platt scaling of its decision function on the calibration slice, like the boosted model:
  ``CalibratedClassifierCV(FrozenEstimator(pipeline), method="sigmoid")`` fitted on that
  slice only (a frozen estimator is not refitted, and all the data given is used to
  calibrate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

import mlflow
from leadscore.feature_catalog import FeatureSpec

MIN_CATEGORY_COUNT = 20
"""Categories seen fewer times in training are grouped into one infrequent category."""

SKOPS_TRUSTED_TYPES = [
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "training.baseline.as_text_frame",
]
"""Types beyond skops' defaults that the logged baseline holds (MLflow saves sklearn models
with skops and refuses types it is not told to trust)."""

PIP_REQUIREMENTS = ["scikit-learn>=1.9,<1.10", "pandas>=2.3,<3", "numpy>=2.0,<3", "skops<1"]


def as_text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns as text, a missing value (None or NaN) as ``"missing"``.

    scikit-learn's imputers do not see ``None`` in object columns as missing, and its encoders
    would keep ``None`` and ``NaN`` as two categories.
    """
    text = frame.astype(object)
    return text.where(text.notna(), "missing").astype(str)


@dataclass(frozen=True)
class BaselineModel:
    """A calibrated logistic-regression baseline.

    Attributes:
        estimator: The whole model as one scikit-learn estimator (preprocessing, logistic
            regression and calibration); ``estimator.predict_proba(frame)[:, 1]`` is the
            probability of a won lead. Columns are selected by name, extra ones are ignored.
        features: The feature columns it reads.
    """

    estimator: CalibratedClassifierCV
    features: tuple[str, ...]

    def predict_proba_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of each row of a frame of features."""
        return np.asarray(self.estimator.predict_proba(frame[list(self.features)])[:, 1])


def baseline_pipeline(specs: Sequence[FeatureSpec], *, seed: int) -> Pipeline:
    """The unfitted preprocessing + logistic-regression pipeline of ``specs``."""
    numeric = [s.name for s in specs if s.kind in ("numeric", "flag")]
    categorical = [s.name for s in specs if s.kind == "categorical"]
    numeric_steps = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", add_indicator=True)),
            ("scale", StandardScaler()),
        ]
    )
    categorical_steps = Pipeline(
        [
            ("to_text", FunctionTransformer(as_text_frame, feature_names_out="one-to-one")),
            (
                "one_hot",
                OneHotEncoder(
                    handle_unknown="ignore", min_frequency=MIN_CATEGORY_COUNT, sparse_output=False
                ),
            ),
        ]
    )
    transformers = []
    if numeric:
        transformers.append(("numeric", numeric_steps, numeric))
    if categorical:
        transformers.append(("categorical", categorical_steps, categorical))
    return Pipeline(
        [
            ("preprocess", ColumnTransformer(transformers, remainder="drop")),
            (
                "logistic",
                LogisticRegression(C=1.0, solver="lbfgs", max_iter=5000, random_state=seed),
            ),
        ]
    )


def fit_baseline(
    *,
    train: pd.DataFrame,
    calibration: pd.DataFrame,
    specs: Sequence[FeatureSpec],
    seed: int,
) -> BaselineModel:
    """Fit the logistic-regression baseline on ``train`` and calibrate it on ``calibration``.

    Args:
        train: Examples with feature columns and ``label``.
        calibration: Later examples, used only to calibrate (Platt scaling).
        specs: The features (``internal`` ones are ignored).
        seed: Random seed.

    Returns:
        The calibrated baseline.

    Raises:
        ValueError: ``specs`` holds no model feature.
    """
    specs = [s for s in specs if s.kind != "internal"]
    if not specs:
        raise ValueError("the baseline needs at least one numeric, flag or categorical feature")
    features = tuple(s.name for s in specs)
    pipeline = baseline_pipeline(specs, seed=seed)
    pipeline.fit(train[list(features)], train["label"].to_numpy())
    calibrated = CalibratedClassifierCV(FrozenEstimator(pipeline), method="sigmoid")
    calibrated.fit(calibration[list(features)], calibration["label"].to_numpy())
    return BaselineModel(estimator=calibrated, features=features)


def log_baseline(
    model: BaselineModel, *, name: str = "baseline", input_example: pd.DataFrame | None = None
) -> ModelInfo:
    """Log the baseline to the active MLflow run (a run is started if none is active).

    Loaded back with ``mlflow.pyfunc.load_model(info.model_uri)``, its ``predict`` returns
    ``predict_proba``: one column per class, the second the probability of a won lead.

    Args:
        model: The fitted baseline.
        name: Name of the logged model.
        input_example: Rows with the features (extra columns are ignored), of which five are
            stored with the model; with it, the model gets a signature: every feature optional
            (missing values are expected) and the two class probabilities as output.
    """
    example = signature = None
    if input_example is not None:
        example = input_example[list(model.features)].head(5)
        inferred = infer_signature(example, model.estimator.predict_proba(example))
        inputs = Schema([ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs])
        signature = ModelSignature(inputs=inputs, outputs=inferred.outputs)
    return mlflow.sklearn.log_model(
        model.estimator,
        name=name,
        pyfunc_predict_fn="predict_proba",
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        pip_requirements=PIP_REQUIREMENTS,
        input_example=example,
        signature=signature,
    )
