"""LightGBM on a local Dask cluster gives a booster as good as one trained in process."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.distributed import train_on_dask

pytestmark = pytest.mark.slow


def test_dask_training_matches_local_training_quality():
    # given: a categorical and two numeric columns that drive the label
    rng = np.random.default_rng(1)
    n = 12_000
    X = np.column_stack([rng.normal(size=n), rng.normal(size=n), rng.integers(0, 4, n)])
    logit = 1.2 * X[:, 0] - 0.8 * X[:, 1] + np.array([-1.0, 0.0, 0.5, 1.0])[X[:, 2].astype(int)]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    train, test = slice(0, 9_000), slice(9_000, n)
    params = {"num_leaves": 15, "learning_rate": 0.1, "min_child_samples": 50, "verbose": -1}
    # when
    booster = train_on_dask(
        X=X[train],
        y=y[train],
        params=params,
        num_boost_round=60,
        feature_names=["a", "b", "kind"],
        categorical_indices=[2],
        scheduler="local",
        partitions=3,
    )
    # then
    assert booster.num_trees() == 60
    assert booster.feature_name() == ["a", "b", "kind"]
    auc = roc_auc_score(y[test], booster.predict(X[test]))
    import lightgbm as lgb

    local = lgb.train(
        {**params, "objective": "binary"},
        lgb.Dataset(X[train], label=y[train], categorical_feature=[2]),
        num_boost_round=60,
    )
    local_auc = roc_auc_score(y[test], local.predict(X[test]))
    assert auc > 0.75 and abs(auc - local_auc) < 0.02


def test_an_unreachable_scheduler_is_named(monkeypatch):
    import training.distributed

    monkeypatch.setattr(training.distributed, "DASK_CONNECT_SECONDS", 1)
    with pytest.raises(ValueError, match=r"tcp://127\.0\.0\.1:1"):
        train_on_dask(
            X=np.zeros((10, 1)),
            y=np.zeros(10),
            params={},
            num_boost_round=1,
            feature_names=["a"],
            categorical_indices=[],
            scheduler="tcp://127.0.0.1:1",
            partitions=1,
        )


def test_fit_scorer_on_dask_gives_a_calibrated_scorer():
    import pandas as pd

    from leadscore.feature_catalog import FeatureSpec
    from training.model import fit_scorer

    rng = np.random.default_rng(2)
    n = 6_000
    frame = pd.DataFrame(
        {
            "visits": rng.poisson(3, n).astype(float),
            "plan": rng.choice(["basic", "pro", "enterprise"], n),
        }
    )
    logit = (
        -2.5
        + 0.4 * frame["visits"]
        + frame["plan"].map({"basic": 0, "pro": 0.8, "enterprise": 1.5})
    )
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    specs = (
        FeatureSpec("visits", "numeric", "v", "Visits.", "visits: {value}"),
        FeatureSpec("plan", "categorical", "v", "Plan.", "plan: {value}"),
    )
    scorer = fit_scorer(
        train=frame.iloc[:4_000],
        calibration=frame.iloc[4_000:5_000],
        specs=specs,
        params={"n_estimators": 40, "num_leaves": 7, "learning_rate": 0.1, "min_child_samples": 50},
        bands={"hot_min": 0.3, "warm_min": 0.1},
        feature_service="test",
        seed=1,
        dask_scheduler="local",
        dask_partitions=2,
    )
    test = frame.iloc[5_000:]
    probability = scorer.predict_proba_frame(test)
    assert roc_auc_score(test["label"], probability) > 0.7
    assert abs(probability.mean() - test["label"].mean()) < 0.05
    assert scorer.score_rows([{"visits": 9.0, "plan": "enterprise"}])[0].probability > 0.5
