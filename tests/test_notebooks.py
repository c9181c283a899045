"""The notebooks run against the real stack."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from leadscore import settings as settings_module

pytestmark = pytest.mark.slow
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_model_review_notebook_runs_on_the_trained_stack(stack, monkeypatch):
    # given: the notebook reads the settings from the environment, like the CLI
    monkeypatch.setenv("LEADSCORE_PATHS__ROOT", str(stack.settings.paths.root))
    settings_module.get_settings.cache_clear()
    try:
        # when
        namespace = runpy.run_path(str(NOTEBOOKS / "model_review.py"))
    finally:
        settings_module.get_settings.cache_clear()
    # then
    assert str(namespace["version"].version) == stack.training.model.version
    assert namespace["test_metrics"]["roc_auc"] == pytest.approx(stack.training.metrics["roc_auc"])
    assert namespace["bands"]["leads"].sum() == len(namespace["leads"])
    assert len(namespace["importance"]) == 15
    calibration = namespace["calibration"]
    assert calibration["n"].sum() == len(namespace["test"])
    assert namespace["review"].metrics["roc_auc"] == pytest.approx(
        stack.training.metrics["roc_auc"]
    )
    assert len(namespace["explained"]) == 2


def test_exploration_notebook_runs_on_the_stack_data(stack, monkeypatch):
    monkeypatch.setenv("LEADSCORE_PATHS__ROOT", str(stack.settings.paths.root))
    settings_module.get_settings.cache_clear()
    try:
        namespace = runpy.run_path(str(NOTEBOOKS / "exploration.py"))
    finally:
        settings_module.get_settings.cache_clear()
    funnel = namespace["funnel"]
    # The funnel narrows: every stage's rate is at most the one before it.
    rates = funnel[["MQL_rate", "SQL_rate", "opportunity_rate", "won_rate"]].to_numpy()
    assert (rates[:, 1:] <= rates[:, :-1] + 1e-12).all()
    assert funnel.loc["all", "leads"] == len(namespace["tables"]["leads"])
    assert namespace["cohorts"]["leads"].sum() == len(namespace["tables"]["leads"])
