"""Rolling-origin backtests on time-ordered synthetic examples."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from leadscore.feature_catalog import FEATURES_BY_NAME
from training.backtest import BacktestDataError, BacktestResult, rolling_origin_backtest
from training.model import fit_scorer


def _examples(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    """Snapshots over 600 days, ten per day on average (many share a moment), one signal."""
    rng = np.random.default_rng(seed)
    days = np.sort(rng.integers(0, 600, n))
    moments = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(days, unit="D")
    x = rng.normal(size=n)
    label = (rng.random(n) < 1 / (1 + np.exp(-(-2.0 + 1.5 * x)))).astype(int)
    return pd.DataFrame({"event_timestamp": moments, "x": x, "label": label})


def _logistic_fit(calls: list[tuple[pd.DataFrame, pd.DataFrame]]):
    """Logistic regression on ``x`` with Platt scaling on the calibration slice."""

    def fit(train: pd.DataFrame, calibration: pd.DataFrame):
        calls.append((train, calibration))
        model = LogisticRegression().fit(train[["x"]], train["label"])
        margin = model.decision_function(calibration[["x"]]).reshape(-1, 1)
        platt = LogisticRegression().fit(margin, calibration["label"])

        def predict(frame: pd.DataFrame) -> np.ndarray:
            raw = model.decision_function(frame[["x"]]).reshape(-1, 1)
            return platt.predict_proba(raw)[:, 1]

        return predict

    return fit


def test_folds_test_later_periods_with_expanding_training_windows():
    # given: examples in no particular order
    frame = _examples().sample(frac=1.0, random_state=1)
    calls: list[tuple[pd.DataFrame, pd.DataFrame]] = []
    # when
    result = rolling_origin_backtest(frame, fit=_logistic_fit(calls), n_folds=4)
    # then: four folds, oldest first, test periods consecutive and disjoint in time
    folds = result.folds
    assert [f["fold"] for f in folds] == [1, 2, 3, 4] and result.n_folds == 4
    for f in folds:
        assert f["train_end"] < f["calibration_start"] <= f["calibration_end"] < f["test_start"]
        assert f["test_start"] <= f["test_end"]
        assert f["n_test"] == pytest.approx(600, abs=30) and f["n"] == f["n_test"]
        assert 0.7 < f["roc_auc"] < 0.95
    for earlier, later in itertools.pairwise(folds):
        assert earlier["test_end"] < later["test_start"]
        assert earlier["n_train"] < later["n_train"]
        assert later["train_start"] == earlier["train_start"]  # expanding, not sliding
    assert folds[-1]["test_end"] == frame["event_timestamp"].max()
    assert (
        sum(f["n_test"] for f in folds)
        == (frame["event_timestamp"] >= folds[0]["test_start"]).sum()
    )
    # and fit saw only the past of each test period
    for (train, calibration), f in zip(calls, folds, strict=True):
        assert len(train) == f["n_train"] and len(calibration) == f["n_calibration"]
        assert train["event_timestamp"].max() < calibration["event_timestamp"].min()
        assert calibration["event_timestamp"].max() < f["test_start"]


def test_the_same_examples_in_another_order_give_the_same_folds():
    frame = _examples(3000, 2)
    first = rolling_origin_backtest(frame, fit=_logistic_fit([]), n_folds=3)
    shuffled = rolling_origin_backtest(
        frame.sample(frac=1.0, random_state=3), fit=_logistic_fit([]), n_folds=3
    )
    columns = ["test_start", "test_end", "n_train", "n_calibration", "n_test", "positives"]
    pd.testing.assert_frame_equal(first.table()[columns], shuffled.table()[columns])


def test_result_tabulates_summarises_and_flattens_for_mlflow():
    # given
    result = rolling_origin_backtest(_examples(), fit=_logistic_fit([]), n_folds=3)
    # when
    table = result.table()
    summary = result.summary()
    flat = result.as_mlflow_metrics()
    document = result.as_dict()
    # then
    assert isinstance(result, BacktestResult)
    assert len(table) == 3 and {"test_start", "roc_auc", "ece", "n_train"} <= set(table.columns)
    assert list(summary.index) == ["roc_auc", "pr_auc", "brier", "log_loss", "ece"]
    assert summary.loc["roc_auc", "mean"] == pytest.approx(table["roc_auc"].mean())
    assert summary.loc["brier", "std"] == pytest.approx(table["brier"].std())
    assert flat["backtest_fold2_roc_auc"] == table.loc[1, "roc_auc"]
    assert flat["backtest_fold3_n_train"] == table.loc[2, "n_train"]
    assert flat["backtest_ece_mean"] == summary.loc["ece", "mean"]
    assert "backtest_log_loss_std" in flat
    assert not any("start" in k or "end" in k for k in flat)
    assert json.loads(json.dumps(document))["folds"][0]["test_start"].startswith("20")


def test_band_metrics_when_a_band_function_is_given():
    def band_of(p: np.ndarray) -> np.ndarray:
        return np.where(p >= 0.3, "hot", np.where(p >= 0.1, "warm", "cold"))

    result = rolling_origin_backtest(_examples(), fit=_logistic_fit([]), n_folds=2, band_of=band_of)
    fold = result.folds[0]
    assert fold["hot_share"] + fold["warm_share"] + fold["cold_share"] == pytest.approx(1.0)
    assert fold["hot_conversion"] > fold["cold_conversion"]
    plain = rolling_origin_backtest(_examples(), fit=_logistic_fit([]), n_folds=2)
    assert "hot_share" not in plain.folds[0]


def test_a_test_period_without_conversions_is_refused_before_any_fit():
    # given: nobody converted in the newest 10%
    frame = _examples()
    cut = frame["event_timestamp"].quantile(0.9)
    frame.loc[frame["event_timestamp"] >= cut, "label"] = 0
    calls: list[tuple[pd.DataFrame, pd.DataFrame]] = []
    # when / then
    with pytest.raises(BacktestDataError, match=r"fold 4 of 4: the test period .* 0 converted"):
        rolling_origin_backtest(frame, fit=_logistic_fit(calls), n_folds=4)
    assert calls == []


def test_too_little_data_or_history_is_refused():
    small = _examples(40, 4)
    with pytest.raises(ValueError, match=r"fold \d of 4: the (training|calibration|test) period"):
        rolling_origin_backtest(small, fit=_logistic_fit([]), n_folds=4)
    one_moment = _examples(2000, 5).assign(event_timestamp=pd.Timestamp("2024-01-01", tz="UTC"))
    with pytest.raises(BacktestDataError, match="too many examples share a moment"):
        rolling_origin_backtest(one_moment, fit=_logistic_fit([]), n_folds=2)
    with pytest.raises(BacktestDataError, match="nothing to train"):
        rolling_origin_backtest(_examples(), fit=_logistic_fit([]), n_folds=9, test_share=0.1)
    with pytest.raises(ValueError, match="lack the columns"):
        rolling_origin_backtest(_examples().drop(columns="label"), fit=_logistic_fit([]))


def test_backtest_of_the_real_scorer():
    # given: the project's LightGBM + Platt scorer on examples with a known signal
    rng = np.random.default_rng(11)
    n = 4000
    days = np.sort(rng.integers(0, 400, n))
    channel = rng.choice(["website", "bought_list"], n)
    demos = rng.poisson(0.5, n).astype(float)
    logit = -2.5 + 1.2 * demos + np.where(channel == "website", 1.0, 0.0)
    frame = pd.DataFrame(
        {
            "event_timestamp": pd.Timestamp("2024-01-01", tz="UTC")
            + pd.to_timedelta(days, unit="D"),
            "source_channel": channel,
            "demo_request_30d": demos,
            "page_view_30d": rng.poisson(3, n).astype(float),
            "label": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
        }
    )
    specs = [FEATURES_BY_NAME[c] for c in ("source_channel", "demo_request_30d", "page_view_30d")]

    def fit(train: pd.DataFrame, calibration: pd.DataFrame):
        scorer = fit_scorer(
            train=train,
            calibration=calibration,
            specs=specs,
            params={
                "n_estimators": 40,
                "num_leaves": 7,
                "learning_rate": 0.1,
                "min_child_samples": 20,
            },
            bands={"hot_min": 0.4, "warm_min": 0.15},
            feature_service="lead_scoring_v2",
            seed=0,
        )
        return scorer.predict_proba_frame

    # when
    result = rolling_origin_backtest(frame, fit=fit, n_folds=3, test_share=0.15)
    # then
    summary = result.summary()
    assert summary.loc["roc_auc", "mean"] > 0.7
    assert summary.loc["ece", "mean"] < 0.05
