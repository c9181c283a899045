"""Model governance: challenger registration, same-period comparison, the promotion rule,
rollback and the decision history, on the end-to-end stack's data with a registry of its own
per test (the stack's champion never changes)."""

from __future__ import annotations

import math
import sqlite3
from typing import get_args

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from leadscore.feature_catalog import MODEL_FEATURES
from leadscore.settings import PromotionMetric, PromotionSettings, Settings
from leadscore.tracking import connect_tracking
from pipelines.examples import current_features
from pipelines.ingest import load_table
from pipelines.train_flow import TrainingResult, run_training
from training.promotion import (
    METRIC_DIRECTIONS,
    MetricVerdict,
    PromotionError,
    current_user,
    evaluate_champion_on,
    new_outcomes,
    promote,
    read_history,
    rollback,
)

MODEL = "leadscore"


def registry_copy(settings: Settings, tmp_path) -> Settings:
    """The same data and stores with a copy of the registry (and artifacts written apart)."""
    target = tmp_path / "mlflow.db"
    source = sqlite3.connect(settings.tracking_uri.removeprefix("sqlite:///"))
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    mlflow_settings = settings.mlflow.model_copy(
        update={
            "tracking_uri": f"sqlite:///{target}",
            "artifact_dir": tmp_path / "artifacts",
            "experiment": "governance-test",
        }
    )
    return settings.model_copy(update={"mlflow": mlflow_settings})


def worse_training(settings: Settings) -> TrainingResult:
    """A deliberately weak challenger: one tree on two firmographic features."""
    weak = settings.model_copy(
        update={"training": settings.training.model_copy(update={"n_estimators": 1})}
    )
    specs = [f for f in MODEL_FEATURES if f.name in ("industry", "company_size")]
    return run_training(weak, specs=specs)


def client_for(settings: Settings) -> MlflowClient:
    connect_tracking(settings.tracking_uri)
    return MlflowClient()


def champion_of(settings: Settings) -> str:
    return str(client_for(settings).get_model_version_by_alias(MODEL, "champion").version)


@pytest.fixture
def settings(stack, tmp_path) -> Settings:
    return registry_copy(stack.settings, tmp_path)


# --- the rule itself ------------------------------------------------------------------------


def test_every_promotion_metric_has_a_direction():
    assert set(METRIC_DIRECTIONS) == set(get_args(PromotionMetric))


@pytest.mark.parametrize(
    ("metric", "challenger", "champion", "passed"),
    [
        ("roc_auc", 0.900, 0.904, True),  # worse by less than the tolerance
        ("roc_auc", 0.890, 0.904, False),
        ("roc_auc", 0.950, 0.904, True),
        ("brier", 0.0530, 0.0520, True),
        ("brier", 0.0600, 0.0520, False),
        ("brier", 0.0400, 0.0520, True),
        ("roc_auc", math.nan, 0.904, False),
    ],
)
def test_a_metric_passes_when_not_worse_than_the_champion_beyond_its_tolerance(
    metric, challenger, champion, passed
):
    tolerance = {"roc_auc": 0.005, "brier": 0.002}[metric]
    verdict = MetricVerdict(metric, challenger, champion, tolerance)
    assert verdict.passed is passed
    assert verdict.verdict == ("not worse" if passed else "worse")
    assert metric in verdict.describe() and f"{tolerance:.4f}" in verdict.describe()


def test_promotion_settings_refuse_unknown_metrics_and_negative_tolerances():
    with pytest.raises(ValidationError, match="roc_auc"):
        PromotionSettings(metrics=["auc"])
    with pytest.raises(ValidationError, match="tolerance"):
        PromotionSettings(tolerance={"brier": -0.1})
    with pytest.raises(ValidationError, match="metrics"):
        PromotionSettings(metrics=[])


# --- registration -----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_first_version_is_champion_and_challenger_and_the_bootstrap_is_recorded(
    stack, tmp_path
):
    # given: the stack's data and an empty registry
    mlflow_settings = stack.settings.mlflow.model_copy(
        update={
            "tracking_uri": f"sqlite:///{tmp_path / 'empty.db'}",
            "artifact_dir": tmp_path / "artifacts",
        }
    )
    settings = stack.settings.model_copy(update={"mlflow": mlflow_settings})
    # when
    result = run_training(settings)
    # then
    assert result.model.version == "1"
    assert set(result.model.aliases) == {"challenger", "champion"}
    (decision,) = read_history(settings)
    assert decision.action == "bootstrap" and decision.version == "1"
    assert decision.previous_champion is None
    version = client_for(settings).get_model_version(MODEL, "1")
    assert "champion_version_compared" not in version.tags
    # and promoting it again is a clear error, not a decision
    with pytest.raises(PromotionError, match="version 1 is already the champion"):
        promote(settings)


@pytest.mark.slow
def test_a_new_version_is_the_challenger_with_the_champions_metrics_on_its_test_period(
    settings,
):
    # given
    champion = champion_of(settings)
    # when: the same training again
    result = run_training(settings)
    # then: challenger only, the champion stays
    assert result.model.aliases == ["challenger"]
    assert champion_of(settings) == champion
    client = client_for(settings)
    version = client.get_model_version(MODEL, result.model.version)
    tags = version.tags
    assert tags["registered_at"] and tags["test_start"]
    assert tags["champion_version_compared"] == champion
    # the same examples scored by the same kind of model give the same metrics
    for metric in ("roc_auc", "brier", "pr_auc", "log_loss"):
        assert float(tags[f"test_{metric}"]) == pytest.approx(result.metrics[metric])
        assert float(tags[f"champion_test_{metric}"]) == pytest.approx(
            result.metrics[metric], abs=2e-3
        )
    run = client.get_run(version.run_id)
    assert "champion_test_roc_auc" in run.data.metrics
    # and what retraining will count new outcomes against
    outcomes = load_table(settings.paths.warehouse, "outcomes")
    assert int(run.data.params["n_outcomes"]) == len(outcomes)
    assert pd.Timestamp(run.data.params["latest_outcome_at"]) == outcomes["closed_at"].max()


@pytest.mark.slow
def test_the_champion_is_evaluated_on_the_given_examples_or_says_what_it_lacks(settings):
    # given: current features with made-up labels
    frame = current_features(settings).head(400).copy()
    frame["label"] = [i % 2 for i in range(len(frame))]
    champion = champion_of(settings)
    # when
    evaluation = evaluate_champion_on(
        frame,
        tracking_uri=settings.tracking_uri,
        model_name=MODEL,
        champion_alias="champion",
    )
    lacking = evaluate_champion_on(
        frame.drop(columns=["lifecycle_stage"]),
        tracking_uri=settings.tracking_uri,
        model_name=MODEL,
        champion_alias="champion",
    )
    # then
    assert evaluation is not None and evaluation.version == champion
    assert evaluation.error is None and 0 <= evaluation.metrics["roc_auc"] <= 1
    assert lacking is not None and lacking.metrics == {}
    assert lacking.error is not None and "lifecycle_stage" in lacking.error
    with pytest.raises(ValueError, match="label"):
        evaluate_champion_on(
            frame.drop(columns=["label"]),
            tracking_uri=settings.tracking_uri,
            model_name=MODEL,
            champion_alias="champion",
        )
    # and without a champion there is nothing to compare with
    assert (
        evaluate_champion_on(
            frame, tracking_uri=settings.tracking_uri, model_name=MODEL, champion_alias="none"
        )
        is None
    )


# --- promotion --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worse_challenger_is_refused_naming_the_metric_and_the_refusal_is_recorded(settings):
    # given
    champion = champion_of(settings)
    weak = worse_training(settings)
    # when
    decision = promote(settings)
    # then
    assert decision.action == "refused"
    assert decision.version == weak.model.version and decision.champion == champion
    assert champion_of(settings) == champion
    auc = next(v for v in decision.verdicts if v.metric == "roc_auc")
    assert not auc.passed and auc.challenger < auc.champion
    assert auc.challenger == pytest.approx(weak.metrics["roc_auc"])
    summary = decision.summary()
    assert "refused" in summary and "roc_auc" in summary and "worse" in summary
    tags = client_for(settings).get_model_version(MODEL, weak.model.version).tags
    assert "roc_auc" in tags["refusal"] and tags["refused_at"]
    assert read_history(settings, limit=1)[0].action == "refused"


@pytest.mark.slow
def test_an_equal_challenger_is_promoted_and_both_versions_record_it(settings):
    # given
    champion = champion_of(settings)
    challenger = run_training(settings).model.version
    # when
    decision = promote(settings)
    # then
    assert decision.action == "promoted"
    assert decision.version == challenger and decision.previous_champion == champion
    assert {v.metric for v in decision.verdicts} == {"roc_auc", "brier"}
    assert all(v.passed for v in decision.verdicts)
    client = client_for(settings)
    assert champion_of(settings) == challenger
    promoted = client.get_model_version(MODEL, challenger)
    assert "challenger" not in promoted.aliases  # the challenger became the champion
    assert promoted.tags["promoted_from_version"] == champion
    assert promoted.tags["promotion_action"] == "promoted"
    assert promoted.tags["promoted_by"] == current_user()
    demoted = client.get_model_version(MODEL, champion)
    assert demoted.tags["replaced_by_version"] == challenger and demoted.tags["demoted_at"]
    # and with no challenger left, promote says what to do
    with pytest.raises(LookupError, match="leadscore train"):
        promote(settings)


@pytest.mark.slow
def test_force_needs_a_reason_and_records_it(settings):
    # given
    champion = champion_of(settings)
    weak = worse_training(settings)
    # when / then: no reason, no decision
    with pytest.raises(PromotionError, match="--reason"):
        promote(settings, force=True)
    with pytest.raises(PromotionError, match="--reason"):
        promote(settings, force=True, reason="  ")
    assert champion_of(settings) == champion
    # when
    decision = promote(settings, force=True, reason="sales asked for the simpler model")
    # then
    assert decision.action == "forced" and champion_of(settings) == weak.model.version
    assert "the rule would refuse it" in decision.detail
    latest = read_history(settings, limit=1)[0]
    assert latest.action == "forced" and latest.reason == "sales asked for the simpler model"
    assert latest.previous_champion == champion and latest.user == current_user()
    tags = client_for(settings).get_model_version(MODEL, weak.model.version).tags
    assert tags["promotion_reason"] == "sales asked for the simpler model"


@pytest.mark.slow
def test_a_challenger_compared_with_an_earlier_champion_is_refused_until_trained_again(
    settings,
):
    # given: challenger A compared with the champion, then B made champion
    first = run_training(settings).model.version
    second = run_training(settings).model.version
    promote(settings, version=second)
    # when
    decision = promote(settings, version=first)
    # then
    assert decision.action == "refused" and decision.verdicts == ()
    assert f"the champion is now version {second}" in decision.detail
    assert "leadscore retrain" in decision.detail and champion_of(settings) == second
    # and an unknown version is named
    with pytest.raises(LookupError, match="no version '999'"):
        promote(settings, version="999")


# --- rollback ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_rollback_undoes_champion_changes_one_at_a_time(settings):
    # given: champion c0, then c1 promoted, then a weak c2 forced
    c0 = champion_of(settings)
    c1 = run_training(settings).model.version
    promote(settings)
    c2 = worse_training(settings).model.version
    promote(settings, force=True, reason="experiment")
    assert champion_of(settings) == c2
    # when
    first = rollback(settings, reason="hot leads stopped converting")
    # then
    assert first.action == "rollback" and first.version == c1 and first.previous_champion == c2
    assert champion_of(settings) == c1
    tags = client_for(settings).get_model_version(MODEL, c2).tags
    assert tags["rollback_reason"] == "hot leads stopped converting" and tags["rolled_back_at"]
    # when: again
    second = rollback(settings)
    # then
    assert second.version == c0 and champion_of(settings) == c0
    history = read_history(settings, limit=4)
    assert [d.action for d in history] == ["rollback", "rollback", "forced", "promoted"]


@pytest.mark.slow
def test_rollback_without_a_previous_champion_is_a_clear_error(stack, tmp_path):
    # given: a registry whose only champion is its first version
    mlflow_settings = stack.settings.mlflow.model_copy(
        update={
            "tracking_uri": f"sqlite:///{tmp_path / 'one.db'}",
            "artifact_dir": tmp_path / "artifacts",
        }
    )
    settings = stack.settings.model_copy(update={"mlflow": mlflow_settings})
    run_training(settings)
    # when / then
    with pytest.raises(PromotionError, match="no previous champion"):
        rollback(settings)
    assert champion_of(settings) == "1"


# --- new outcomes -----------------------------------------------------------------------------


@pytest.mark.slow
def test_new_outcomes_are_those_the_last_training_did_not_see(settings):
    # given: a training on the warehouse as it is
    latest = run_training(settings).model.version
    outcomes = load_table(settings.paths.warehouse, "outcomes")
    # when
    none_new = new_outcomes(settings, outcomes)
    later = outcomes.head(7).assign(lead_id=outcomes["lead_id"].max() + 1 + pd.RangeIndex(7))
    seven_new = new_outcomes(settings, pd.concat([outcomes, later], ignore_index=True))
    # then
    assert none_new.count == 0 and none_new.last_version == latest
    assert none_new.seen == len(outcomes)
    assert seven_new.count == 7 and seven_new.total == len(outcomes) + 7
    assert "7 new outcome(s) since the last training (version" in seven_new.describe()
