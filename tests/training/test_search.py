"""The hyper-parameter search: trial 0 is the configuration, limits are kept, never worse."""

from __future__ import annotations

import pytest

from tests.training.test_model import SPECS, _frame
from training.search import search_lightgbm

BASE = {
    "n_estimators": 80,
    "num_leaves": 7,
    "learning_rate": 0.1,
    "min_child_samples": 20,
    "lambda_l2": 1.0,
}


@pytest.fixture(scope="module")
def slices():
    return _frame(4000, 1), _frame(2000, 2)


def _search(slices, **limits):
    train, calibration = slices
    return search_lightgbm(
        train=train, calibration=calibration, specs=SPECS, base_params=BASE, seed=3, **limits
    )


def test_the_search_stops_at_max_trials_and_is_never_worse_than_the_configuration(slices):
    # when
    result = _search(slices, budget_seconds=3600, max_trials=4)
    # then
    assert result.stopped == "max_trials"
    assert [t.number for t in result.trials] == [0, 1, 2, 3]
    first = result.trials[0]
    assert {k: v for k, v in first.params.items() if k != "n_estimators"} == {
        k: v for k, v in BASE.items() if k != "n_estimators"
    }
    assert first.max_rounds == BASE["n_estimators"] >= first.params["n_estimators"] > 0
    assert result.best_log_loss <= first.log_loss
    assert result.best_log_loss == min(t.log_loss for t in result.trials)
    assert result.best_params == result.trials[result.best_trial].params
    assert set(result.best_params) >= {*BASE, "feature_fraction"}
    assert all(t.seconds > 0 for t in result.trials)
    # the draws differ from the configuration, and the record is JSON-friendly
    assert len({t.params["num_leaves"] for t in result.trials[1:]}) > 1
    assert result.as_dict()["trials"][2]["params"] == result.trials[2].params


def test_a_spent_budget_starts_no_further_trial(slices):
    # when: the budget is gone once the first trial ends
    result = _search(slices, budget_seconds=1e-9, max_trials=20)
    # then: trial 0 ran (the configured parameters), nothing after it
    assert result.stopped == "budget"
    assert len(result.trials) == 1
    assert result.best_trial == 0


def test_the_draws_follow_the_seed(slices):
    one = _search(slices, budget_seconds=3600, max_trials=3)
    two = _search(slices, budget_seconds=3600, max_trials=3)
    assert [t.params for t in one.trials] == [t.params for t in two.trials]


def test_limits_must_allow_a_trial(slices):
    with pytest.raises(ValueError, match="max_trials must be at least 1"):
        _search(slices, budget_seconds=10, max_trials=0)
    with pytest.raises(ValueError, match="must not be negative"):
        _search(slices, budget_seconds=-1, max_trials=3)
