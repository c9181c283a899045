"""Band policies turn sales' capacity into probability cut-offs on a reference period."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leadscore.bands import band_expectations, band_policy, band_thresholds
from leadscore.settings import BandSettings

DAYS = 90


def _reference(seed: int = 0, per_day: float = 40.0, snapshots: int = 1) -> pd.DataFrame:
    """Leads arriving about ``per_day`` a day for 90 days, each with a few scored snapshots."""
    rng = np.random.default_rng(seed)
    arrivals = rng.poisson(per_day, DAYS)
    day = np.repeat(np.arange(DAYS), arrivals)
    created = pd.Timestamp("2025-03-01", tz="UTC") + pd.to_timedelta(
        day + rng.random(len(day)), unit="D"
    )
    leads = pd.DataFrame({"lead_id": np.arange(len(day)), "created": created})
    rows = []
    for k in range(snapshots):
        rows.append(
            leads.assign(
                event_timestamp=leads["created"] + pd.Timedelta(hours=k),
                probability=rng.beta(1.2, 8.0, len(leads)),
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_cutoffs_are_the_configured_thresholds():
    settings = BandSettings(hot_min=0.3, warm_min=0.1)
    assert band_thresholds(settings, np.array([0.5, 0.01])) == {"hot_min": 0.3, "warm_min": 0.1}
    assert band_policy(settings, []) == {"policy": "cutoffs", "hot_min": 0.3, "warm_min": 0.1}


def test_top_share_gives_the_requested_shares_on_the_reference_leads():
    # given
    reference = _reference()
    settings = BandSettings(policy="top_share", hot_share=0.1, warm_share=0.2)
    # when
    thresholds = band_thresholds(settings, reference["probability"])
    # then
    p = reference["probability"].to_numpy()
    assert thresholds["hot_min"] > thresholds["warm_min"]
    assert (p >= thresholds["hot_min"]).mean() == pytest.approx(0.1, abs=1e-3)
    warm = (p >= thresholds["warm_min"]) & (p < thresholds["hot_min"])
    assert warm.mean() == pytest.approx(0.2, abs=1e-3)


def test_top_n_per_day_makes_about_n_leads_a_day_hot():
    # given: about 40 leads a day, three scored snapshots each
    reference = _reference(seed=1, snapshots=3)
    settings = BandSettings(policy="top_n_per_day", hot_per_day=6, warm_per_day=10)
    # when
    record = band_policy(
        settings,
        reference["probability"],
        reference["event_timestamp"],
        lead_ids=reference["lead_id"],
    )
    # then: each lead counts once, when it is at its hottest
    best = reference.groupby("lead_id")["probability"].max()
    assert record["reference_leads"] == len(best)
    assert record["reference_days"] == DAYS
    assert record["leads_per_day"] == pytest.approx(len(best) / DAYS)
    assert (best >= record["hot_min"]).sum() / DAYS == pytest.approx(6, abs=0.05)
    warm = (best >= record["warm_min"]) & (best < record["hot_min"])
    assert warm.sum() / DAYS == pytest.approx(10, abs=0.05)
    assert record["hot_min"] > record["warm_min"]
    assert record["policy"] == "top_n_per_day" and record["hot_per_day"] == 6.0
    assert record["reference_hot_share"] == pytest.approx(6 / record["leads_per_day"], abs=0.01)


def test_tied_probabilities_are_cut_at_the_nearest_tie_boundary():
    # given: a staircase of probabilities (as isotonic calibration gives): 5% at 0.6, 25% at
    # 0.3, 70% at 0.05
    p = np.repeat([0.6, 0.3, 0.05], [50, 250, 700])
    settings = BandSettings(policy="top_share", hot_share=0.08, warm_share=0.2)
    # when
    record = band_policy(settings, p)
    # then: hot = the top step, warm = the next one (30% is nearer to 28% than 100% is)
    assert record["hot_min"] == pytest.approx(0.45)
    assert record["warm_min"] == pytest.approx(0.175)
    assert record["reference_hot_share"] == pytest.approx(0.05)
    assert record["reference_warm_share"] == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            BandSettings(policy="top_n_per_day", hot_per_day=30, warm_per_day=15),
            r"hot_per_day \+ bands.warm_per_day \(30 \+ 15\) must be below the leads arriving",
        ),
        (
            BandSettings(policy="top_share", hot_share=0.001, warm_share=0.001),
            "cannot separate hot from warm",
        ),
    ],
)
def test_impossible_policies_are_refused_clearly(settings, message):
    # given: 40 leads a day, and probabilities taking only two values
    reference = _reference(seed=2)
    p = np.where(reference["probability"] > 0.5, 0.6, 0.1)
    with pytest.raises(ValueError, match=message):
        band_policy(settings, p, reference["event_timestamp"])


def test_shares_that_leave_no_lead_cold_are_refused_by_the_settings():
    with pytest.raises(ValueError, match=r"hot_share \+ bands.warm_share .* must be below 1"):
        BandSettings(policy="top_share", hot_share=0.4, warm_share=0.6)


def test_top_n_per_day_needs_the_moments_and_every_policy_needs_scores():
    settings = BandSettings(policy="top_n_per_day")
    with pytest.raises(ValueError, match="needs the reference event timestamps"):
        band_policy(settings, np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="needs reference probabilities"):
        band_policy(BandSettings(policy="top_share"), np.array([]))
    with pytest.raises(ValueError, match="one id per probability"):
        band_policy(BandSettings(policy="top_share"), np.array([0.1, 0.2]), lead_ids=[1])


def test_band_expectations_report_share_expected_and_observed_rates():
    # given
    p = np.array([0.9, 0.5, 0.4, 0.2, 0.1, 0.05, 0.05, 0.01])
    y = np.array([1, 1, 0, 0, 0, 0, 1, 0])
    # when
    out = band_expectations(p, y, {"hot_min": 0.5, "warm_min": 0.1})
    # then
    assert out["hot_n"] == 2 and out["hot_share"] == 0.25
    assert out["hot_expected_conversion"] == pytest.approx(0.7)
    assert out["hot_observed_conversion"] == 1.0
    assert out["warm_n"] == 3 and out["warm_expected_conversion"] == pytest.approx(0.7 / 3)
    assert out["warm_observed_conversion"] == 0.0
    assert out["cold_share"] == 3 / 8 and out["cold_observed_conversion"] == pytest.approx(1 / 3)
    empty = band_expectations(p, y, {"hot_min": 0.99, "warm_min": 0.95})
    assert empty["hot_n"] == 0 and np.isnan(empty["hot_observed_conversion"])


def test_band_expectations_can_count_each_lead_once_by_its_best_snapshot():
    # given: lead 1 turns hot on its second snapshot and is won; lead 2 stays cold
    p = np.array([0.05, 0.6, 0.02, 0.03])
    y = np.array([0, 1, 0, 0])
    # when
    out = band_expectations(p, y, {"hot_min": 0.5, "warm_min": 0.1}, lead_ids=[1, 1, 2, 2])
    # then
    assert out["hot_n"] == 1 and out["cold_n"] == 1 and out["hot_share"] == 0.5
    assert out["hot_observed_conversion"] == 1.0
    assert out["cold_expected_conversion"] == pytest.approx(0.03)
