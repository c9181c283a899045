"""A live event reaches the online store and the API's next score, on SQLite and on Redis.

The Redis case runs against the real server on 127.0.0.1 (skipped if it is down, failed under
``CI=true``); it uses a Feast project of its own and deletes exactly its keys afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from leadscore.event_log import EventLog
from leadscore.feature_catalog import FEATURES_BY_NAME
from leadscore.live import LiveFeatures
from leadscore.settings import FeastSettings, PathsSettings, Settings
from leadscore.store import open_store
from pipelines.feature_store import apply_definitions, build_feature_tables, materialize_features
from serving.inline import InlineFeatures
from serving.service import OnlineFeatures, ScoringService
from tests.api_keys import api_client
from tests.leadscore.test_online_read import assert_reads_like_feast
from tests.pipelines.test_feature_store import _tables
from tests.services import delete_redis_project_keys, require_redis, unique_name
from training.model import fit_scorer

SPECS = [FEATURES_BY_NAME[n] for n in ("source_channel", "high_intent_1d", "demo_request_7d")]


def _scorer():
    rng = np.random.default_rng(0)
    n = 6000
    intent = rng.poisson(0.4, n).astype(float)
    frame = pd.DataFrame(
        {
            "source_channel": rng.choice(["website", "bought_list"], n),
            "high_intent_1d": intent * 3,
            "demo_request_7d": intent,
        }
    )
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(3 - 1.5 * intent))).astype(int)
    return fit_scorer(
        train=frame.iloc[:4000],
        calibration=frame.iloc[4000:],
        specs=SPECS,
        params={"n_estimators": 40, "num_leaves": 7, "learning_rate": 0.1, "min_child_samples": 20},
        bands={"hot_min": 0.3, "warm_min": 0.1},
        feature_service="lead_scoring_v2",
        seed=0,
    )


def live_service(settings: Settings) -> ScoringService:
    """A scoring service with the live path and scoring from attributes, on an online store
    materialized from a small history (the settings say which store)."""
    tables = _tables()
    settings.paths.warehouse.mkdir(parents=True)
    tables["events"].to_parquet(settings.paths.warehouse / "events.parquet")
    built = build_feature_tables(
        tables=tables,
        repo_dir=settings.paths.feature_repo,
        snapshot_days=[1, 7, 30],
        half_life_days=14,
        horizon_days=30,
        as_of=datetime(2024, 3, 1, tzinfo=UTC),
    )
    store = open_store(settings)
    apply_definitions(store)
    materialize_features(store, end=built.as_of + timedelta(seconds=1))
    return ScoringService(
        scorer=_scorer(),
        lookup=OnlineFeatures(store, "lead_scoring_v2"),
        model_name="leadscore",
        model_version="test",
        top_reasons=3,
        live=LiveFeatures(
            store=store,
            log=EventLog(settings.event_log_url),
            warehouse_events=settings.paths.warehouse / "events.parquet",
            half_life_days=14,
        ),
        inline=InlineFeatures(
            warehouse=settings.paths.warehouse,
            outcome_log_url=settings.event_log_url,
            horizon_days=30,
            half_life_days=14,
        ),
    )


@pytest.fixture(params=["sqlite", "redis"])
def settings(request, tmp_path) -> Iterator[Settings]:
    feast = FeastSettings(project=unique_name("lslive"))
    if request.param == "redis":
        params = require_redis()
        feast = FeastSettings(
            project=feast.project,
            online_store="redis",
            redis_connection_string=params.connection_string,
        )
    yield Settings(paths=PathsSettings(root=tmp_path), feast=feast)
    if request.param == "redis":
        delete_redis_project_keys(params, feast.project)


def test_pushed_event_changes_online_features_and_the_next_score(settings):
    # given: a store built from a small history, and a service on top of it
    service = live_service(settings)
    with api_client(settings, loader=lambda s: service) as client:
        before = client.post("/v1/score", json={"lead_id": 2}).json()
        # when: the cold lead requests a demo
        event = {
            "event_id": "live-redis-1",
            "lead_id": 2,
            "occurred_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            "event_type": "demo_request",
        }
        posted = client.post("/v1/events", json={"events": [event]})
        after = client.post("/v1/score", json={"lead_id": 2}).json()
    # then: the online features and the next score reflect it, with nothing materialized
    assert posted.status_code == 200, posted.text
    online = service.lookup(2)
    assert online["demo_request_1d"] == 1.0 and online["high_intent_1d"] == 3.0
    assert online["days_since_last_activity"] == pytest.approx(1 / 1440, abs=1e-3)
    assert before["band"] == "cold"
    assert after["probability"] > before["probability"]
    assert posted.json()["scores"][0]["probability"] == pytest.approx(after["probability"])


def test_the_direct_reader_reads_what_feast_reads_on_both_stores(settings):
    # given: a materialized store on SQLite or Redis, and a lead changed by a pushed event
    service = live_service(settings)
    store = open_store(settings, serving=True)
    with api_client(settings, loader=lambda s: service) as client:
        event = {
            "event_id": "live-read-1",
            "lead_id": 2,
            "occurred_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            "event_type": "demo_request",
        }
        assert client.post("/v1/events", json={"events": [event]}).status_code == 200
    # when/then: every lead (and one the store does not hold) reads as Feast reads it
    lead_ids = [int(i) for i in _tables()["leads"]["lead_id"]] + [987_654_321]
    assert_reads_like_feast(store, lead_ids, request_ts=datetime.now(UTC).timestamp())
