"""The whole loop on the production column: PostgreSQL offline store, Redis online store.

Chosen by settings only. Runs against the real services on 127.0.0.1 (skipped if one is
down, failed under ``CI=true``); the schema and the Redis keys of the run are removed after.
"""

from __future__ import annotations

import pytest

from tests.api_keys import api_client
from tests.services import (
    delete_redis_project_keys,
    drop_postgres_schema,
    production_feast,
    require_postgres,
    require_redis,
    unique_name,
)
from tests.stack import build_stack

pytestmark = [pytest.mark.slow, pytest.mark.service]


@pytest.fixture(scope="module")
def production_stack(tmp_path_factory):
    postgres = require_postgres()
    redis = require_redis()
    name = unique_name("lsprod")
    feast = production_feast(postgres, redis, project=name, schema=name)
    try:
        yield build_stack(tmp_path_factory.mktemp("prod"), n_leads=4000, feast=feast)
    finally:
        drop_postgres_schema(postgres, name)
        delete_redis_project_keys(redis, name)


def test_trains_from_postgres_and_serves_from_redis(production_stack):
    # then: a useful model from the point-in-time join in PostgreSQL
    assert production_stack.training.metrics["roc_auc"] > 0.75
    lead_id = int(production_stack.demo.truth["lead_id"].iloc[0])
    with api_client(production_stack.settings) as client:
        # when
        ready = client.get("/ready").json()
        score = client.post("/v1/score", json={"lead_id": lead_id})
    # then: features come from Redis
    assert ready["status"] == "ready"
    assert score.status_code == 200
    assert 0 <= score.json()["probability"] <= 1
    assert score.json()["reasons"]
