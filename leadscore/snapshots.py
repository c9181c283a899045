"""The moments at which a lead's features are taken, shared by features and training.

Training examples are snapshots of leads taken at several moments of their life
(``day_<n>`` after creation, and ``sql`` when the lead became sales-qualified); the feature
tables hold one behaviour row per snapshot, computed from the events up to that moment, plus a
``current`` row per lead (the state that is materialized to the online store).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd

CURRENT = "current"


def snapshot_times(
    *,
    leads: pd.DataFrame,
    stage_changes: pd.DataFrame,
    snapshot_days: Sequence[int],
    as_of: datetime,
    include_current: bool = True,
) -> pd.DataFrame:
    """List every snapshot moment of every lead up to ``as_of``.

    Args:
        leads: Validated leads (``lead_id``, ``created_at``).
        stage_changes: Validated stage changes (``lead_id``, ``changed_at``, ``stage``).
        snapshot_days: Days after creation at which a snapshot is taken.
        as_of: Nothing later than this moment is listed (the data's present).
        include_current: Add one ``current`` snapshot per lead at ``as_of``.

    Returns:
        Columns ``lead_id``, ``as_of`` (``datetime64[us, UTC]``) and ``snapshot_kind``, sorted by
        lead and time, one row per distinct (lead, moment).
    """
    cutoff = (
        pd.Timestamp(as_of).tz_convert("UTC")
        if pd.Timestamp(as_of).tzinfo
        else pd.Timestamp(as_of, tz="UTC")
    )
    created = leads[["lead_id", "created_at"]]
    parts = [
        pd.DataFrame(
            {
                "lead_id": created["lead_id"].to_numpy(),
                "as_of": created["created_at"] + pd.Timedelta(days=days),
                "snapshot_kind": f"day_{days}",
            }
        )
        for days in snapshot_days
    ]
    sql_rows = stage_changes.loc[stage_changes["stage"] == "SQL", ["lead_id", "changed_at"]]
    sql = sql_rows.groupby("lead_id", as_index=False).agg(changed_at=("changed_at", "min"))
    sql = sql[sql["lead_id"].isin(created["lead_id"])]
    parts.append(
        pd.DataFrame(
            {
                "lead_id": sql["lead_id"].to_numpy(),
                "as_of": sql["changed_at"],
                "snapshot_kind": "sql",
            }
        )
    )
    if include_current:
        alive = created[created["created_at"] <= cutoff]
        parts.append(
            pd.DataFrame(
                {"lead_id": alive["lead_id"].to_numpy(), "as_of": cutoff, "snapshot_kind": CURRENT}
            )
        )
    out = pd.concat(parts, ignore_index=True)
    out["as_of"] = pd.to_datetime(out["as_of"], utc=True).astype("datetime64[us, UTC]")
    out["lead_id"] = out["lead_id"].astype("int64")
    out = out[out["as_of"] <= cutoff]
    out = out.sort_values(["lead_id", "as_of"], kind="stable")
    return out.drop_duplicates(["lead_id", "as_of"], keep="first").reset_index(drop=True)
