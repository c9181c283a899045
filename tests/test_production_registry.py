"""MLflow tracking and model registry on PostgreSQL: train into it, serve from it.

Runs against the real PostgreSQL on 127.0.0.1 (skipped if it is down, failed under
``CI=true``) in a database of its own, dropped at the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from leadscore.settings import Settings
from pipelines.train_flow import run_training
from tests.api_keys import api_client
from tests.services import PostgresParams, require_postgres, unique_name

pytestmark = [pytest.mark.slow, pytest.mark.service]


@pytest.fixture
def mlflow_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the MLflow backend store; its SQLAlchemy URL."""
    import psycopg

    params: PostgresParams = require_postgres()
    name = unique_name("leadscore_mlflow_")
    admin = f"host={params.host} port={params.port} dbname={params.database} user={params.user}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg://{params.user}@{params.host}:{params.port}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_models_are_tracked_registered_and_served_from_postgres(stack, mlflow_database, tmp_path):
    # given: the end-to-end stack's data and stores, with MLflow on PostgreSQL
    base: Settings = stack.settings
    settings = base.model_copy(
        update={
            "mlflow": base.mlflow.model_copy(
                update={"tracking_uri": mlflow_database, "artifact_dir": tmp_path / "artifacts"}
            )
        }
    )
    # when
    result = run_training(settings)
    # then: the first version in this registry is the champion, and the API serves it
    assert result.model.version == "1"
    assert settings.mlflow.champion_alias in result.model.aliases
    lead_id = int(stack.demo.leads["lead_id"].iloc[0])
    with api_client(settings) as client:
        ready = client.get("/ready").json()
        score = client.post("/v1/score", json={"lead_id": lead_id})
    assert ready["model_version"] == "1", ready
    assert score.status_code == 200 and score.json()["model_version"] == "1"

    import mlflow

    runs = mlflow.search_runs(experiment_names=[settings.mlflow.experiment])
    assert len(runs) == 1 and runs["metrics.test_roc_auc"].iloc[0] > 0.8
