"""The production column end to end: PostgreSQL offline store -> Redis online store.

Runs against the real PostgreSQL and Redis on 127.0.0.1 (skipped if one is down, failed
under ``CI=true``; see ``tests/services.py``). Each test registers a Feast project of its own
(``lstest<hex>``); Feast suffixes every Redis key with the project name, so the test deletes
exactly its own keys at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from leadscore.offline_postgres import (
    postgres_offline_config_from_settings,
    publish_feature_tables_from_settings,
    rebind_sources_to_postgres,
)
from leadscore.settings import FeastSettings
from tests.services import (
    AS_OF,
    SERVICE,
    PostgresParams,
    RedisParams,
    behaviour_frame,
    delete_redis_project_keys,
    feast_definitions,
    postgres_fixture,  # noqa: F401  (fixture)
    postgres_schema_fixture,  # noqa: F401  (fixture)
    production_feast,
    redis_fixture,  # noqa: F401  (fixture)
    repo_config,
    unique_name,
    write_feature_tables,
)

pytestmark = pytest.mark.service

BEHAVIOUR = ["page_view_7d", "demo_request_7d", "demo_request_30d", "days_since_last_activity"]


@pytest.fixture(scope="module")
def production(
    postgres: PostgresParams,
    postgres_schema: str,
    redis_params: RedisParams,
    tmp_path_factory: pytest.TempPathFactory,
) -> FeastSettings:
    """Production settings; the hand-built feature tables published as they say."""
    feast = production_feast(
        postgres, redis_params, project=unique_name("lstest"), schema=postgres_schema
    )
    paths = write_feature_tables(tmp_path_factory.mktemp("tables"))
    publish_feature_tables_from_settings(feast, paths)
    return feast


@pytest.fixture
def online_store(
    production: FeastSettings, redis_params: RedisParams, tmp_path: Path
) -> Iterator[Any]:
    """A registered store (own project) materialized into Redis up to just after AS_OF."""
    from feast import FeatureStore

    project = unique_name("lstest")
    store = FeatureStore(
        config=repo_config(
            tmp_path,
            project=project,
            offline_store=postgres_offline_config_from_settings(production),
            online_store={"type": "redis", "connection_string": production.redis_connection_string},
            materialization={"pull_latest_features": True},
        )
    )
    try:
        store.apply(
            rebind_sources_to_postgres(feast_definitions(), schema=production.postgres_schema)
        )
        store.materialize(
            start_date=datetime(2000, 1, 1, tzinfo=UTC),
            end_date=pd.Timestamp(AS_OF, tz="UTC").to_pydatetime() + timedelta(seconds=1),
        )
        yield store
    finally:
        delete_redis_project_keys(redis_params, project)
        assert delete_redis_project_keys(redis_params, project) == 0


def _online(store: Any, lead_ids: list[int]) -> dict[str, list[Any]]:
    return store.get_online_features(
        features=store.get_feature_service(SERVICE),
        entity_rows=[{"lead_id": i} for i in lead_ids],
    ).to_dict()


def test_materialized_redis_serves_each_leads_current_row(online_store):
    # given: the newest behaviour row of each lead in the offline tables
    behaviour = behaviour_frame()
    current = behaviour.sort_values("event_timestamp").groupby("lead_id").tail(1)
    current = current.set_index("lead_id")

    # when
    online = _online(online_store, [1, 2, 99])

    # then: leads 1 and 2 get their current rows, the unknown lead 99 gets None everywhere
    for feature in BEHAVIOUR:
        assert online[feature][:2] == pytest.approx(current.loc[[1, 2], feature].tolist())
        assert online[feature][2] is None
    assert online["source_channel"] == ["website", "bought_list", None]
    assert online["company_size"] == ["51-200", None, None]
    assert online["is_decision_maker"][0] == 1.0
    assert online["is_decision_maker"][1:] == [None, None]


def test_push_to_the_push_source_updates_what_redis_serves(online_store):
    # given: lead 2 requests two demos after the materialization; its recomputed row
    from feast.data_source import PushMode

    row = behaviour_frame().query("lead_id == 2").tail(1).reset_index(drop=True)
    row["event_timestamp"] = pd.Timestamp(AS_OF, tz="UTC") + pd.Timedelta(hours=1)
    row["demo_request_7d"] = 2.0
    row["demo_request_30d"] = 2.0
    row["days_since_last_activity"] = 0.01

    # when: pushed to the online store
    online_store.push("lead_behaviour_push", row, to=PushMode.ONLINE)
    pushed = _online(online_store, [1, 2])

    # and: a stale row (older than what Redis holds) arrives late
    stale = row.copy()
    stale["event_timestamp"] = pd.Timestamp("2024-01-12", tz="UTC")
    stale["demo_request_7d"] = 9.0
    online_store.push("lead_behaviour_push", stale, to=PushMode.ONLINE)
    after_stale = _online(online_store, [2])

    # then: lead 2's features are the pushed ones, lead 1 is untouched, the stale row ignored
    assert pushed["demo_request_7d"] == [0.0, 2.0]
    assert pushed["demo_request_30d"] == [0.0, 2.0]
    assert pushed["days_since_last_activity"][1] == pytest.approx(0.01)
    assert pushed["source_channel"] == ["website", "bought_list"]
    assert after_stale["demo_request_7d"] == [2.0]
