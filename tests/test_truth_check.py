"""The champion's probabilities against the demo data's true conversion probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.truth_check import check_champion_against_truth, truth_calibration

pytestmark = pytest.mark.slow

TOLERANCE = 0.03
"""Largest expected calibration error against the truth accepted on the 8,000-lead stack
(its test period has ~1,000 day-1 snapshots; on the default 20,000 leads it is smaller: see
the README)."""


def test_calibrated_probabilities_match_the_truth(stack):
    check = check_champion_against_truth(stack.settings, stack.settings.paths.raw / "truth.parquet")
    assert check.n > 500
    assert check.ece_truth < TOLERANCE, check.summary()
    assert abs(check.mean_probability - check.mean_truth) < TOLERANCE


def test_the_check_sees_a_biased_model():
    rng = np.random.default_rng(0)
    truth = rng.beta(1, 12, 5000)
    labels = (rng.random(5000) < truth).astype(int)
    honest = truth_calibration(truth, truth, labels)
    inflated = truth_calibration(np.minimum(truth * 2, 1), truth, labels)
    assert honest.ece_truth < 1e-12
    assert inflated.ece_truth > 0.05
