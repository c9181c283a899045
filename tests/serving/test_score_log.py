"""The score audit log: every served score is recorded off the request path and readable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from leadscore.auth import EVENTS_WRITE
from leadscore.score_log import ScoreLog, ScoreRecorder, ServedScore
from tests.api_keys import key_headers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lead_ids(stack) -> list[int]:
    return [int(i) for i in stack.demo.truth["lead_id"].iloc[100:103]]


def _flush(client) -> None:
    client.app.state.score_recorder.flush()


def test_a_served_score_is_the_latest_with_its_version_and_features(client, lead_ids, stack):
    # given
    lead_id = lead_ids[0]
    served = client.post("/v1/score", json={"lead_id": lead_id}).json()
    # when
    _flush(client)
    response = client.get(f"/v1/leads/{lead_id}/score")
    # then
    assert response.status_code == 200
    latest = response.json()
    assert latest["lead_id"] == lead_id
    assert latest["model_version"] == stack.training.model.version
    assert latest["probability"] == pytest.approx(served["probability"])
    assert latest["band"] == served["band"]
    assert latest["reasons"] == served["reasons"]
    assert datetime.fromisoformat(latest["scored_at"]) == datetime.fromisoformat(
        served["scored_at"]
    )
    model_features = client.get("/v1/model").json()["features"]
    assert set(model_features) <= set(latest["features"])
    assert latest["request_id"]


def test_the_history_is_newest_first_and_honours_limit_and_since(client, lead_ids, stack):
    # given: three scores of one lead
    lead_id = lead_ids[1]
    served = [client.post("/v1/score", json={"lead_id": lead_id}).json() for _ in range(3)]
    _flush(client)
    # when
    everything = client.get(f"/v1/leads/{lead_id}/scores").json()["scores"]
    limited = client.get(f"/v1/leads/{lead_id}/scores", params={"limit": 2}).json()["scores"]
    recent = client.get(
        f"/v1/leads/{lead_id}/scores", params={"since": served[1]["scored_at"]}
    ).json()["scores"]
    # then
    times = [datetime.fromisoformat(s["scored_at"]) for s in everything]
    assert len(everything) >= 3
    assert times == sorted(times, reverse=True)
    assert [datetime.fromisoformat(s["scored_at"]) for s in everything[:3]] == [
        datetime.fromisoformat(s["scored_at"]) for s in reversed(served)
    ]
    assert limited == everything[:2]
    assert len(recent) == 2
    for item in everything:
        assert item["model_version"] == stack.training.model.version
        assert item["band"] in {"hot", "warm", "cold"}
        assert item["reasons"]
    assert set(everything[0]) == {"probability", "band", "model_version", "scored_at", "reasons"}


def test_a_lead_never_scored_has_no_latest_score_and_an_empty_history(client):
    response = client.get("/v1/leads/987654321/score")
    assert response.status_code == 404
    assert response.json()["error"] == "no_score"
    assert "987654321" in response.json()["detail"]
    history = client.get("/v1/leads/987654321/scores")
    assert history.status_code == 200
    assert history.json() == {"lead_id": 987654321, "scores": []}


def test_bad_history_queries_get_422(client, lead_ids):
    assert client.get(f"/v1/leads/{lead_ids[0]}/scores", params={"limit": 0}).status_code == 422
    naive = client.get(f"/v1/leads/{lead_ids[0]}/scores", params={"since": "2026-01-01T00:00"})
    assert naive.status_code == 422


def test_the_score_log_survives_the_app_and_is_flushed_at_shutdown(stack, lead_ids):
    # given: an app that is shut down right after serving
    from tests.api_keys import api_client

    lead_id = lead_ids[2]
    with api_client(stack.settings) as first:
        served = first.post("/v1/score", json={"lead_id": lead_id}).json()
    # when: another app reads the log
    with api_client(stack.settings) as second:
        latest = second.get(f"/v1/leads/{lead_id}/score").json()
    # then
    assert datetime.fromisoformat(latest["scored_at"]) == datetime.fromisoformat(
        served["scored_at"]
    )


def test_reading_scores_needs_the_score_read_scope(client, stack, lead_ids):
    headers = key_headers(stack.settings, EVENTS_WRITE, name="no-score-read")
    for path in (f"/v1/leads/{lead_ids[0]}/score", f"/v1/leads/{lead_ids[0]}/scores"):
        response = client.get(path, headers=headers)
        assert response.status_code == 403
        assert response.json()["error"] == "forbidden"


def _served(lead_id: int, at: datetime) -> ServedScore:
    return ServedScore(
        lead_id=lead_id,
        scored_at=at,
        model_name="leadscore",
        model_version="1",
        probability=0.5,
        band="warm",
        reasons=[{"feature": "f", "label": "f: 1", "value": np.float64(1.0), "contribution": 0.1}],
        features={"f": np.float64(1.0), "g": float("nan"), "h": None, "s": "web"},
        request_id="r1",
    )


def test_a_full_queue_drops_scores_and_counts_them(tmp_path):
    # given: a queue of one and no writer running yet
    log = ScoreLog(f"sqlite:///{tmp_path / 'scores.db'}")
    recorder = ScoreRecorder(log, max_queue=1)
    now = datetime.now(UTC)
    # when
    dropped = recorder.submit([_served(1, now), _served(1, now), _served(2, now)])
    recorder.flush()
    # then
    assert dropped == 2 and recorder.dropped == 2
    (stored,) = log.history(1)
    assert stored.features == {"f": 1.0, "g": None, "h": None, "s": "web"}
    assert stored.reasons[0]["value"] == 1.0
    assert stored.scored_at == now


def test_stopping_the_writer_writes_what_is_queued(tmp_path):
    # given
    log = ScoreLog(f"sqlite:///{tmp_path / 'scores.db'}")
    recorder = ScoreRecorder(log, batch_size=2)
    recorder.start()
    moments = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(5)]
    # when
    recorder.submit(_served(7, m) for m in moments)
    recorder.stop()
    # then
    assert [s.scored_at for s in log.history(7)] == list(reversed(moments))
    assert [s.scored_at for s in log.history(7, since=moments[3])] == moments[:2:-1]
    assert log.latest(8) is None
