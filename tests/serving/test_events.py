"""Live events: stored once, pushed online, reflected in the very next score."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from leadscore.event_log import EventLog, all_events
from pipelines.examples import current_features, load_champion
from pipelines.ingest import load_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cold_lead(stack) -> int:
    """A cold lead with no activity: the kind a demo request should wake up."""
    frame = current_features(stack.settings)
    frame["p"] = load_champion(stack.settings).predict_proba_frame(frame)
    idle = frame[(frame["p"] < 0.05) & frame["last_activity_at"].isna()]
    return int(idle.sort_values("p")["lead_id"].iloc[-1])


def _event(event_id: str, lead_id: int, event_type: str, minutes_ago: int = 1) -> dict:
    moment = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {
        "event_id": event_id,
        "lead_id": lead_id,
        "occurred_at": moment.isoformat(),
        "event_type": event_type,
        "channel": "web",
    }


def test_events_change_the_leads_features_and_score_at_once(client, cold_lead, stack):
    # given
    before = client.post("/v1/score", json={"lead_id": cold_lead}).json()
    burst = [
        _event("live-1", cold_lead, "pricing_page_view", 30),
        _event("live-2", cold_lead, "pricing_page_view", 20),
        _event("live-3", cold_lead, "demo_request", 10),
        _event("live-4", cold_lead, "trial_signup", 5),
    ]
    # when
    response = client.post("/v1/events", json={"events": burst})
    # then: the answer already carries the new score, and so does the next request
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 4 and body["duplicates"] == 0
    (fresh,) = body["scores"]
    assert fresh["lead_id"] == cold_lead
    assert fresh["probability"] > before["probability"]
    after = client.post("/v1/score", json={"lead_id": cold_lead}).json()
    assert after["probability"] == pytest.approx(fresh["probability"], rel=1e-3)
    features = client.app.state.service.lookup(cold_lead)
    assert features["demo_request_1d"] == 1.0
    assert features["high_intent_7d"] == 1 + 1 + 3 + 3
    assert features["days_since_last_activity"] == pytest.approx(5 / 1440, abs=2e-3)


def test_a_resent_event_is_stored_once(client, cold_lead, stack):
    # given: an event, sent twice
    event = _event("live-dup", cold_lead, "email_open", 3)
    first = client.post("/v1/events", json={"events": [event]}).json()
    # when
    again = client.post("/v1/events", json={"events": [event, event]}).json()
    # then
    assert first["accepted"] == 1
    assert again["accepted"] == 0 and again["duplicates"] == 2
    logged = EventLog(stack.settings.event_log_url).read([cold_lead])
    assert (logged["event_id"] == "live-dup").sum() == 1
    assert again["scores"][0]["probability"] == pytest.approx(
        first["scores"][0]["probability"], rel=1e-3
    )


def test_invalid_events_are_refused_naming_the_field_and_nothing_is_stored(
    client, cold_lead, stack
):
    # given: one good event, one of an unknown lead, one in the future
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    events = [
        _event("bad-1", cold_lead, "page_view"),
        _event("bad-2", 987654321, "page_view"),
        {**_event("bad-3", cold_lead, "page_view"), "occurred_at": future},
    ]
    # when
    response = client.post("/v1/events", json={"events": events})
    # then
    assert response.status_code == 422
    fields = {d["field"]: d["problem"] for d in response.json()["detail"]}
    assert "987654321" in fields["events.1.lead_id"]
    assert "future" in fields["events.2.occurred_at"]
    logged = EventLog(stack.settings.event_log_url).read()
    assert not logged["event_id"].str.startswith("bad-").any()


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"event_type": "teleport"}, "events.0.event_type"),
        ({"occurred_at": "2026-01-01T10:00:00"}, "events.0.occurred_at"),
        ({"event_id": ""}, "events.0.event_id"),
    ],
)
def test_malformed_events_get_422_naming_the_field(client, cold_lead, patch, field):
    response = client.post(
        "/v1/events", json={"events": [{**_event("m", cold_lead, "page_view"), **patch}]}
    )
    assert response.status_code == 422
    assert any(d["field"] == field for d in response.json()["detail"])


def test_logged_events_reach_the_next_feature_build(client, cold_lead, stack):
    # given: live events were recorded for the lead (tests above)
    warehouse = load_table(stack.settings.paths.warehouse, "events")
    # when
    combined = all_events(warehouse=warehouse, log=EventLog(stack.settings.event_log_url))
    # then: each live event once, next to the validated history
    live = combined[combined["lead_id"] == cold_lead]
    assert {"live-1", "live-2", "live-3", "live-4", "live-dup"} <= set(live["event_id"])
    assert combined["event_id"].is_unique
    assert len(combined) == len(warehouse) + 5


def test_sql_and_html_in_text_fields_are_stored_as_text(client, stack):
    from leadscore.event_log import EventLog

    lead = int(stack.demo.leads["lead_id"].iloc[7])
    nasty = "'); DROP TABLE live_events; -- <script>alert(1)</script>"
    event = {
        "event_id": nasty,
        "lead_id": lead,
        "occurred_at": "2026-10-30T10:00:00Z",
        "event_type": "content_download",
        "topic": nasty,
    }
    answer = client.post("/v1/events", json={"events": [event]})
    assert answer.status_code == 200, answer.text
    stored = EventLog(stack.settings.event_log_url).read([lead])
    row = stored[stored["event_id"] == nasty].iloc[0]
    assert row["topic"] == nasty  # stored verbatim, the table still there
