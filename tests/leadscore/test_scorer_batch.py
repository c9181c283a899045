"""The batch explanation path agrees with the one-lead serving path, for both calibrations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leadscore.feature_catalog import FEATURES_BY_NAME
from training.model import fit_scorer

SPECS = [
    FEATURES_BY_NAME[n]
    for n in ("source_channel", "demo_request_30d", "page_view_30d", "is_decision_maker")
]
PARAMS = {"n_estimators": 60, "num_leaves": 7, "learning_rate": 0.1, "min_child_samples": 20}


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    channel = rng.choice(["website", "bought_list", "referral", None], n, p=[0.4, 0.4, 0.1, 0.1])
    demos = rng.poisson(0.5, n).astype(float)
    pages = rng.poisson(3, n).astype(float)
    pages[rng.random(n) < 0.1] = np.nan
    decision = rng.choice([0.0, 1.0, np.nan], n, p=[0.5, 0.3, 0.2])
    logit = -2.5 + 1.2 * demos + np.where(channel == "website", 1.0, 0.0) + np.nan_to_num(decision)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "source_channel": channel,
            "demo_request_30d": demos,
            "page_view_30d": pages,
            "is_decision_maker": decision,
            "label": label,
        }
    )


@pytest.fixture(scope="module", params=["sigmoid", "isotonic"])
def scorer(request):
    scorer = fit_scorer(
        train=_frame(6000, 1),
        calibration=_frame(3000, 2),
        specs=SPECS,
        params=PARAMS,
        bands={"hot_min": 0.4, "warm_min": 0.15},
        feature_service="lead_scoring_v2",
        seed=0,
        calibration_method=request.param,
    )
    assert scorer.calibration_method == request.param
    return scorer


def _as_rows(frame: pd.DataFrame) -> list[dict]:
    """What serving passes to score_rows: plain values, None for a missing one."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


@pytest.mark.parametrize("top_k", [1, 2, len(SPECS), 10])
def test_explain_frame_agrees_with_score_rows(scorer, top_k):
    # given: 500 leads, with an unseen category and missing values, on a non-default index
    frame = _frame(500, 3).drop(columns="label")
    frame.loc[frame.index[:5], "source_channel"] = "carrier_pigeon"
    frame.index = pd.RangeIndex(1000, 1500)
    # when: small chunks, so that chunking is exercised too
    explained = scorer.explain_frame(frame, top_k=top_k, chunk_rows=128)
    served = scorer.score_rows(_as_rows(frame), top_k=top_k)
    # then
    assert explained.index.equals(frame.index)
    assert explained.columns.tolist() == ["probability", "band", "reasons"]
    np.testing.assert_allclose(
        explained["probability"].to_numpy(), [s.probability for s in served], rtol=0, atol=1e-12
    )
    assert explained["band"].tolist() == [s.band for s in served]
    for batch, one in zip(explained["reasons"], served, strict=True):
        assert batch == [
            {"feature": r.feature, "label": r.label, "contribution": r.contribution}
            for r in one.reasons
        ]
    assert max(len(r) for r in explained["reasons"]) == min(top_k, len(SPECS))
    if top_k >= len(SPECS):  # missing values are explained too
        assert any("unknown" in r["label"] for rs in explained["reasons"] for r in rs)


def test_explain_frame_probabilities_match_the_batch_probabilities(scorer):
    frame = _frame(2000, 4).drop(columns="label")
    explained = scorer.explain_frame(frame)
    np.testing.assert_allclose(
        explained["probability"].to_numpy(), scorer.predict_proba_frame(frame), atol=1e-12
    )


def test_explain_frame_of_no_rows_is_empty(scorer):
    frame = _frame(10, 5).drop(columns="label").iloc[:0]
    explained = scorer.explain_frame(frame)
    assert len(explained) == 0
    assert explained.columns.tolist() == ["probability", "band", "reasons"]


def test_explain_frame_names_missing_feature_columns(scorer):
    frame = _frame(10, 6).drop(columns=["label", "page_view_30d"])
    with pytest.raises(ValueError, match="page_view_30d"):
        scorer.explain_frame(frame)


def test_reasons_move_the_probability_the_way_their_log_odds_do(scorer):
    # given: 300 leads, and three far beyond the margins the calibration saw
    frame = _frame(300, 7).drop(columns="label")
    extremes = pd.DataFrame(
        {
            "source_channel": ["website", "bought_list", "website"],
            "demo_request_30d": [12.0, 0.0, 0.0],
            "page_view_30d": [40.0, 0.0, np.nan],
            "is_decision_maker": [1.0, 0.0, np.nan],
        }
    )
    frame = pd.concat([frame, extremes], ignore_index=True)
    # when
    served = scorer.score_rows(_as_rows(frame), top_k=len(SPECS))
    contrib = scorer.booster.predict(scorer.encoder.transform(frame), pred_contrib=True)
    # then: each reason moves the probability in the direction of its SHAP value (or too little
    # to show in four decimals), and the strongest one always moves it, even on an isotonic
    # staircase
    for i, score in enumerate(served):
        assert score.reasons and score.reasons[0].contribution != 0
        for reason in score.reasons:
            phi = contrib[i, scorer.features.index(reason.feature)]
            assert np.sign(reason.contribution) in (0.0, np.sign(phi))
