"""The funnel counts a lead at every stage up to the furthest it reached."""

from __future__ import annotations

import pandas as pd

from pipelines.funnel import channel_funnel, stages_reached


def test_later_stages_imply_earlier_ones_and_won_deals_count():
    leads = pd.DataFrame(
        {
            "lead_id": [1, 2, 3, 4],
            "source_channel": ["webinar", "webinar", "partner", "partner"],
            "created_at": pd.to_datetime(["2024-01-01"] * 4, utc=True),
        }
    )
    stages = pd.DataFrame(
        {
            "lead_id": [1, 2],
            "changed_at": pd.to_datetime(["2024-01-02", "2024-01-02"], utc=True),
            "stage": ["opportunity", "MQL"],
        }
    )
    outcomes = pd.DataFrame(
        {
            "lead_id": [3],
            "closed_at": pd.to_datetime(["2024-02-01"], utc=True),
            "result": ["won"],
        }
    )
    reached = stages_reached(leads, stages, outcomes).set_index("lead_id")
    assert reached.loc[1, ["MQL", "SQL", "opportunity", "won"]].tolist() == [1, 1, 1, 0]
    assert reached.loc[2, ["MQL", "SQL", "opportunity", "won"]].tolist() == [1, 0, 0, 0]
    assert reached.loc[3, ["MQL", "SQL", "opportunity", "won"]].tolist() == [1, 1, 1, 1]
    assert reached.loc[4].iloc[-4:].tolist() == [0, 0, 0, 0]
    funnel = channel_funnel(leads, stages, outcomes)
    assert funnel.loc["partner", "won_rate"] == 0.5
    assert funnel.loc["webinar", "MQL_rate"] == 1.0
    assert funnel.loc["all", "leads"] == 4
