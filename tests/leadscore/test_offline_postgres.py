"""PostgreSQL offline store: publishing feature tables, rebinding sources, point-in-time joins.

The tests marked ``service`` run against the real PostgreSQL on 127.0.0.1 (see
``tests/services.py``: skipped if it is down, failed under ``CI=true``), each module in a
schema of its own that is dropped at the end.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from leadscore.offline_postgres import (
    postgres_engine,
    postgres_offline_config,
    postgres_table_ref,
    publish_feature_tables,
    rebind_sources_to_postgres,
)
from tests.services import (
    SERVICE,
    PostgresParams,
    feast_definitions,
    postgres_fixture,  # noqa: F401  (fixture)
    postgres_schema_fixture,  # noqa: F401  (fixture)
    repo_config,
    unique_name,
    write_feature_tables,
)

# --------------------------------------------------------------------------------------------
# Rebinding (no service needed)
# --------------------------------------------------------------------------------------------


def test_rebind_replaces_every_file_source_of_the_real_repo_without_touching_it():
    # given: the objects the pipeline registers, and what their FileSources look like now
    from feast import FeatureService, FeatureView, FileSource, PushSource
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
        PostgreSQLSource,
    )

    from features.repo import OBJECTS

    before = [o.to_proto().SerializeToString() for o in OBJECTS]
    file_sources = {o.name: o for o in OBJECTS if isinstance(o, FileSource)}
    assert file_sources, "features.repo registers no FileSource any more?"

    # when
    rebound = rebind_sources_to_postgres(OBJECTS, schema="fs_prod")

    # then: same objects by name and kind, no FileSource anywhere in their definitions
    assert [o.name for o in rebound] == [o.name for o in OBJECTS]
    for obj in rebound:
        assert not isinstance(obj, FileSource)
        assert "file_options" not in str(obj.to_proto()), obj.name
    sources = {o.name: o for o in rebound if isinstance(o, PostgreSQLSource)}
    assert sources.keys() == file_sources.keys()
    for name, source in sources.items():
        original = file_sources[name]
        stem = Path(original.path).stem
        assert source.get_table_query_string() == f'"fs_prod"."{stem}"'
        assert source.timestamp_field == original.timestamp_field
        assert source.created_timestamp_column == original.created_timestamp_column
        assert source.description == original.description
    # push sources and views point at the very same rebound source objects
    for obj in rebound:
        if isinstance(obj, PushSource):
            assert obj.batch_source is not None
            assert obj.batch_source is sources[obj.batch_source.name]
        if isinstance(obj, FeatureView) and obj.batch_source is not None:
            assert obj.batch_source is sources[obj.batch_source.name]
            assert obj.projection.batch_source is obj.batch_source
        if isinstance(obj, FeatureService):
            for projection in obj.feature_view_projections:
                assert not isinstance(projection.batch_source, FileSource)
    # the module-level definitions are unchanged
    assert [o.to_proto().SerializeToString() for o in OBJECTS] == before
    assert all(isinstance(o, FileSource) for o in file_sources.values())


def test_rebind_is_generic_over_views_it_has_never_seen(tmp_path):
    # given: a view over a table the project does not have (yet)
    from datetime import timedelta

    from feast import Entity, FeatureService, FeatureView, Field, FileSource
    from feast.types import Float64

    lead = Entity(name="lead", join_keys=["lead_id"])
    source = FileSource(
        name="lead_lifecycle_source",
        path=str(tmp_path / "lead_lifecycle.parquet"),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
        field_mapping={"stage_raw": "stage_rank"},
        tags={"team": "growth"},
    )
    view = FeatureView(
        name="lead_lifecycle",
        entities=[lead],
        ttl=timedelta(days=90),
        schema=[Field(name="stage_rank", dtype=Float64)],
        source=source,
    )
    service = FeatureService(name="lifecycle_only", features=[view])

    # when: only the view and the service are passed (the source is reached through them)
    new_view, new_service = rebind_sources_to_postgres([view, service], schema="s")

    # then
    assert new_view.batch_source.get_table_query_string() == '"s"."lead_lifecycle"'
    assert new_view.batch_source.field_mapping == {"stage_raw": "stage_rank"}
    assert new_view.batch_source.created_timestamp_column == "created"
    assert new_view.batch_source.tags == {"team": "growth"}
    assert new_service.feature_view_projections[0].batch_source is new_view.batch_source
    assert isinstance(view.batch_source, FileSource)


def test_publish_refuses_tables_it_cannot_name_or_read(tmp_path):
    # given: an engine (never connected: validation comes first)
    engine = postgres_engine(host="127.0.0.1", port=1, database="none", user="nobody", password="")
    paths = write_feature_tables(tmp_path)
    no_ts = tmp_path / "no_ts.parquet"
    pd.DataFrame({"lead_id": [1], "x": [1.0]}).to_parquet(no_ts)
    lists = tmp_path / "lists.parquet"
    pd.DataFrame(
        {"lead_id": [1], "event_timestamp": pd.to_datetime(["2024-01-01"], utc=True), "l": [[1]]}
    ).to_parquet(lists)

    # when / then
    with pytest.raises(ValueError, match="stem"):
        publish_feature_tables(
            parquet_paths={"profile": paths["lead_profile"]}, connection=engine, schema="s"
        )
    with pytest.raises(ValueError, match="event_timestamp"):
        publish_feature_tables(parquet_paths={"no_ts": no_ts}, connection=engine, schema="s")
    with pytest.raises(ValueError, match=r"lists\.l"):
        publish_feature_tables(parquet_paths={"lists": lists}, connection=engine, schema="s")
    with pytest.raises(ValueError, match="identifier"):
        postgres_offline_config(
            host="h", port=1, database="d", user="u", password="", schema="x" * 64
        )


# --------------------------------------------------------------------------------------------
# Against the real PostgreSQL
# --------------------------------------------------------------------------------------------


def _connect(params: PostgresParams, **kwargs) -> psycopg.Connection:
    return psycopg.connect(
        host=params.host,
        port=params.port,
        dbname=params.database,
        user=params.user,
        password=params.password,
        **kwargs,
    )


def _engine(params: PostgresParams):
    return postgres_engine(**params.kwargs())


def _offline(params: PostgresParams, schema: str) -> dict:
    return postgres_offline_config(**params.kwargs(), schema=schema)


@pytest.mark.service
def test_published_tables_hold_the_parquet_rows_with_timestamptz_and_an_index(
    postgres, postgres_schema, tmp_path
):
    # given
    paths = write_feature_tables(tmp_path)
    engine = _engine(postgres)

    # when
    publish_feature_tables(parquet_paths=paths, connection=engine, schema=postgres_schema)
    engine.dispose()

    # then: same rows, nulls stay nulls, timestamps are timestamptz, (lead_id, ts) indexed
    with _connect(postgres) as conn:
        types: dict[str, str] = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'lead_profile'",
                (postgres_schema,),
            ).fetchall()
        )
        indexes = [
            row[0]
            for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                (postgres_schema, "lead_behaviour"),
            ).fetchall()
        ]
        profile = conn.execute(
            f"SELECT lead_id, event_timestamp, company_size, is_decision_maker "
            f"FROM {postgres_table_ref(postgres_schema, 'lead_profile')} ORDER BY lead_id"
        ).fetchall()
        n_behaviour = conn.execute(
            f"SELECT count(*) FROM {postgres_table_ref(postgres_schema, 'lead_behaviour')}"
        ).fetchall()
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename LIKE '\\_ls%%'",
            (postgres_schema,),
        ).fetchone()
    assert types == {
        "lead_id": "bigint",
        "event_timestamp": "timestamp with time zone",
        "source_channel": "text",
        "company_size": "text",
        "is_decision_maker": "double precision",
    }
    assert len(indexes) == 1 and "(lead_id, event_timestamp)" in indexes[0]
    assert [(r[0], r[1].isoformat(), r[2], r[3]) for r in profile] == [
        (1, "2024-01-01T00:00:00+00:00", "51-200", 1.0),
        (2, "2024-01-05T00:00:00+00:00", None, None),  # NULL, not NaN
    ]
    assert n_behaviour == [(9,)]
    assert leftovers == (0,)


@pytest.mark.service
def test_publish_round_trips_every_supported_column_type(
    postgres, postgres_schema, tmp_path, monkeypatch
):
    # given: one column per supported Arrow type, with NULLs, NaN, empty and long strings
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from leadscore import offline_postgres

    n = 7
    long_text = "é" * 300
    table = pa.table(
        {
            "lead_id": pa.array(range(n), pa.int64()),
            "event_timestamp": pa.array(
                [dt.datetime(2024, 1, 1, 12, 30, 15, 123456 + i) for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "naive_ns": pa.array(
                [1_700_000_000_123_456_789 + i for i in range(n - 1)] + [None],
                pa.timestamp("ns"),
            ),
            "flag": pa.array([True, False, None, True, False, True, None]),
            "i8": pa.array([-128, 127, None, 0, 1, 2, 3], pa.int8()),
            "u8": pa.array([255, 0, None, 1, 2, 3, 4], pa.uint8()),
            "i16": pa.array([-32768, 32767, None, 0, 1, 2, 3], pa.int16()),
            "i32": pa.array([-(2**31), 2**31 - 1, None, 0, 1, 2, 3], pa.int32()),
            "u32": pa.array([2**32 - 1, 0, None, 1, 2, 3, 4], pa.uint32()),
            "f32": pa.array([1.5, -0.25, None, 3.0, 0.0, 1e30, -1e-30], pa.float32()),
            "f64": pa.array([1 / 3, float("nan"), None, float("inf"), -0.0, 1e300, 5e-324]),
            "day": pa.array(
                [dt.date(1970, 1, 1), dt.date(2024, 2, 29), None] + [dt.date(1999, 12, 31)] * 4
            ),
            "text": pa.array(["a", "", None, "ünïcødé ✓", long_text, "x\ty", 'comma,quote"']),
            "category": pa.array(
                ["web", "web", None, "partner", "", "web", "partner"]
            ).dictionary_encode(),
        }
    )
    path = tmp_path / "typed.parquet"
    pq.write_table(table, path)
    # a tiny layout budget forces the batch-splitting path as well
    monkeypatch.setattr(offline_postgres, "MAX_LAYOUT_BYTES", 1024)
    engine = _engine(postgres)

    # when
    publish_feature_tables(parquet_paths={"typed": path}, connection=engine, schema=postgres_schema)
    engine.dispose()

    # then: every value comes back as it went in
    ref = postgres_table_ref(postgres_schema, "typed")
    with _connect(postgres) as conn:
        rows = conn.execute(f"SELECT * FROM {ref} ORDER BY lead_id").fetchall()
        names = [c.name for c in conn.execute(f"SELECT * FROM {ref} LIMIT 0").description or []]
    got = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    expected = table.to_pydict()
    for name in ("lead_id", "flag", "i8", "u8", "i16", "i32", "u32", "text", "category", "day"):
        assert got[name] == expected[name], name
    for a, b in zip(got["f32"], expected["f32"], strict=True):
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-7), (a, b)
    assert got["f64"][0] == 1 / 3 and np.isnan(got["f64"][1]) and got["f64"][2] is None
    assert got["f64"][3:] == [float("inf"), -0.0, 1e300, 5e-324]
    assert got["event_timestamp"] == expected["event_timestamp"]
    # naive timestamps are UTC; PostgreSQL keeps microseconds (nanoseconds truncated)
    assert got["naive_ns"][0] == dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=dt.UTC)
    assert got["naive_ns"][-1] is None


@pytest.mark.service
def test_historical_features_from_postgres_are_point_in_time_correct(
    postgres, postgres_schema, tmp_path
):
    # given: tables published and the definitions rebound and registered
    from feast import FeatureStore

    paths = write_feature_tables(tmp_path)
    engine = _engine(postgres)
    publish_feature_tables(parquet_paths=paths, connection=engine, schema=postgres_schema)
    config = repo_config(
        tmp_path,
        project=unique_name("lstest"),
        offline_store=_offline(postgres, postgres_schema),
        online_store={"type": "sqlite", "path": str(tmp_path / "online.db")},
    )
    store = FeatureStore(config=config)
    store.apply(rebind_sources_to_postgres(feast_definitions(), schema=postgres_schema))
    entity_df = pd.DataFrame(
        {
            "lead_id": [1, 1, 1, 2, 2, 99],
            "event_timestamp": pd.to_datetime(
                [
                    "2024-01-02",  # lead 1, day 1
                    "2024-01-08",  # lead 1, day 7
                    "2024-01-31 12:00",  # lead 1, day 30
                    "2024-01-04",  # lead 2 before it was created
                    "2024-01-12",  # lead 2, day 7
                    "2024-01-10",  # unknown lead
                ],
                utc=True,
                format="ISO8601",
            ),
        }
    )
    service = store.get_feature_service(SERVICE)
    before = _sorted(store.get_historical_features(entity_df=entity_df, features=service).to_df())

    # when: a demo request arrives on 2024-01-09 and the tables are rebuilt and republished
    paths = write_feature_tables(tmp_path, later_demo_request=True)
    publish_feature_tables(parquet_paths=paths, connection=engine, schema=postgres_schema)
    after = _sorted(store.get_historical_features(entity_df=entity_df, features=service).to_df())
    engine.dispose()

    # then: each row holds what was known at its moment, before and after the rebuild
    assert _values(before["demo_request_7d"]) == [0.0, 1.0, 0.0, None, 0.0, None]
    assert _values(before["page_view_7d"]) == [1.0, 1.0, 0.0, None, 0.0, None]
    assert _values(before["source_channel"]) == [
        "website", "website", "website", None, "bought_list", None
    ]  # fmt: skip
    assert _values(before["company_size"]) == ["51-200"] * 3 + [None] * 3
    assert _values(before["demo_request_30d"]) == [0.0, 1.0, 1.0, None, 0.0, None]
    # only the day-30 row can know of the later demo request
    assert _values(after["demo_request_30d"]) == [0.0, 1.0, 2.0, None, 0.0, None]
    unchanged = [
        c for c in before.columns if c not in ("demo_request_30d", "days_since_last_activity")
    ]
    pd.testing.assert_frame_equal(before[unchanged], after[unchanged])

    # and: the same answer as the embedded default (DuckDB over the same Parquet files)
    duck_dir = tmp_path / "duck"
    duck_dir.mkdir()
    duck = FeatureStore(
        config=repo_config(
            duck_dir,
            project=unique_name("lstest"),
            offline_store={"type": "duckdb"},
            online_store={"type": "sqlite", "path": str(duck_dir / "online.db")},
        )
    )
    duck.apply(feast_definitions(tmp_path))
    expected = _sorted(
        duck.get_historical_features(
            entity_df=entity_df, features=duck.get_feature_service(SERVICE)
        ).to_df()
    )
    for column in after.columns.drop("event_timestamp"):
        assert _values(after[column]) == pytest.approx(_values(expected[column])), column


@pytest.mark.service
def test_a_publish_that_fails_midway_leaves_the_previous_tables_in_place(
    postgres, postgres_schema, tmp_path, monkeypatch
):
    # given: version 1 published; version 2's behaviour table fails while it is being sent
    from leadscore import offline_postgres

    engine = _engine(postgres)
    publish_feature_tables(
        parquet_paths=write_feature_tables(tmp_path / "v1"),
        connection=engine,
        schema=postgres_schema,
    )
    encode = offline_postgres._binary_rows

    def failing(batch, wire_types):
        if "demo_request_30d" in batch.schema.names:
            raise OSError("disk full")
        return encode(batch, wire_types)

    monkeypatch.setattr(offline_postgres, "_binary_rows", failing)

    # when
    with pytest.raises(OSError, match="disk full"):
        publish_feature_tables(
            parquet_paths=write_feature_tables(tmp_path / "v2", later_demo_request=True),
            connection=engine,
            schema=postgres_schema,
        )
    engine.dispose()

    # then: version 1 is still there, whole, and nothing of version 2 is left behind
    ref = postgres_table_ref(postgres_schema, "lead_behaviour")
    with _connect(postgres) as conn:
        day_30 = conn.execute(
            f"SELECT demo_request_30d FROM {ref} "
            "WHERE lead_id = 1 AND event_timestamp = '2024-01-31T00:00:00Z'"
        ).fetchall()
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1",
            (postgres_schema,),
        ).fetchall()
    assert day_30 == [(1.0,)]
    assert [t for (t,) in tables if t.startswith("_ls")] == []
    assert {"lead_behaviour", "lead_profile"} <= {t for (t,) in tables}


@pytest.mark.service
def test_a_publish_on_a_connection_in_a_transaction_is_the_callers_to_commit(
    postgres, postgres_schema, tmp_path
):
    # given: a connection with an open transaction
    paths = write_feature_tables(tmp_path)
    renamed = {
        f"caller_{k}": v.rename(v.with_name(f"caller_{k}.parquet")) for k, v in paths.items()
    }
    engine = _engine(postgres)

    def tables() -> set[str]:
        with _connect(postgres) as conn:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
                (postgres_schema, "caller%"),
            ).fetchall()
        return {t for (t,) in rows}

    # when: published inside it, then rolled back; published again, then committed
    with engine.connect() as conn:
        conn.begin()
        publish_feature_tables(parquet_paths=renamed, connection=conn, schema=postgres_schema)
        conn.rollback()
        after_rollback = tables()
        conn.begin()
        publish_feature_tables(parquet_paths=renamed, connection=conn, schema=postgres_schema)
        before_commit = tables()
        conn.commit()
    engine.dispose()

    # then
    assert after_rollback == set()
    assert before_commit == set()
    assert tables() == set(renamed)


@pytest.mark.service
@pytest.mark.parametrize("isolation", ["default", "AUTOCOMMIT"])
def test_republishing_while_another_connection_reads_never_shows_a_partial_table(
    postgres, postgres_schema, tmp_path, isolation
):
    # given: two versions of two tables with different row counts, each row marked with its
    # version; version 1 published
    def write(version: int, n_rows: int) -> dict[str, Path]:
        out = {}
        for name in ("pub_a", "pub_b"):
            frame = pd.DataFrame(
                {
                    "lead_id": np.arange(n_rows, dtype="int64"),
                    "event_timestamp": pd.Timestamp("2024-01-01", tz="UTC"),
                    "version": np.full(n_rows, version, dtype="int64"),
                    "x": np.random.default_rng(version).random(n_rows),
                }
            )
            out[name] = tmp_path / f"v{version}" / f"{name}.parquet"
            out[name].parent.mkdir(exist_ok=True)
            frame.to_parquet(out[name], index=False)
        return out

    sizes = {1: 20_000, 2: 8_000}
    versions = {v: write(v, n) for v, n in sizes.items()}
    # (an AUTOCOMMIT engine must not turn the swap into visible steps)
    extra = {} if isolation == "default" else {"isolation_level": isolation}
    engine = postgres_engine(**postgres.kwargs(), **extra)
    publish_feature_tables(parquet_paths=versions[1], connection=engine, schema=postgres_schema)
    a = postgres_table_ref(postgres_schema, "pub_a")
    b = postgres_table_ref(postgres_schema, "pub_b")
    query = (
        f"SELECT (SELECT count(*) FROM {a}), (SELECT min(version) FROM {a}), "
        f"(SELECT max(version) FROM {a}), (SELECT count(*) FROM {b}), "
        f"(SELECT max(version) FROM {b})"
    )
    seen: list[tuple | None] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            with _connect(postgres, autocommit=True) as conn:
                while not done.is_set():
                    seen.append(conn.execute(query).fetchone())
        except BaseException as exc:
            errors.append(exc)

    # when: republished back and forth while another connection reads in a loop
    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(4):
            publish_feature_tables(
                parquet_paths=versions[2 if round_ % 2 == 0 else 1],
                connection=engine,
                schema=postgres_schema,
            )
            time.sleep(0.01)
    finally:
        done.set()
        reader.join(timeout=30)
        engine.dispose()

    # then: every read saw one whole version of both tables
    assert not errors, errors
    assert len(seen) > 4
    valid = {(sizes[v], v, v, sizes[v], v) for v in sizes}
    assert set(seen) <= valid, set(seen) - valid
    assert set(seen) == valid  # both versions were seen


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame.sort_values(["lead_id", "event_timestamp"]).reset_index(drop=True)


def _values(column: pd.Series) -> list:
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in column]
