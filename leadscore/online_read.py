"""One lead's features of a Feast feature service, read from the online store directly.

``FeatureStore.get_online_features`` is built for many entities and any repository: per call
it resolves the feature references against the registry, builds a protobuf response, converts
it back to Python and runs on-demand transforms through a generic pre-processing step. For one
lead that machinery costs several times the store read itself (~3 ms against ~0.5 ms here).
:class:`ServiceReader` resolves the feature service once, then per lead reads each feature view
with the online store's own ``online_read`` (the same rows, the same serialized keys, on SQLite,
Redis or PostgreSQL alike), turns the values into Python as ``OnlineResponse.to_dict`` does and
runs each python-mode on-demand view's transformation in process. The result equals
``get_online_features(...).to_dict()`` for the service's features (a test holds the two
equal on every lead of the test stack).

The resolved views are those of the registry when the reader was built: a served model version
gets a new reader when it is loaded, as it gets its own feature service.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView, OnDemandFeatureView
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    _Read = Callable[[int], list[dict[str, Any] | None]]

# Value kinds read as they are (others go through Feast's own conversion).
_PLAIN_KINDS = frozenset(
    {"int32_val", "int64_val", "double_val", "float_val", "string_val", "bool_val", "bytes_val"}
)


# Between the names and values of a view's features in the SQLite reader's text.
_SEPARATOR = "\x1f"

# The SQLite reader's connection maps the store file into memory up to this size (SQLite
# lowers it to its compile-time limit, 2 GiB by default): a page is read from the OS page
# cache in place, without a read() call and a copy per page.
_MMAP_BYTES = 1 << 40


class UnsupportedServiceError(ValueError):
    """The feature service uses something the direct reader does not reproduce."""


@dataclass(frozen=True)
class _View:
    view: FeatureView
    names: list[str]  # every feature read (the service's and the on-demand views' inputs)
    served: list[str]  # the ones the service returns
    inputs: list[str]  # the ones the on-demand views take


def _python(value: Value) -> Any:
    """A stored value as ``OnlineResponse.to_dict`` gives it."""
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    if kind in _PLAIN_KINDS:
        return getattr(value, kind)
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(value)


def _pythons(stored: dict[str, Value] | None) -> dict[str, Any] | None:
    return None if stored is None else {name: _python(v) for name, v in stored.items()}


class _HexValues(dict[str, Any]):
    """Stored values (hex text of serialized ``Value`` protos) to Python, remembered:
    ``values[hex_text]``.

    Most of a lead's values are ones many leads share (zero counts, flags, categories): a
    remembered value is one dict lookup (in C) instead of a protobuf parse. Only immutable
    (plain) values are remembered, at most ``limit`` of them (the memory starts over when
    full).
    """

    def __init__(self, limit: int = 100_000) -> None:
        super().__init__()
        from feast.protos.feast.types.Value_pb2 import Value

        self._parse = Value.FromString
        self._limit = limit

    def __missing__(self, encoded: str) -> Any:
        value = self._parse(bytes.fromhex(encoded))
        kind = value.WhichOneof("val")
        if kind is not None and kind not in _PLAIN_KINDS:
            return _python(value)  # lists and the like: a new object every time
        python = None if kind is None else getattr(value, kind)
        if len(self) >= self._limit:
            self.clear()
        self[encoded] = python
        return python


class ServiceReader:
    """Reads a feature service's features for one lead (see the module docstring).

    Args:
        store: The open Feast store.
        feature_service: The service's name.
        join_key: The entity's join key (an int64 key).

    Raises:
        UnsupportedServiceError: An on-demand view is not in ``python`` mode, a projection
            renames its view, or a view is keyed by something else than ``join_key``.
    """

    def __init__(
        self, store: FeatureStore, feature_service: str, join_key: str = "lead_id"
    ) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey

        self._online_store = store._get_provider().online_store
        self._config = store.config
        self._entity_key = EntityKey
        self.join_key = join_key
        service = store.get_feature_service(feature_service)
        on_demand = {v.name: v for v in store.list_on_demand_feature_views()}
        needed: dict[str, set[str]] = {}
        served: dict[str, list[str]] = {}
        inputs: dict[str, set[str]] = {}
        self._transforms: list[tuple[OnDemandFeatureView, list[str]]] = []
        for projection in service.feature_view_projections:
            if projection.name_alias:
                raise UnsupportedServiceError(
                    f"feature service {feature_service}: view {projection.name} is renamed"
                )
            names = [f.name for f in projection.features]
            odfv = on_demand.get(projection.name)
            if odfv is None:
                needed.setdefault(projection.name, set()).update(names)
                served.setdefault(projection.name, []).extend(names)
                continue
            if odfv.mode != "python" or getattr(odfv, "singleton", False):
                raise UnsupportedServiceError(
                    f"feature service {feature_service}: on-demand view {odfv.name} is in "
                    f"{odfv.mode!r} mode; the direct reader runs python-mode views only"
                )
            for source in odfv.source_feature_view_projections.values():
                needed.setdefault(source.name, set()).update(f.name for f in source.features)
                inputs.setdefault(source.name, set()).update(f.name for f in source.features)
            self._transforms.append((odfv, names))
        self._views: list[_View] = []
        for name, names_needed in needed.items():
            view = store.get_feature_view(name)
            if list(view.join_keys) != [join_key]:
                raise UnsupportedServiceError(
                    f"feature view {name} is keyed by {view.join_keys}, not [{join_key!r}]"
                )
            order = [f.name for f in view.features if f.name in names_needed]
            taken = inputs.get(name, set())
            self._views.append(
                _View(view, order, served.get(name, []), [n for n in order if n in taken])
            )
        kind = type(self._online_store).__name__
        # A local file: a read never waits on a network (at most briefly on a writer's commit).
        self.local = kind == "SqliteOnlineStore"
        self._read = (
            self._sqlite_reader()
            if kind == "SqliteOnlineStore"
            else self._redis_reader()
            if kind == "RedisOnlineStore"
            else self._generic_reader()
        )
        self._request_fields = sorted(
            {
                field.name
                for odfv, _ in self._transforms
                for source in odfv.source_request_sources.values()
                for field in source.schema
            }
        )

    def __call__(self, lead_id: int, request: dict[str, Any]) -> dict[str, Any] | None:
        """The lead's feature values by name, or None when the store holds none of them.

        Args:
            lead_id: The lead.
            request: The request data the on-demand views take (e.g. ``request_ts``).
        """
        inputs: dict[str, list[Any]] = {}
        row: dict[str, Any] = {}
        for v, stored in zip(self._views, self._read(lead_id), strict=True):
            get = (stored or {}).get
            row.update(zip(v.served, map(get, v.served), strict=True))
            inputs.update({name: [get(name)] for name in v.inputs})
        if list(row.values()).count(None) == len(row):
            return None  # no view holds the lead (Redis answers empty values for it)
        for field in self._request_fields:
            inputs[field] = [request.get(field)]
        for odfv, names in self._transforms:
            assert odfv.feature_transformation is not None
            output = odfv.feature_transformation.transform(dict(inputs))
            for name in names:
                row[name] = output[name][0]
        return row

    # Each reader takes the lead id and returns, per view, its stored values by feature name
    # in Python (None for a lead the view does not hold).

    def _key(self, lead_id: int) -> EntityKey:
        from feast.protos.feast.types.Value_pb2 import Value

        return self._entity_key(join_keys=[self.join_key], entity_values=[Value(int64_val=lead_id)])

    def _generic_reader(self) -> _Read:
        def read(lead_id: int) -> list[dict[str, Any] | None]:
            key = self._key(lead_id)
            found = (
                self._online_store.online_read(
                    config=self._config, table=v.view, entity_keys=[key], requested_features=v.names
                )[0][1]
                for v in self._views
            )
            return [_pythons(stored) for stored in found]

        return read

    def _sqlite_reader(self) -> _Read:
        """Every view in one query on the store's own connection and tables (the rows
        ``SqliteOnlineStore.online_read`` reads, without their timestamps).

        Each view's rows come back as one text (feature name and hex-encoded value, all
        separated by ``\\x1f``), so the query is a single step: Python's sqlite3 releases the
        GIL around every step, and a lead's ~90 rows stepped one by one waited ~90 times on any
        busy thread. The text is taken apart with ``str.split`` and the values decoded through
        a memo (:class:`_HexValues`), both in C: no Python work per feature. The connection
        maps the file into memory (``mmap_size``), and the covering indexes of
        :func:`add_read_indexes`, where present, spare the table lookups.
        """
        from feast.infra.online_stores.sqlite import _quote_id

        store: Any = self._online_store
        config = self._config
        store._get_conn(config).execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")
        sql = " UNION ALL ".join(
            f"SELECT {i}, group_concat(feature_name || char(31) || hex(value), char(31)) FROM "
            f"{_quote_id(_sqlite_table(config, v.view))} WHERE entity_key = ?"
            for i, v in enumerate(self._views)
        )
        unsafe = [f.name for v in self._views for f in v.view.features if _SEPARATOR in f.name]
        if unsafe:
            raise UnsupportedServiceError(f"feature names {unsafe} hold the character \\x1f")
        n_views = len(self._views)
        encode_key = self._key_encoder(config.entity_key_serialization_version)
        decode = _HexValues().__getitem__

        def read(lead_id: int) -> list[dict[str, Any] | None]:
            blob = encode_key(lead_id)
            rows = store._get_conn(config).execute(sql, [blob] * n_views).fetchall()
            found: list[dict[str, Any] | None] = [None] * n_views
            for i, text in rows:
                if text:  # an aggregate over no rows is NULL
                    parts = text.split(_SEPARATOR)
                    found[i] = dict(zip(parts[::2], map(decode, parts[1::2]), strict=True))
            return found

        return read

    def _key_encoder(self, version: int) -> Callable[[int], bytes]:
        """Feast's serialized entity key of a lead id (``serialize_entity_key``), as a fixed
        prefix and the id's 8 bytes when Feast encodes it so (checked here), saving the two
        protobuf messages and Feast's encoder per lookup (~10 us)."""
        from feast.infra.key_encoding_utils import serialize_entity_key

        def feast(lead_id: int) -> bytes:
            key = self._key(lead_id)
            return serialize_entity_key(key, entity_key_serialization_version=version)

        prefix = feast(0)[:-8]
        try:
            same = all(
                feast(n) == prefix + struct.pack("<q", n) for n in (0, 1, 2**40 + 5, 2**63 - 1)
            )
        except struct.error:  # an older layout, with 4-byte ids
            same = False
        if not same:
            return feast
        pack = struct.Struct("<q").pack

        def encode(lead_id: int) -> bytes:
            return prefix + pack(lead_id)

        return encode

    def _redis_reader(self) -> _Read:
        """Every view's fields in one pipelined round trip (a lead's views share one hash),
        through the store's own key and field encoding."""
        from feast.infra.online_stores.redis import _versioned_fv_name

        store: Any = self._online_store
        config = self._config
        names = [_versioned_fv_name(v.view, config) for v in self._views]
        fields = [
            store._generate_hset_keys_for_features(v.view, list(v.names), fv_name_override=n)
            for v, n in zip(self._views, names, strict=True)
        ]

        def read(lead_id: int) -> list[dict[str, Any] | None]:
            (redis_key,) = store._generate_redis_keys_for_entities(config, [self._key(lead_id)])
            replies = store._read_hash_fields(config, [(redis_key, keys) for _, keys in fields])
            return [
                _pythons(store._get_features_for_entity(reply, name, requested)[1])
                for name, (requested, _), reply in zip(names, fields, replies, strict=True)
            ]

        return read


def _sqlite_table(config: Any, view: FeatureView) -> str:
    """The name of a feature view's table in Feast's SQLite online store."""
    from feast.infra.online_stores.sqlite import _table_id

    versioned = config.registry.enable_online_feature_view_versioning
    return str(_table_id(config.project, view, versioned))


def add_read_indexes(store: FeatureStore) -> list[str]:
    """Give each feature view's table of a SQLite online store a covering index for the
    direct reader; returns the indexes created (none for other online stores, or when each
    exists already).

    Feast's tables hold one row per (lead, feature) and index the lead's key; a read then
    looks each of a lead's ~90 rows up in the table, a page here and there. The index on
    ``(entity_key, feature_name, value)`` holds everything the reader takes, a lead's rows
    side by side: a read touches a few index pages and no table page (~25% less time in
    SQLite per lead). Feast maintains it on every write, as any index; it costs some disk and
    write time at materialization.
    """
    online_store: Any = store._get_provider().online_store
    if type(online_store).__name__ != "SqliteOnlineStore":
        return []
    from feast.infra.online_stores.sqlite import _quote_id

    config = store.config
    conn = online_store._get_conn(config)
    existing = dict(conn.execute("SELECT name, type FROM sqlite_master"))
    created = []
    for view in store.list_feature_views():
        table = _sqlite_table(config, view)
        index = f"{table}_leadscore_read"
        if existing.get(table) != "table" or index in existing:
            continue  # an offline-only view (no table), or done already
        with conn:  # one transaction per index
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {_quote_id(index)} ON {_quote_id(table)} "
                "(entity_key, feature_name, value)"
            )
        created.append(index)
    return created
