"""The log of outcomes the CRM posts to the API (``POST /v1/outcomes``).

Closed deals that arrive through the API are stored here, in the ``api_outcomes`` table of the
live event log's database, idempotently by (``lead_id``, ``closed_at``), the moment they
arrive: a database insert is safe under concurrent requests and several API workers, where
rewriting the warehouse's Parquet table from the API would not be. Everything that reads
outcomes for training, feature builds, retraining and batch scoring reads the validated
warehouse table merged with this log (:func:`all_outcomes`), so an outcome posted to the API
feeds the next training exactly like an ingested one. Serving imports this module; it imports
no pipelines or training code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import sqlalchemy as sa

from leadscore.contracts import OUTCOMES, to_utc_us
from leadscore.event_log import open_database

_METADATA = sa.MetaData()
API_OUTCOMES = sa.Table(
    "api_outcomes",
    _METADATA,
    sa.Column("lead_id", sa.BigInteger, primary_key=True),
    # Microseconds since the epoch (UTC): an exact key on every backend.
    sa.Column("closed_at_us", sa.BigInteger, primary_key=True),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("result", sa.String(16), nullable=False),
    sa.Column("amount", sa.Float),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)


def epoch_micros(moment: datetime) -> int:
    """A moment as whole microseconds since the epoch (UTC; naive is taken as UTC)."""
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.value // 1000)


class OutcomeLog:
    """Idempotent store of the outcomes posted to the API.

    Args:
        url: SQLAlchemy URL (the live event log's by default).
    """

    def __init__(self, url: str) -> None:
        self.engine = open_database(url, API_OUTCOMES)

    def stored(self, lead_ids: Iterable[int]) -> dict[tuple[int, int], tuple[str, float | None]]:
        """The stored outcomes of the leads: (lead_id, closed_at in µs) -> (result, amount)."""
        ids = sorted({int(i) for i in lead_ids})
        if not ids:
            return {}
        query = sa.select(
            API_OUTCOMES.c.lead_id,
            API_OUTCOMES.c.closed_at_us,
            API_OUTCOMES.c.result,
            API_OUTCOMES.c.amount,
        ).where(API_OUTCOMES.c.lead_id.in_(ids))
        with self.engine.connect() as conn:
            return {(int(r[0]), int(r[1])): (str(r[2]), r[3]) for r in conn.execute(query)}

    def append(self, outcomes: Sequence[Mapping[str, Any]]) -> int:
        """Store the outcomes whose (lead_id, closed_at) is not stored yet.

        Args:
            outcomes: ``lead_id``, ``closed_at`` (aware), ``result`` and ``amount`` (validated
                by the caller).

        Returns:
            How many were new.
        """
        now = datetime.now(UTC)
        records: dict[tuple[int, int], dict[str, Any]] = {}
        for outcome in outcomes:
            closed_at = pd.Timestamp(outcome["closed_at"]).tz_convert("UTC").to_pydatetime()
            key = (int(outcome["lead_id"]), epoch_micros(outcome["closed_at"]))
            records.setdefault(
                key,
                {
                    "lead_id": key[0],
                    "closed_at_us": key[1],
                    "closed_at": closed_at,
                    "result": str(outcome["result"]),
                    "amount": None if outcome.get("amount") is None else float(outcome["amount"]),
                    "received_at": now,
                },
            )
        if not records:
            return 0
        with self.engine.begin() as conn:
            known = {
                (int(r[0]), int(r[1]))
                for r in conn.execute(
                    sa.select(API_OUTCOMES.c.lead_id, API_OUTCOMES.c.closed_at_us).where(
                        API_OUTCOMES.c.lead_id.in_(sorted({k[0] for k in records}))
                    )
                )
            }
            fresh = [r for k, r in records.items() if k not in known]
            if fresh:
                conn.execute(API_OUTCOMES.insert(), fresh)
        return len(fresh)

    def read(self) -> pd.DataFrame:
        """Every logged outcome with the ``outcomes`` contract columns, oldest received first."""
        query = sa.select(*(API_OUTCOMES.c[c] for c in OUTCOMES.column_names)).order_by(
            API_OUTCOMES.c.received_at, API_OUTCOMES.c.closed_at_us
        )
        with self.engine.connect() as conn:
            frame = pd.DataFrame(conn.execute(query).fetchall(), columns=OUTCOMES.column_names)
        frame["lead_id"] = frame["lead_id"].astype("int64")
        frame["closed_at"] = to_utc_us(frame["closed_at"]).array
        frame["result"] = frame["result"].astype(object)
        frame["amount"] = frame["amount"].astype("float64")
        return frame


def all_outcomes(*, warehouse: pd.DataFrame, log: OutcomeLog) -> pd.DataFrame:
    """The validated outcomes plus those posted to the API: one row per lead, its latest close.

    The warehouse holds one outcome per lead; a lead with outcomes in both (or several posted)
    keeps the one that closed last, the API's on a tie (it is the newer news).
    """
    logged = log.read()
    if logged.empty:
        return warehouse
    if not warehouse.empty:
        logged = logged.astype(warehouse.dtypes.to_dict())
    combined = pd.concat([warehouse, logged], ignore_index=True)
    combined = combined.sort_values("closed_at", kind="stable")
    latest = combined.drop_duplicates("lead_id", keep="last")
    return latest.sort_index().reset_index(drop=True)


def lead_created_at(warehouse_leads: Path, lead_ids: Iterable[int]) -> dict[int, pd.Timestamp]:
    """When each of the given leads was created, for those in the validated leads table."""
    ids = sorted({int(i) for i in lead_ids})
    if not ids or not Path(warehouse_leads).exists():
        return {}
    table = pq.read_table(
        warehouse_leads, columns=["lead_id", "created_at"], filters=[("lead_id", "in", ids)]
    ).to_pandas()
    created = to_utc_us(table["created_at"])
    return {int(i): pd.Timestamp(t) for i, t in zip(table["lead_id"], created, strict=True)}
