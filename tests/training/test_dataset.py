"""Labels of training snapshots: horizon, maturity, leakage."""

from datetime import UTC, datetime

import pandas as pd

from training.dataset import label_snapshots


def test_labels_follow_outcome_horizon_and_maturity():
    # given: five leads created 2024-01-01, present 2024-12-31, horizon 60 days
    leads = pd.DataFrame(
        {"lead_id": [1, 2, 3, 4, 5], "created_at": pd.to_datetime(["2024-01-01"] * 5, utc=True)}
    )
    leads.loc[4, "created_at"] = pd.Timestamp("2024-12-01", tz="UTC")  # lead 5 is recent
    stages = pd.DataFrame(columns=["lead_id", "changed_at", "stage"])
    stages["changed_at"] = pd.to_datetime(stages["changed_at"], utc=True)
    outcomes = pd.DataFrame(
        {
            "lead_id": [1, 2, 3],
            "closed_at": pd.to_datetime(["2024-01-20", "2024-06-01", "2024-01-05"], utc=True),
            "result": ["won", "won", "lost"],
        }
    )
    # when
    examples, report = label_snapshots(
        leads=leads,
        stage_changes=stages,
        outcomes=outcomes,
        snapshot_days=[1, 7, 30],
        horizon_days=60,
        as_of=datetime(2024, 12, 31, tzinfo=UTC),
    )
    # then
    by = {(r.lead_id, r.snapshot_kind): r.label for r in examples.itertuples()}
    assert by[(1, "day_1")] == 1 and by[(1, "day_7")] == 1  # won 19 days after creation
    assert (1, "day_30") not in by  # snapshot after the outcome was known
    assert by[(2, "day_1")] == 0  # won, but after the horizon
    assert by[(3, "day_1")] == 0 and (3, "day_7") not in by  # lost on day 4
    assert by[(4, "day_30")] == 0  # never progressed, horizon over
    assert not any(lead == 5 for lead, _ in by)  # horizon not over yet: left out
    assert report.immature == 3 and report.after_outcome == 3
    assert report.examples == len(examples) == report.snapshots - 6
    assert report.positives == 2
    assert examples["event_timestamp"].is_monotonic_increasing
