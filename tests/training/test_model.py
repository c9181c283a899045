"""The fitted scorer on synthetic data with a known signal."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pandas as pd
import pytest

from leadscore.feature_catalog import FEATURES_BY_NAME
from leadscore.scorer import IsotonicCalibration, LeadScorer
from leadscore.settings import BandSettings
from training.model import (
    MIN_ISOTONIC_CLASS,
    fit_calibration,
    fit_isotonic,
    fit_isotonic_regression,
    fit_scorer,
)

SPECS = [FEATURES_BY_NAME[n] for n in ("source_channel", "demo_request_30d", "page_view_30d")]
PARAMS = {"n_estimators": 60, "num_leaves": 7, "learning_rate": 0.1, "min_child_samples": 20}


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    channel = rng.choice(["website", "bought_list", None], n, p=[0.45, 0.45, 0.1])
    demos = rng.poisson(0.5, n).astype(float)
    pages = rng.poisson(3, n).astype(float)
    logit = -2.5 + 1.2 * demos + np.where(channel == "website", 1.0, 0.0)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "source_channel": channel,
            "demo_request_30d": demos,
            "page_view_30d": pages,
            "label": label,
        }
    )


@pytest.fixture(scope="module", params=["sigmoid", "isotonic"])
def scorer(request):
    return fit_scorer(
        train=_frame(6000, 1),
        calibration=_frame(3000, 2),
        specs=SPECS,
        params=PARAMS,
        bands={"hot_min": 0.4, "warm_min": 0.15},
        feature_service="lead_scoring_v2",
        seed=0,
        calibration_method=request.param,
    )


def test_probabilities_are_calibrated_on_new_data(scorer):
    # given
    test = _frame(20000, 3)
    # when
    p = scorer.predict_proba_frame(test)
    # then: mean prediction matches the observed rate, and per decile too
    assert abs(p.mean() - test["label"].mean()) < 0.02
    deciles = pd.qcut(p, 10, labels=False, duplicates="drop")
    observed = test.groupby(deciles)["label"].mean().to_numpy()
    predicted = pd.Series(p).groupby(deciles).mean().to_numpy()
    assert np.abs(observed - predicted).max() < 0.06


def test_dict_rows_and_frames_give_the_same_probability(scorer):
    # given: rows with a category unseen in training and missing values
    frame = pd.DataFrame(
        {
            "source_channel": ["website", "carrier_pigeon", None],
            "demo_request_30d": [2.0, 0.0, None],
            "page_view_30d": [1.0, None, 4.0],
        }
    )
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    # when
    scored = scorer.score_rows(rows)
    # then
    expected = scorer.predict_proba_frame(frame)
    assert [s.probability for s in scored] == pytest.approx(expected.tolist(), abs=1e-12)


def test_reasons_name_the_driving_factor_with_its_sign(scorer):
    # given: a lead with demo requests from the website, and one with none from a bought list
    keen = {"source_channel": "website", "demo_request_30d": 3.0, "page_view_30d": 2.0}
    idle = {"source_channel": "bought_list", "demo_request_30d": 0.0, "page_view_30d": 2.0}
    # when
    hot, cold = scorer.score_rows([keen, idle], top_k=3)
    # then
    assert hot.band == "hot" and cold.band == "cold"
    top = hot.reasons[0]
    assert top.feature == "demo_request_30d" and top.contribution > 0
    assert top.label == "demo requests in the last 30 days: 3"
    assert any(r.feature == "demo_request_30d" and r.contribution < 0 for r in cold.reasons)
    assert [abs(r.contribution) for r in hot.reasons] == sorted(
        (abs(r.contribution) for r in hot.reasons), reverse=True
    )


def test_more_demo_requests_never_lower_the_score(scorer):
    # given: the same lead with 0..5 demo requests
    rows = [
        {"source_channel": "website", "demo_request_30d": float(k), "page_view_30d": 3.0}
        for k in range(6)
    ]
    # when
    p = [s.probability for s in scorer.score_rows(rows)]
    # then
    assert all(b >= a for a, b in itertools.pairwise(p))


# -- calibration ---------------------------------------------------------------------------
def _margins(n: int, seed: int) -> tuple[np.random.Generator, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng, rng.normal(-1.0, 1.5, n)


def test_auto_keeps_platt_scaling_when_the_margins_are_logistic():
    # given: outcomes drawn from a logistic function of the margin
    rng, margin = _margins(6000, 0)
    labels = (rng.random(len(margin)) < 1 / (1 + np.exp(-(1.3 * margin - 0.5)))).astype(int)
    # when
    calibration, report = fit_calibration(margin, labels, method="auto", seed=0)
    # then
    assert report.method == "sigmoid" and isinstance(calibration, tuple)
    assert report.isotonic_eligible and report.folds == 5
    assert report.cv_log_loss["sigmoid"] < report.cv_log_loss["isotonic"]
    assert calibration[0] == pytest.approx(1.3, abs=0.1)
    assert report.as_dict()["cv_log_loss"] == report.cv_log_loss
    assert set(report.metrics()) == {
        "calibration_cv_log_loss_sigmoid",
        "calibration_cv_log_loss_isotonic",
    }


def test_auto_picks_isotonic_when_platt_scaling_is_miscalibrated():
    # given: a conversion rate that jumps at a margin of 0 (no logistic curve fits a step)
    rng, margin = _margins(6000, 1)
    labels = (rng.random(len(margin)) < np.where(margin < 0, 0.05, 0.45)).astype(int)
    # when
    calibration, report = fit_calibration(margin, labels, method="auto", seed=0)
    # then
    assert report.method == "isotonic" and isinstance(calibration, IsotonicCalibration)
    assert report.cv_log_loss["isotonic"] < report.cv_log_loss["sigmoid"] - 0.01
    assert calibration(margin[margin < 0]).mean() == pytest.approx(0.05, abs=0.01)
    assert calibration(margin[margin >= 0]).mean() == pytest.approx(0.45, abs=0.03)


def test_auto_falls_back_to_platt_scaling_with_too_few_won_examples():
    # given: the same step, but fewer won examples than isotonic needs
    rng, margin = _margins(1500, 2)
    labels = (rng.random(len(margin)) < np.where(margin < 0, 0.02, 0.2)).astype(int)
    assert labels.sum() < MIN_ISOTONIC_CLASS
    # when
    _, auto = fit_calibration(margin, labels, method="auto", seed=0)
    forced, explicit = fit_calibration(margin, labels, method="isotonic", seed=0)
    # then: auto refuses isotonic; an explicit request is honoured
    assert auto.method == "sigmoid" and not auto.isotonic_eligible
    assert f"isotonic needs {MIN_ISOTONIC_CLASS} of each outcome" in auto.reason
    assert explicit.method == "isotonic" and isinstance(forced, IsotonicCalibration)


def test_calibration_refuses_a_single_class_and_unknown_methods():
    with pytest.raises(ValueError, match="won and not-won"):
        fit_calibration(np.zeros(10), np.zeros(10), method="auto")
    with pytest.raises(ValueError, match="auto, sigmoid or isotonic"):
        fit_calibration(np.zeros(10), np.r_[np.zeros(5), np.ones(5)], method="beta")  # type: ignore[arg-type]


def test_the_numpy_isotonic_map_equals_sklearn_isotonic_regression():
    # given
    rng, margin = _margins(5000, 3)
    labels = (rng.random(len(margin)) < 1 / (1 + np.exp(-2 * np.sin(margin)))).astype(int)
    new = np.r_[rng.normal(-1.0, 3.0, 2000), margin.min() - 5, margin.max() + 5, margin[:50]]
    # when
    ours = fit_isotonic(margin, labels)
    theirs = fit_isotonic_regression(margin, labels)
    # then: inside, between and beyond the thresholds
    np.testing.assert_allclose(ours(new), theirs.predict(new), rtol=0, atol=1e-12)
    assert np.all(np.diff(ours(np.sort(new))) >= 0)
    # and the centred map used for reasons rises strictly, tails included, and stays close
    wide = np.linspace(margin.min() - 5, margin.max() + 5, 5000)
    assert np.all(np.diff(ours.smooth(wide)) > 0)
    inside = np.sort(margin)
    assert np.abs(ours.smooth(inside) - ours(inside)).mean() < 0.02


def test_isotonic_calibration_refuses_arrays_that_are_not_monotone():
    with pytest.raises(ValueError, match="increasing x"):
        IsotonicCalibration([0.0, 1.0, 0.5], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="non-decreasing y"):
        IsotonicCalibration([0.0, 1.0], [0.3, 0.2])
    with pytest.raises(ValueError, match="same, non-zero size"):
        IsotonicCalibration([], [])


def test_the_scorer_exposes_the_calibration_it_chose(scorer):
    # then: the fixture's method was requested explicitly, and both were cross-fitted
    report = scorer.calibration_report
    assert scorer.calibration_method == report["method"] == report["requested"]
    assert report["n"] == 3000 and report["folds"] == 5
    assert set(report["cv_log_loss"]) == {"sigmoid", "isotonic"}


def test_auto_is_the_default_and_its_choice_is_reported():
    # when
    scorer = fit_scorer(
        train=_frame(6000, 1),
        calibration=_frame(3000, 2),
        specs=SPECS,
        params=PARAMS,
        bands={"hot_min": 0.4, "warm_min": 0.15},
        feature_service="lead_scoring_v2",
        seed=0,
    )
    # then
    report = scorer.calibration_report
    assert report["requested"] == "auto"
    losses = report["cv_log_loss"]
    assert scorer.calibration_method == min(losses, key=losses.get)


def test_a_band_policy_sets_the_cut_offs_on_the_calibration_slice():
    # given: the calibration slice with its leads and moments
    calibration = _frame(3000, 2).assign(
        lead_id=np.arange(3000) // 2,
        event_timestamp=pd.date_range("2025-01-01", periods=3000, freq="30min", tz="UTC"),
    )
    # when
    scorer = fit_scorer(
        train=_frame(6000, 1),
        calibration=calibration,
        specs=SPECS,
        params=PARAMS,
        bands={"hot_min": 0.4, "warm_min": 0.15},
        feature_service="lead_scoring_v2",
        seed=0,
        calibration_method="sigmoid",
        band_settings=BandSettings(policy="top_share", hot_share=0.1, warm_share=0.3),
    )
    # then: a tenth of the leads, each with its best snapshot, is hot
    best = pd.Series(scorer.predict_proba_frame(calibration)).groupby(calibration["lead_id"]).max()
    assert (best >= scorer.bands["hot_min"]).mean() == pytest.approx(0.1, abs=0.03)
    assert scorer.band_policy["policy"] == "top_share"
    assert scorer.band_policy["reference"] == "calibration slice"
    assert scorer.band_policy["reference_leads"] == 1500
    assert scorer.band_policy["hot_min"] == scorer.bands["hot_min"]


def test_band_thresholds_must_be_ordered(scorer):
    with pytest.raises(ValueError, match="warm_min < hot_min"):
        scorer.set_bands({"hot_min": 0.1, "warm_min": 0.2})


def test_a_scorer_pickled_before_band_policies_still_loads(scorer):
    # given: the state of a scorer from before calibration reports and band policies
    state = {
        k: v for k, v in scorer.__dict__.items() if k not in ("band_policy", "calibration_report")
    }
    old = LeadScorer.__new__(LeadScorer)
    old.__dict__.update(state)
    # when
    loaded = pickle.loads(pickle.dumps(old))
    # then
    assert loaded.band_policy == {"policy": "cutoffs", **scorer.bands}
    assert loaded.calibration_report == {}
    frame = _frame(200, 9)
    np.testing.assert_array_equal(
        loaded.predict_proba_frame(frame), scorer.predict_proba_frame(frame)
    )
