"""GET /v1/model and POST /v1/admin/reload on the real stack."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from leadscore.tracking import connect_tracking
from tests.api_keys import api_client
from tests.serving.test_reload import MODEL, _with_registry

pytestmark = pytest.mark.slow


def test_the_model_route_describes_the_served_version(client, stack):
    # when
    response = client.get("/v1/model")
    # then
    assert response.status_code == 200, response.text
    body = response.json()
    scorer = client.app.state.service.scorer
    assert body["name"] == "leadscore"
    assert body["version"] == stack.training.model.version
    assert "champion" in body["aliases"]
    assert body["registered_at"] and body["trained_at"] and body["run_id"]
    metrics = body["test_metrics"]
    assert {"roc_auc", "brier"} <= set(metrics)
    assert metrics["roc_auc"] == pytest.approx(stack.training.metrics["roc_auc"], abs=1e-9)
    assert body["bands"] == scorer.bands
    assert body["band_policy"]["policy"] == stack.settings.bands.policy
    assert body["calibration"] == scorer.calibration_method in {"sigmoid", "isotonic"}
    assert body["feature_service"] == scorer.feature_service
    assert body["features"] == scorer.features and body["features"]


def test_an_admin_reload_answers_the_served_version(client, stack):
    response = client.post("/v1/admin/reload")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "model_name": "leadscore",
        "model_version": stack.training.model.version,
        "changed": False,
    }


def test_a_failed_reload_answers_503_and_keeps_the_old_model(stack, tmp_path):
    settings = _with_registry(stack.settings, tmp_path, copy=True, reload_seconds=0)
    with api_client(settings) as client:
        # given: the champion alias moved to a version whose model cannot be read
        before = client.get("/ready").json()["model_version"]
        connect_tracking(settings.tracking_uri)
        registry = MlflowClient()
        broken = registry.create_model_version(MODEL, source=str(tmp_path / "gone")).version
        registry.set_registered_model_alias(MODEL, "champion", broken)
        # when
        response = client.post("/v1/admin/reload")
        # then
        assert response.status_code == 503
        assert response.json()["error"] == "not_ready"
        assert f"models:/{MODEL}/{broken} could not be loaded" in response.json()["detail"]
        assert client.get("/ready").json()["model_version"] == before
        assert client.get("/v1/model").json()["version"] == before
        # and once the alias is back, a reload answers the served version again
        registry.set_registered_model_alias(MODEL, "champion", before)
        again = client.post("/v1/admin/reload")
        assert again.status_code == 200
        assert again.json() == {"model_name": MODEL, "model_version": before, "changed": False}
