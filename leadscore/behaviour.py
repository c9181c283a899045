"""Behaviour features of leads as of given moments: the one aggregation of events.

The batch feature tables (training snapshots and the current state that is materialized
online) and the live path (a lead's recent events recomputed after a new event) both call
:func:`compute_behaviour_features`, so training and serving cannot drift apart.

Window semantics: a ``<type>_<w>d`` count holds the events with
``as_of - w days < occurred_at <= as_of``. Events after ``as_of`` are never seen, which is
what makes the training snapshots point-in-time correct.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from leadscore.contracts import EVENT_TYPES, to_utc_us
from leadscore.feature_catalog import BEHAVIOUR_FEATURES, ENGAGEMENT_WEIGHTS, WINDOWS_DAYS

_US_PER_DAY = 86_400 * 1_000_000
_MAX_PAIRS_PER_CHUNK = 8_000_000
BEHAVIOUR_COLUMNS: list[str] = [f.name for f in BEHAVIOUR_FEATURES]


def _to_us(values: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 microseconds since the epoch."""
    ts = pd.to_datetime(values, utc=True)
    return (
        ts.dt.tz_convert("UTC")
        .dt.tz_localize(None)
        .astype("datetime64[us]")
        .to_numpy()
        .view(np.int64)
    )


def compute_behaviour_features(
    *,
    events: pd.DataFrame,
    snapshots: pd.DataFrame,
    half_life_days: float,
) -> pd.DataFrame:
    """Aggregate each lead's events up to each snapshot moment.

    Args:
        events: Columns ``lead_id``, ``occurred_at`` (UTC) and ``event_type``; event types
            outside the contract are ignored.
        snapshots: Columns ``lead_id`` and ``as_of`` (UTC): the moments to compute features at.
        half_life_days: Half-life of the engagement score's exponential decay.

    Returns:
        One row per snapshot, in the snapshots' order: ``lead_id``, ``event_timestamp``
        (= ``as_of``, ``datetime64[us, UTC]``) and every behaviour feature as float64.
    """
    n_types = len(EVENT_TYPES)
    snap_lead = snapshots["lead_id"].to_numpy(dtype=np.int64)
    snap_t = _to_us(snapshots["as_of"])
    n_snap = len(snap_lead)

    type_code = pd.Categorical(events["event_type"], categories=list(EVENT_TYPES)).codes
    known = type_code >= 0
    ev_lead = events["lead_id"].to_numpy(dtype=np.int64)[known]
    ev_t = _to_us(events["occurred_at"])[known]
    ev_type = type_code[known].astype(np.int64)
    order = np.lexsort((ev_t, ev_lead))
    ev_lead, ev_t, ev_type = ev_lead[order], ev_t[order], ev_type[order]
    weights = np.array([ENGAGEMENT_WEIGHTS[t] for t in EVENT_TYPES])

    # Each snapshot sees the events of its lead up to and including its moment: a contiguous
    # range in the (lead, time) ordering.
    start = np.searchsorted(ev_lead, snap_lead, side="left")
    lead_end = np.searchsorted(ev_lead, snap_lead, side="right")
    end = _range_ends(ev_lead, ev_t, snap_lead, snap_t, start, lead_end)

    counts = np.zeros((n_snap, len(WINDOWS_DAYS), n_types))
    engagement = np.zeros(n_snap)
    sizes = end - start
    boundaries = np.concatenate(([0], np.cumsum(sizes)))
    chunk_starts = [0]
    while chunk_starts[-1] < n_snap:
        limit = boundaries[chunk_starts[-1]] + _MAX_PAIRS_PER_CHUNK
        nxt = max(int(np.searchsorted(boundaries, limit, side="right")) - 1, chunk_starts[-1] + 1)
        chunk_starts.append(min(nxt, n_snap))
    for lo, hi in itertools.pairwise(chunk_starts):
        local = np.repeat(np.arange(lo, hi), sizes[lo:hi])
        if local.size == 0:
            continue
        offsets = np.arange(local.size) - np.repeat(
            boundaries[lo:hi] - boundaries[lo], sizes[lo:hi]
        )
        idx = start[local] + offsets
        age = snap_t[local] - ev_t[idx]
        types = ev_type[idx]
        for w, days in enumerate(WINDOWS_DAYS):
            in_window = age < days * _US_PER_DAY
            flat = local[in_window] * n_types + types[in_window]
            counts[:, w, :] += np.bincount(flat, minlength=n_snap * n_types).reshape(
                n_snap, n_types
            )
        decay = np.exp2(-(age / _US_PER_DAY) / half_life_days)
        engagement += np.bincount(local, weights=weights[types] * decay, minlength=n_snap)

    days_first = np.full(n_snap, np.nan)
    days_last = np.full(n_snap, np.nan)
    seen = sizes > 0
    days_first[seen] = (snap_t[seen] - ev_t[start[seen]]) / _US_PER_DAY
    days_last[seen] = (snap_t[seen] - ev_t[end[seen] - 1]) / _US_PER_DAY

    data: dict[str, np.ndarray] = {}
    for w, days in enumerate(WINDOWS_DAYS):
        for k, event_type in enumerate(EVENT_TYPES):
            data[f"{event_type}_{days}d"] = counts[:, w, k]
    data["days_since_last_activity"] = days_last
    data["days_since_first_activity"] = days_first
    data["engagement_score"] = engagement
    out = pd.DataFrame(data)[BEHAVIOUR_COLUMNS]
    out.insert(0, "event_timestamp", to_utc_us(snap_t.astype("datetime64[us]")).array)
    out.insert(0, "lead_id", snap_lead)
    return out


def _range_ends(
    ev_lead: np.ndarray,
    ev_t: np.ndarray,
    snap_lead: np.ndarray,
    snap_t: np.ndarray,
    start: np.ndarray,
    lead_end: np.ndarray,
) -> np.ndarray:
    """Index one past the last event of each snapshot's lead with ``occurred_at <= as_of``.

    Events are sorted by (lead, time), so one searchsorted on a key ordered by lead, then by
    second finds the ends; events in the same second but after ``as_of`` are then stepped back.
    """
    if len(ev_t) == 0:
        return start.copy()
    t0 = min(int(ev_t.min()), int(snap_t.min()))
    new_lead = np.concatenate(([True], ev_lead[1:] != ev_lead[:-1]))
    ev_code = np.cumsum(new_lead) - 1
    snap_code = np.searchsorted(ev_lead[new_lead], snap_lead)
    ev_key = (ev_code << 33) | ((ev_t - t0) // 1_000_000)
    snap_key = (snap_code << 33) | ((snap_t - t0) // 1_000_000)
    end = np.clip(np.searchsorted(ev_key, snap_key, side="right"), start, lead_end)
    while True:
        late = np.flatnonzero((end > start) & (ev_t[np.maximum(end - 1, 0)] > snap_t))
        if late.size == 0:
            return end
        end[late] -= 1
