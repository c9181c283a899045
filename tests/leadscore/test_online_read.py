"""The direct online reader gives what Feast's ``get_online_features`` gives, lead by lead."""

from __future__ import annotations

import math
import random
from typing import Any

import pyarrow.parquet as pq
import pytest

from leadscore.online_read import ServiceReader
from leadscore.store import open_store

SERVICE = "lead_scoring_v2"


def feast_row(store: Any, lead_id: int, request_ts: float) -> dict[str, Any] | None:
    """What the service read before: Feast's answer, None when every value is missing."""
    values = store.get_online_features(
        features=store.get_feature_service(SERVICE),
        entity_rows=[{"lead_id": lead_id, "request_ts": request_ts}],
    ).to_dict()
    row = {k: v[0] for k, v in values.items() if k not in ("lead_id", "request_ts")}
    return None if all(v is None for v in row.values()) else row


def same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    if a.keys() != b.keys():
        return False
    return all(
        (x == y and type(x) is type(y))
        or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        for x, y in ((a[k], b[k]) for k in a)
    )


def assert_reads_like_feast(store: Any, lead_ids: list[int], request_ts: float) -> None:
    reader = ServiceReader(store, SERVICE)
    differing = [
        lead_id
        for lead_id in lead_ids
        if not same(
            reader(lead_id, {"request_ts": request_ts}), feast_row(store, lead_id, request_ts)
        )
    ]
    assert differing == [], f"{len(differing)} of {len(lead_ids)} leads read differently"


def test_the_reader_equals_feast_on_the_stacks_leads_and_an_unknown_one(stack):
    # given: the stack's online store (profile, behaviour and lifecycle views, and the
    # python-mode on-demand recency view) and a sample of its leads
    store = open_store(stack.settings, serving=True)
    ids = pq.read_table(
        stack.settings.paths.warehouse / "leads.parquet", columns=["lead_id"]
    ).column("lead_id")
    lead_ids = random.Random(0).sample(ids.to_pylist(), 300)
    reader = ServiceReader(store, SERVICE)
    # when/then: every lead reads the same values through both, at two moments
    assert_reads_like_feast(store, lead_ids, request_ts=1_793_000_000.0)
    assert_reads_like_feast(store, lead_ids[:50], request_ts=1_800_000_000.5)
    assert reader(10**12, {"request_ts": 1_793_000_000.0}) is None
    row = reader(lead_ids[0], {"request_ts": 1_793_000_000.0})
    assert row is not None and "days_since_last_activity" in row and "source_channel" in row


def test_an_unknown_feature_service_is_named(stack):
    store = open_store(stack.settings, serving=True)
    with pytest.raises(Exception, match="no_such_service"):
        ServiceReader(store, "no_such_service")


def test_the_sqlite_store_gets_covering_indexes_that_reads_use(stack):
    # given: the stack's SQLite online store, its views' tables indexed by `features apply`
    from leadscore.online_read import add_read_indexes

    store = open_store(stack.settings, serving=True)
    conn = store._get_provider().online_store._get_conn(store.config)
    tables = [f"leadscore_{v.name}" for v in store.list_feature_views()]
    indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert {f"{t}_leadscore_read" for t in tables} <= indexes
    # when: one is gone (a store made before the indexes existed)
    dropped = f"{tables[0]}_leadscore_read"
    conn.execute(f'DROP INDEX "{dropped}"')
    conn.commit()
    # then: it is made again, once
    assert add_read_indexes(store) == [dropped]
    assert add_read_indexes(store) == []
    # and a lead's rows are read from the index alone, on a memory-mapped file
    plan = " ".join(
        str(row)
        for row in conn.execute(
            f'EXPLAIN QUERY PLAN SELECT feature_name, value FROM "{tables[0]}" '
            "WHERE entity_key = ?",
            [b"key"],
        )
    )
    assert f"COVERING INDEX {dropped}" in plan
    reader = ServiceReader(store, SERVICE)
    assert conn.execute("PRAGMA mmap_size").fetchone()[0] > 0
    ids = pq.read_table(
        stack.settings.paths.warehouse / "leads.parquet", columns=["lead_id"]
    ).column("lead_id")
    assert_reads_like_feast(store, random.Random(1).sample(ids.to_pylist(), 50), 1_793_000_000.0)
    assert reader(10**12, {"request_ts": 1_793_000_000.0}) is None


def test_the_lead_key_is_feasts_serialized_key_in_either_layout(stack):
    from feast.infra.key_encoding_utils import serialize_entity_key

    store = open_store(stack.settings, serving=True)
    reader = ServiceReader(store, SERVICE)
    for version in (3, 1):  # the current layout (8-byte ids), and an older one (4-byte ids)
        encode = reader._key_encoder(version)
        for lead_id in (0, 7, 123_456, 2**31 - 1):
            expected = serialize_entity_key(
                reader._key(lead_id), entity_key_serialization_version=version
            )
            assert encode(lead_id) == expected
