"""Labels of training snapshots: horizon, maturity, leakage."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from training.dataset import label_snapshots, split_by_time


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


def _label_recent_leads(outcomes):
    """Two leads created 20 days before the present, horizon 60 days: no horizon has ended."""
    leads = pd.DataFrame(
        {"lead_id": [1, 2], "created_at": pd.to_datetime(["2024-12-11"] * 2, utc=True)}
    )
    stages = pd.DataFrame(columns=["lead_id", "changed_at", "stage"])
    stages["changed_at"] = pd.to_datetime(stages["changed_at"], utc=True)
    return label_snapshots(
        leads=leads,
        stage_changes=stages,
        outcomes=outcomes,
        snapshot_days=[1, 7],
        horizon_days=60,
        as_of=datetime(2024, 12, 31, tzinfo=UTC),
    )


def test_snapshots_of_closed_leads_are_mature_before_their_horizon_ends():
    # given: lead 1 won and lead 2 lost 15 days after creation, well before horizons end
    outcomes = pd.DataFrame(
        {
            "lead_id": [1, 2],
            "closed_at": pd.to_datetime(["2024-12-26", "2024-12-26"], utc=True),
            "result": ["won", "lost"],
        }
    )
    # when
    examples, report = _label_recent_leads(outcomes)
    # then: the outcome is known, so every snapshot before it has its final label
    by = {(r.lead_id, r.snapshot_kind): r.label for r in examples.itertuples()}
    assert by == {(1, "day_1"): 1, (1, "day_7"): 1, (2, "day_1"): 0, (2, "day_7"): 0}
    assert report.immature == 0 and report.examples == 4 and report.positives == 2


def test_snapshots_of_open_leads_wait_for_their_horizon():
    # given: lead 1 has no outcome, lead 2 closes only after the data's present
    outcomes = pd.DataFrame(
        {
            "lead_id": [2],
            "closed_at": pd.to_datetime(["2025-01-05"], utc=True),
            "result": ["won"],
        }
    )
    # when
    examples, report = _label_recent_leads(outcomes)
    # then: both could still be won: nothing is labelled yet
    assert examples.empty
    assert report.immature == report.snapshots == 4


def test_closed_recent_leads_wait_too_while_another_recent_lead_is_open():
    # given: lead 1 won early, lead 2 is still open within its horizon
    outcomes = pd.DataFrame(
        {
            "lead_id": [1],
            "closed_at": pd.to_datetime(["2024-12-26"], utc=True),
            "result": ["won"],
        }
    )
    # when
    examples, report = _label_recent_leads(outcomes)
    # then: keeping only the closed one would pick recent examples by their outcome
    assert examples.empty
    assert report.immature == 4


def _examples(times, n=1000, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "lead_id": np.arange(n),
            "event_timestamp": times,
            "label": (rng.random(n) < 0.2).astype(int),
        }
    )


def test_split_is_forward_in_time_when_times_differ():
    # given
    times = pd.date_range("2024-01-01", periods=1000, freq="h", tz="UTC")
    frame = _examples(times).sample(frac=1.0, random_state=1)
    # when
    split = split_by_time(frame, calibration_share=0.15, test_share=0.2)
    train, calibration, test = split
    # then
    assert split.kind == "time"
    assert train["event_timestamp"].max() < calibration["event_timestamp"].min()
    assert calibration["event_timestamp"].max() < test["event_timestamp"].min()
    assert (len(train), len(calibration), len(test)) == (650, 150, 200)


def test_split_falls_back_to_a_seeded_stratified_random_split_without_times(caplog):
    # given: an export without timestamps: every example has the same moment
    frame = _examples(pd.Timestamp("2024-06-30", tz="UTC"))
    # when
    split = split_by_time(frame, calibration_share=0.15, test_share=0.2, seed=3)
    # then
    assert split.kind == "random"
    assert "same moment" in caplog.text
    parts = (split.train, split.calibration, split.test)
    assert sorted(pd.concat(parts)["lead_id"]) == list(range(1000))
    assert [round(len(p) / 1000, 2) for p in parts] == [0.65, 0.15, 0.2]
    base_rate = frame["label"].mean()
    for part in parts:
        assert abs(part["label"].mean() - base_rate) < 0.01  # stratified by label
    again = split_by_time(frame, calibration_share=0.15, test_share=0.2, seed=3)
    assert again.test["lead_id"].tolist() == split.test["lead_id"].tolist()


def test_random_split_on_request_keeps_each_lead_in_one_part():
    # given: two snapshots per lead, spread in time
    times = pd.date_range("2024-01-01", periods=2000, freq="h", tz="UTC")
    frame = _examples(times, n=2000).assign(lead_id=np.arange(2000) // 2)
    # when
    split = split_by_time(frame, calibration_share=0.15, test_share=0.2, seed=3, kind="random")
    # then
    assert split.kind == "random"
    parts = [set(p["lead_id"]) for p in (split.train, split.calibration, split.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert abs(len(split.test) / len(frame) - 0.2) < 0.02


def _pipeline(target):
    """Four leads of 2024-01-01: 1 SQL on day 5 then won, 2 SQL on day 5 then lost, 3 lost
    without SQL, 4 SQL on day 3 (no deal yet); present 2024-12-31, horizon 60 days."""
    leads = pd.DataFrame(
        {"lead_id": [1, 2, 3, 4], "created_at": pd.to_datetime(["2024-01-01"] * 4, utc=True)}
    )
    stages = pd.DataFrame(
        {
            "lead_id": [1, 2, 4],
            "changed_at": pd.to_datetime(["2024-01-06", "2024-01-06", "2024-01-04"], utc=True),
            "stage": ["SQL", "SQL", "SQL"],
        }
    )
    outcomes = pd.DataFrame(
        {
            "lead_id": [1, 2, 3],
            "closed_at": pd.to_datetime(["2024-02-01", "2024-02-01", "2024-01-03"], utc=True),
            "result": ["won", "lost", "lost"],
        }
    )
    examples, _ = label_snapshots(
        leads=leads,
        stage_changes=stages,
        outcomes=outcomes,
        snapshot_days=[1],
        horizon_days=60,
        as_of=datetime(2024, 12, 31, tzinfo=UTC),
        target=target,
    )
    return {(r.lead_id, r.snapshot_kind): r.label for r in examples.itertuples()}


def test_lead_to_sql_is_positive_when_the_lead_becomes_sales_qualified():
    by = _pipeline("lead_to_sql")
    # 1, 2 and 4 reach SQL after day 1; 3 lost on day 2 without it; SQL snapshots come after
    # the target happened and are left out.
    assert by == {(1, "day_1"): 1, (2, "day_1"): 1, (3, "day_1"): 0, (4, "day_1"): 1}


def test_sql_to_won_scores_only_sales_qualified_leads_from_their_sql_moment():
    by = _pipeline("sql_to_won")
    # day-1 snapshots come before SQL; lead 3 never was SQL; lead 4 has no outcome but its
    # horizon ended: not won.
    assert by == {(1, "sql"): 1, (2, "sql"): 0, (4, "sql"): 0}


def test_an_unknown_target_is_refused_by_name():
    import pytest

    with pytest.raises(ValueError, match=r"training\.target: 'lead_to_mql'"):
        _pipeline("lead_to_mql")
