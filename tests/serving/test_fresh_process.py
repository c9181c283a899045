"""The API loads its model from the settings' registry, whatever MLflow pointed at before.

`leadscore serve` starts in a fresh process, where MLflow points at its own default store;
the tests' process has usually been pointed at the stack's store by training already.
"""

from __future__ import annotations

from tests.api_keys import api_client


def test_the_champion_loads_when_mlflow_points_elsewhere(stack, tmp_path):
    import mlflow

    # given: MLflow pointed at another, empty store (as in a fresh process)
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    try:
        # when
        with api_client(stack.settings) as client:
            ready = client.get("/ready")
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    # then
    assert ready.status_code == 200, ready.text
    assert ready.json()["model_version"] == stack.training.model.version
