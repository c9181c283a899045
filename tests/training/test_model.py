"""The fitted scorer on synthetic data with a known signal."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from leadscore.feature_catalog import FEATURES_BY_NAME
from training.model import fit_scorer

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


@pytest.fixture(scope="module")
def scorer():
    return fit_scorer(
        train=_frame(6000, 1),
        calibration=_frame(3000, 2),
        specs=SPECS,
        params=PARAMS,
        bands={"hot_min": 0.4, "warm_min": 0.15},
        feature_service="lead_scoring_v2",
        seed=0,
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
