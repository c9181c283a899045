"""The whole loop on the embedded default: generator -> ingest -> Feast -> train -> MLflow."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import mlflow
from leadscore.tracking import connect_tracking

pytestmark = pytest.mark.slow


def test_model_ranks_and_bands_leads_on_the_newest_period(stack):
    # given: the stack trained on demo data (forward-in-time split)
    metrics = stack.training.metrics
    # then: well above chance, and hot leads convert far more often than cold ones
    assert metrics["roc_auc"] > 0.75
    assert metrics["hot_conversion"] > metrics["warm_conversion"] > metrics["cold_conversion"]
    assert metrics["hot_conversion"] > 3 * metrics["cold_conversion"]
    # and the probabilities are honest on average
    assert abs(metrics["mean_probability"] - metrics["base_rate"]) < 0.5 * metrics["base_rate"]


def test_open_outcomes_are_left_out_and_counted(stack):
    labels = stack.training.labels
    assert labels.immature > 0
    assert labels.examples == labels.snapshots - labels.immature - labels.after_outcome
    assert 0 < labels.positives < labels.examples


def test_bad_rows_are_quarantined_and_good_rows_all_ingested(stack):
    # given: demo data with 1% corrupted rows
    for name, report in stack.ingest.tables.items():
        # then: every row is accounted for
        assert report.rows_read == report.rows_accepted + report.rows_quarantined, name
    leads = stack.ingest.tables["leads"]
    assert leads.rows_quarantined > 0
    # every valid demo lead (those with a truth row) is in the warehouse
    from pipelines.ingest import load_table

    stored = load_table(stack.settings.paths.warehouse, "leads")
    assert set(stack.demo.truth["lead_id"]) <= set(stored["lead_id"])


def test_model_version_is_registered_as_champion_with_what_serving_needs(stack):
    # given
    connect_tracking(stack.settings.tracking_uri)
    client = MlflowClient()
    # when
    version = client.get_model_version_by_alias("leadscore", "champion")
    run = client.get_run(version.run_id)
    # then
    assert str(version.version) == stack.training.model.version
    assert version.tags["feature_service"] == "lead_scoring_v2"
    assert float(version.tags["band_hot_min"]) > float(version.tags["band_warm_min"])
    for metric in ("test_roc_auc", "test_pr_auc", "test_brier", "test_log_loss"):
        assert metric in run.data.metrics
    model = mlflow.pyfunc.load_model("models:/leadscore@champion")
    assert model.metadata.signature is not None
    assert model.metadata.saved_input_example_info is not None


def test_predicted_probabilities_track_the_true_conversion_probability(stack):
    # given: the generator's true probability of each lead (never shown to the model)
    from pipelines.examples import current_features, load_champion

    frame = current_features(stack.settings)
    scorer = load_champion(stack.settings)
    # when
    p = scorer.predict_proba_frame(frame)
    truth = stack.demo.truth.set_index("lead_id").loc[frame["lead_id"], "p_convert"].to_numpy()
    # then: predictions correlate with the truth
    assert pd.Series(p).corr(pd.Series(truth), method="spearman") > 0.5
