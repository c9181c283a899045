"""POST /v1/score/batch: many leads in one model call, per-lead errors, a size limit."""

from __future__ import annotations

from datetime import datetime

import pytest

from leadscore.auth import EVENTS_WRITE
from tests.api_keys import api_client, key_headers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def known(stack) -> list[int]:
    return [int(i) for i in stack.demo.truth["lead_id"].iloc[200:205]]


def test_a_batch_scores_known_leads_and_reports_unknown_and_malformed_ids(client, known, stack):
    # given
    lead_ids = [known[0], 987654321, known[1], "abc", known[2], -5]
    # when
    response = client.post("/v1/score/batch", json={"lead_ids": lead_ids})
    # then
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["lead_id"] for r in results] == lead_ids
    assert [r["status"] for r in results] == [200, 404, 200, 422, 200, 422]
    for r in (results[0], results[2], results[4]):
        assert 0.0 <= r["probability"] <= 1.0
        assert r["band"] in {"hot", "warm", "cold"}
        assert r["model_version"] == stack.training.model.version
        assert 0 < len(r["reasons"]) <= stack.settings.serving.top_reasons
        assert "error" not in r
    assert results[1]["error"] == "lead_not_found" and "987654321" in results[1]["detail"]
    assert "probability" not in results[1]
    assert results[3]["error"] == "invalid_lead_id"


def test_batch_scores_equal_single_scores_and_are_logged(client, known):
    # when
    batch = client.post("/v1/score/batch", json={"lead_ids": known}).json()["results"]
    single = [client.post("/v1/score", json={"lead_id": i}).json() for i in known]
    # then
    for b, s in zip(batch, single, strict=True):
        assert b["probability"] == pytest.approx(s["probability"], rel=1e-9)
        assert b["band"] == s["band"]
        assert b["reasons"] == s["reasons"]
    client.app.state.score_recorder.flush()
    history = client.get(f"/v1/leads/{known[3]}/scores", params={"limit": 2}).json()["scores"]
    assert datetime.fromisoformat(history[1]["scored_at"]) == datetime.fromisoformat(
        batch[3]["scored_at"]
    )
    assert history[1]["probability"] == pytest.approx(batch[3]["probability"])


def test_a_batch_over_the_limit_gets_413(stack):
    # given: an app that allows 3 ids per batch
    settings = stack.settings.model_copy(
        update={"serving": stack.settings.serving.model_copy(update={"max_batch": 3})}
    )
    with api_client(settings) as small:
        # when
        response = small.post("/v1/score/batch", json={"lead_ids": [1, 2, 3, 4]})
        ok = small.post("/v1/score/batch", json={"lead_ids": [1, 2, 3]})
    # then
    assert response.status_code == 413
    assert response.json()["error"] == "batch_too_large"
    assert "at most 3" in response.json()["detail"]
    assert ok.status_code == 200


def test_an_empty_batch_is_malformed(client):
    response = client.post("/v1/score/batch", json={"lead_ids": []})
    assert response.status_code == 422


def test_batch_scoring_needs_the_score_read_scope(client, stack, known):
    headers = key_headers(stack.settings, EVENTS_WRITE, name="batch-no-score-read")
    response = client.post("/v1/score/batch", json={"lead_ids": known}, headers=headers)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
