"""`leadscore promote`, `rollback`, `models history` and `retrain` on the end-to-end stack's
data, each test with a registry (and, to ingest outcomes, a warehouse) of its own."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from leadscore import settings as settings_module
from leadscore.feature_catalog import MODEL_FEATURES
from leadscore.settings import Settings
from pipelines.cli import app
from pipelines.ingest import ingest_tables, load_table
from pipelines.train_flow import run_training
from training.promotion import current_user

runner = CliRunner()


@pytest.mark.parametrize("command", [["promote"], ["rollback"], ["retrain"], ["models", "history"]])
def test_every_governance_command_has_help_with_examples(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Examples" in result.output


@pytest.fixture
def env(stack, tmp_path, monkeypatch) -> dict[str, str]:
    """Environment of the commands: the stack's stores, a copy of its registry and warehouse."""
    registry = tmp_path / "mlflow.db"
    source = sqlite3.connect(stack.settings.tracking_uri.removeprefix("sqlite:///"))
    replica = sqlite3.connect(registry)
    try:
        source.backup(replica)
    finally:
        source.close()
        replica.close()
    warehouse = tmp_path / "warehouse"
    shutil.copytree(stack.settings.paths.warehouse, warehouse)
    values = {
        "LEADSCORE_PATHS__ROOT": str(stack.settings.paths.root),
        "LEADSCORE_PATHS__WAREHOUSE_DIR": str(warehouse),
        "LEADSCORE_PATHS__QUARANTINE_DIR": str(tmp_path / "quarantine"),
        "LEADSCORE_MLFLOW__TRACKING_URI": f"sqlite:///{registry}",
        "LEADSCORE_MLFLOW__ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "LEADSCORE_MLFLOW__EXPERIMENT": "governance-cli-test",
        "LEADSCORE_TRAINING__N_ESTIMATORS": str(stack.settings.training.n_estimators),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    settings_module.get_settings.cache_clear()
    yield values
    settings_module.get_settings.cache_clear()


def _settings() -> Settings:
    settings_module.get_settings.cache_clear()
    return settings_module.get_settings()


def _invoke(*args: str) -> tuple[int, str]:
    """Run a command; its exit code and output with whitespace folded."""
    settings_module.get_settings.cache_clear()
    result = runner.invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def _train_worse(settings: Settings) -> str:
    weak = settings.model_copy(
        update={"training": settings.training.model_copy(update={"n_estimators": 1})}
    )
    specs = [f for f in MODEL_FEATURES if f.name in ("industry", "company_size")]
    return run_training(weak, specs=specs).model.version


@pytest.mark.slow
def test_a_worse_challenger_is_refused_with_each_metric_then_forced_with_a_reason(env, stack):
    # given
    settings = _settings()
    champion = stack.training.model.version
    weak = _train_worse(settings)
    # when
    code, output = _invoke("promote")
    # then: refused, each metric with both values, the tolerance and the verdict
    assert code == 1, output
    assert f"refused: version {weak} stays a challenger" in output
    assert "roc_auc: challenger 0." in output and "tolerance 0.0050" in output
    assert "brier: challenger 0." in output and "tolerance 0.0020" in output
    assert "worse" in output and "--force" in output
    # when: forced without a reason
    code, output = _invoke("promote", "--force")
    # then
    assert code == 1 and "--force needs --reason" in output
    # when: forced with one
    code, output = _invoke("promote", "--force", "--reason", "sales wants firmographics only")
    # then
    assert code == 0, output
    assert f"forced: version {weak} is the champion (was version {champion})" in output
    code, output = _invoke("models", "history")
    assert code == 0, output
    assert "forced" in output and "refused" in output
    assert "sales wants firmographics only" in output and current_user() in output
    # when: rolled back
    code, output = _invoke("rollback", "--reason", "hot leads stopped converting")
    # then
    assert code == 0, output
    assert f"rolled back: version {champion} is the champion again (was version {weak})" in (output)
    code, output = _invoke("models", "history", "--limit", "1")
    assert code == 0 and "rollback" in output and "forced" not in output
    assert "hot leads stopped converting" in output


@pytest.mark.slow
def test_rollback_without_a_previous_champion_and_promote_without_a_challenger_explain(env):
    # given: the stack's history: its first version only (bootstrap)
    code, output = _invoke("rollback")
    assert code == 1
    assert "no previous champion" in output
    code, output = _invoke("promote", "--version", "999")
    assert code == 1 and "has no version '999'" in output


def _new_outcomes(settings: Settings, count: int) -> pd.DataFrame:
    """Outcomes for ``count`` open leads, closed an hour after the lead was created."""
    leads = load_table(settings.paths.warehouse, "leads")
    outcomes = load_table(settings.paths.warehouse, "outcomes")
    latest = leads["created_at"].max() - timedelta(days=2)
    open_leads = leads[~leads["lead_id"].isin(outcomes["lead_id"]) & (leads["created_at"] < latest)]
    chosen = open_leads.sort_values("lead_id").head(count)
    return pd.DataFrame(
        {
            "lead_id": chosen["lead_id"].to_numpy(),
            "closed_at": (chosen["created_at"] + timedelta(hours=1)).to_numpy(),
            "result": ["won" if i % 3 == 0 else "lost" for i in range(len(chosen))],
            "amount": [1000.0] * len(chosen),
        }
    )


@pytest.mark.slow
def test_retrain_stops_without_new_outcomes_and_reports_them_once_ingested(env, tmp_path):
    # given: nothing new since the stack's training
    settings = _settings()
    # when
    code, output = _invoke("retrain")
    # then
    assert code == 0, output
    assert "0 new outcome(s) since the last training" in output
    assert "no new outcomes: nothing to retrain on" in output
    # given: 25 outcomes fed back by sales
    stored = len(load_table(settings.paths.warehouse, "outcomes"))
    path = Path(tmp_path / "deals.parquet")
    _new_outcomes(settings, 25).to_parquet(path)
    ingest_tables(
        sources={"outcomes": path},
        warehouse_dir=settings.paths.warehouse,
        quarantine_dir=settings.paths.quarantine,
    )
    assert len(load_table(settings.paths.warehouse, "outcomes")) == stored + 25
    # when
    code, output = _invoke("retrain")
    # then: the count, both models' metrics on the same period and the decision
    assert code == 0, output
    assert "25 new outcome(s) since the last training" in output
    assert "trained version" in output
    assert "roc_auc: challenger" in output and "champion" in output
    assert "promoted: version" in output or "refused: version" in output
    # and that training saw them: nothing new any more
    code, output = _invoke("retrain")
    assert "0 new outcome(s)" in output and "nothing to retrain on" in output
