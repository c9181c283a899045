"""Property-based fuzzing of every route from the OpenAPI schema (schemathesis).

Whatever the generated path, query and body, no route answers 5xx, and every JSON 4xx names
the error and says what was wrong. The app runs on the session stack with an event log of its
own, so the events and outcomes the fuzzer manages to store touch no other test's data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from leadscore.settings import EventsSettings
from serving.app import create_app
from tests.api_keys import key_headers

pytestmark = pytest.mark.slow
HEADERS: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_schema(stack, tmp_path_factory) -> Iterator[Any]:
    log = tmp_path_factory.mktemp("fuzz") / "events.db"
    fuzz_settings = stack.settings.model_copy(
        update={"events": EventsSettings(log_url=f"sqlite:///{log}")}
    )
    HEADERS.update(key_headers(fuzz_settings))  # admin: every route is reachable
    app = create_app(fuzz_settings)
    with TestClient(app):  # runs the lifespan: model, score log, reload thread
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_route_fails_on_any_input(api_schema):
    tried: list[str] = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        tried.append(f"{operation.method.upper()} {operation.path}")

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case):
            response = case.call(headers=HEADERS)
            assert response.status_code < 500, (case.method, case.path, response.text[:500])
            if response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
                body = response.json()
                assert body.get("error") and body.get("detail"), (case.method, case.path, body)

        check()
    assert "POST /v1/score" in tried and "POST /v1/events" in tried and "POST /v1/outcomes" in tried
