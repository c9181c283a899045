"""Features of a lead scored from its attributes alone: a lead not yet in the feature store.

A CRM can score a lead the moment it is created, before the next ingest has put it in the
feature store, by sending its profile (the ``leads`` contract's columns) and custom attributes
with ``POST /v1/score``. The lead's feature row is then built here by the same functions that
build the batch feature tables, for a lead with no events yet, in the ``lead`` stage since its
creation: its profile and attribute features from what was sent, behaviour counts of zero, no
activity, and its channel's conversion rate as of today (from the validated tables and the
outcomes posted to the API, recomputed at most every ``refresh_seconds``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadscore.behaviour import compute_behaviour_features
from leadscore.contracts import LEAD_CHANNELS, LEADS, OUTCOMES, to_utc_us
from leadscore.lifecycle import channel_rates
from leadscore.outcome_log import OutcomeLog, all_outcomes
from leadscore.profile import compute_profile_features

_DAY = 86_400.0


class InlineFeatures:
    """Builds model feature rows from attributes sent with a request.

    Args:
        warehouse: The folder of the validated tables (for the channel conversion rates).
        outcome_log_url: Where the outcomes posted to the API are stored.
        horizon_days: How long a lead needs to mature before it counts for its channel.
        half_life_days: Half-life of the engagement score (as in the batch build).
        refresh_seconds: How long the channel rates are reused before they are recomputed.
    """

    def __init__(
        self,
        *,
        warehouse: Path,
        outcome_log_url: str,
        horizon_days: int,
        half_life_days: float,
        refresh_seconds: float = 3600.0,
    ) -> None:
        self.warehouse = warehouse
        self.outcome_log_url = outcome_log_url
        self.horizon_days = horizon_days
        self.refresh_seconds = refresh_seconds
        self._rates: dict[str, float] = {}
        self._rates_at = -np.inf
        self._lock = threading.Lock()
        no_events = pd.DataFrame(
            {
                "lead_id": pd.Series([], dtype="int64"),
                "occurred_at": pd.Series([], dtype="datetime64[us, UTC]"),
                "event_type": pd.Series([], dtype=object),
            }
        )
        now = pd.Timestamp.now(tz="UTC")
        quiet = compute_behaviour_features(
            events=no_events,
            snapshots=pd.DataFrame({"lead_id": [0], "as_of": [now]}),
            half_life_days=half_life_days,
        )
        # What a lead without any event has, whatever the day (no timestamps kept).
        self._behaviour: dict[str, float | None] = {
            str(k): (None if pd.isna(v) else float(v))
            for k, v in quiet.iloc[0].items()
            if isinstance(v, (int, float, np.floating))
        }

    def channel_rate(self, channel: str | None) -> float | None:
        """The channel's smoothed matured lead-to-won rate today (the overall rate for an
        unknown channel; None without validated tables)."""
        with self._lock:
            if time.monotonic() - self._rates_at > self.refresh_seconds:
                self._rates = self._compute_rates()
                self._rates_at = time.monotonic()
            rates = self._rates
        return rates.get(channel or "", rates.get("")) if rates else None

    def _compute_rates(self) -> dict[str, float]:
        leads_path = self.warehouse / f"{LEADS.name}.parquet"
        if not leads_path.exists():
            return {}
        leads = pd.read_parquet(leads_path, columns=["lead_id", "created_at", "source_channel"])
        outcomes_path = self.warehouse / f"{OUTCOMES.name}.parquet"
        warehouse_outcomes = (
            pd.read_parquet(outcomes_path)
            if outcomes_path.exists()
            else pd.DataFrame(columns=list(OUTCOMES.column_names))
        )
        outcomes = all_outcomes(warehouse=warehouse_outcomes, log=OutcomeLog(self.outcome_log_url))
        names = [*LEAD_CHANNELS, ""]
        today = pd.Series([pd.Timestamp.now(tz="UTC")] * len(names))
        values = channel_rates(
            leads=leads,
            outcomes=outcomes,
            channels=np.array([n or None for n in names], dtype=object),
            moments=today,
            horizon_days=self.horizon_days,
        )
        return {n: float(v) for n, v in zip(names, values, strict=True) if not np.isnan(v)}

    def row(
        self,
        lead: Mapping[str, Any],
        attributes: Mapping[str, Any],
        *,
        features: list[str],
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """The feature row of a lead with these attributes, as of ``now``.

        Args:
            lead: ``leads`` contract columns (validated); ``created_at`` defaults to ``now``.
            attributes: Custom attributes of the data set (by name).
            features: The model's features (the row holds exactly these).
            now: Scoring time (default: the clock).
        """
        moment = now or datetime.now(UTC)
        created = lead.get("created_at") or moment
        frame = pd.DataFrame([{c: lead.get(c) for c in LEADS.column_names}])
        frame["lead_id"] = 0
        frame["created_at"] = to_utc_us(pd.Series([created]))
        profile = compute_profile_features(frame).iloc[0].to_dict()
        known: dict[str, Any] = {
            **self._behaviour,
            **{str(k): v for k, v in profile.items()},
            **attributes,
            "lifecycle_stage": "lead",
            "channel_conversion_rate": self.channel_rate(lead.get("source_channel")),
            "days_since_last_activity": None,
            "days_since_first_activity": None,
            "engagement_score": 0.0,
            "days_in_stage": max((moment - created).total_seconds(), 0.0) / _DAY,
        }
        return {name: _plain(known.get(name)) for name in features}


def _plain(value: Any) -> Any:
    """Python scalars, None for missing (what the online store's rows hold)."""
    if value is None:
        return None
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value
