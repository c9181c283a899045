"""PostgreSQL as the Feast offline store: configuration, publishing, rebinding the sources.

The feature tables are built as Parquet files (``pipelines/feature_store.py``); in production
they are *published* into PostgreSQL, one table per file (table name = file stem) in one
schema, and the Feast definitions of ``features/`` (written against ``FileSource``) are
*rebound* to ``PostgreSQLSource`` objects reading those tables. Nothing in ``features/``
changes: the backend is chosen by the settings.

- :func:`postgres_offline_config`: the ``offline_store`` section of Feast's ``RepoConfig``.
- :func:`postgres_engine`: a SQLAlchemy engine (``postgresql+psycopg``) for publishing.
- :func:`publish_feature_tables`: bulk-load the Parquet tables (``COPY``), swapping each one
  in atomically so that readers see either the old or the new content, never a partial one.
- :func:`rebind_sources_to_postgres`: copies of the Feast objects with every ``FileSource``
  replaced by a ``PostgreSQLSource`` of the same name.
- ``*_from_settings``: the same, configured by ``settings.feast``.

``feast`` is imported inside the functions that need it: it takes seconds to import.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import queue
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg import sql
from sqlalchemy import URL, Connection, Engine, create_engine

from leadscore.settings import FeastSettings

if TYPE_CHECKING:
    import psycopg
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
        PostgreSQLSource,
    )

logger = logging.getLogger(__name__)

__all__ = [
    "connection_kwargs_from_settings",
    "postgres_engine",
    "postgres_offline_config",
    "postgres_offline_config_from_settings",
    "postgres_table_ref",
    "postgres_url",
    "publish_feature_tables",
    "publish_feature_tables_from_settings",
    "rebind_sources_to_postgres",
]

#: PostgreSQL truncates longer identifiers silently; longer names are refused instead.
MAX_IDENTIFIER_BYTES = 63
#: Rows encoded and sent to ``COPY`` at a time (bounds the memory of a publish).
COPY_BATCH_ROWS = 65_536
#: Most bytes a batch's fixed-width row layout may take (long strings split the batch).
MAX_LAYOUT_BYTES = 256 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def postgres_offline_config(
    *,
    host: str,
    port: int,
    database: str,
    user: str,
    password: str,
    schema: str,
    sslmode: str = "prefer",
) -> dict[str, Any]:
    """The ``offline_store`` section of Feast's ``RepoConfig`` for PostgreSQL.

    Args:
        host: Server host.
        port: Server port.
        database: Database holding the feature tables.
        user: Role Feast connects as.
        password: Its password (empty for trust/peer authentication).
        schema: Schema of the published feature tables (also where Feast creates the
            short-lived entity tables of ``get_historical_features``: it comes first on
            Feast's ``search_path``).
        sslmode: libpq ``sslmode``. Feast's own default is ``require``, which fails against
            a server without TLS; ``prefer`` uses TLS when the server offers it.

    Returns:
        A dict for ``RepoConfig(offline_store=...)``.
    """
    _check_identifier(schema, what="schema")
    return {
        "type": "postgres",
        "host": host,
        "port": int(port),
        "database": database,
        "user": user,
        "password": password,
        "db_schema": schema,
        "sslmode": sslmode,
    }


def connection_kwargs_from_settings(feast: FeastSettings) -> dict[str, Any]:
    """``host``, ``port``, ``database``, ``user``, ``password`` of the settings."""
    return {
        "host": feast.postgres_host,
        "port": feast.postgres_port,
        "database": feast.postgres_database,
        "user": feast.postgres_user,
        "password": feast.postgres_password,
    }


def postgres_offline_config_from_settings(feast: FeastSettings) -> dict[str, Any]:
    """:func:`postgres_offline_config` of the settings (``settings.feast``)."""
    return postgres_offline_config(
        **connection_kwargs_from_settings(feast),
        schema=feast.postgres_schema,
        sslmode=feast.postgres_sslmode,
    )


def publish_feature_tables_from_settings(
    feast: FeastSettings, parquet_paths: Mapping[str, Path]
) -> None:
    """:func:`publish_feature_tables` to the database and schema of the settings."""
    engine = postgres_engine(**connection_kwargs_from_settings(feast))
    try:
        publish_feature_tables(
            parquet_paths=parquet_paths, connection=engine, schema=feast.postgres_schema
        )
    finally:
        engine.dispose()


def postgres_url(*, host: str, port: int, database: str, user: str, password: str) -> URL:
    """SQLAlchemy URL of the database (psycopg 3 driver)."""
    return URL.create(
        "postgresql+psycopg",
        username=user,
        password=password or None,
        host=host,
        port=int(port),
        database=database,
    )


def postgres_engine(
    *, host: str, port: int, database: str, user: str, password: str, **engine_kwargs: Any
) -> Engine:
    """A SQLAlchemy engine for :func:`publish_feature_tables` (pool pre-ping on)."""
    engine_kwargs.setdefault("pool_pre_ping", True)
    return create_engine(
        postgres_url(host=host, port=port, database=database, user=user, password=password),
        **engine_kwargs,
    )


def postgres_table_ref(schema: str, table: str) -> str:
    """``"schema"."table"``: how a published table is named in SQL (quoted, case kept)."""
    return f"{_quote(_check_identifier(schema, what='schema'))}.{_quote(table)}"


# --------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------


def publish_feature_tables(
    *,
    parquet_paths: Mapping[str, Path],
    connection: Engine | Connection,
    schema: str,
    key_columns: Sequence[str] = ("lead_id",),
    timestamp_column: str = "event_timestamp",
) -> None:
    """Load Parquet feature tables into PostgreSQL, replacing each table's content atomically.

    Each file becomes ``schema.<file stem>`` (the mapping's key must be that stem, the name
    :func:`rebind_sources_to_postgres` reads). Every table is bulk-loaded with ``COPY`` into a
    fresh staging table, indexed on ``(*key_columns, timestamp_column)`` and analysed; then, in
    the same transaction, the old tables are dropped and the staging tables renamed. All
    tables of one call are swapped in one commit: a reader sees the previous set of tables or
    the new one, never a partial or a mixed one. A failure rolls everything back and leaves
    the previous tables in place.

    The rows go through binary ``COPY`` (encoded column-wise, a thread ahead of the server):
    no text round trip for floats. Timestamps become ``timestamptz`` (naive ones are taken as
    UTC; nanoseconds are truncated to PostgreSQL's microseconds); Parquet nulls become NULL,
    while a NaN stored as a value stays NaN (pandas writes NaN as null).

    Args:
        parquet_paths: Table name (the file stem) -> Parquet file.
        connection: An engine (the publish runs in its own transaction) or a connection (the
            publish joins the connection's open transaction, which the caller then commits
            or rolls back, or runs in a transaction of its own if none is open). AUTOCOMMIT
            engines and connections are fine: the publish still runs in one transaction.
        schema: Target schema; created if missing.
        key_columns: Entity key columns; each must be in every table.
        timestamp_column: Event timestamp column; must be a timestamp in every table.

    Raises:
        ValueError: A key is not its file's stem, a name is too long for PostgreSQL, a
            required column is missing or a column type has no PostgreSQL equivalent.
    """
    _check_identifier(schema, what="schema")
    plans = [
        _plan_table(name, Path(path), key_columns, timestamp_column)
        for name, path in parquet_paths.items()
    ]
    if not plans:
        return
    with _transaction(connection) as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        if raw.autocommit:
            # An AUTOCOMMIT engine or connection would commit statement by statement and
            # readers would see dropped and half-loaded tables: force one transaction.
            with raw.transaction():
                _publish(raw, plans, schema=schema)
        else:
            _publish(raw, plans, schema=schema)


class _TablePlan:
    """One table to publish: where it comes from and its PostgreSQL columns."""

    def __init__(self, name: str, path: Path, schema: pa.Schema, index_columns: list[str]) -> None:
        self.name = name
        self.path = path
        self.arrow_schema = schema
        types = [_column_type(field, table=name) for field in schema]
        self.pg_types = [pg_type for pg_type, _ in types]
        self.wire_types = [wire for _, wire in types]
        self.index_columns = index_columns
        suffix = secrets.token_hex(4)
        self.staging = f"_ls_stage_{suffix}"
        self.staging_index = f"_ls_stage_{suffix}_idx"
        self.index = _index_name(name)


def _plan_table(
    name: str, path: Path, key_columns: Sequence[str], timestamp_column: str
) -> _TablePlan:
    if name != path.stem:
        raise ValueError(
            f"table {name!r} must be named after its file's stem {path.stem!r} "
            "(the rebound PostgreSQLSource reads <schema>.<file stem>)"
        )
    _check_identifier(name, what="table")
    arrow_schema = pq.read_schema(path)
    missing = [c for c in (*key_columns, timestamp_column) if c not in arrow_schema.names]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}")
    if not pa.types.is_timestamp(arrow_schema.field(timestamp_column).type):
        raise ValueError(
            f"{path}: {timestamp_column} must be a timestamp, "
            f"not {arrow_schema.field(timestamp_column).type}"
        )
    for column in arrow_schema.names:
        _check_identifier(column, what=f"column of {name}")
    return _TablePlan(name, path, arrow_schema, [*key_columns, timestamp_column])


def _publish(raw: psycopg.Connection[Any], plans: list[_TablePlan], *, schema: str) -> None:
    with raw.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for plan in plans:
            rows = _load_staging(cur, plan, schema=schema)
            logger.info("published %s.%s: %d rows (staged)", schema, plan.name, rows)
        # The swap: only now are the live tables locked, for the time of a few catalog updates.
        for plan in plans:
            cur.execute(
                sql.SQL("DROP TABLE IF EXISTS {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(plan.name)
                )
            )
            cur.execute(
                sql.SQL("ALTER TABLE {}.{} RENAME TO {}").format(
                    sql.Identifier(schema), sql.Identifier(plan.staging), sql.Identifier(plan.name)
                )
            )
            cur.execute(
                sql.SQL("ALTER INDEX {}.{} RENAME TO {}").format(
                    sql.Identifier(schema),
                    sql.Identifier(plan.staging_index),
                    sql.Identifier(plan.index),
                )
            )


def _load_staging(cur: psycopg.Cursor[Any], plan: _TablePlan, *, schema: str) -> int:
    staging = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(plan.staging))
    columns = sql.SQL(", ").join(sql.Identifier(n) for n in plan.arrow_schema.names)
    cur.execute(
        sql.SQL("CREATE TABLE {} ({})").format(
            staging,
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))
                for n, t in zip(plan.arrow_schema.names, plan.pg_types, strict=True)
            ),
        )
    )
    rows = 0
    # FREEZE: the table was created in this transaction, so its rows can be written frozen
    # (readers skip the visibility bookkeeping a fresh load otherwise costs on first read).
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary, FREEZE)").format(
        staging, columns
    )
    # Reading and encoding run in a thread, a few batches ahead of the server's ingestion.
    encoded = (
        (batch.num_rows, _binary_rows(batch, plan.wire_types))
        for batch in pq.ParquetFile(plan.path).iter_batches(batch_size=COPY_BATCH_ROWS)
    )
    with cur.copy(copy_sql) as copy_in:
        copy_in.write(_PGCOPY_SIGNATURE)
        for n_rows, chunk in _prefetched(encoded):
            copy_in.write(chunk)
            rows += n_rows
        copy_in.write(_PGCOPY_TRAILER)
    cur.execute(
        sql.SQL("CREATE INDEX {} ON {} ({})").format(
            sql.Identifier(plan.staging_index),
            staging,
            sql.SQL(", ").join(sql.Identifier(c) for c in plan.index_columns),
        )
    )
    # Statistics of the columns joins and filters use, now (autovacuum does the rest later);
    # all 60 columns of a wide table would cost as much as the index.
    cur.execute(
        sql.SQL("ANALYZE {} ({})").format(
            staging, sql.SQL(", ").join(sql.Identifier(c) for c in plan.index_columns)
        )
    )
    return rows


_T = TypeVar("_T")


def _prefetched(items: Iterator[_T], depth: int = 2) -> Iterator[_T]:
    """Iterate ``items`` produced by a background thread, up to ``depth`` items ahead.

    Errors of the producer are raised in the consumer; a consumer that stops early (an error
    while sending) stops the producer.
    """
    slots: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, end))
        except BaseException as exc:  # handed to the consumer
            put((False, exc))

    worker = threading.Thread(target=produce, name="pgcopy-encode", daemon=True)
    worker.start()
    try:
        while True:
            ok, item = slots.get()
            if not ok:
                raise item
            if item is end:
                return
            yield item
    finally:
        stop.set()
        worker.join()


# --------------------------------------------------------------------------------------------
# PostgreSQL binary COPY, built column-wise with numpy (no per-value Python, no text floats)
# --------------------------------------------------------------------------------------------

_PGCOPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_PGCOPY_TRAILER = b"\xff\xff"
#: 2000-01-01, PostgreSQL's epoch, in Unix microseconds and days.
_PG_EPOCH_US = 946_684_800_000_000
_PG_EPOCH_DAYS = 10_957
_TEXT = "text"

#: Arrow type -> (PostgreSQL type, numpy dtype of its binary wire format).
_FIXED_TYPES: dict[pa.DataType, tuple[str, str]] = {
    pa.bool_(): ("boolean", "u1"),
    pa.int8(): ("smallint", ">i2"),
    pa.int16(): ("smallint", ">i2"),
    pa.uint8(): ("smallint", ">i2"),
    pa.int32(): ("integer", ">i4"),
    pa.uint16(): ("integer", ">i4"),
    pa.int64(): ("bigint", ">i8"),
    pa.uint32(): ("bigint", ">i8"),
    pa.float16(): ("real", ">f4"),
    pa.float32(): ("real", ">f4"),
    pa.float64(): ("double precision", ">f8"),
    pa.date32(): ("date", ">i4"),
    pa.date64(): ("date", ">i4"),
}


def _column_type(field: pa.Field, *, table: str) -> tuple[str, str]:
    """(PostgreSQL type, wire dtype) of a Parquet column; naive timestamps are taken as UTC."""
    arrow_type = field.type
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz", ">i8"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "text", _TEXT
    if arrow_type in _FIXED_TYPES:
        return _FIXED_TYPES[arrow_type]
    raise ValueError(
        f"{table}.{field.name}: Arrow type {field.type} has no PostgreSQL mapping here "
        "(feature tables hold booleans, integers up to int64/uint32, floats, strings, dates "
        "and timestamps)"
    )


def _binary_rows(batch: pa.RecordBatch, wire_types: Sequence[str]) -> memoryview:
    """The batch's rows in PostgreSQL's binary ``COPY`` format (no signature, no trailer).

    A row is an int16 field count, then per field an int32 length (-1 for NULL) and the
    big-endian value. The rows are first laid out at a fixed width in a packed numpy record
    array (each field at its widest: strings padded to the batch's longest), filled column
    by column; the bytes NULLs and short strings do not use are then dropped in one pass.
    """
    n = batch.num_rows
    encoded = [
        _encode_column(column, wire) for column, wire in zip(batch.columns, wire_types, strict=True)
    ]
    fields: list[tuple[str, Any]] = [("count", ">i2")]
    for i, (values, _) in enumerate(encoded):
        fields += [(f"l{i}", ">i4"), (f"v{i}", values.dtype.newbyteorder(">"))]
    layout = np.dtype(fields)  # packed: no alignment padding, as the wire format
    if n > 1 and n * layout.itemsize > MAX_LAYOUT_BYTES:  # long strings: halve the batch
        half = n // 2
        return memoryview(
            b"".join(
                _binary_rows(part, wire_types) for part in (batch.slice(0, half), batch.slice(half))
            )
        )
    rows = np.empty(n, dtype=layout)
    rows["count"] = len(encoded)
    for i, (values, lengths) in enumerate(encoded):
        rows[f"l{i}"] = lengths
        rows[f"v{i}"] = values
    raw = rows.view(np.uint8).reshape(n, layout.itemsize)
    keep: np.ndarray | None = None
    for i, (values, lengths) in enumerate(encoded):
        size = values.dtype.itemsize
        short = np.flatnonzero(lengths < size)  # NULLs and strings shorter than the widest
        if short.size:
            if keep is None:
                keep = np.ones(raw.shape, dtype=bool)
            offset = layout.fields[f"v{i}"][1]  # type: ignore[index]
            keep[short, offset : offset + size] = (
                np.arange(size) < np.maximum(lengths[short], 0)[:, None]
            )
    return (raw.reshape(-1) if keep is None else raw[keep]).data


def _encode_column(array: pa.Array, wire: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, int32 field lengths with -1 for NULL) of one column.

    Values are in the wire type (big-endian numbers; strings as fixed-width bytes padded to
    the longest), NULL slots hold a placeholder.
    """
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    if wire == _TEXT:
        return _encode_text(array, valid)
    if pa.types.is_timestamp(array.type):
        array = pc.subtract(
            array.cast(pa.timestamp("us", tz=array.type.tz), safe=False).cast(pa.int64()),
            _PG_EPOCH_US,
        )
    elif pa.types.is_date(array.type):
        array = pc.subtract(array.cast(pa.date32()).cast(pa.int32()), _PG_EPOCH_DAYS)
    elif pa.types.is_boolean(array.type):
        array = array.cast(pa.uint8())
    values = np.asarray(array.fill_null(0).to_numpy(zero_copy_only=False)).astype(wire)
    return values, np.where(valid, values.dtype.itemsize, -1).astype(np.int32)


def _encode_text(array: pa.Array, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    array = array.cast(pa.large_string())
    n = len(array)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + n + 1]
    lengths = np.where(valid, np.diff(offsets), 0)
    size = max(int(lengths.max()) if n else 0, 1)
    padded = np.zeros((n, size), dtype=np.uint8)
    total = int(lengths.sum())
    data_buffer = array.buffers()[2]
    if total and data_buffer is not None:
        data = np.frombuffer(data_buffer, dtype=np.uint8)
        rows = np.repeat(np.arange(n), lengths)
        within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        padded[rows, within] = data[np.repeat(offsets[:-1], lengths) + within]
    return padded.view(f"S{size}").reshape(n), np.where(valid, lengths, -1).astype(np.int32)


@contextmanager
def _transaction(connection: Engine | Connection) -> Iterator[Connection]:
    if isinstance(connection, Engine):
        with connection.begin() as conn:
            yield conn
    elif connection.in_transaction():
        yield connection
    else:
        with connection.begin():
            yield connection


def _index_name(table: str) -> str:
    name = f"{table}_key_ts_idx"
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha1(table.encode()).hexdigest()[:12]
    return f"{table.encode()[:40].decode(errors='ignore')}_{digest}_idx"


def _check_identifier(name: str, *, what: str) -> str:
    if not name or "\x00" in name or len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"{what} name {name!r} is not a usable PostgreSQL identifier "
            f"(1 to {MAX_IDENTIFIER_BYTES} bytes)"
        )
    return name


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------------------------
# Rebinding the Feast definitions
# --------------------------------------------------------------------------------------------


def rebind_sources_to_postgres(objects: Sequence[Any], *, schema: str) -> list[Any]:
    """The Feast objects with every ``FileSource`` replaced by a ``PostgreSQLSource``.

    Works on copies (one ``deepcopy`` of the whole list, so the copies reference each other
    like the originals do): the module-level objects of ``features/`` are left untouched. A
    ``FileSource`` named ``n`` over ``.../<stem>.parquet`` becomes ``PostgreSQLSource(name=n,
    table='"<schema>"."<stem>"')`` with the same timestamp fields, field mapping, description,
    tags and owner. Push (and Kafka/Kinesis) sources get the rebound batch source; feature
    views (batch and stream, derived views' sources included), their projections, feature
    services' projections and on-demand views' source projections are rebound too. Entities
    and other sources are copied unchanged.

    Args:
        objects: What ``apply_definitions`` registers (entities, sources, views, services).
        schema: Schema the tables were published to (:func:`publish_feature_tables`).

    Returns:
        The rebound copies, in the same order.
    """
    _check_identifier(schema, what="schema")
    return _Rebinder(schema).rebind(list(objects))


class _Rebinder:
    def __init__(self, schema: str) -> None:
        from feast import FeatureService, FeatureView, FileSource, OnDemandFeatureView
        from feast.data_source import DataSource

        self.schema = schema
        self.replaced: dict[int, PostgreSQLSource] = {}
        self.visited: set[int] = set()
        self._file_source = FileSource
        self._data_source = DataSource
        self._feature_view = FeatureView
        self._feature_service = FeatureService
        self._odfv = OnDemandFeatureView

    def rebind(self, objects: list[Any]) -> list[Any]:
        copies = copy.deepcopy(objects)
        out: list[Any] = []
        for obj in copies:
            if isinstance(obj, self._data_source):
                out.append(self.source(obj))
            else:
                self.visit(obj)
                out.append(obj)
        return out

    def source(self, source: Any) -> Any:
        """The replacement of a data source (nested batch sources rebound in place)."""
        if source is None:
            return None
        if isinstance(source, self._file_source):
            key = id(source)
            if key not in self.replaced:
                self.replaced[key] = self._postgres_source(source)
            return self.replaced[key]
        if getattr(source, "batch_source", None) is not None:
            source.batch_source = self.source(source.batch_source)
        return source

    def visit(self, obj: Any) -> None:
        if id(obj) in self.visited:
            return
        self.visited.add(id(obj))
        if isinstance(obj, self._feature_view):
            obj.batch_source = self.source(obj.batch_source)
            obj.stream_source = self.source(obj.stream_source)
            obj.data_source = self.source(obj.data_source)
            for view in obj.source_views or []:
                self.visit(view)
            self.projection(obj.projection)
        elif isinstance(obj, self._odfv):
            for projection in obj.source_feature_view_projections.values():
                self.projection(projection)
            self.projection(obj.projection)
        elif isinstance(obj, self._feature_service):
            for projection in obj.feature_view_projections:
                self.projection(projection)
            for grouping in obj._features:
                if not isinstance(grouping, str):
                    self.visit(grouping)

    def projection(self, projection: Any) -> None:
        if projection is not None and getattr(projection, "batch_source", None) is not None:
            projection.batch_source = self.source(projection.batch_source)

    def _postgres_source(self, source: Any) -> PostgreSQLSource:
        from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
            PostgreSQLSource,
        )

        stem = _file_stem(source.path)
        return PostgreSQLSource(
            name=source.name,
            table=postgres_table_ref(self.schema, _check_identifier(stem, what="table")),
            timestamp_field=source.timestamp_field,
            created_timestamp_column=source.created_timestamp_column,
            field_mapping=dict(source.field_mapping),
            description=source.description,
            tags=dict(source.tags),
            owner=source.owner,
        )


def _file_stem(uri: str) -> str:
    """``lead_profile`` for ``lead_profile.parquet``, ``/x/lead_profile.parquet``, ``s3://...``."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return name[: -len(".parquet")] if name.endswith(".parquet") else Path(name).stem
