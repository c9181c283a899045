"""No training feature of a snapshot depends on anything that happened after it."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from pipelines.demo_data import generate_demo_data
from pipelines.feature_store import (
    BEHAVIOUR_TABLE,
    LIFECYCLE_TABLE,
    PROFILE_TABLE,
    build_feature_tables,
)


def _build(tables, repo_dir, as_of):
    build_feature_tables(
        tables=tables,
        repo_dir=repo_dir,
        snapshot_days=[1, 7, 30],
        half_life_days=14,
        horizon_days=60,
        as_of=as_of,
    )
    return {
        name: pd.read_parquet(repo_dir / name)
        for name in (PROFILE_TABLE, BEHAVIOUR_TABLE, LIFECYCLE_TABLE)
    }


@pytest.fixture(scope="module")
def demo():
    data = generate_demo_data(n_leads=3000, seed=5, end_date=date(2026, 6, 30))
    return {
        "leads": data.leads,
        "events": data.events,
        "stage_changes": data.stage_changes,
        "outcomes": data.outcomes,
    }


def test_snapshot_rows_ignore_later_events_outcomes_and_stages(demo, tmp_path):
    # given: the full history, and the same history cut at a moment in the middle
    cut = pd.Timestamp("2026-01-15", tz="UTC")
    end = pd.Timestamp("2026-07-01", tz="UTC")
    truncated = {
        "leads": demo["leads"],
        "events": demo["events"][demo["events"]["occurred_at"] <= cut],
        "stage_changes": demo["stage_changes"][demo["stage_changes"]["changed_at"] <= cut],
        "outcomes": demo["outcomes"][demo["outcomes"]["closed_at"] <= cut],
    }
    # when: both are built with the same present
    full = _build(demo, tmp_path / "full", end.to_pydatetime())
    cut_only = _build(truncated, tmp_path / "cut", end.to_pydatetime())
    # then: every snapshot row up to the cut is identical, feature by feature
    for table in (BEHAVIOUR_TABLE, LIFECYCLE_TABLE):
        a = full[table][full[table]["event_timestamp"] <= cut]
        b = cut_only[table][cut_only[table]["event_timestamp"] <= cut]
        assert len(a) > 1000
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    # and the rows after the cut do see what happened later (the test can fail)
    later = full[BEHAVIOUR_TABLE]["event_timestamp"] > cut
    assert not full[BEHAVIOUR_TABLE][later].equals(cut_only[BEHAVIOUR_TABLE][later])
    pd.testing.assert_frame_equal(full[PROFILE_TABLE], cut_only[PROFILE_TABLE])
