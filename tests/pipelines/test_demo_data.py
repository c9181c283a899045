"""Behaviour of the synthetic CRM history generator."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore.contracts import EVENTS, LEADS, OUTCOMES, STAGE_CHANGES, TableContract
from pipelines.demo_data import DemoData, generate_demo_data, write_demo_data

END_DATE = date(2025, 6, 30)
END = pd.Timestamp("2025-07-01", tz="UTC")  # the history ends just before this moment
N_LEADS = 5_000
CONTRACTS: dict[str, TableContract] = {
    "leads": LEADS,
    "events": EVENTS,
    "stage_changes": STAGE_CHANGES,
    "outcomes": OUTCOMES,
}


@pytest.fixture(scope="module")
def data() -> DemoData:
    return generate_demo_data(n_leads=N_LEADS, seed=11, end_date=END_DATE)


@pytest.fixture(scope="module")
def bad_data() -> DemoData:
    return generate_demo_data(n_leads=3_000, seed=5, end_date=END_DATE, bad_row_share=0.05)


def _tables(data: DemoData) -> dict[str, pd.DataFrame]:
    return {name: getattr(data, name) for name in (*CONTRACTS, "truth")}


def _expected_dtype(kind: str, nullable: bool) -> str:
    return {
        "int": "Int64" if nullable else "int64",
        "float": "float64",
        "str": "object",
        "bool": "boolean",
        "timestamp": "datetime64[us, UTC]",
    }[kind]


def _stage_time(data: DemoData, stage: str) -> pd.Series:
    rows = data.stage_changes[data.stage_changes["stage"] == stage]
    return rows.set_index("lead_id")["changed_at"]


def test_same_seed_gives_identical_tables(data: DemoData) -> None:
    # given
    seed, n = 11, N_LEADS

    # when
    again = generate_demo_data(n_leads=n, seed=seed, end_date=END_DATE)

    # then
    for name, frame in _tables(data).items():
        pd.testing.assert_frame_equal(_tables(again)[name], frame)


def test_different_seed_gives_different_tables(data: DemoData) -> None:
    # given
    other_seed = 12

    # when
    other = generate_demo_data(n_leads=N_LEADS, seed=other_seed, end_date=END_DATE)

    # then
    assert not other.leads.equals(data.leads)
    assert not other.events.equals(data.events)
    assert not other.truth["p_convert"].equals(data.truth["p_convert"])


def test_columns_and_dtypes_follow_the_contracts(data: DemoData) -> None:
    # given
    tables = _tables(data)

    # when
    for name, contract in CONTRACTS.items():
        frame = tables[name]

        # then
        assert list(frame.columns) == contract.column_names, name
        for column in contract.columns:
            expected = _expected_dtype(column.kind, column.nullable)
            assert str(frame[column.name].dtype) == expected, (name, column.name)
    assert list(data.truth.columns) == ["lead_id", "p_convert", "converted"]
    assert str(data.truth["converted"].dtype) == "bool"


def test_values_stay_within_the_contracts(data: DemoData) -> None:
    # given
    tables = _tables(data)

    # when
    for name, contract in CONTRACTS.items():
        frame = tables[name]

        # then
        for column in contract.columns:
            values = frame[column.name]
            if not column.nullable:
                assert values.notna().all(), (name, column.name)
            if column.allowed is not None:
                assert set(values.dropna()) <= set(column.allowed), (name, column.name)
            if column.min_value is not None:
                assert (values.dropna() >= column.min_value).all(), (name, column.name)
            if column.max_value is not None:
                assert (values.dropna() <= column.max_value).all(), (name, column.name)


def test_optional_fields_have_realistic_gaps(data: DemoData) -> None:
    # given
    leads = data.leads

    # when
    missing = leads.isna().mean()
    has_age = leads["age"].notna()

    # then
    for column in ("region", "industry", "job_role", "bant_budget", "bant_timeline"):
        assert 0.02 < missing[column] < 0.25, column
    assert 0.05 < has_age.mean() < 0.15
    assert leads.loc[has_age, "company_size"].isna().all()  # consumers, not companies
    assert leads.loc[leads["company_size"].notna(), "gender"].isna().all()


def test_timestamps_are_utc_and_never_after_the_end_date(data: DemoData) -> None:
    # given
    start = pd.Timestamp("2024-01-01", tz="UTC")

    # when
    times = {
        "created_at": data.leads["created_at"],
        "occurred_at": data.events["occurred_at"],
        "changed_at": data.stage_changes["changed_at"],
        "closed_at": data.outcomes["closed_at"],
    }

    # then
    for name, values in times.items():
        assert str(values.dt.tz) == "UTC", name
        assert values.max() < END, name
    assert data.leads["created_at"].min() >= start
    assert data.events["occurred_at"].is_monotonic_increasing


def test_leads_arrive_faster_recently(data: DemoData) -> None:
    # given
    created = data.leads["created_at"]

    # when
    first_quarter = (created < pd.Timestamp("2024-04-01", tz="UTC")).sum()
    last_quarter = (created >= pd.Timestamp("2025-04-01", tz="UTC")).sum()
    weekend = (created.dt.dayofweek >= 5).mean()

    # then
    assert last_quarter > 1.4 * first_quarter
    assert weekend < 2 / 7


def test_ids_are_unique_and_references_resolve_without_bad_rows(data: DemoData) -> None:
    # given
    lead_ids = set(data.leads["lead_id"])

    # when
    stage_key = data.stage_changes[list(STAGE_CHANGES.key)]

    # then
    assert data.leads["lead_id"].is_unique
    assert data.events["event_id"].is_unique
    assert data.events["event_id"].str.fullmatch(r"e\d{9}").all()
    assert not stage_key.duplicated().any()
    assert data.outcomes["lead_id"].is_unique
    for name in ("events", "stage_changes", "outcomes"):
        assert set(_tables(data)[name]["lead_id"]) <= lead_ids, name
    assert set(data.truth["lead_id"]) == lead_ids


def test_channels_convert_at_very_different_rates(data: DemoData) -> None:
    # given
    channel = data.leads.set_index("lead_id")["source_channel"]
    truth = data.truth.set_index("lead_id")

    # when
    won_rate = truth["converted"].groupby(channel).mean()

    # then
    assert min(won_rate["website"], won_rate["referral"]) > max(
        won_rate["bought_list"], won_rate["email_campaign"]
    )
    assert won_rate.max() > 4 * won_rate.min()


def test_funnel_rates_are_plausible(data: DemoData) -> None:
    # given
    old_enough = data.leads.loc[data.leads["created_at"] < END - pd.Timedelta(days=150), "lead_id"]

    # when
    won_rate = data.truth["converted"].mean()
    opportunity = set(_stage_time(data, "opportunity").index)
    to_opportunity = old_enough.isin(opportunity).mean()

    # then
    assert 0.035 < won_rate < 0.07
    assert 0.09 < to_opportunity < 0.18


def test_truth_probability_is_calibrated(data: DemoData) -> None:
    # given
    truth = data.truth
    tolerance = 4 * np.sqrt(
        truth["p_convert"].mean() * (1 - truth["p_convert"].mean()) / len(truth)
    )

    # when
    by_decile = truth.groupby(pd.qcut(truth["p_convert"], 5, labels=False))[
        ["p_convert", "converted"]
    ].mean()

    # then
    assert abs(truth["p_convert"].mean() - truth["converted"].mean()) < tolerance
    assert by_decile["converted"].is_monotonic_increasing


def test_converters_are_more_active(data: DemoData) -> None:
    # given
    events = data.events
    converted = data.truth.set_index("lead_id")["converted"]

    # when
    per_lead = events.groupby("lead_id").size().reindex(converted.index, fill_value=0)
    high_intent = events["event_type"].isin(["pricing_page_view", "demo_request", "trial_signup"])
    high_share = high_intent.groupby(events["lead_id"].map(converted)).mean()

    # then
    assert per_lead[converted].mean() > 1.3 * per_lead[~converted].mean()
    assert high_share[True] > high_share[False]
    assert 12 < len(events) / len(converted) < 30


def test_event_channel_matches_event_type(data: DemoData) -> None:
    # given
    expected = {
        "email_open": "email",
        "email_click": "email",
        "webinar_registered": "webinar",
        "webinar_attended": "webinar",
        "event_attended": "event",
        "social_interaction": "social",
    }
    events = data.events.dropna(subset=["channel"])

    # when
    wanted = events["event_type"].map(lambda t: expected.get(t, "web"))

    # then
    assert (events["channel"] == wanted).all()


def test_webinar_attendance_usually_follows_a_registration(data: DemoData) -> None:
    # given
    events = data.events
    first_registration = (
        events[events["event_type"] == "webinar_registered"].groupby("lead_id")["occurred_at"].min()
    )
    attended = events[events["event_type"] == "webinar_attended"]

    # when
    registered_before = attended["occurred_at"] >= attended["lead_id"].map(first_registration)

    # then
    assert registered_before.mean() > 0.85


def test_lifecycle_moves_forward_in_time(data: DemoData) -> None:
    # given
    created = data.leads.set_index("lead_id")["created_at"]
    outcomes = data.outcomes.set_index("lead_id")

    # when
    sql_at = _stage_time(data, "SQL").reindex(outcomes.index)
    lead_at = _stage_time(data, "lead")

    # then
    assert lead_at.sort_index().equals(created.sort_index())
    assert (outcomes["closed_at"] >= sql_at).all()
    assert (sql_at >= created.reindex(outcomes.index)).all()
    assert (_stage_time(data, "MQL") >= created.reindex(_stage_time(data, "MQL").index)).all()


def test_outcomes_agree_with_the_truth(data: DemoData) -> None:
    # given
    outcomes = data.outcomes.set_index("lead_id")
    created = data.leads.set_index("lead_id")["created_at"].reindex(outcomes.index)
    converted = data.truth.set_index("lead_id")["converted"].reindex(outcomes.index)
    won = outcomes["result"] == "won"

    # when
    days_to_close = (outcomes["closed_at"] - created).dt.days

    # then
    assert (won == converted).all()
    assert (days_to_close[won] < 120).all()
    assert (outcomes.loc[won, "amount"] > 0).all()
    assert (outcomes.loc[~won, "amount"] == 0).all()
    assert won.sum() < data.truth["converted"].sum()  # recent wins are still open


def test_bad_rows_inject_every_kind_of_corruption(bad_data: DemoData) -> None:
    # given
    leads, events, outcomes = bad_data.leads, bad_data.events, bad_data.outcomes
    future = END + pd.Timedelta(days=365)

    # when
    known_ids = set(leads["lead_id"].dropna())

    # then
    assert leads["lead_id"].isna().sum() > 0
    assert (leads["source_channel"] == "carrier_pigeon").sum() > 0
    assert (leads["created_at"] > future).sum() > 0
    assert leads.duplicated().sum() > 0
    unknown = (
        (leads["source_channel"] == "carrier_pigeon")
        | (leads["industry"] == "astrology")
        | (leads["company_size"] == "huge")
    )
    corrupted = leads["lead_id"].isna() | unknown | (leads["created_at"] > future)
    assert 0.03 < (corrupted | leads.duplicated()).mean() < 0.07

    assert events["lead_id"].isna().sum() > 0
    assert (events["event_type"] == "teleport").sum() > 0
    assert (events["occurred_at"] > future).sum() > 0
    assert events.duplicated().sum() > 0
    assert (~events["lead_id"].dropna().isin(known_ids)).sum() > 0

    assert (~outcomes["lead_id"].isin(known_ids)).sum() > 0
    assert (outcomes["result"] == "pending").sum() > 0
    assert (outcomes["closed_at"] > future).sum() > 0
    assert outcomes.duplicated().sum() > 0


def test_truth_keeps_only_valid_leads(bad_data: DemoData) -> None:
    # given
    leads = bad_data.leads
    valid = (
        leads["lead_id"].notna()
        & leads["source_channel"].isin(LEADS.column("source_channel").allowed or ())
        & leads["industry"].isin([*(LEADS.column("industry").allowed or ()), None])
        & leads["company_size"].isin([*(LEADS.column("company_size").allowed or ()), None])
        & (leads["created_at"] < END)
    )

    # when
    truth_ids = set(bad_data.truth["lead_id"])

    # then
    assert truth_ids == set(leads.loc[valid, "lead_id"].astype("int64"))
    assert len(truth_ids) < 3_000


def test_stage_changes_stay_clean_with_bad_rows(bad_data: DemoData) -> None:
    # given
    stages = bad_data.stage_changes

    # when
    duplicated = stages.duplicated(list(STAGE_CHANGES.key))

    # then
    assert not duplicated.any()
    assert stages["changed_at"].max() < END


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_write_demo_data_round_trips(data: DemoData, tmp_path: Path, file_format: str) -> None:
    # given
    out_dir = tmp_path / "raw"

    # when
    paths = write_demo_data(data, out_dir=out_dir, file_format=file_format)  # type: ignore[arg-type]

    # then
    assert set(paths) == {*CONTRACTS, "truth"}
    assert paths["truth"].name == "truth.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(paths["truth"]), data.truth)
    for name in CONTRACTS:
        assert paths[name] == out_dir / f"{name}.{file_format}"
        original = getattr(data, name)
        if file_format == "parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(paths[name]), original)
        else:
            read_back = pd.read_csv(paths[name])
            assert len(read_back) == len(original)
            assert list(read_back.columns) == list(original.columns)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_leads": 0}, "n_leads"),
        ({"months": 0}, "months"),
        ({"bad_row_share": 0.9}, "bad_row_share"),
    ],
)
def test_invalid_arguments_are_refused(kwargs: dict[str, float], message: str) -> None:
    # given
    arguments = {"n_leads": 10, "seed": 1, "end_date": END_DATE, "months": 18} | kwargs

    # when / then
    with pytest.raises(ValueError, match=message):
        generate_demo_data(**arguments)  # type: ignore[arg-type]
