"""Why did the score change: the score now against an earlier one, factor by factor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from leadscore.auth import EVENTS_WRITE
from leadscore.score_log import ScoreLog, ServedScore
from tests.api_keys import key_headers

pytestmark = pytest.mark.slow


def test_the_factor_that_changed_leads_the_explanation(client, stack):
    # given: a lead scored now, and an earlier score of it whose strongest factor was missing
    lead_id = int(stack.demo.truth["lead_id"].iloc[200])
    now = client.post("/v1/score", json={"lead_id": lead_id}).json()
    client.app.state.score_recorder.flush()
    latest = client.get(f"/v1/leads/{lead_id}/score").json()
    strongest = now["reasons"][0]["feature"]
    earlier = {**latest["features"], strongest: None}
    yesterday = datetime.now(UTC) - timedelta(days=1)
    ScoreLog(stack.settings.event_log_url).append(
        [
            ServedScore(
                lead_id=lead_id,
                scored_at=yesterday,
                model_name="leadscore",
                model_version="0",
                probability=0.01,
                band="cold",
                reasons=[],
                features=earlier,
                request_id="earlier",
            )
        ]
    )
    # when
    since = (yesterday + timedelta(minutes=1)).isoformat()
    response = client.get(f"/v1/leads/{lead_id}/explain", params={"since": since})
    # then
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["then"]["probability"] == 0.01 and body["then"]["model_version"] == "0"
    assert body["now"]["probability"] == pytest.approx(now["probability"])
    assert body["change"] == pytest.approx(now["probability"] - 0.01, abs=1e-4)
    assert body["same_model"] is False
    driver = body["drivers"][0]
    assert driver["feature"] == strongest
    assert driver["before"] is None and driver["contribution_change"] != 0


def test_a_lead_never_scored_or_a_naive_time_is_refused(client, stack):
    never = 10**9  # no lead has this id, so it was never scored
    missing = client.get(f"/v1/leads/{never}/explain", params={"since": "2026-01-01T00:00:00Z"})
    naive = client.get(f"/v1/leads/{never}/explain", params={"since": "2026-01-01T00:00:00"})
    assert missing.status_code == 404 and missing.json()["error"] == "no_score"
    assert naive.status_code == 422


def test_explaining_needs_the_score_read_scope(client, stack):
    headers = key_headers(stack.settings, EVENTS_WRITE)
    response = client.get(
        "/v1/leads/1/explain", params={"since": "2026-01-01T00:00:00Z"}, headers=headers
    )
    assert response.status_code == 403
