"""The scoring API on the real stack (MLflow champion + Feast SQLite online store)."""

from __future__ import annotations

import pytest

from tests.api_keys import api_client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def known_lead(stack) -> int:
    return int(stack.demo.truth["lead_id"].iloc[0])


def test_score_answers_probability_band_reasons_and_version(client, known_lead, stack):
    # when
    response = client.post("/v1/score", json={"lead_id": known_lead})
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["lead_id"] == known_lead
    assert 0.0 <= body["probability"] <= 1.0
    assert body["band"] in {"hot", "warm", "cold"}
    assert body["model_version"] == stack.training.model.version
    assert body["model_name"] == "leadscore"
    assert body["scored_at"]
    assert 0 < len(body["reasons"]) <= stack.settings.serving.top_reasons
    for reason in body["reasons"]:
        assert reason["label"] and reason["feature"]
        assert reason["contribution"] != 0


def test_band_matches_the_thresholds_stored_with_the_model(client, stack):
    # given: a sample of leads
    from pipelines.examples import load_champion

    bands = load_champion(stack.settings).bands
    for lead_id in stack.demo.truth["lead_id"].iloc[:40]:
        # when
        body = client.post("/v1/score", json={"lead_id": int(lead_id)}).json()
        # then
        p = body["probability"]
        expected = "hot" if p >= bands["hot_min"] else "warm" if p >= bands["warm_min"] else "cold"
        assert body["band"] == expected


def test_unknown_lead_gets_404_with_a_clear_message(client):
    response = client.post("/v1/score", json={"lead_id": 987654321})
    assert response.status_code == 404
    assert response.json()["error"] == "lead_not_found"
    assert "987654321" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "lead_id"),
        ({"lead_id": "abc"}, "lead_id"),
        ({"lead_id": -1}, "lead_id"),
        ({"lead_id": True}, "lead_id"),
    ],
)
def test_malformed_body_gets_422_naming_the_field(client, body, field):
    response = client.post("/v1/score", json=body)
    assert response.status_code == 422
    assert any(item["field"] == field for item in response.json()["detail"])


def test_unexpected_fields_are_rejected(client, known_lead):
    response = client.post("/v1/score", json={"lead_id": known_lead, "leadid": 3})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "leadid"


def test_health_ready_and_openapi(client, stack):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready"
    assert ready["model_version"] == stack.training.model.version
    assert "/v1/score" in client.get("/openapi.json").json()["paths"]


def test_not_ready_without_a_model(make_settings, tmp_path):
    # given: an empty registry
    settings = make_settings(tmp_path)
    with api_client(settings) as client:
        # when
        ready = client.get("/ready")
        score = client.post("/v1/score", json={"lead_id": 1})
    # then
    assert ready.status_code == 503
    assert "leadscore train" in ready.json()["detail"]
    assert score.status_code == 503
    assert score.json()["error"] == "not_ready"


def test_scores_keep_flowing_while_the_online_store_is_rematerialized(client, stack):
    # given: a full re-materialization of the online store running in the background
    import threading
    from datetime import UTC, datetime

    from leadscore.store import open_store

    store = open_store(stack.settings)
    done = threading.Event()

    def rematerialize() -> None:
        try:
            # One view keeps the test short; it is marked MATERIALIZING all the same.
            store.materialize(
                start_date=datetime(2000, 1, 1, tzinfo=UTC),
                end_date=datetime.now(UTC),
                feature_views=["lead_profile"],
            )
        finally:
            done.set()

    worker = threading.Thread(target=rematerialize)
    leads = [int(i) for i in stack.demo.truth["lead_id"].iloc[100:140]]
    statuses = []
    # when: the API keeps scoring meanwhile
    worker.start()
    while not done.is_set():
        for lead_id in leads:
            statuses.append(client.post("/v1/score", json={"lead_id": lead_id}).status_code)
    worker.join()
    # then
    assert len(statuses) >= len(leads)
    assert set(statuses) == {200}
