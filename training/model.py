"""Fit the LightGBM scorer and calibrate its probabilities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from leadscore.feature_catalog import FeatureSpec
from leadscore.preprocessing import FeatureEncoder
from leadscore.scorer import LeadScorer


def fit_scorer(
    *,
    train: pd.DataFrame,
    calibration: pd.DataFrame,
    specs: Sequence[FeatureSpec],
    params: Mapping[str, float | int],
    bands: Mapping[str, float],
    feature_service: str,
    seed: int,
) -> LeadScorer:
    """Train LightGBM on ``train`` and fit Platt calibration on the later ``calibration`` slice.

    The classes are not re-weighted: re-weighting would distort the probabilities that the
    calibration then has to undo. Calibration is a logistic regression on the raw margin,
    which is monotone, so the ranking (and every explanation's sign) is unchanged.

    Args:
        train: Examples with feature columns and ``label``.
        calibration: Later examples used only to calibrate.
        specs: The model's features.
        params: ``n_estimators``, ``num_leaves``, ``learning_rate``, ``min_child_samples``,
            ``lambda_l2``.
        bands: Band cut-offs stored with the model.
        feature_service: Feast feature service the model reads.
        seed: Random seed.

    Returns:
        The fitted scorer.
    """
    names = [s.name for s in specs]
    categorical = [s.name for s in specs if s.kind == "categorical"]
    encoder = FeatureEncoder(features=names, categorical=categorical).fit(train)
    dataset = lgb.Dataset(
        encoder.transform(train),
        label=train["label"].to_numpy(),
        feature_name=names,
        categorical_feature=encoder.categorical_indices_,
        free_raw_data=True,
    )
    booster = lgb.train(
        {
            "objective": "binary",
            "num_leaves": int(params["num_leaves"]),
            "learning_rate": float(params["learning_rate"]),
            "min_child_samples": int(params["min_child_samples"]),
            "lambda_l2": float(params.get("lambda_l2", 0.0)),
            "feature_fraction": 0.9,
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
        },
        dataset,
        num_boost_round=int(params["n_estimators"]),
    )
    margin = booster.predict(encoder.transform(calibration), raw_score=True)
    platt = LogisticRegression(C=1e6, max_iter=1000)
    platt.fit(np.asarray(margin).reshape(-1, 1), calibration["label"].to_numpy())
    return LeadScorer(
        encoder=encoder,
        booster=booster,
        calibration=(float(platt.coef_[0, 0]), float(platt.intercept_[0])),
        bands=bands,
        specs=specs,
        feature_service=feature_service,
    )
