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


STEP_STAGES: tuple[str, ...] = ("MQL", "SQL", "won")
"""The stages of the marketing funnel report: lead -> MQL -> SQL -> won."""


def stage_times(
    leads: pd.DataFrame, stage_changes: pd.DataFrame, outcomes: pd.DataFrame
) -> pd.DataFrame:
    """When each lead first reached each funnel stage (NaT if it never did).

    A stage is reached when the lead entered it or any later stage, at the earliest such
    moment (a lead that skipped MQL reached it when it entered SQL); ``won`` is the close of a
    won deal, or the stage change to ``won`` if that came first.

    Returns:
        One row per lead: ``lead_id``, ``created_at`` and a ``<stage>_at`` column per
        :data:`FUNNEL_STAGES` (UTC timestamps).
    """
    out = leads[["lead_id", "created_at"]].reset_index(drop=True).copy()
    changes = stage_changes[stage_changes["stage"].isin(FUNNEL_STAGES)]
    changes = changes.assign(changed_at=pd.to_datetime(changes["changed_at"], utc=True))
    outcomes = outcomes.assign(closed_at=pd.to_datetime(outcomes["closed_at"], utc=True))
    per_stage = {
        stage: changes.loc[changes["stage"] == stage].groupby("lead_id")["changed_at"].min()
        for stage in FUNNEL_STAGES
    }
    won = outcomes[outcomes["result"] == "won"].groupby("lead_id")["closed_at"].min()
    per_stage["won"] = pd.concat([per_stage["won"], won], axis=1).min(axis=1)
    firsts = pd.DataFrame(per_stage, columns=list(FUNNEL_STAGES))
    # Microseconds since the epoch, "never" as the largest integer, one column per stage.
    never = np.iinfo(np.int64).max
    micros = np.full((len(out), len(FUNNEL_STAGES)), never, dtype=np.int64)
    rows = pd.Index(firsts.index).get_indexer(out["lead_id"])
    found = rows >= 0
    for j, stage in enumerate(FUNNEL_STAGES):
        column = pd.to_datetime(firsts[stage], utc=True).astype("datetime64[us, UTC]")
        values = column.to_numpy(dtype="datetime64[us]").astype(np.int64)
        values[column.isna().to_numpy()] = never
        micros[found, j] = values[rows[found]]
    # The earliest moment of this stage or any later one: a running minimum from the end.
    earliest = np.minimum.accumulate(micros[:, ::-1], axis=1)[:, ::-1]
    for j, stage in enumerate(FUNNEL_STAGES):
        values = earliest[:, j]
        times = pd.to_datetime(np.where(values == never, 0, values), unit="us", utc=True)
        out[f"{stage}_at"] = pd.Series(times, index=out.index).where(values != never)
        out[f"{stage}_at"] = out[f"{stage}_at"].astype("datetime64[us, UTC]")
    return out


def funnel_table(
    leads: pd.DataFrame,
    stage_changes: pd.DataFrame,
    outcomes: pd.DataFrame,
    *,
    by: list[str],
    times: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Lead -> MQL -> SQL -> won counts, step conversion rates and days to each stage.

    Args:
        leads: Leads with the ``by`` columns (missing values are grouped as ``(none)``).
        stage_changes: Stage changes.
        outcomes: Outcomes (won deals close the funnel).
        by: Columns to group the leads by (e.g. ``["source_channel"]``); empty for one row.
        times: :func:`stage_times` of the same leads, in the same order, if already computed.

    Returns:
        One row per group: the ``by`` columns, ``leads``, ``mql``, ``sql``, ``won`` (leads
        that reached the stage), ``lead_to_mql``, ``mql_to_sql``, ``sql_to_won`` (each step's
        rate, NaN when the step starts from no lead), ``lead_to_won`` and the median days from
        creation to each stage among the leads that reached it (``days_to_mql``,
        ``days_to_sql``, ``days_to_won``).
    """
    if times is None:
        times = stage_times(leads, stage_changes, outcomes)
    keys = leads[by].reset_index(drop=True).astype(object).fillna("(none)") if by else None
    frame = times.copy()
    for stage in STEP_STAGES:
        at = frame[f"{stage}_at"]
        frame[stage.lower()] = at.notna().astype(np.int64)
        frame[f"days_to_{stage.lower()}"] = (at - frame["created_at"]).dt.total_seconds() / 86400
    columns = ["mql", "sql", "won"]
    days = [f"days_to_{c}" for c in columns]
    if keys is not None:
        frame = pd.concat([keys, frame], axis=1)
        grouped = frame.groupby(by, sort=True, dropna=False)
        table = grouped[columns].sum()
        table.insert(0, "leads", grouped.size())
        table = table.join(grouped[days].median()).reset_index()
    else:
        table = pd.DataFrame([{"leads": len(frame), **frame[columns].sum().to_dict()}])
        table = table.join(pd.DataFrame([frame[days].median().to_dict()]))
    for column in ("leads", *columns):
        table[column] = table[column].astype(np.int64)
    steps = (("lead_to_mql", "leads", "mql"), ("mql_to_sql", "mql", "sql"))
    for name, start, end in (*steps, ("sql_to_won", "sql", "won"), ("lead_to_won", "leads", "won")):
        table[name] = table[end] / table[start].where(table[start] > 0)
    order = [*by, "leads", "mql", "sql", "won"]
    order += ["lead_to_mql", "mql_to_sql", "sql_to_won", "lead_to_won", *days]
    return table[order]
