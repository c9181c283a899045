"""The real services of the production-backend tests: PostgreSQL and Redis on 127.0.0.1.

A test that needs one asks for it through :func:`require_postgres` / :func:`require_redis`
(or the fixtures below). If the service is unreachable the test is skipped with the reason and
how to start it, except under ``CI=true``, where a missing service fails the test: CI must
not pass by skipping the production column.

Everything a test creates is named uniquely (:func:`unique_name`) and removed at the end:
PostgreSQL schemas ``leadscore_test_<hex>``, Feast projects ``lstest<hex>`` whose Redis keys
end with the project name.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pytest

from leadscore.settings import FeastSettings

POSTGRES_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_START = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'


@dataclass(frozen=True)
class PostgresParams:
    """Connection parameters; ``kwargs()`` feeds the ``leadscore.offline_postgres`` helpers."""

    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "test"
    user: str = "postgres"
    password: str = ""

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RedisParams:
    host: str = "127.0.0.1"
    port: int = 6379

    @property
    def connection_string(self) -> str:
        """Feast's ``host:port`` form."""
        return f"{self.host}:{self.port}"


def in_ci() -> bool:
    """True under ``CI=true`` (where a missing service is a failure, not a skip)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def service_unavailable(service: str, reason: str, start: str) -> NoReturn:
    """Skip the test (locally) or fail it (under ``CI=true``) because ``service`` is down."""
    message = f"{service} is unreachable: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: the service tests must run, not skip)", pytrace=False)
    pytest.skip(f"{message}; start it with `{start}`")


def require_postgres(params: PostgresParams | None = None) -> PostgresParams:
    """The PostgreSQL parameters, once a connection has succeeded (else skip/fail)."""
    import psycopg

    params = params or PostgresParams()
    try:
        with psycopg.connect(
            host=params.host,
            port=params.port,
            dbname=params.database,
            user=params.user,
            password=params.password,
            connect_timeout=3,
        ) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        service_unavailable(
            f"PostgreSQL at {params.host}:{params.port}/{params.database}",
            str(exc).strip(),
            POSTGRES_START,
        )
    return params


def require_redis(params: RedisParams | None = None) -> RedisParams:
    """The Redis parameters, once a ``PING`` has succeeded (else skip/fail)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    params = params or RedisParams()
    client = redis.Redis(
        host=params.host,
        port=params.port,
        socket_connect_timeout=3,
        retry=Retry(NoBackoff(), 0),  # redis-py retries with backoff for ~10 s by default
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable(f"Redis at {params.connection_string}", str(exc), REDIS_START)
    finally:
        client.close()
    return params


def production_feast(
    postgres: PostgresParams, redis: RedisParams, *, project: str, schema: str
) -> FeastSettings:
    """Feast settings of the production column: PostgreSQL offline, Redis online."""
    return FeastSettings(
        project=project,
        online_store="redis",
        redis_connection_string=redis.connection_string,
        offline_store="postgres",
        postgres_host=postgres.host,
        postgres_port=postgres.port,
        postgres_database=postgres.database,
        postgres_user=postgres.user,
        postgres_password=postgres.password,
        postgres_schema=schema,
    )


def unique_name(prefix: str) -> str:
    """``prefix`` + 8 random hex digits: schemas, Feast projects, tables of one test run."""
    return f"{prefix}{secrets.token_hex(4)}"


def drop_postgres_schema(params: PostgresParams, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=params.host,
        port=params.port,
        dbname=params.database,
        user=params.user,
        password=params.password,
        autocommit=True,
    ) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def delete_redis_project_keys(params: RedisParams, project: str) -> int:
    """Delete the Redis keys of one Feast project (Feast appends the project to each key)."""
    import redis

    client = redis.Redis(host=params.host, port=params.port)
    try:
        keys = list(client.scan_iter(match=b"*" + project.encode(), count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


# The fixtures are registered under their short names; test modules import the functions
# (``from tests.services import postgres_fixture``) so that pytest finds them.


@pytest.fixture(scope="module", name="postgres")
def postgres_fixture() -> PostgresParams:
    """PostgreSQL parameters (skips or fails the module's tests if it is down)."""
    return require_postgres()


@pytest.fixture(scope="module", name="redis_params")
def redis_fixture() -> RedisParams:
    """Redis parameters (skips or fails the module's tests if it is down)."""
    return require_redis()


@pytest.fixture(scope="module", name="postgres_schema")
def postgres_schema_fixture(postgres: PostgresParams) -> Iterator[str]:
    """A schema of its own (``leadscore_test_<hex>``), dropped with everything in it."""
    schema = unique_name("leadscore_test_")
    try:
        yield schema
    finally:
        drop_postgres_schema(postgres, schema)


# --------------------------------------------------------------------------------------------
# A small hand-built feature repo shared by the service tests
# --------------------------------------------------------------------------------------------

#: The present of the hand-built tables (their "now" rows are stamped here).
AS_OF = "2024-03-01"
SERVICE = "lead_scoring_test"


def profile_frame() -> pd.DataFrame:
    """Two leads, stamped at creation; lead 2 has no decision-maker answer."""
    return pd.DataFrame(
        {
            "lead_id": pd.array([1, 2], dtype="int64"),
            "event_timestamp": _utc(["2024-01-01", "2024-01-05"]),
            "source_channel": ["website", "bought_list"],
            "company_size": ["51-200", None],
            "is_decision_maker": [1.0, np.nan],
        }
    )


def behaviour_frame(*, later_demo_request: bool = False) -> pd.DataFrame:
    """Snapshot rows (day 1, SQL, day 7, day 30) and "now" rows of leads 1 and 2.

    Lead 1: page view 2024-01-01 10:00, demo request 2024-01-03 10:00. Lead 2: an e-mail open
    2024-01-06 10:00. With ``later_demo_request`` lead 1 also requested a demo on 2024-01-09
    09:00, which only rows stamped after that moment can know (the day-30 30-day count).
    """
    late = 1.0 if later_demo_request else 0.0
    rows = [
        # lead, moment, page_view_7d, demo_request_7d, demo_request_30d, days_since_last
        (1, "2024-01-02", 1.0, 0.0, 0.0, 14 / 24),
        (1, "2024-01-04", 1.0, 1.0, 1.0, 14 / 24),
        (1, "2024-01-08", 1.0, 1.0, 1.0, 4 + 14 / 24),
        (1, "2024-01-31", 0.0, 0.0, 1.0 + late, (21 + 15 / 24) if late else (27 + 14 / 24)),
        (1, AS_OF, 0.0, 0.0, 0.0, (51 + 15 / 24) if late else (57 + 14 / 24)),
        (2, "2024-01-06", 0.0, 0.0, 0.0, np.nan),
        (2, "2024-01-12", 0.0, 0.0, 0.0, 5 + 14 / 24),
        (2, "2024-02-04", 0.0, 0.0, 0.0, 28 + 14 / 24),
        (2, AS_OF, 0.0, 0.0, 0.0, 54 + 14 / 24),
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "lead_id",
            "event_timestamp",
            "page_view_7d",
            "demo_request_7d",
            "demo_request_30d",
            "days_since_last_activity",
        ],
    )
    frame["lead_id"] = frame["lead_id"].astype("int64")
    frame["event_timestamp"] = _utc(frame["event_timestamp"].tolist())
    return frame


def write_feature_tables(repo_dir: Path, *, later_demo_request: bool = False) -> dict[str, Path]:
    """Write the two Parquet tables; returns ``{stem: path}`` for ``publish_feature_tables``."""
    repo_dir.mkdir(parents=True, exist_ok=True)
    paths = {"lead_profile": repo_dir / "lead_profile.parquet"}
    paths["lead_behaviour"] = repo_dir / "lead_behaviour.parquet"
    profile_frame().to_parquet(paths["lead_profile"], index=False)
    behaviour_frame(later_demo_request=later_demo_request).to_parquet(
        paths["lead_behaviour"], index=False
    )
    return paths


def feast_definitions(repo_dir: Path | None = None) -> list[Any]:
    """Entity, file sources, push source, two views and a service over the tables above.

    Shaped like ``features/`` (behaviour view fed through a push source). FileSource paths
    are relative unless ``repo_dir`` is given (absolute paths: what DuckDB needs).
    """
    from datetime import timedelta

    from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
    from feast.types import Float64, String
    from feast.value_type import ValueType

    def path(name: str) -> str:
        return str(repo_dir / name) if repo_dir else name

    lead = Entity(name="lead", join_keys=["lead_id"], value_type=ValueType.INT64)
    profile_source = FileSource(
        name="lead_profile_source",
        path=path("lead_profile.parquet"),
        timestamp_field="event_timestamp",
    )
    behaviour_source = FileSource(
        name="lead_behaviour_source",
        path=path("lead_behaviour.parquet"),
        timestamp_field="event_timestamp",
    )
    push = PushSource(name="lead_behaviour_push", batch_source=behaviour_source)
    profile = FeatureView(
        name="lead_profile",
        entities=[lead],
        ttl=timedelta(0),
        schema=[
            Field(name="source_channel", dtype=String),
            Field(name="company_size", dtype=String),
            Field(name="is_decision_maker", dtype=Float64),
        ],
        source=profile_source,
        online=True,
    )
    behaviour = FeatureView(
        name="lead_behaviour",
        entities=[lead],
        ttl=timedelta(0),
        schema=[
            Field(name=name, dtype=Float64)
            for name in (
                "page_view_7d",
                "demo_request_7d",
                "demo_request_30d",
                "days_since_last_activity",
            )
        ],
        source=push,
        online=True,
    )
    service = FeatureService(name=SERVICE, features=[profile, behaviour])
    return [lead, profile_source, behaviour_source, push, profile, behaviour, service]


def repo_config(
    repo_dir: Path,
    *,
    project: str,
    offline_store: dict[str, Any],
    online_store: dict[str, Any],
    **extra: Any,
) -> Any:
    """A Feast ``RepoConfig`` like ``leadscore.store.store_config`` renders, backends given."""
    from feast.repo_config import RepoConfig

    return RepoConfig(
        project=project,
        provider="local",
        registry=str(repo_dir / "registry.db"),
        online_store=online_store,
        offline_store=offline_store,
        entity_key_serialization_version=3,
        repo_path=repo_dir,
        **extra,
    )


def _utc(values: list[str]) -> pd.Series:
    return pd.Series(
        pd.to_datetime(values, utc=True, format="ISO8601").astype("datetime64[us, UTC]")
    )


class PrivateRedis:
    """A redis-server of the test's own on a free port, with an append-only file (fsync on
    every write), so that stopping and starting it keeps the features; the machine's Redis is
    never touched."""

    def __init__(self, folder: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed", pytrace=False)
        folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        """Feast's ``host:port`` form."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--dir", str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
