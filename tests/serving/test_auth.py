"""API keys on the real stack: 401 without a valid key, 403 without the scope, each scope."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from leadscore.auth import API_KEYS, ApiKeyStore
from leadscore.settings import AuthSettings
from serving.app import create_app
from tests.api_keys import api_client, key_headers

pytestmark = pytest.mark.slow

# A body each route refuses with 422 once the key is accepted: proves the key passed without
# changing the stack's stores.
ROUTES = {
    "score:read": ("post", "/v1/score", {"json": {"lead_id": -1}}),
    "events:write": ("post", "/v1/events", {"json": {"events": []}}),
    "outcomes:write": ("post", "/v1/outcomes", {"json": {"outcomes": []}}),
    "admin": ("post", "/v1/admin/reload", {}),
}


@pytest.fixture(scope="module")
def anonymous(stack):
    """The API with no default key, verifying every key in the database (no cache)."""
    settings = stack.settings.model_copy(update={"auth": AuthSettings(cache_seconds=0)})
    with TestClient(create_app(settings)) as c:
        yield c


def _call(client, scope: str, headers: dict[str, str] | None = None):
    method, path, kwargs = ROUTES[scope]
    return getattr(client, method)(path, headers=headers or {}, **kwargs)


def test_the_openapi_document_shows_the_key_and_scope_of_each_protected_route(anonymous):
    spec = anonymous.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The API key.",
    }
    score = spec["paths"]["/v1/score"]["post"]
    assert score["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}]
    assert "scope `score:read` (or `admin`)" in score["description"]
    assert "scope `admin`." in spec["paths"]["/v1/admin/reload"]["post"]["description"]
    assert "`reports:read`" in spec["paths"]["/reports/{name}"]["get"]["description"]
    assert "security" not in spec["paths"]["/health"]["get"]


@pytest.mark.parametrize("scope", sorted(ROUTES))
def test_without_a_key_every_route_answers_401(anonymous, scope):
    response = _call(anonymous, scope)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer ls_" + "x" * 32},
        {"x-api-key": "ls_" + "x" * 32},
        {"authorization": "Bearer not-a-key"},
        {"authorization": "Basic dXNlcjpwYXNz"},
    ],
)
def test_a_wrong_key_answers_401(anonymous, headers):
    response = anonymous.get("/v1/model", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_open_routes_need_no_key(anonymous):
    assert anonymous.get("/health").status_code == 200
    assert anonymous.get("/ready").status_code == 200
    assert anonymous.get("/docs").status_code == 200
    spec = anonymous.get("/openapi.json")
    assert spec.status_code == 200
    assert "/v1/outcomes" in spec.json()["paths"]


@pytest.mark.parametrize("scope", sorted(ROUTES))
def test_each_scope_opens_its_route_and_only_it(anonymous, stack, scope):
    headers = key_headers(stack.settings, scope)
    # the key's own route: past authentication, refused for the body (or answered)
    own = _call(anonymous, scope, headers)
    assert own.status_code in (200, 422), own.text
    # every other route: forbidden, naming the scope it needs (admin opens them all)
    others = [] if scope == "admin" else sorted(set(ROUTES) - {scope})
    for other in others:
        response = _call(anonymous, other, headers)
        assert response.status_code == 403, other
        assert response.json() == {"error": "forbidden", "detail": f"needs scope {other}"}


def test_the_model_route_needs_score_read(anonymous, stack):
    assert anonymous.get("/v1/model", headers=key_headers(stack.settings, "score:read")).is_success
    refused = anonymous.get("/v1/model", headers=key_headers(stack.settings, "events:write"))
    assert refused.status_code == 403
    assert refused.json()["detail"] == "needs scope score:read"
    reload = anonymous.post("/v1/admin/reload", headers=key_headers(stack.settings, "score:read"))
    assert reload.status_code == 403 and reload.json()["detail"] == "needs scope admin"


def test_admin_implies_every_scope(anonymous, stack):
    headers = key_headers(stack.settings, "admin")
    for scope in ROUTES:
        assert _call(anonymous, scope, headers).status_code in (200, 422), scope
    assert anonymous.get("/v1/model", headers=headers).status_code == 200


def test_the_key_is_read_from_either_header(anonymous, stack):
    bearer = key_headers(stack.settings, "score:read")
    key = bearer["authorization"].removeprefix("Bearer ")
    assert anonymous.get("/v1/model", headers={"x-api-key": key}).status_code == 200
    assert anonymous.get("/v1/model", headers=bearer).status_code == 200


def test_a_revoked_key_answers_401(anonymous, stack):
    # given: a working key
    store = ApiKeyStore(stack.settings.auth_db_url)
    key, record = store.create("to-revoke", ["score:read"])
    headers = {"authorization": f"Bearer {key}"}
    assert anonymous.get("/v1/model", headers=headers).status_code == 200
    # when
    store.revoke(record.prefix)
    # then (cache_seconds=0: at once)
    response = anonymous.get("/v1/model", headers=headers)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_a_revocation_shows_once_the_cache_expires(stack):
    # given: an API trusting verified keys for a long time
    settings = stack.settings.model_copy(update={"auth": AuthSettings(cache_seconds=3600)})
    store = ApiKeyStore(stack.settings.auth_db_url)
    key, record = store.create("cached", ["score:read"])
    headers = {"authorization": f"Bearer {key}"}
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/model", headers=headers).status_code == 200
        store.revoke(record.key_id)
        # then: still trusted from the cache (no database round trip) ...
        assert client.get("/v1/model", headers=headers).status_code == 200
        # ... until the cached verification expires
        client.app.state.keys.cache_seconds = 0
        client.app.state.keys._cache.clear()
        assert client.get("/v1/model", headers=headers).status_code == 401


def test_keys_are_stored_hashed_and_never_logged(anonymous, stack, caplog):
    # given
    store = ApiKeyStore(stack.settings.auth_db_url)
    with caplog.at_level(logging.DEBUG):
        key, record = store.create("hashed", ["score:read"])
        anonymous.get("/v1/model", headers={"authorization": f"Bearer {key}"})
        anonymous.get("/v1/model", headers={"authorization": f"Bearer {key}x"})
    # then: the raw key is nowhere in the table, nor in the logs (its prefix may be)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(API_KEYS)).fetchall()
    cells = [str(cell) for row in rows for cell in row]
    assert not any(key in cell or key[len(record.prefix) :] in cell for cell in cells)
    assert record.prefix in cells
    assert key not in caplog.text and key[len(record.prefix) :] not in caplog.text


def test_repeated_failed_authentication_is_slowed_down_with_429(stack):
    settings = stack.settings.model_copy(update={"auth": AuthSettings(max_failures_per_minute=3)})
    good = key_headers(settings, "score:read")
    with api_client(settings) as client:
        wrong = {"authorization": "Bearer ls_guess_0000000000"}
        statuses = [client.get("/v1/model", headers=wrong).status_code for _ in range(3)]
        blocked = client.get("/v1/model", headers=wrong)
        also_blocked = client.get("/v1/model", headers=good)  # the same client, a good key
        open_routes = client.get("/health")
    assert statuses == [401, 401, 401]
    assert blocked.status_code == 429
    assert blocked.json()["error"] == "too_many_failed_attempts"
    assert 1 <= int(blocked.headers["retry-after"]) <= 61
    assert also_blocked.status_code == 429
    assert open_routes.status_code == 200
