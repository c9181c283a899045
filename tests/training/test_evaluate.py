"""Test metrics, their bootstrap intervals and the reliability table."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from training.evaluate import (
    Evaluation,
    _SortedSample,
    bootstrap_intervals,
    evaluate_probabilities,
    metrics_with_intervals,
    reliability_table,
    wilson_interval,
)

INTERVAL_KEYS = {
    "roc_auc",
    "pr_auc",
    "brier",
    "log_loss",
    "ece",
    "lift_top_decile",
    "capture_top_decile",
    "hot_conversion",
    "warm_conversion",
    "cold_conversion",
}


def _scored(n: int, seed: int, bias: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from known probabilities; the model's probabilities are off by ``bias``
    in log-odds."""
    rng = np.random.default_rng(seed)
    logit = -2.5 + 1.5 * rng.normal(size=n)
    truth = 1 / (1 + np.exp(-logit))
    labels = (rng.random(n) < truth).astype(int)
    predicted = 1 / (1 + np.exp(-(logit + bias)))
    bands = np.where(predicted >= 0.2, "hot", np.where(predicted >= 0.07, "warm", "cold"))
    return labels, predicted, bands


def _binned(rates: list[float], per_bin: int, offset: float = 0.0) -> tuple[np.ndarray, ...]:
    """Equal bins whose observed rate is exactly ``rate``, predicted ``rate + offset``."""
    labels, probabilities = [], []
    for rate in rates:
        positives = round(rate * per_bin)
        labels += [1] * positives + [0] * (per_bin - positives)
        probabilities += [rate + offset] * per_bin
    return np.array(labels), np.array(probabilities)


def test_metrics_keep_the_old_keys_and_add_calibration_and_top_decile():
    # given
    labels, p, bands = _scored(5000, 0)
    # when
    metrics = evaluate_probabilities(labels=labels, probabilities=p, bands=bands)
    # then
    assert set(metrics) == {
        "roc_auc",
        "pr_auc",
        "brier",
        "log_loss",
        "base_rate",
        "mean_probability",
        "n",
        "ece",
        "lift_top_decile",
        "capture_top_decile",
        *(f"{b}_{k}" for b in ("hot", "warm", "cold") for k in ("share", "conversion")),
    }
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, p))
    assert metrics["brier"] == pytest.approx(brier_score_loss(labels, p))
    assert metrics["hot_conversion"] == pytest.approx(labels[bands == "hot"].mean())
    assert 0 < metrics["ece"] < 0.05
    assert metrics["lift_top_decile"] > 2
    assert metrics["capture_top_decile"] == pytest.approx(
        metrics["lift_top_decile"] * 0.1, rel=1e-12
    )


def test_band_metrics_are_left_out_without_bands():
    labels, p, _ = _scored(1000, 0)
    metrics = evaluate_probabilities(labels=labels, probabilities=p)
    assert not any(k.startswith(("hot", "warm", "cold")) for k in metrics)
    assert set(bootstrap_intervals(labels=labels, probabilities=p, n_boot=5)) == {
        "roc_auc",
        "pr_auc",
        "brier",
        "log_loss",
        "ece",
        "lift_top_decile",
        "capture_top_decile",
    }


def test_a_perfect_ranking_finds_every_conversion_in_the_top_decile():
    # given: 10% converted, scored above everyone else
    labels = np.array([1] * 100 + [0] * 900)
    p = np.where(labels == 1, 0.9, 0.02)
    # when
    metrics = evaluate_probabilities(labels=labels, probabilities=p, bands=None)
    # then
    assert metrics["roc_auc"] == 1.0 and metrics["pr_auc"] == pytest.approx(1.0)
    assert metrics["lift_top_decile"] == pytest.approx(1 / metrics["base_rate"])
    assert metrics["capture_top_decile"] == pytest.approx(1.0)


def test_rarer_conversions_all_in_the_top_decile_give_lift_ten():
    labels = np.array([1] * 30 + [0] * 970)
    p = np.linspace(0.99, 0.01, 1000)
    metrics = evaluate_probabilities(labels=labels, probabilities=p)
    assert metrics["capture_top_decile"] == pytest.approx(1.0)
    assert metrics["lift_top_decile"] == pytest.approx(10.0)


def test_the_top_decile_takes_exactly_ceil_n_over_ten_rows_in_row_order_among_ties():
    # given: 21 rows with the same score: the top decile is the first 3 rows
    labels = np.zeros(21, dtype=int)
    labels[[2, 3, 20]] = 1
    p = np.full(21, 0.3)
    # when
    metrics = evaluate_probabilities(labels=labels, probabilities=p)
    # then: one of the three conversions is among rows 0..2
    assert metrics["capture_top_decile"] == pytest.approx(1 / 3)
    assert metrics["lift_top_decile"] == pytest.approx((1 / 3) / (3 / 21))


def test_probabilities_equal_to_the_observed_rate_of_their_bin_have_no_calibration_error():
    # given
    rates = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.55, 0.7, 0.9]
    labels, p = _binned(rates, per_bin=200)
    # when
    metrics = evaluate_probabilities(labels=labels, probabilities=p)
    table = reliability_table(labels, p)
    # then
    assert metrics["ece"] == pytest.approx(0.0, abs=1e-12)
    assert table["observed"].to_numpy() == pytest.approx(rates)
    assert table["mean_predicted"].to_numpy() == pytest.approx(rates)


def test_a_biased_model_has_the_calibration_error_of_its_bias():
    # given: every prediction 0.05 above its bin's observed rate
    rates = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.55, 0.7, 0.9]
    labels, p = _binned(rates, per_bin=200, offset=0.05)
    # when
    ece = evaluate_probabilities(labels=labels, probabilities=p)["ece"]
    # then
    assert ece == pytest.approx(0.05)
    # and a model over-confident in log-odds on real draws is worse than the honest one
    labels_h, p_h, _ = _scored(20000, 1)
    labels_b, p_b, _ = _scored(20000, 1, bias=1.0)
    honest = evaluate_probabilities(labels=labels_h, probabilities=p_h)["ece"]
    assert evaluate_probabilities(labels=labels_b, probabilities=p_b)["ece"] > 3 * honest


def test_tied_scores_across_a_bin_boundary_do_not_depend_on_row_order():
    # given: one score for everyone: ECE is |score - base rate| whatever the order
    rng = np.random.default_rng(3)
    labels = (rng.random(997) < 0.2).astype(int)
    p = np.full(997, 0.25)
    # when
    eces = [
        evaluate_probabilities(labels=labels[order], probabilities=p)["ece"]
        for order in (np.arange(997), rng.permutation(997), rng.permutation(997))
    ]
    # then
    assert eces == pytest.approx([abs(0.25 - labels.mean())] * 3, abs=1e-12)


def _expanded_metrics(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    """The metrics of the resample written out row by row (the slow, obvious way)."""
    rows = np.repeat(np.arange(len(y)), counts)
    ye, pe = y[rows], p[rows]
    n = len(rows)
    top = rows[np.argsort(-pe, kind="stable")][: math.ceil(n / 10)]
    ascending = np.sort(pe, kind="stable")
    ys = ye[np.argsort(pe, kind="stable")]
    shared = pd.Series(ys).groupby(ascending).transform("mean").to_numpy()  # ties share
    bounds = np.arange(11) * n // 10
    ece = sum(abs((ascending - shared)[a:b].sum()) for a, b in itertools.pairwise(bounds)) / n
    return {
        "roc_auc": roc_auc_score(ye, pe),
        "pr_auc": average_precision_score(ye, pe),
        "brier": brier_score_loss(ye, pe),
        "log_loss": log_loss(ye, pe),
        "ece": ece,
        "capture_top_decile": y[top].sum() / ye.sum(),
    }


def test_weighted_formulas_equal_the_metrics_of_the_written_out_resample():
    # given: scores with many ties and random resampling counts
    rng = np.random.default_rng(7)
    y = (rng.random(300) < 0.3).astype(int)
    p = np.clip(np.round(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, 300), 1), 0.1, 0.9)
    counts = rng.multinomial(300, np.full(300, 1 / 300), size=4)
    sample = _SortedSample(y, p, None)
    order = np.argsort(-p, kind="stable")[::-1]
    # when
    got = sample.metrics(counts[:, order].astype(float))
    # then
    for r in range(4):
        expected = _expanded_metrics(y, p, counts[r])
        for name, value in expected.items():
            assert got[name][r] == pytest.approx(value, abs=1e-12), name


def test_bootstrap_is_deterministic_by_seed_and_covers_the_point_estimate():
    # given
    labels, p, bands = _scored(4000, 2)
    # when
    first = bootstrap_intervals(labels=labels, probabilities=p, bands=bands, seed=5)
    again = bootstrap_intervals(labels=labels, probabilities=p, bands=bands, seed=5)
    other = bootstrap_intervals(labels=labels, probabilities=p, bands=bands, seed=6)
    point = evaluate_probabilities(labels=labels, probabilities=p, bands=bands)
    # then
    assert set(first) == INTERVAL_KEYS
    assert first == again and first != other
    for name in INTERVAL_KEYS - {"ece"}:  # the ECE of a resample is biased upward
        low, high = first[name]
        assert low <= point[name] <= high, name
    assert first["ece"][0] < first["ece"][1]


def test_intervals_narrow_with_more_data():
    small = bootstrap_intervals(labels=_scored(2000, 4)[0], probabilities=_scored(2000, 4)[1])
    labels, p, _ = _scored(32000, 4)
    large = bootstrap_intervals(labels=labels, probabilities=p)
    for name in ("roc_auc", "pr_auc", "brier", "log_loss", "lift_top_decile"):
        width_small = small[name][1] - small[name][0]
        width_large = large[name][1] - large[name][0]
        assert width_large < 0.5 * width_small, name


def test_resamples_with_one_class_are_skipped_and_empty_bands_give_nan():
    # given: two conversions in 40 rows, no hot lead
    labels = np.zeros(40, dtype=int)
    labels[[5, 30]] = 1
    p = np.linspace(0.01, 0.15, 40)
    bands = np.where(p >= 0.07, "warm", "cold")
    # when
    intervals = bootstrap_intervals(labels=labels, probabilities=p, bands=bands, n_boot=300)
    # then
    assert all(math.isfinite(v) for v in intervals["roc_auc"])
    assert all(math.isnan(v) for v in intervals["hot_conversion"])
    assert 0 <= intervals["roc_auc"][0] <= intervals["roc_auc"][1] <= 1


def test_evaluation_flattens_for_mlflow_and_tabulates():
    # given
    labels, p, bands = _scored(3000, 8)
    bands[bands == "hot"] = "warm"  # no hot lead: NaN conversion
    # when
    evaluation = metrics_with_intervals(
        labels=labels, probabilities=p, bands=bands, n_boot=50, seed=1
    )
    flat = evaluation.as_mlflow_metrics("test_")
    table = evaluation.table()
    # then
    assert isinstance(evaluation, Evaluation) and evaluation.n_boot == 50
    assert flat["test_roc_auc"] == evaluation.metrics["roc_auc"]
    assert flat["test_roc_auc_ci_low"] == evaluation.intervals["roc_auc"][0]
    assert flat["test_ece_ci_high"] == evaluation.intervals["ece"][1]
    assert "test_hot_conversion" not in flat and "test_hot_conversion_ci_low" not in flat
    assert "test_hot_share" in flat and "test_n_ci_low" not in flat
    assert all(math.isfinite(v) for v in flat.values())
    assert list(table.columns) == ["metric", "value", "low", "high"]
    assert list(table["metric"]) == list(evaluation.metrics)
    row = table.set_index("metric").loc["brier"]
    assert (row["low"], row["high"]) == evaluation.intervals["brier"]


def test_reliability_table_has_equal_bins_with_wilson_intervals():
    # given
    labels, p, _ = _scored(10005, 9)
    # when
    table = reliability_table(labels, p, n_bins=10)
    # then
    assert list(table.columns) == ["bin", "n", "mean_predicted", "observed", "ci_low", "ci_high"]
    assert table["n"].sum() == 10005 and table["n"].max() - table["n"].min() <= 1
    assert table["mean_predicted"].is_monotonic_increasing
    assert (table["ci_low"] <= table["observed"]).all()
    assert (table["observed"] <= table["ci_high"]).all()
    assert table["observed"].to_numpy() @ table["n"].to_numpy() == pytest.approx(labels.sum())


def test_wilson_interval_known_value_and_fewer_rows_than_bins():
    low, high = wilson_interval(np.array([0.5, 0.0]), np.array([100, 10]))
    assert low[0] == pytest.approx(0.4038, abs=1e-4) and high[0] == pytest.approx(0.5962, abs=1e-4)
    assert low[1] == 0.0 and high[1] == pytest.approx(0.2775, abs=1e-4)
    table = reliability_table(np.array([0, 1, 0]), np.array([0.1, 0.8, 0.3]))
    assert list(table["n"]) == [1, 1, 1]


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="same length"):
        bootstrap_intervals(labels=np.array([0, 1]), probabilities=np.array([0.5]))
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals(labels=np.array([0, 1]), probabilities=np.array([0.2, 0.5]), level=1)
    with pytest.raises(ValueError, match="no rows"):
        reliability_table(np.array([]), np.array([]))
