"""The lead funnel: how many leads of each channel reach MQL, SQL, opportunity and won.

Shared by the exploration notebook and the marketing reports. A lead counts as having reached
a stage if it entered that stage or any later one (a lead won without recorded stages passed
through all of them), so the funnel never widens downwards.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FUNNEL_STAGES: tuple[str, ...] = ("MQL", "SQL", "opportunity", "won")


def stages_reached(
    leads: pd.DataFrame, stage_changes: pd.DataFrame, outcomes: pd.DataFrame
) -> pd.DataFrame:
    """One row per lead: ``lead_id``, ``source_channel``, ``created_at`` and a 0/1 column per
    funnel stage the lead reached (a later stage implies the earlier ones)."""
    out = leads[["lead_id", "source_channel", "created_at"]].reset_index(drop=True).copy()
    entered = stage_changes.groupby("lead_id")["stage"].agg(set)
    won = set(outcomes.loc[outcomes["result"] == "won", "lead_id"])
    stages_of = out["lead_id"].map(entered)
    reached = np.zeros((len(out), len(FUNNEL_STAGES)), dtype=bool)
    for j, stage in enumerate(FUNNEL_STAGES):
        reached[:, j] = [isinstance(s, set) and stage in s for s in stages_of]
    reached[:, -1] |= out["lead_id"].isin(won).to_numpy()
    # Reaching a stage means having passed every earlier one.
    reached = np.flip(np.logical_or.accumulate(np.flip(reached, axis=1), axis=1), axis=1)
    for j, stage in enumerate(FUNNEL_STAGES):
        out[stage] = reached[:, j].astype(np.int64)
    return out


def channel_funnel(
    leads: pd.DataFrame, stage_changes: pd.DataFrame, outcomes: pd.DataFrame
) -> pd.DataFrame:
    """Per channel (and ``all``): leads, and the share of them reaching each funnel stage.

    Returns:
        Indexed by channel, sorted by the share won: ``leads`` and ``<stage>_rate`` columns.
    """
    reached = stages_reached(leads, stage_changes, outcomes)
    grouped = reached.groupby("source_channel")
    table = grouped[list(FUNNEL_STAGES)].mean().add_suffix("_rate")
    table.insert(0, "leads", grouped.size())
    overall = reached[list(FUNNEL_STAGES)].mean().add_suffix("_rate")
    table.loc["all"] = [len(reached), *overall.to_numpy()]
    table["leads"] = table["leads"].astype(np.int64)
    return table.sort_values("won_rate", ascending=False)


def monthly_cohorts(
    leads: pd.DataFrame, stage_changes: pd.DataFrame, outcomes: pd.DataFrame
) -> pd.DataFrame:
    """Per month of creation: leads and the share that reached each stage so far (recent
    cohorts have had less time: their rates are still rising)."""
    reached = stages_reached(leads, stage_changes, outcomes)
    month = reached["created_at"].dt.tz_convert("UTC").dt.strftime("%Y-%m")
    grouped = reached.groupby(month)
    table = grouped[list(FUNNEL_STAGES)].mean().add_suffix("_rate")
    table.insert(0, "leads", grouped.size())
    table.index.name = "month"
    return table
