"""Lifecycle features as of each snapshot moment: stage, time in stage, channel history.

Like the behaviour features, each row uses only what was known at its moment: the latest
stage entered up to then, and each channel's conversion rate from outcomes closed before it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from leadscore.contracts import LEAD_CHANNELS, epoch_seconds, to_utc_us

# Weight of the overall rate in a channel's smoothed rate, in leads: a channel needs a few
# hundred matured leads before its own history dominates.
CHANNEL_PRIOR_LEADS = 200.0


def compute_lifecycle_features(
    *,
    leads: pd.DataFrame,
    stage_changes: pd.DataFrame,
    outcomes: pd.DataFrame,
    snapshots: pd.DataFrame,
    horizon_days: int,
) -> pd.DataFrame:
    """Stage, stage entry time and channel conversion rate of each lead at each snapshot.

    The channel conversion rate at moment ``t`` is, among the channel's leads created at least
    ``horizon_days`` before the start of ``t``'s day (so that their outcome had time to
    happen), the share won before that day started, smoothed toward the same rate over all
    channels with a weight of :data:`CHANNEL_PRIOR_LEADS` leads. Nothing after ``t`` is used.

    Args:
        leads: Validated leads (``lead_id``, ``created_at``, ``source_channel``).
        stage_changes: Validated stage changes.
        outcomes: Validated outcomes.
        snapshots: ``lead_id`` and ``as_of`` (UTC) of each row to compute.
        horizon_days: How long a lead needs to mature before it counts for its channel.

    Returns:
        ``lead_id``, ``event_timestamp`` (= ``as_of``), ``lifecycle_stage``,
        ``stage_entered_at`` (epoch seconds) and ``channel_conversion_rate``, in the
        snapshots' order.
    """
    snaps = pd.DataFrame(
        {
            "lead_id": snapshots["lead_id"].to_numpy(dtype=np.int64),
            "as_of": to_utc_us(snapshots["as_of"]).array,
            "_order": np.arange(len(snapshots)),
        }
    )
    stages = stage_changes[["lead_id", "changed_at", "stage"]].copy()
    stages["lead_id"] = stages["lead_id"].astype("int64")
    stages["changed_at"] = to_utc_us(stages["changed_at"]).array
    stages = stages.sort_values("changed_at", kind="stable")
    staged = pd.merge_asof(
        snaps.sort_values("as_of", kind="stable"),
        stages,
        left_on="as_of",
        right_on="changed_at",
        by="lead_id",
        direction="backward",
    ).sort_values("_order")
    created = leads.set_index("lead_id")["created_at"]
    stage = staged["stage"].to_numpy(dtype=object)
    no_stage = pd.isna(stage)
    # A lead with no recorded stage change is in the "lead" stage since its creation.
    stage[no_stage] = "lead"
    entered_ts = epoch_seconds(staged["changed_at"])
    entered_ts[no_stage] = epoch_seconds(snaps["lead_id"].map(created))[no_stage]

    channel = snaps["lead_id"].map(leads.set_index("lead_id")["source_channel"])
    rate = channel_rates(
        leads=leads,
        outcomes=outcomes,
        channels=channel.to_numpy(dtype=object),
        moments=snaps["as_of"],
        horizon_days=horizon_days,
    )
    out = pd.DataFrame(
        {
            "lead_id": snaps["lead_id"].to_numpy(),
            "event_timestamp": snaps["as_of"].array,
            "lifecycle_stage": stage,
            "stage_entered_at": entered_ts.astype(np.float64),
            "channel_conversion_rate": rate,
        }
    )
    return out


def channel_rates(
    *,
    leads: pd.DataFrame,
    outcomes: pd.DataFrame,
    channels: np.ndarray,
    moments: pd.Series,
    horizon_days: int,
) -> np.ndarray:
    """Smoothed matured lead-to-won rate of each row's channel at the start of its day."""
    day = to_utc_us(moments).dt.floor("D")
    days = np.unique(epoch_seconds(day))
    horizon = horizon_days * 86_400.0
    created = epoch_seconds(leads["created_at"])
    won = outcomes[outcomes["result"] == "won"].drop_duplicates("lead_id")
    won_at = epoch_seconds(leads["lead_id"].map(won.set_index("lead_id")["closed_at"]))
    lead_channel = leads["source_channel"].to_numpy(dtype=object)

    names = list(LEAD_CHANNELS)
    table = np.full((len(names) + 1, len(days)), np.nan)
    matured_all = np.zeros(len(days))
    won_all = np.zeros(len(days))
    per_channel: list[tuple[np.ndarray, np.ndarray]] = []
    for name in names:
        mask = lead_channel == name
        c_created = np.sort(created[mask])
        # Won leads count once created <= day - horizon and won before the day started.
        is_won = mask & ~np.isnan(won_at)
        matured = np.searchsorted(c_created, days - horizon, side="right").astype(float)
        wins = (
            (created[is_won][None, :] <= (days - horizon)[:, None])
            & (won_at[is_won][None, :] < days[:, None])
        ).sum(axis=1)
        per_channel.append((matured, wins.astype(float)))
        matured_all += matured
        won_all += wins
    overall = np.divide(won_all, matured_all, out=np.full(len(days), np.nan), where=matured_all > 0)
    for k, (matured, wins) in enumerate(per_channel):
        table[k] = (wins + CHANNEL_PRIOR_LEADS * overall) / (matured + CHANNEL_PRIOR_LEADS)
    table[len(names)] = overall  # unknown channel: the overall rate
    row = pd.Categorical(channels, categories=names).codes.astype(np.int64)
    row[row < 0] = len(names)
    col = np.searchsorted(days, epoch_seconds(day))
    return table[row, col]
