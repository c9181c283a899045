"""Snapshot moments shared by the feature tables and training."""

import pandas as pd

from leadscore.snapshots import snapshot_times


def test_snapshots_per_lead_stop_at_the_present():
    # given: lead 1 created long ago and became SQL; lead 2 created 3 days before the present
    leads = pd.DataFrame(
        {"lead_id": [1, 2], "created_at": pd.to_datetime(["2024-01-01", "2024-03-28"], utc=True)}
    )
    stages = pd.DataFrame(
        {
            "lead_id": [1, 1],
            "changed_at": pd.to_datetime(["2024-01-01", "2024-01-20"], utc=True),
            "stage": ["lead", "SQL"],
        }
    )
    # when
    out = snapshot_times(
        leads=leads,
        stage_changes=stages,
        snapshot_days=[1, 7, 30],
        as_of=pd.Timestamp("2024-03-31", tz="UTC").to_pydatetime(),
    )
    # then
    kinds = out.groupby("lead_id")["snapshot_kind"].apply(list).to_dict()
    assert kinds[1] == ["day_1", "day_7", "sql", "day_30", "current"]
    assert kinds[2] == ["day_1", "current"]
    assert out["as_of"].max() == pd.Timestamp("2024-03-31", tz="UTC")
