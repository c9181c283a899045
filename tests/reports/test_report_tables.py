"""Each report's tables on hand-built data with known answers (no model, no store)."""

from __future__ import annotations

import io
import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from pipelines.funnel import funnel_table, stage_times
from reports.bands import band_tables
from reports.calibration import calibration_report, calibration_tables
from reports.channels import channel_tables, first_response_times, period_of
from reports.data import first_per_lead, label_served
from reports.drift import PSI_FLOOR, drift_tables, live_performance, population_stability
from reports.model import ReportFilter
from reports.settings import ReportSettings

UTC = "UTC"


def _ts(*values: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values), utc=True, format="ISO8601"))


def _calibration_frame() -> pd.DataFrame:
    # channel a: 200 leads scored 30%, 60 converted (honest);
    # channel b: 200 leads scored 10%, 40 converted (the score is half the truth).
    return pd.DataFrame(
        {
            "probability": [0.3] * 200 + [0.1] * 200,
            "label": [1] * 60 + [0] * 140 + [1] * 40 + [0] * 160,
            "band": ["hot"] * 200 + ["warm"] * 200,
            "source_channel": ["a"] * 200 + ["b"] * 200,
            "industry": ["software"] * 400,
            "company_size": [None] * 400,
            "region": ["europe"] * 400,
        }
    )


def test_calibration_ece_brier_flags_and_verdicts():
    # given
    scores = _calibration_frame()
    cfg = ReportSettings(min_group_leads=200, flag_ece=0.05)
    # when
    tables = calibration_tables(scores, cfg)
    summary = tables["summary"].set_index(["by", "group"])
    # then: the lower half of the equal-mass bins is off by 10 points, the upper half exact
    assert summary.loc[("all", "all leads"), "ece"] == pytest.approx(0.05)
    brier = (60 * 0.7**2 + 140 * 0.3**2 + 40 * 0.9**2 + 160 * 0.1**2) / 400
    assert summary.loc[("all", "all leads"), "brier"] == pytest.approx(brier)
    assert summary.loc[("channel", "a"), "ece"] == pytest.approx(0.0)
    assert summary.loc[("channel", "a"), "status"] == "ok"
    assert summary.loc[("channel", "b"), "ece"] == pytest.approx(0.1)
    assert summary.loc[("channel", "b"), "status"] == "off"
    assert summary.loc[("channel", "b"), "observed"] == pytest.approx(0.2)
    assert summary.loc[("company size", "(none)"), "leads"] == 400
    low, high = summary.loc[("channel", "b"), ["ci_low", "ci_high"]]
    assert low < 0.2 < high
    slices = tables["slices"].set_index("slice")
    assert list(slices.index) == ["10%-20%", "30%-40%"]
    assert slices.loc["30%-40%", "verdict"].startswith(
        "Leads scored 30%-40% converted 30% of the time"
    )
    assert tables["reliability"]["n"].sum() == 400
    # the report names the flagged channel and draws the diagram
    report = calibration_report(scores, cfg, source="hand-built")
    notices = [n for s in report.sections for n in s.notices]
    assert any("channel b" in n and "under-predicts" in n for n in notices)
    assert not any("channel a" in n for n in notices)
    assert {c.name for c in report.charts()} == {"reliability", "groups"}


def test_small_groups_are_listed_but_not_judged():
    scores = _calibration_frame()
    tables = calibration_tables(scores, ReportSettings(min_group_leads=201, flag_ece=0.04))
    status = tables["summary"].set_index(["by", "group"])["status"]
    assert status[("channel", "b")] == "too few leads"
    assert status[("all", "all leads")] == "off"


def test_too_little_data_says_so_and_draws_nothing():
    # given: 30 leads, 3 conversions
    scores = _calibration_frame().iloc[::13].head(30).copy()
    scores["label"] = [1, 1, 1] + [0] * 27
    # when
    report = calibration_report(scores, ReportSettings(), source="hand-built")
    # then
    assert report.charts() == []
    notices = " ".join(n for s in report.sections for n in s.notices)
    assert "Too little data" in notices and "30 scored leads" in notices
    empty = calibration_report(scores.iloc[:0], ReportSettings(), source="hand-built")
    assert empty.charts() == []
    assert "nothing to show" in " ".join(n for s in empty.sections for n in s.notices)


def test_band_conversion_lift_capture_and_weeks():
    # given: hot 10 leads / 5 won, warm 40 / 8, cold 150 / 2, over two weeks
    bands = ["hot"] * 10 + ["warm"] * 40 + ["cold"] * 150
    labels = [1] * 5 + [0] * 5 + [1] * 8 + [0] * 32 + [1] * 2 + [0] * 148
    weeks = ["2026-03-02", "2026-03-10"] * 100  # a Monday and the next Tuesday
    scores = pd.DataFrame(
        {
            "band": bands,
            "label": labels,
            "probability": np.linspace(0.9, 0.01, 200),
            "scored_at": pd.to_datetime(weeks, utc=True),
        }
    )
    # when
    tables = band_tables(scores, ReportSettings(max_interval_width=0.5))
    table = tables["bands"].set_index("band")
    # then
    assert list(table.index) == ["hot", "warm", "cold"]
    assert table.loc["hot", "conversion"] == pytest.approx(0.5)
    assert table.loc["hot", "lift"] == pytest.approx(0.5 / (15 / 200))
    assert table.loc["hot", "capture"] == pytest.approx(5 / 15)
    assert table.loc["warm", "capture"] == pytest.approx(8 / 15)
    assert table.loc["cold", "share_of_leads"] == pytest.approx(0.75)
    assert table["capture"].sum() == pytest.approx(1.0)
    assert table.loc["hot", "ci_low"] < 0.5 < table.loc["hot", "ci_high"]
    weekly = tables["weekly"]
    assert sorted(weekly["week"].unique()) == ["2026-03-02", "2026-03-09"]
    assert weekly["leads"].sum() == 200
    hot_weeks = weekly[weekly["band"] == "hot"]
    assert hot_weeks["leads"].tolist() == [5, 5]
    assert not hot_weeks["readable"].any()  # 5 leads: an interval wider than 50 points
    assert weekly.loc[weekly["band"] == "cold", "readable"].all()


def _funnel_data() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    leads = pd.DataFrame(
        {
            "lead_id": [1, 2, 3, 4],
            "source_channel": ["webinar", "webinar", "partner", "partner"],
            "utm_campaign": ["spring", None, "q1", "q1"],
            "created_at": _ts("2024-01-01", "2024-01-01", "2024-01-01", "2024-04-02"),
        }
    )
    stages = pd.DataFrame(
        {
            "lead_id": [1, 2, 1],
            "changed_at": _ts("2024-01-03", "2024-01-02", "2024-01-05"),
            "stage": ["SQL", "MQL", "opportunity"],
        }
    )
    outcomes = pd.DataFrame({"lead_id": [3], "closed_at": _ts("2024-02-01"), "result": ["won"]})
    return leads, stages, outcomes


def test_stage_times_take_the_earliest_of_a_stage_or_any_later_one():
    leads, stages, outcomes = _funnel_data()
    times = stage_times(leads, stages, outcomes).set_index("lead_id")
    # lead 1 skipped MQL: it reached MQL when it entered SQL
    assert times.loc[1, "MQL_at"] == pd.Timestamp("2024-01-03", tz=UTC)
    assert times.loc[1, "opportunity_at"] == pd.Timestamp("2024-01-05", tz=UTC)
    # lead 3 was won without recorded stages: it passed every stage when it closed
    assert times.loc[3, "MQL_at"] == pd.Timestamp("2024-02-01", tz=UTC)
    assert pd.isna(times.loc[4, "MQL_at"])


def test_funnel_counts_rates_and_days_per_channel_and_campaign():
    leads, stages, outcomes = _funnel_data()
    table = funnel_table(leads, stages, outcomes, by=["source_channel"]).set_index("source_channel")
    assert table.loc["webinar", ["leads", "mql", "sql", "won"]].tolist() == [2, 2, 1, 0]
    assert table.loc["webinar", "mql_to_sql"] == 0.5
    assert table.loc["webinar", "days_to_mql"] == 1.5  # median of 2 days and 1 day
    assert table.loc["partner", "lead_to_won"] == 0.5
    assert table.loc["partner", "days_to_won"] == 31
    assert table.loc["partner", "sql_to_won"] == 1.0
    campaigns = funnel_table(leads, stages, outcomes, by=["utm_campaign"]).set_index("utm_campaign")
    assert campaigns.loc["(none)", "leads"] == 1
    assert campaigns.loc["q1", "won"] == 1
    empty = funnel_table(leads, stages.iloc[:0], outcomes.iloc[:0], by=["source_channel"])
    assert empty["won"].sum() == 0 and math.isnan(empty["mql_to_sql"].iloc[0])


def test_channel_tables_periods_ranking_and_average_score():
    leads, stages, outcomes = _funnel_data()
    scores = pd.DataFrame({"lead_id": [1, 3], "probability": [0.2, 0.6]})
    tables = channel_tables(leads, stages, outcomes, events=None, scores=scores)
    channels = tables["channels"].set_index("source_channel")
    assert channels.loc["partner", "avg_score"] == pytest.approx(0.6)
    assert channels.loc["partner", "scored_leads"] == 1
    assert channels.loc["webinar", "avg_score"] == pytest.approx(0.2)
    assert tables["ranking"]["source_channel"].tolist() == ["partner", "webinar"]
    quarters = tables["by_quarter"].set_index("quarter")
    assert quarters.loc["2024Q1", "leads"] == 3 and quarters.loc["2024Q2", "leads"] == 1
    assert tables["by_month"]["month"].tolist() == ["2024-01", "2024-04"]
    assert tables["speed_to_lead"].empty  # no events loaded
    assert period_of(_ts("2024-01-03 10:00"), "week").tolist() == ["2024-01-01"]
    with pytest.raises(ValueError, match="period"):
        period_of(_ts("2024-01-03"), "year")


def test_speed_to_lead_from_the_first_sales_event_after_creation():
    leads = pd.DataFrame(
        {
            "lead_id": [1, 2, 3, 4],
            "source_channel": ["web"] * 4,
            "utm_campaign": [None] * 4,
            "created_at": _ts(*["2024-01-01 09:00"] * 4),
        }
    )
    events = pd.DataFrame(
        {
            "lead_id": [1, 1, 2, 3, 3],
            "occurred_at": _ts(
                "2024-01-01 09:03",  # 3 minutes: under 5
                "2024-01-01 08:00",  # before creation: ignored
                "2024-01-01 11:00",  # 2 hours
                "2024-01-01 09:01",  # an e-mail open, not a response
                "2024-01-03 09:00",  # 2 days
            ),
            "channel": ["sales", "sales", "sales", "email", "sales"],
        }
    )
    outcomes = pd.DataFrame({"lead_id": [1], "closed_at": _ts("2024-02-01"), "result": ["won"]})
    minutes = first_response_times(leads, events)
    assert minutes.tolist()[:3] == [3.0, 120.0, 2880.0] and math.isnan(minutes.iloc[3])
    stages = pd.DataFrame({"lead_id": [], "changed_at": _ts(), "stage": []})
    tables = channel_tables(leads, stages, outcomes, events=events, scores=None)
    speed = tables["speed_to_lead"].set_index("first_response")
    assert list(speed.index) == ["under 5 minutes", "1-4 hours", "1-3 days", "no response recorded"]
    assert speed.loc["under 5 minutes", "rate"] == 1.0
    assert speed.loc["1-4 hours", "rate"] == 0.0


def test_psi_known_answers():
    # categorical: 50/50 against 25/75
    psi, bins = population_stability(
        pd.Series(["a"] * 50 + ["b"] * 50), pd.Series(["a"] * 25 + ["b"] * 75), kind="categorical"
    )
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi == pytest.approx(expected)
    assert psi == pytest.approx(0.2747, abs=1e-4)
    # the same distribution: 0
    uniform = pd.Series(np.arange(100.0))
    assert population_stability(uniform, uniform.sample(frac=1, random_state=1))[0] == 0.0
    # everything moved above the training range: the top decile holds all of it
    psi, bins = population_stability(uniform, uniform + 1000, bins=10)
    empty = (PSI_FLOOR - 0.1) * math.log(PSI_FLOOR / 0.1)
    assert psi == pytest.approx((1 - 0.1) * math.log(1 / 0.1) + 9 * empty)
    assert len(bins) == 10
    # missing values have a bin of their own
    psi, bins = population_stability(
        pd.Series([1.0, 2.0] * 50), pd.Series([1.0, np.nan] * 50), bins=2
    )
    assert "(missing)" in set(bins["bin"])
    with pytest.raises(ValueError, match="both sides"):
        population_stability(pd.Series([], dtype=float), uniform)


def test_drift_table_puts_the_most_moved_feature_first():
    rng = np.random.default_rng(0)
    train = pd.DataFrame(
        {
            "stable": rng.normal(size=2000),
            "moved": rng.normal(size=2000),
            "region": ["eu"] * 1000 + ["us"] * 1000,
            "score": rng.uniform(size=2000),
        }
    )
    recent = pd.DataFrame(
        {
            "stable": rng.normal(size=1000),
            "moved": rng.normal(loc=1.5, size=1000),
            "region": ["eu"] * 500 + ["us"] * 500,
            "score": rng.uniform(size=1000),
        }
    )
    kinds = {"stable": "numeric", "moved": "numeric", "region": "categorical", "absent": "flag"}
    table = drift_tables(train, recent, kinds, ReportSettings())["psi"]
    assert table["feature"].iloc[0] == "moved"
    assert table["status"].iloc[0] == "moved"
    status = table.set_index("feature")["status"]
    assert status["stable"] == "stable" and status["region"] == "stable"
    assert status["score"] == "stable"
    assert "absent" not in set(table["feature"])


def test_live_performance_against_training_intervals():
    training = {
        "test_roc_auc": 0.9,
        "test_roc_auc_ci_low": 0.88,
        "test_roc_auc_ci_high": 0.92,
        "test_brier": 0.05,
        "test_brier_ci_low": 0.04,
        "test_brier_ci_high": 0.06,
    }
    # a model that ranks perfectly but whose probabilities are far off
    live = pd.DataFrame({"probability": [0.6] * 100 + [0.5] * 100, "label": [1] * 100 + [0] * 100})
    table, problem = live_performance(training, live, ReportSettings())
    assert problem is None
    rows = table.set_index("metric")
    assert rows.loc["roc_auc", "live"] == pytest.approx(1.0)
    assert rows.loc["roc_auc", "verdict"] == "better than at training"
    assert rows.loc["brier", "live"] == pytest.approx(0.205)
    assert rows.loc["brier", "verdict"] == "worse than at training"
    few, problem = live_performance(training, live.head(5), ReportSettings())
    assert problem is not None and "5 served scores" in problem
    assert few["live"].isna().all()


def test_served_scores_are_labelled_like_training_snapshots():
    outcomes = pd.DataFrame(
        {
            "lead_id": [1, 2, 3],
            "closed_at": _ts("2024-02-01", "2024-01-05", "2024-09-01"),
            "result": ["won", "lost", "won"],
        }
    )
    served = pd.DataFrame(
        {
            "lead_id": [1, 2, 3, 4, 4],
            "scored_at": _ts("2024-01-02", "2024-01-10", "2024-01-02", "2024-06-01", "2024-06-02"),
            "probability": [0.5, 0.1, 0.4, 0.2, 0.3],
        }
    )
    first = first_per_lead(served, "scored_at")
    assert sorted(first["lead_id"]) == [1, 2, 3, 4]
    assert first.set_index("lead_id").loc[4, "probability"] == 0.2
    labelled, counts = label_served(
        first,
        stage_changes=pd.DataFrame(columns=["lead_id", "changed_at", "stage"]),
        outcomes=outcomes,
        target="lead_to_won",
        horizon_days=120,
        present=pd.Timestamp("2024-07-01", tz=UTC).to_pydatetime(),
    )
    # lead 1 won within 120 days; lead 2 was scored after its loss; lead 3 won after 120
    # days (a negative, final once the horizon ended); lead 4 is open and still in its horizon
    assert labelled.set_index("lead_id")["label"].to_dict() == {1: 1, 3: 0}
    assert counts == {"after_outcome": 1, "immature": 1}


def test_filters_select_leads_by_day_and_channel():
    frame = pd.DataFrame(
        {
            "created_at": _ts("2024-01-01 23:00", "2024-01-02 01:00", "2024-01-03"),
            "source_channel": ["web", "web", "partner"],
        }
    )
    assert len(ReportFilter(start=date(2024, 1, 2)).leads(frame)) == 2
    assert len(ReportFilter(end=date(2024, 1, 2), channel="web").leads(frame)) == 2
    assert len(ReportFilter(channel="partner").leads(frame)) == 1
    assert ReportFilter(channel="web").query() == "channel=web"
    with pytest.raises(ValueError, match="start"):
        ReportFilter(start=date(2024, 2, 1), end=date(2024, 1, 1))


def test_csv_cells_never_start_a_spreadsheet_formula():
    from reports.model import Table
    from reports.render import table_csv

    frame = pd.DataFrame(
        {"utm_campaign": ['=HYPERLINK("x")', "spring", None], "gap": [-0.1, 0.2, 0.0]}
    )
    text = table_csv(Table("campaigns", "Campaigns", frame))
    parsed = pd.read_csv(io.StringIO(text))
    assert parsed["utm_campaign"].iloc[0] == '\'=HYPERLINK("x")'
    assert parsed["utm_campaign"].iloc[1] == "spring"
    assert parsed["gap"].tolist() == [-0.1, 0.2, 0.0]
