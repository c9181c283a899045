"""The log of live behaviour events (SQLite by default, PostgreSQL in production).

Events that arrive through the API are stored here, idempotently by ``event_id``, the moment
they arrive. The live path reads a lead's history from the validated warehouse table plus
this log, and the next ``leadscore features build`` folds the log into the feature tables, so
every live event is also used by the next training.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import sqlalchemy as sa

from leadscore.contracts import EVENTS, to_utc_us

_METADATA = sa.MetaData()
LIVE_EVENTS = sa.Table(
    "live_events",
    _METADATA,
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("lead_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("topic", sa.String(200)),
    sa.Column("channel", sa.String(64)),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)


def open_database(url: str, *tables: sa.Table, durable: bool = True) -> sa.Engine:
    """An engine on ``url`` (a SQLite file's folder is created) with ``tables`` created if
    missing: the live event log, the API's outcomes, served scores and keys share this.

    A SQLite file is used in write-ahead-log mode: readers (reports, score history) do not wait
    for writers, and a commit writes the log once instead of a rollback journal and the pages.
    ``durable`` commits are synced to disk before they return (``synchronous=FULL``: what the
    API acknowledges survives a power cut); otherwise at checkpoints only (``NORMAL``: safe
    against a crash of the process, for writes that are queued in memory before anyway).
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        synchronous = "FULL" if durable else "NORMAL"

        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.close()

    for table in tables:
        table.create(engine, checkfirst=True)
    return engine


class EventLog:
    """Append-only, idempotent store of live events.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///data/live/events.db`` or
            ``postgresql+psycopg://user@127.0.0.1/db``.
    """

    def __init__(self, url: str) -> None:
        self.engine = open_database(url, LIVE_EVENTS)

    def append(self, events: pd.DataFrame) -> list[str]:
        """Store the events not stored yet; return the ids that were new.

        Args:
            events: Rows with the ``events`` contract columns (validated by the caller).
        """
        ids = events["event_id"].astype(str).tolist()
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            known = {
                row[0]
                for row in conn.execute(
                    sa.select(LIVE_EVENTS.c.event_id).where(LIVE_EVENTS.c.event_id.in_(ids))
                )
            }
            fresh = events[~events["event_id"].astype(str).isin(known)]
            fresh = fresh.drop_duplicates("event_id")
            if not fresh.empty:
                records: list[dict[str, Any]] = [
                    {str(k): None if pd.isna(v) else v for k, v in row.items()}
                    for row in fresh[list(EVENTS.column_names)].to_dict("records")
                ]
                for record in records:
                    record["event_id"] = str(record["event_id"])
                    record["lead_id"] = int(record["lead_id"])
                    record["occurred_at"] = pd.Timestamp(record["occurred_at"]).to_pydatetime()
                    record["received_at"] = now
                conn.execute(LIVE_EVENTS.insert(), records)
        return fresh["event_id"].astype(str).tolist()

    def read(self, lead_ids: Iterable[int] | None = None) -> pd.DataFrame:
        """Logged events (of the given leads, or all) with the ``events`` contract columns."""
        query = sa.select(*(LIVE_EVENTS.c[c] for c in EVENTS.column_names))
        if lead_ids is not None:
            query = query.where(LIVE_EVENTS.c.lead_id.in_([int(i) for i in lead_ids]))
        with self.engine.connect() as conn:
            frame = pd.DataFrame(conn.execute(query).fetchall(), columns=EVENTS.column_names)
        frame["lead_id"] = frame["lead_id"].astype("int64")
        frame["occurred_at"] = to_utc_us(frame["occurred_at"]).array
        return frame


def lead_history(*, warehouse_events: Path, log: EventLog, lead_ids: list[int]) -> pd.DataFrame:
    """Every known event of the given leads: the validated table plus the live log."""
    parts = [log.read(lead_ids)]
    if warehouse_events.exists():
        present = set(pq.read_schema(warehouse_events).names)
        stored = pq.read_table(
            warehouse_events,
            columns=[c for c in EVENTS.column_names if c in present],
            filters=[("lead_id", "in", [int(i) for i in lead_ids])],
        ).to_pandas()
        parts.insert(0, stored)
    history = pd.concat([p for p in parts if not p.empty] or parts, ignore_index=True)
    return history.drop_duplicates("event_id", keep="first")


def all_events(*, warehouse: pd.DataFrame, log: EventLog) -> pd.DataFrame:
    """The validated events plus the live log, each event once (for feature builds)."""
    logged = log.read()
    if logged.empty:
        return warehouse
    combined = pd.concat([warehouse, logged], ignore_index=True)
    return combined.drop_duplicates("event_id", keep="first")
