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
from leadscore.feature_catalog import (
    BEHAVIOUR_FEATURES,
    ENGAGEMENT_WEIGHTS,
    HIGH_INTENT_WEIGHTS,
    LOW_INTENT_WEIGHTS,
    WINDOWS_DAYS,
)

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
        events: Columns ``lead_id``, ``occurred_at`` (UTC), ``event_type`` and optionally
            ``topic`` and ``channel``; event types outside the contract are ignored.
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
    ev_topic = _codes(events, "topic")[known]
    ev_channel = _codes(events, "channel")[known]
    order = np.lexsort((ev_t, ev_lead))
    ev_lead, ev_t, ev_type = ev_lead[order], ev_t[order], ev_type[order]
    ev_topic, ev_channel = ev_topic[order], ev_channel[order]
    weights = np.array([ENGAGEMENT_WEIGHTS[t] for t in EVENT_TYPES])

    # Each snapshot sees the events of its lead up to and including its moment: a contiguous
    # range in the (lead, time) ordering.
    start = np.searchsorted(ev_lead, snap_lead, side="left")
    lead_end = np.searchsorted(ev_lead, snap_lead, side="right")
    end = _range_ends(ev_lead, ev_t, snap_lead, snap_t, start, lead_end)

    counts = np.zeros((n_snap, len(WINDOWS_DAYS), n_types))
    last_28d = np.zeros(n_snap)
    engagement = np.zeros(n_snap)
    topics = np.zeros(n_snap)
    channels = np.zeros(n_snap)
    unsubscribes = np.zeros(n_snap)
    unsubscribe = EVENT_TYPES.index("unsubscribe")
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
        last_28d += np.bincount(local[age < 28 * _US_PER_DAY], minlength=n_snap)
        decay = np.exp2(-(age / _US_PER_DAY) / half_life_days)
        engagement += np.bincount(local, weights=weights[types] * decay, minlength=n_snap)
        unsubscribes += np.bincount(local[types == unsubscribe], minlength=n_snap)
        recent = age < 90 * _US_PER_DAY
        topics += _distinct_per_snapshot(local[recent], ev_topic[idx][recent], n_snap)
        channels += _distinct_per_snapshot(local[recent], ev_channel[idx][recent], n_snap)

    first_at = np.full(n_snap, np.nan)
    last_at = np.full(n_snap, np.nan)
    seen = sizes > 0
    first_at[seen] = ev_t[start[seen]] / 1e6
    last_at[seen] = ev_t[end[seen] - 1] / 1e6

    data: dict[str, np.ndarray] = {}
    for w, days in enumerate(WINDOWS_DAYS):
        for k, event_type in enumerate(EVENT_TYPES):
            data[f"{event_type}_{days}d"] = counts[:, w, k]
    high = np.array([HIGH_INTENT_WEIGHTS.get(t, 0.0) for t in EVENT_TYPES])
    low = np.array([LOW_INTENT_WEIGHTS.get(t, 0.0) for t in EVENT_TYPES])
    for w, days in enumerate(WINDOWS_DAYS):
        data[f"high_intent_{days}d"] = counts[:, w, :] @ high
        data[f"low_intent_{days}d"] = counts[:, w, :] @ low
    last_7d = counts[:, WINDOWS_DAYS.index(7), :].sum(axis=1)
    # Events per day, last 7 days against the 21 before, each smoothed by a prior rate of one
    # event per 28 days: an idle lead is steady (1.0), a first event is not infinitely hot.
    data["momentum"] = ((last_7d + 0.25) / 7) / ((last_28d - last_7d + 0.75) / 21)
    data["distinct_topics_90d"] = topics
    data["distinct_channels_90d"] = channels
    w90 = WINDOWS_DAYS.index(90)
    registered = counts[:, w90, EVENT_TYPES.index("webinar_registered")]
    attended = counts[:, w90, EVENT_TYPES.index("webinar_attended")]
    data["webinars_missed_90d"] = np.maximum(registered - attended, 0)
    data["unsubscribed"] = (unsubscribes > 0).astype(np.float64)
    data["first_activity_at"] = first_at
    data["last_activity_at"] = last_at
    data["engagement_at_as_of"] = engagement
    data["as_of_ts"] = snap_t / 1e6
    data["engagement_half_life_days"] = np.full(n_snap, float(half_life_days))
    out = pd.DataFrame(data)[BEHAVIOUR_COLUMNS]
    out.insert(0, "event_timestamp", to_utc_us(snap_t.astype("datetime64[us]")).array)
    out.insert(0, "lead_id", snap_lead)
    return out


def _codes(events: pd.DataFrame, column: str) -> np.ndarray:
    """Integer codes of an optional categorical column (-1: missing or absent)."""
    if column not in events.columns:
        return np.full(len(events), -1, dtype=np.int64)
    codes, _ = pd.factorize(events[column], use_na_sentinel=True)
    return codes.astype(np.int64)


def _distinct_per_snapshot(local: np.ndarray, codes: np.ndarray, n_snap: int) -> np.ndarray:
    """Number of distinct non-missing codes per snapshot."""
    present = codes >= 0
    if not present.any():
        return np.zeros(n_snap)
    width = int(codes.max()) + 1
    keys = np.unique(local[present] * width + codes[present])
    return np.bincount(keys // width, minlength=n_snap).astype(np.float64)


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
