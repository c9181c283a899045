"""Lifecycle features: stage as of a moment, channel history without leakage."""

from __future__ import annotations

import pandas as pd
import pytest

from leadscore.lifecycle import CHANNEL_PRIOR_LEADS, compute_lifecycle_features
from tests.conftest import make_leads


def _stages(rows):
    return pd.DataFrame(
        {
            "lead_id": [r[0] for r in rows],
            "changed_at": pd.to_datetime([r[1] for r in rows], utc=True),
            "stage": [r[2] for r in rows],
        }
    )


def _outcomes(rows):
    return pd.DataFrame(
        {
            "lead_id": [r[0] for r in rows],
            "closed_at": pd.to_datetime([r[1] for r in rows], utc=True),
            "result": [r[2] for r in rows],
        }
    )


def _snaps(rows):
    return pd.DataFrame(
        {"lead_id": [r[0] for r in rows], "as_of": pd.to_datetime([r[1] for r in rows], utc=True)}
    )


LEADS = make_leads(
    [
        {"lead_id": 1, "created_at": "2024-01-01", "source_channel": "website"},
        {"lead_id": 2, "created_at": "2024-01-01", "source_channel": "website"},
        {"lead_id": 3, "created_at": "2024-01-01", "source_channel": "bought_list"},
        {"lead_id": 4, "created_at": "2024-06-01", "source_channel": "website"},
    ]
)


def test_stage_and_entry_time_as_of_each_moment():
    # given
    stages = _stages([(1, "2024-01-10", "MQL"), (1, "2024-02-01", "SQL")])
    # when
    out = compute_lifecycle_features(
        leads=LEADS,
        stage_changes=stages,
        outcomes=_outcomes([]),
        snapshots=_snaps(
            [(1, "2024-01-05"), (1, "2024-01-20"), (1, "2024-03-01"), (2, "2024-03-01")]
        ),
        horizon_days=30,
    )
    # then: before any change the lead is in stage "lead" since its creation
    assert out["lifecycle_stage"].tolist() == ["lead", "MQL", "SQL", "lead"]
    assert out["stage_entered_at"].tolist() == [
        pd.Timestamp(t, tz="UTC").timestamp()
        for t in ("2024-01-01", "2024-01-10", "2024-02-01", "2024-01-01")
    ]


def test_channel_rate_uses_only_matured_leads_and_earlier_wins():
    # given: two matured website leads, one won in February; one bought-list lead, never won
    outcomes = _outcomes([(1, "2024-02-15", "won")])
    snaps = _snaps([(4, "2024-02-10"), (4, "2024-03-01"), (3, "2024-03-01")])
    # when
    out = compute_lifecycle_features(
        leads=LEADS, stage_changes=_stages([]), outcomes=outcomes, snapshots=snaps, horizon_days=30
    )
    # then: on 2024-02-10 the win is in the future; on 2024-03-01 website is 1 of 2 won
    overall = 1 / 3
    m = CHANNEL_PRIOR_LEADS
    assert out["channel_conversion_rate"].tolist() == pytest.approx(
        [0.0, (1 + m * overall) / (2 + m), (0 + m * overall) / (1 + m)]
    )


def test_outcomes_after_the_snapshot_never_change_its_row():
    # given
    snaps = _snaps([(1, "2024-03-01"), (3, "2024-03-01")])
    stages = _stages([(1, "2024-01-10", "MQL")])
    before = compute_lifecycle_features(
        leads=LEADS,
        stage_changes=stages,
        outcomes=_outcomes([(2, "2024-02-01", "won")]),
        snapshots=snaps,
        horizon_days=30,
    )
    # when: more outcomes and stage changes arrive after the snapshot moment
    after = compute_lifecycle_features(
        leads=LEADS,
        stage_changes=_stages([(1, "2024-01-10", "MQL"), (1, "2024-03-02", "SQL")]),
        outcomes=_outcomes(
            [(2, "2024-02-01", "won"), (1, "2024-03-02", "won"), (3, "2024-03-05", "won")]
        ),
        snapshots=snaps,
        horizon_days=30,
    )
    # then
    pd.testing.assert_frame_equal(before, after)
