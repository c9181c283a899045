"""`leadscore train`: excluded features, the leakage audit in MLflow, and clean refusals."""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import mlflow
from leadscore import settings as settings_module
from leadscore.tracking import connect_tracking
from pipelines.cli import app

runner = CliRunner()


def _train(root, monkeypatch, *args, **env):
    """Run `leadscore train` with settings rooted in ``root``; output with whitespace folded."""
    monkeypatch.setenv("LEADSCORE_PATHS__ROOT", str(root))
    for key, value in env.items():
        monkeypatch.setenv(f"LEADSCORE_TRAINING__{key.upper()}", value)
    settings_module.get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["train", *args])
    finally:
        settings_module.get_settings.cache_clear()
    return result, " ".join(result.output.split())


def test_an_unknown_feature_to_exclude_fails_at_once_listing_the_features(tmp_path, monkeypatch):
    # given: no data at all; the names are checked before anything is read
    # when
    result, output = _train(tmp_path, monkeypatch, "--exclude", "lifecycle_stag")
    # then
    assert result.exit_code == 1
    assert "training.exclude_features (--exclude) names unknown feature(s): lifecycle_stag" in (
        output
    )
    assert "lifecycle_stage" in output.split("the features are:")[1]


@pytest.mark.slow
def test_too_few_outcomes_end_the_command_with_the_counts(stack, monkeypatch):
    # when: the stack's data against a minimum it cannot meet
    result, output = _train(stack.settings.paths.root, monkeypatch, min_won="100000")
    # then
    assert result.exit_code == 1
    assert re.search(r"not enough outcomes to train: \d+ won and \d+ lost leads", output)
    assert "training.min_won / training.min_lost" in output


@pytest.mark.slow
def test_train_with_excluded_features_logs_the_audit(stack, monkeypatch):
    # when: two features are excluded on the command line
    result, output = _train(
        stack.settings.paths.root,
        monkeypatch,
        "--exclude",
        "lifecycle_stage",
        "--exclude",
        "days_in_stage",
    )
    # then
    assert result.exit_code == 0, output
    assert "2 excluded" in output and "excluded: lifecycle_stage, days_in_stage" in output
    version = re.search(r"registered leadscore version (\d+)", output)
    assert version is not None
    # and the new version leaves them out, and its run logged the audit and the split
    connect_tracking(stack.settings.tracking_uri)
    model_version = MlflowClient().get_model_version("leadscore", version.group(1))
    assert model_version.run_id is not None
    run = MlflowClient().get_run(model_version.run_id)
    assert run.data.params["n_excluded"] == "2"
    assert int(run.data.params["n_features"]) == len(stack.training.audit.kept) - 2
    assert run.data.tags["split"] == "time"
    audit = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/leakage_audit.json")
    assert audit["excluded"] == ["lifecycle_stage", "days_in_stage"]
    assert "lifecycle_stage" not in audit["kept"] and "lifecycle_stage" not in audit["auc"]
    # the champion is still the stack's own model
    champion = MlflowClient().get_model_version_by_alias("leadscore", "champion")
    assert str(champion.version) == stack.training.model.version
