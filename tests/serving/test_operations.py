"""Operations: metrics, request ids, JSON logs, body limits, CORS, and riding out outages of
the online store (Redis) and of the score log's database."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from leadscore.auth import METRICS_READ, SCORE_READ
from leadscore.event_log import EventLog
from leadscore.score_log import ScoreLog, ScoreRecorder, ServedScore
from leadscore.settings import FeastSettings, PathsSettings, ServingSettings, Settings
from serving.app import create_app
from serving.observability import JsonFormatter
from serving.service import ScoringService
from tests.api_keys import api_client, key_headers
from tests.services import PrivateRedis, unique_name
from tests.serving.test_live_backends import _scorer, live_service


@pytest.fixture(scope="module")
def known_lead(stack) -> int:
    return int(stack.demo.leads["lead_id"].iloc[5])


# -- metrics ---------------------------------------------------------------------------------
def test_metrics_count_requests_by_route_template_and_scores_by_band(client, stack, known_lead):
    reader = key_headers(stack.settings, METRICS_READ)
    assert client.get("/metrics", headers={"authorization": ""}).status_code == 401
    forbidden = client.get("/metrics", headers=key_headers(stack.settings, SCORE_READ))
    assert forbidden.status_code == 403
    before = client.get("/metrics", headers=reader).text
    scored = client.post("/v1/score", json={"lead_id": known_lead}).json()
    assert client.get("/v1/leads/999999999/score").status_code == 404
    text = client.get("/metrics", headers=reader).text
    version = scored["model_version"]

    def value(name: str, page: str) -> float:
        samples = dict(
            line.rsplit(" ", 1) for line in page.splitlines() if not line.startswith("#")
        )
        return float(samples.get(name, 0.0))

    score_ok = 'leadscore_http_requests_total{method="POST",route="/v1/score",status="200"}'
    assert value(score_ok, text) == value(score_ok, before) + 1
    unknown = (
        'leadscore_http_requests_total{method="GET",route="/v1/leads/{lead_id}/score",status="404"}'
    )
    assert value(unknown, text) >= 1
    assert "999999999" not in text  # route templates, never ids
    band = f'leadscore_scores_served_total{{band="{scored["band"]}",model_version="{version}"}}'
    assert value(band, text) == value(band, before) + 1
    assert f'leadscore_model_info{{model_name="leadscore",model_version="{version}"}} 1.0' in text
    assert 'leadscore_http_request_duration_seconds_bucket{le="0.005",method="POST"' in text
    assert "leadscore_score_log_queued" in text and "leadscore_score_log_dropped 0.0" in text


# -- request ids and logs --------------------------------------------------------------------
def test_every_answer_carries_a_request_id_which_the_audit_log_keeps(client, known_lead):
    mine = client.post(
        "/v1/score", json={"lead_id": known_lead}, headers={"x-request-id": "crm-42"}
    )
    assert mine.headers["x-request-id"] == "crm-42"
    fresh = client.post("/v1/score", json={"lead_id": known_lead})
    assert len(fresh.headers["x-request-id"]) == 32
    odd = client.get("/health", headers={"x-request-id": "<script>" + "x" * 300})
    assert odd.headers["x-request-id"] != "<script>" + "x" * 300  # replaced, not echoed
    client.app.state.score_recorder.flush()
    latest = client.get(f"/v1/leads/{known_lead}/score").json()
    assert latest["request_id"] == fresh.headers["x-request-id"]
    history = ScoreLog(client.app.state.settings.event_log_url).history(known_lead, limit=5)
    assert "crm-42" in {s.request_id for s in history}


def test_logs_are_json_lines_without_keys_or_lead_data(stack, known_lead):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    headers = key_headers(stack.settings, SCORE_READ)
    key = headers["authorization"].removeprefix("Bearer ")
    try:
        with api_client(stack.settings) as client:
            client.post("/v1/score", json={"lead_id": known_lead}, headers=headers)
            client.post("/v1/score", json={"lead_id": 10**12}, headers=headers)
            client.get("/v1/model", headers={"authorization": "Bearer ls_wrong_key"})
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [e for e in lines if e["logger"] == "leadscore.access"]
    assert [(e["route"], e["status"]) for e in access] == [
        ("/v1/score", 200),
        ("/v1/score", 404),
        ("/v1/model", 401),
    ]
    assert all(len(e["request_id"]) == 32 and e["duration_ms"] > 0 for e in access)
    assert all({"time", "level", "message"} <= set(e) for e in lines)
    raw = stream.getvalue()
    assert key not in raw and "ls_wrong_key" not in raw
    lead_row = stack.demo.leads.set_index("lead_id").loc[known_lead]
    assert str(10**12) not in raw and f'"lead_id": {known_lead}' not in raw
    assert str(lead_row["email_domain"]) not in raw


# -- body limits and CORS --------------------------------------------------------------------
def test_a_body_over_the_limit_is_refused_with_413_and_nothing_is_stored(stack):
    settings = stack.settings.model_copy(
        update={"serving": ServingSettings(max_body_bytes=2000, reload_seconds=0)}
    )
    event = {
        "event_id": "big-1",
        "lead_id": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "event_type": "page_view",
        "topic": "x" * 190,
    }
    with api_client(settings) as client:
        big = client.post("/v1/events", json={"events": [event] * 20})
        small = client.post("/v1/score/batch", json={"lead_ids": [1, 2]})
    assert big.status_code == 413
    assert big.json()["error"] == "body_too_large"
    assert "2000 bytes" in big.json()["detail"]
    assert small.status_code == 200
    assert "big-1" not in set(EventLog(settings.event_log_url).read()["event_id"])


def test_cors_admits_only_the_configured_origins(stack):
    settings = stack.settings.model_copy(
        update={"serving": ServingSettings(cors_origins=["https://crm.example.com"])}
    )
    preflight = {"access-control-request-method": "POST"}
    with api_client(settings) as client:
        ok = client.options("/v1/score", headers={**preflight, "origin": "https://crm.example.com"})
        other = client.options("/v1/score", headers={**preflight, "origin": "https://evil.test"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://crm.example.com"
    assert "access-control-allow-origin" not in other.headers
    with api_client(stack.settings) as client:  # no origins configured: no CORS at all
        closed = client.options(
            "/v1/score", headers={**preflight, "origin": "https://crm.example.com"}
        )
    assert "access-control-allow-origin" not in closed.headers


# -- outages ---------------------------------------------------------------------------------
@pytest.fixture
def redis_server(tmp_path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_down_gives_503_and_scoring_recovers_by_itself(tmp_path, redis_server):
    # given: a service on a Redis online store of its own
    settings = Settings(
        paths=PathsSettings(root=tmp_path),
        feast=FeastSettings(
            project=unique_name("lsfault"),
            online_store="redis",
            redis_connection_string=redis_server.connection_string,
        ),
        serving=ServingSettings(reload_seconds=0),
    )
    service = live_service(settings)
    with api_client(settings, loader=lambda s: service) as client:
        before = client.post("/v1/score", json={"lead_id": 2})
        assert before.status_code == 200 and client.get("/ready").status_code == 200
        # when: Redis stops
        redis_server.stop()
        down = client.post("/v1/score", json={"lead_id": 2})
        batch = client.post("/v1/score/batch", json={"lead_ids": [1, 2]})
        ready = client.get("/ready")
        health = client.get("/health")
        # then: a clear 503, the process stays up and says why it is not ready
        assert down.status_code == 503, down.text
        assert down.json()["error"] == "online_store_unavailable"
        assert "resumes by itself" in down.json()["detail"]
        assert batch.status_code == 503
        assert ready.status_code == 503 and "cannot be reached" in ready.json()["detail"]
        assert health.status_code == 200
        # a request that carries the lead's attributes is still scored
        inline = client.post(
            "/v1/score", json={"lead_id": 2, "lead": {"source_channel": "website"}}
        )
        assert inline.status_code == 200, inline.text
        # when: Redis is back, scoring resumes without a restart of the API
        redis_server.start()
        deadline = time.monotonic() + 15
        while (again := client.post("/v1/score", json={"lead_id": 2})).status_code != 200:
            assert time.monotonic() < deadline, again.text
            time.sleep(0.2)
        assert again.json()["probability"] == pytest.approx(before.json()["probability"])
        assert client.get("/ready").status_code == 200


def _served(i: int) -> ServedScore:
    return ServedScore(
        lead_id=i,
        scored_at=datetime.now(UTC),
        model_name="leadscore",
        model_version="1",
        probability=0.5,
        band="warm",
        reasons=[],
        features={"x": i},
        request_id=f"r{i}",
    )


def test_scores_served_while_the_audit_database_is_out_are_written_once_it_returns(tmp_path):
    # given: a recorder on its score log, whose table then becomes unavailable
    log = ScoreLog(f"sqlite:///{tmp_path / 'audit.db'}")
    recorder = ScoreRecorder(log)
    recorder.start()
    try:
        recorder.submit([_served(1)])
        recorder.flush()
        with log.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE served_scores RENAME TO served_scores_away"))
        # when: scores are served during the outage
        recorder.submit([_served(2), _served(3)])
        deadline = time.monotonic() + 5
        while recorder.queued and time.monotonic() < deadline:  # the writer took the batch
            time.sleep(0.05)
        time.sleep(0.7)  # and failed at least once
        with log.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE served_scores_away RENAME TO served_scores"))
        recorder.flush()
    finally:
        recorder.stop()
    # then: none is lost
    assert sorted(s.lead_id for i in (1, 2, 3) for s in log.history(i)) == [1, 2, 3]
    assert recorder.failed == 0 and recorder.written == 3


def test_load_beyond_what_the_service_holds_is_shed_with_503_and_it_recovers(tmp_path):
    scorer = _scorer()

    def slow_lookup(lead_id: int) -> dict:
        time.sleep(0.3)  # a store that takes its time: requests pile up
        return {"source_channel": "website", "high_intent_1d": 3.0, "demo_request_7d": 1.0}

    service = ScoringService(
        scorer=scorer,
        lookup=slow_lookup,
        model_name="leadscore",
        model_version="test",
        top_reasons=3,
    )
    settings = Settings(
        paths=PathsSettings(root=tmp_path),
        serving=ServingSettings(max_in_flight=2, reload_seconds=0),
    )
    headers = key_headers(settings, SCORE_READ)
    app = create_app(settings, loader=lambda s: service)

    async def burst() -> tuple[list[httpx.Response], list[httpx.Response], httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=headers
        ) as client:
            many = await asyncio.gather(
                *(client.post("/v1/score", json={"lead_id": i}) for i in range(6)),
                client.get("/health"),
            )
            after = await asyncio.gather(
                *(client.post("/v1/score", json={"lead_id": i}) for i in range(2))
            )
            return list(many[:-1]), list(after), many[-1]

    with TestClient(app):  # runs the lifespan
        scored, after, health = asyncio.run(burst())
    statuses = sorted(r.status_code for r in scored)
    assert statuses == [200, 200, 503, 503, 503, 503]
    shed = next(r for r in scored if r.status_code == 503)
    assert shed.json()["error"] == "overloaded" and shed.headers["retry-after"] == "1"
    assert health.status_code == 200  # health checks are never shed
    assert [r.status_code for r in after] == [200, 200]  # and it recovers at once
