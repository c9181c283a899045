"""Feature tables through a real Feast store (DuckDB offline, SQLite online)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from pipelines.feature_store import (
    apply_definitions,
    build_feature_tables,
    materialize_features,
    open_store,
)
from tests.conftest import make_leads

SERVICE = "lead_scoring_v2"


def _tables(extra_events: list[tuple[int, str, str]] = ()) -> dict[str, pd.DataFrame]:
    leads = make_leads(
        [
            {"lead_id": 1, "created_at": "2024-01-01", "source_channel": "website"},
            {"lead_id": 2, "created_at": "2024-01-05", "source_channel": "bought_list"},
        ]
    )
    rows = [
        (1, "2024-01-01 10:00", "page_view"),
        (1, "2024-01-03 10:00", "demo_request"),
        (2, "2024-01-06 10:00", "email_open"),
        *extra_events,
    ]
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "lead_id": [r[0] for r in rows],
            "occurred_at": pd.to_datetime([r[1] for r in rows], utc=True),
            "event_type": [r[2] for r in rows],
        }
    )
    stages = pd.DataFrame(
        {
            "lead_id": [1],
            "changed_at": pd.to_datetime(["2024-01-04"], utc=True),
            "stage": ["SQL"],
        }
    )
    outcomes = pd.DataFrame(
        {
            "lead_id": [2],
            "closed_at": pd.to_datetime(["2024-05-01"], utc=True),
            "result": ["lost"],
        }
    )
    return {"leads": leads, "events": events, "stage_changes": stages, "outcomes": outcomes}


def _build(settings, tables, as_of):
    return build_feature_tables(
        tables=tables,
        repo_dir=settings.paths.feature_repo,
        snapshot_days=[1, 7, 30],
        half_life_days=14,
        horizon_days=30,
        as_of=as_of,
    )


@pytest.fixture(scope="module", params=["duckdb", "file"])
def store_settings(request, tmp_path_factory):
    from leadscore.settings import FeastSettings, PathsSettings, Settings

    return Settings(
        paths=PathsSettings(root=tmp_path_factory.mktemp("fs")),
        feast=FeastSettings(offline_store=request.param),
    )


def test_training_rows_are_point_in_time_correct(store_settings):
    # given: feature tables built and registered; lead 1 snapshots on day 1 and day 7
    as_of = datetime(2024, 3, 1, tzinfo=UTC)
    _build(store_settings, _tables(), as_of)
    store = open_store(store_settings)
    apply_definitions(store)
    entity_df = pd.DataFrame(
        {
            "lead_id": [1, 1],
            "event_timestamp": pd.to_datetime(["2024-01-02", "2024-01-08"], utc=True),
        }
    )
    entity_df["request_ts"] = [pd.Timestamp(t).timestamp() for t in entity_df["event_timestamp"]]
    service = store.get_feature_service(SERVICE)
    before = store.get_historical_features(entity_df=entity_df, features=service).to_df()

    # when: a demo request arrives after both snapshots and the tables are rebuilt
    later = _tables([(1, "2024-01-09 09:00", "demo_request")])
    _build(store_settings, later, as_of)
    after = store.get_historical_features(entity_df=entity_df, features=service).to_df()

    # then: the snapshot rows are unchanged, and they hold what was known then
    key = ["lead_id", "event_timestamp"]
    before = before.sort_values(key).reset_index(drop=True)
    after = after.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert before["demo_request_7d"].tolist() == [0.0, 1.0]
    assert before["page_view_7d"].tolist() == [1.0, 1.0]
    assert before["source_channel"].tolist() == ["website", "website"]
    # stage and on-demand recency as of each snapshot: SQL from 2024-01-04
    assert before["lifecycle_stage"].tolist() == ["lead", "SQL"]
    assert before["days_in_stage"].tolist() == pytest.approx([1.0, 4.0])
    assert before["days_since_last_activity"].tolist() == pytest.approx([14 / 24, 4 + 14 / 24])


def test_online_store_serves_each_leads_current_state(store_settings):
    # given
    as_of = datetime(2024, 1, 10, tzinfo=UTC)
    tables = _build(store_settings, _tables([(1, "2024-01-09 09:00", "demo_request")]), as_of)
    store = open_store(store_settings)
    apply_definitions(store)

    # when
    materialize_features(store, end=tables.as_of + timedelta(seconds=1))
    later = datetime(2024, 1, 12, tzinfo=UTC).timestamp()  # two days after the build
    online = store.get_online_features(
        features=store.get_feature_service(SERVICE),
        entity_rows=[{"lead_id": i, "request_ts": later} for i in (1, 2, 99)],
    ).to_dict()

    # then: lead 1 has two demo requests in the 7 days before 2024-01-10; lead 99 is unknown
    assert online["demo_request_7d"] == [2.0, 0.0, None]
    assert online["source_channel"] == ["website", "bought_list", None]
    # recency and decay are measured at request time, not at build time
    assert online["days_since_last_activity"][0] == pytest.approx(2 + 15 / 24)
    engagement_at_build = online["engagement_at_as_of"][0]
    assert online["engagement_score"][0] == pytest.approx(engagement_at_build * 2 ** (-2 / 14))
    assert online["lifecycle_stage"] == ["SQL", "lead", None]
