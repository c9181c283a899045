"""The logistic-regression baseline: better than chance, calibrated, logged and loaded by MLflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import mlflow
from tests.leadscore.test_scorer_batch import SPECS, _frame
from training.baseline import fit_baseline, log_baseline


@pytest.fixture(scope="module")
def baseline():
    return fit_baseline(train=_frame(6000, 1), calibration=_frame(3000, 2), specs=SPECS, seed=0)


@pytest.fixture
def tracking(tmp_path):
    """A tracking store of the test's own; the process-wide URIs are restored afterwards."""
    from mlflow.tracking import get_registry_uri

    saved = mlflow.get_tracking_uri(), get_registry_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/m.db")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path}/m.db")
    try:
        yield mlflow.create_experiment("baseline", artifact_location=tmp_path.as_uri())
    finally:
        mlflow.set_tracking_uri(saved[0])
        mlflow.set_registry_uri(saved[1])


@pytest.fixture(scope="module")
def test_period() -> pd.DataFrame:
    frame = _frame(5000, 3)
    frame.loc[frame.index[:5], "source_channel"] = "carrier_pigeon"  # unseen in training
    frame.loc[frame.index[5:10], "source_channel"] = np.nan
    return frame


def test_the_baseline_ranks_better_than_chance_and_is_calibrated(baseline, test_period):
    # when
    p = baseline.predict_proba_frame(test_period)
    # then
    assert roc_auc_score(test_period["label"], p) > 0.7
    assert abs(p.mean() - test_period["label"].mean()) < 0.02
    assert np.all((p > 0) & (p < 1))
    assert baseline.features == tuple(s.name for s in SPECS)


def test_the_baseline_reads_only_its_features_and_takes_none_for_missing(baseline, test_period):
    # given: serving-shaped rows (None for missing, objects) with extra columns
    frame = test_period.head(20)
    rows = frame.astype(object).where(frame.notna(), None).assign(lead_id=range(20))
    # then
    np.testing.assert_allclose(
        baseline.predict_proba_frame(rows), baseline.predict_proba_frame(frame), atol=1e-12
    )


def test_the_baseline_logs_and_loads_through_mlflow_sklearn(baseline, test_period, tracking):
    # when: logged to a tracking store of its own
    with mlflow.start_run(experiment_id=tracking):
        info = log_baseline(baseline, input_example=test_period)
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    out = np.asarray(loaded.predict(test_period.drop(columns="label")))
    # then: pyfunc answers predict_proba, the second column the probability of a won lead
    assert out.shape == (len(test_period), 2)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    np.testing.assert_allclose(out[:, 1], baseline.predict_proba_frame(test_period), atol=1e-12)
    assert mlflow.sklearn.load_model(info.model_uri).classes_.tolist() == [0, 1]
    # and its signature takes missing values in any feature
    assert not any(c.required for c in info.signature.inputs.inputs)
    holes = test_period.head(4).drop(columns="label").astype(object)
    holes.iloc[0, :] = None
    np.testing.assert_allclose(
        np.asarray(loaded.predict(holes))[:, 1], baseline.predict_proba_frame(holes), atol=1e-12
    )
