"""Seeded random search of LightGBM hyper-parameters within a time budget.

Every trial trains on the training slice and is scored by the log loss of the booster's
probabilities on the calibration slice, with early stopping on that same log loss: the number
of rounds kept is part of the trial's parameters. The search sees only the training and
calibration slices, never the test period, so the test metrics stay an honest estimate.

Trial 0 is always the configured parameters (its rounds capped at the configured
``n_estimators``), so the best trial is never worse than them on the calibration slice. Later
trials draw ``num_leaves``, ``learning_rate``, ``min_child_samples``, ``lambda_l2`` and
``feature_fraction`` from the ranges below; their rounds are capped at twice the configured
``learning_rate * n_estimators`` divided by their learning rate (a slower rate gets more
rounds), and early stopping ends them sooner.

The clock is checked between trials: no trial starts once the budget is spent, and a running
trial is never cut short, so the search may overrun its budget by at most one trial.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from leadscore.feature_catalog import FeatureSpec
from training.model import fit_encoder, lightgbm_params

logger = logging.getLogger(__name__)

NUM_LEAVES = (7, 63)
"""Range of ``num_leaves`` (log-uniform, integer)."""
LEARNING_RATE = (0.02, 0.2)
"""Range of ``learning_rate`` (log-uniform)."""
MIN_CHILD_SAMPLES = (10, 300)
"""Range of ``min_child_samples`` (log-uniform, integer)."""
LAMBDA_L2 = (0.1, 30.0)
"""Range of ``lambda_l2`` (log-uniform)."""
FEATURE_FRACTION = (0.5, 1.0)
"""Range of ``feature_fraction`` (uniform)."""
MIN_ROUNDS, MAX_ROUNDS = 50, 5000
"""Bounds of a drawn trial's round cap."""

StopReason = Literal["max_trials", "budget"]


@dataclass(frozen=True)
class Trial:
    """One trained and scored parameter set.

    Attributes:
        number: 0 for the configured parameters, then 1, 2, ...
        params: The parameters, ``n_estimators`` being the rounds early stopping kept.
        max_rounds: The rounds the trial was allowed.
        log_loss: Log loss of the booster's probabilities on the calibration slice.
        seconds: Wall time of the trial.
    """

    number: int
    params: dict[str, float | int]
    max_rounds: int
    log_loss: float
    seconds: float


@dataclass(frozen=True)
class SearchResult:
    """The outcome of a search.

    Attributes:
        best_params: Parameters of the best trial (ready for ``fit_scorer``).
        best_log_loss: Its calibration-slice log loss.
        best_trial: Its number.
        trials: Every trial, in order.
        stopped: ``max_trials`` or ``budget``.
        seconds: Wall time of the whole search.
    """

    best_params: dict[str, float | int]
    best_log_loss: float
    best_trial: int
    trials: tuple[Trial, ...]
    stopped: StopReason
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (e.g. for ``mlflow.log_dict``)."""
        return {
            "best_params": self.best_params,
            "best_log_loss": self.best_log_loss,
            "best_trial": self.best_trial,
            "stopped": self.stopped,
            "seconds": self.seconds,
            "trials": [
                {
                    "number": t.number,
                    "params": t.params,
                    "max_rounds": t.max_rounds,
                    "log_loss": t.log_loss,
                    "seconds": t.seconds,
                }
                for t in self.trials
            ],
        }


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def draw_params(
    rng: np.random.Generator, base_params: Mapping[str, float | int]
) -> tuple[dict[str, float | int], int]:
    """A random parameter set and its round cap (scaled from the configured rate x rounds)."""
    learning_rate = _log_uniform(rng, *LEARNING_RATE)
    params: dict[str, float | int] = {
        "num_leaves": round(_log_uniform(rng, *NUM_LEAVES)),
        "learning_rate": learning_rate,
        "min_child_samples": round(_log_uniform(rng, *MIN_CHILD_SAMPLES)),
        "lambda_l2": _log_uniform(rng, *LAMBDA_L2),
        "feature_fraction": float(rng.uniform(*FEATURE_FRACTION)),
    }
    budget = float(base_params["learning_rate"]) * float(base_params["n_estimators"])
    rounds = min(MAX_ROUNDS, max(MIN_ROUNDS, math.ceil(2.0 * budget / learning_rate)))
    return params, rounds


def _run_trial(
    *,
    number: int,
    params: Mapping[str, float | int],
    max_rounds: int,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_calib: np.ndarray,
    y_calib: np.ndarray,
    names: Sequence[str],
    categorical: Sequence[int],
    seed: int,
) -> Trial:
    start = time.perf_counter()
    train_set = lgb.Dataset(
        X_train,
        label=y_train,
        feature_name=list(names),
        categorical_feature=list(categorical),
        free_raw_data=False,
    )
    valid_set = lgb.Dataset(X_calib, label=y_calib, reference=train_set, free_raw_data=False)
    booster = lgb.train(
        {**lightgbm_params(params, seed=seed), "metric": "binary_logloss"},
        train_set,
        num_boost_round=max_rounds,
        valid_sets=[valid_set],
        callbacks=[
            lgb.early_stopping(max(20, max_rounds // 10), first_metric_only=True, verbose=False)
        ],
    )
    rounds = int(booster.best_iteration) or max_rounds
    probability = np.asarray(booster.predict(X_calib, num_iteration=rounds))
    loss = float(log_loss(y_calib, np.clip(probability, 1e-15, 1 - 1e-15), labels=[0, 1]))
    kept = {**dict(params), "n_estimators": rounds}
    return Trial(number, kept, max_rounds, loss, time.perf_counter() - start)


def search_lightgbm(
    *,
    train: pd.DataFrame,
    calibration: pd.DataFrame,
    specs: Sequence[FeatureSpec],
    base_params: Mapping[str, float | int],
    budget_seconds: float,
    max_trials: int,
    seed: int,
) -> SearchResult:
    """Random search of LightGBM parameters, scored on the calibration slice, within a budget.

    Args:
        train: Training examples (feature columns and ``label``).
        calibration: The later calibration slice, scored by each trial (and early stopping).
            Never pass the test period.
        specs: The model's features.
        base_params: The configured parameters (``n_estimators``, ``num_leaves``,
            ``learning_rate``, ``min_child_samples``, optionally ``lambda_l2`` and
            ``feature_fraction``): trial 0, always run.
        budget_seconds: No trial starts after this many seconds since the start.
        max_trials: Most trials, trial 0 included.
        seed: Seed of the draws and of LightGBM.

    Returns:
        The best parameters (``n_estimators`` = the rounds kept), every trial and why the
        search stopped.

    Raises:
        ValueError: ``max_trials`` below 1 or a negative budget.
    """
    if max_trials < 1:
        raise ValueError(f"max_trials must be at least 1, not {max_trials}")
    if budget_seconds < 0:
        raise ValueError(f"budget_seconds must not be negative, not {budget_seconds}")
    start = time.perf_counter()
    encoder = fit_encoder(train, specs)
    data = {
        "X_train": encoder.transform(train),
        "y_train": train["label"].to_numpy(),
        "X_calib": encoder.transform(calibration),
        "y_calib": calibration["label"].to_numpy(),
    }
    rng = np.random.default_rng(seed)
    base = dict(base_params)
    trials: list[Trial] = []
    stopped: StopReason = "max_trials"
    while True:
        if trials:
            params, rounds = draw_params(rng, base)
        else:  # the configured parameters
            params = {k: v for k, v in base.items() if k != "n_estimators"}
            rounds = int(base["n_estimators"])
        trial = _run_trial(
            number=len(trials),
            params=params,
            max_rounds=rounds,
            names=list(encoder.features),
            categorical=encoder.categorical_indices_,
            seed=seed,
            **data,
        )
        trials.append(trial)
        logger.info(
            "search trial %d: log loss %.5f in %.1f s %s",
            trial.number,
            trial.log_loss,
            trial.seconds,
            trial.params,
        )
        if len(trials) >= max_trials:
            stopped = "max_trials"
            break
        if time.perf_counter() - start >= budget_seconds:
            stopped = "budget"
            break
    best = min(trials, key=lambda t: (t.log_loss, t.number))
    return SearchResult(
        best_params=dict(best.params),
        best_log_loss=best.log_loss,
        best_trial=best.number,
        trials=tuple(trials),
        stopped=stopped,
        seconds=time.perf_counter() - start,
    )
