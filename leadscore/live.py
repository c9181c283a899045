"""The live path: a new event recomputes its lead's behaviour row and pushes it online.

Push sources take feature rows, not raw events: a window count cannot be incremented without
knowing which old events leave the window, so the lead's row is recomputed from its history
by the same :func:`~leadscore.behaviour.compute_behaviour_features` that builds the batch
tables, and pushed to the online store.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from leadscore.behaviour import compute_behaviour_features
from leadscore.event_log import EventLog, lead_history

if TYPE_CHECKING:
    from feast import FeatureStore

PUSH_SOURCE = "lead_behaviour_push"


class LiveFeatures:
    """Recomputes and pushes the behaviour features of leads that just acted.

    Args:
        store: The Feast store (its online store receives the rows).
        log: The live event log.
        warehouse_events: The validated events table (Parquet).
        half_life_days: Half-life of the engagement score (as in the batch build).
    """

    def __init__(
        self, *, store: FeatureStore, log: EventLog, warehouse_events: Path, half_life_days: float
    ) -> None:
        self.store = store
        self.log = log
        self.warehouse_events = warehouse_events
        self.half_life_days = half_life_days
        # Feast's SQLite online store writes through one connection shared by the API's
        # threads: two pushes at once fail ("cannot start a transaction within a transaction").
        self._push_lock = threading.Lock()

    def record(self, events: pd.DataFrame, *, now: datetime) -> list[str]:
        """Log the events, refresh their leads online; return the ids that were new.

        Every lead of the request is refreshed, duplicates included: an event logged by an
        earlier request whose push failed (the store went away between the two) comes back
        as a duplicate, and the refresh it missed must happen now.
        """
        fresh = self.log.append(events)
        leads = sorted(set(events["lead_id"].astype(int)))
        self.refresh(leads, now=now)
        return fresh

    def refresh(self, lead_ids: list[int], *, now: datetime) -> pd.DataFrame:
        """Recompute the leads' behaviour rows as of ``now`` and push them online."""
        from feast.data_source import PushMode

        history = lead_history(
            warehouse_events=self.warehouse_events, log=self.log, lead_ids=lead_ids
        )
        snapshots = pd.DataFrame({"lead_id": lead_ids, "as_of": pd.Timestamp(now)})
        rows = compute_behaviour_features(
            events=history, snapshots=snapshots, half_life_days=self.half_life_days
        )
        # Online only: Feast's file offline store would rewrite the whole table per push. The
        # event log is the offline record; the next feature build folds it in.
        with self._push_lock:
            self.store.push(PUSH_SOURCE, rows, to=PushMode.ONLINE)
        return rows
