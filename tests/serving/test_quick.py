"""The quick path of POST /v1/score: the plain request answered before FastAPI's routing,
every other one left to the route, with the same answers either way."""

from __future__ import annotations

import pytest

from leadscore.auth import EVENTS_WRITE, SCORE_READ
from tests.api_keys import api_client, key_headers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def leads(stack) -> list[int]:
    return [int(i) for i in stack.demo.truth["lead_id"].iloc[200:210]]


def _quick(client) -> int:
    return int(getattr(client.app.state, "quick_scores", 0))


def _same_score(a: dict, b: dict) -> None:
    assert {k: v for k, v in a.items() if k != "scored_at"} == {
        k: v for k, v in b.items() if k != "scored_at"
    }


def test_a_plain_request_is_answered_quickly_and_as_the_route_answers_it(client, leads):
    client.post("/v1/score", json={"lead_id": leads[0]})  # the key is checked and cached
    for lead_id in leads:
        # given: the quick path's count
        before = _quick(client)
        # when: the plain request, then the same lead through the route (an empty
        # attributes object is valid and not the plain form)
        quick = client.post("/v1/score", json={"lead_id": lead_id})
        routed = client.post("/v1/score", json={"lead_id": lead_id, "attributes": {}})
        # then: one quick answer, and the two are the same score
        assert _quick(client) == before + 1
        assert quick.status_code == routed.status_code == 200
        assert quick.headers["content-type"] == routed.headers["content-type"]
        assert len(quick.headers["x-request-id"]) == 32
        _same_score(quick.json(), routed.json())


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b'{"lead_id": 987654321}', {}, 404),  # unknown lead: the route's 404
        (b'{"lead_id": "5"}', {}, None),  # a string: the route decides
        (b'{"lead_id": true}', {}, 422),
        (b'{"lead_id": 5.5}', {}, 422),
        (b'{"lead_id": -1}', {}, 422),
        (b'{"lead_id": 1, "extra": 1}', {}, 422),
        (b'{"lead_id": 1', {}, 422),  # malformed JSON
        (b"[1]", {}, 422),
        (b'{"lead_id": 1}', {"content-type": "text/plain"}, None),
    ],
)
def test_anything_but_the_plain_request_goes_to_the_route(client, stack, body, headers, status):
    # given
    before = _quick(client)
    sent = {"content-type": "application/json", **headers}
    # when
    response = client.post("/v1/score", content=body, headers=sent)
    # then: not answered quickly, and answered as the route answers it
    assert _quick(client) == before
    if status is not None:
        assert response.status_code == status
        assert response.json()["error"] in {"lead_not_found", "invalid_request"}


def test_keys_are_checked_as_the_route_checks_them(stack, leads):
    with api_client(stack.settings) as client:
        lead = {"lead_id": leads[0]}
        # no key, an unknown key, a key without score:read: the route's answers, not quick
        before = _quick(client)
        assert client.post("/v1/score", json=lead, headers={"authorization": ""}).status_code == 401
        unknown = {"authorization": "Bearer ls_unknownkey0000000000000000"}
        assert client.post("/v1/score", json=lead, headers=unknown).status_code == 401
        events_only = key_headers(stack.settings, EVENTS_WRITE, name="quick-events")
        assert client.post("/v1/score", json=lead, headers=events_only).status_code == 403
        assert client.post("/v1/score", json=lead, headers=events_only).status_code == 403
        assert _quick(client) == before
        # a new key: checked against the database by the route first, then quick
        fresh = key_headers(stack.settings, SCORE_READ, name="quick-fresh")
        assert client.post("/v1/score", json=lead, headers=fresh).status_code == 200
        assert _quick(client) == before
        assert client.post("/v1/score", json=lead, headers=fresh).status_code == 200
        assert _quick(client) == before + 1
        # X-API-Key works on the quick path too
        api_key = {"authorization": "", "x-api-key": fresh["authorization"].split()[1]}
        assert client.post("/v1/score", json=lead, headers=api_key).status_code == 200
        assert _quick(client) == before + 2


def test_a_locked_out_client_is_refused_even_with_a_good_key(stack, leads):
    settings = stack.settings.model_copy(
        update={"auth": stack.settings.auth.model_copy(update={"max_failures_per_minute": 2})}
    )
    with api_client(settings) as client:
        lead = {"lead_id": leads[1]}
        assert client.post("/v1/score", json=lead).status_code == 200  # the key is cached
        bad = {"authorization": "Bearer ls_wrongwrongwrongwrongwrong00"}
        for _ in range(2):
            assert client.post("/v1/score", json=lead, headers=bad).status_code == 401
        before = _quick(client)
        refused = client.post("/v1/score", json=lead)
        assert refused.status_code == 429
        assert refused.headers["retry-after"]
        assert _quick(client) == before


def test_quick_answers_are_counted_logged_and_recorded(client, leads):
    # given
    lead_id = leads[2]
    before = _quick(client)
    # when
    served = client.post("/v1/score", json={"lead_id": lead_id}, headers={"x-request-id": "q-1"})
    client.app.state.score_recorder.flush()
    # then: answered quickly, recorded in the score log with the request id, counted under
    # the route's template in the metrics
    assert _quick(client) == before + 1
    assert served.headers["x-request-id"] == "q-1"
    latest = client.get(f"/v1/leads/{lead_id}/score").json()
    assert latest["request_id"] == "q-1"
    assert latest["probability"] == pytest.approx(served.json()["probability"])
    metrics = client.get("/metrics").text
    assert 'leadscore_http_requests_total{method="POST",route="/v1/score",status="200"}' in metrics


def test_with_authentication_off_the_plain_request_needs_no_key(stack, leads):
    settings = stack.settings.model_copy(
        update={"auth": stack.settings.auth.model_copy(update={"required": False})}
    )
    with api_client(settings) as client:
        before = _quick(client)
        response = client.post(
            "/v1/score", json={"lead_id": leads[3]}, headers={"authorization": ""}
        )
        assert response.status_code == 200
        assert _quick(client) == before + 1
