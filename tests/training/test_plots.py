"""Review charts: each returns a figure that saves to PNG; figures go to an MLflow run."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

import mlflow
from leadscore.tracking import connect_tracking
from training.plots import (
    feature_importance,
    lift_gain_chart,
    log_figures,
    reliability_diagram,
    score_distribution,
    shap_summary,
)

NAMES = ["demo_requests", "page_views", "company_size", "noise"]


@pytest.fixture(scope="module")
def model() -> tuple[lgb.Booster, pd.DataFrame, np.ndarray, np.ndarray]:
    """A small real booster, its features, labels and probabilities."""
    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame(
        {
            "demo_requests": rng.poisson(0.5, n).astype(float),
            "page_views": rng.poisson(3, n).astype(float),
            "company_size": rng.lognormal(4, 1, n),
            "noise": rng.normal(size=n),
        }
    )
    frame.loc[rng.random(n) < 0.1, "company_size"] = np.nan
    logit = -2.5 + 1.2 * frame["demo_requests"] + 0.1 * frame["page_views"]
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int).to_numpy()
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": 0, "deterministic": True},
        lgb.Dataset(frame, label=labels, feature_name=NAMES),
        num_boost_round=30,
    )
    probabilities = np.asarray(booster.predict(frame))
    return booster, frame, labels, probabilities


def _saved(figure: Figure, path) -> None:
    assert isinstance(figure, Figure) and figure.axes
    figure.savefig(path)
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reliability_diagram_shows_bins_diagonal_histogram_and_ece(model, tmp_path):
    _, _, labels, p = model
    figure = reliability_diagram(labels, p)
    top, bottom = figure.axes
    assert "calibration error 0.0" in top.get_title()
    assert top.get_ylabel() and bottom.get_xlabel()
    assert len(bottom.patches) == 40  # the histogram's bars
    _saved(figure, tmp_path / "reliability.png")


def test_lift_gain_chart_has_a_curve_and_ten_bars(model, tmp_path):
    _, _, labels, p = model
    figure = lift_gain_chart(labels, p)
    gain, lift = figure.axes
    assert len(lift.patches) == 10
    heights = [bar.get_height() for bar in lift.patches]
    assert heights[0] > 1 > heights[-1]
    assert gain.get_xlabel() and lift.get_ylabel()
    _saved(figure, tmp_path / "lift.png")


@pytest.mark.parametrize("log_x", [False, True])
def test_score_distribution_separates_the_two_groups(model, tmp_path, log_x):
    _, _, labels, p = model
    figure = score_distribution(labels, p, log_x=log_x)
    (axes,) = figure.axes
    assert axes.get_xscale() == ("log" if log_x else "linear")
    assert {t.get_text().split(" (")[0] for t in axes.get_legend().get_texts()} == {
        "did not convert",
        "converted",
    }
    _saved(figure, tmp_path / f"scores_{log_x}.png")


def test_feature_importance_puts_the_strongest_feature_on_top(model, tmp_path):
    booster, _, _, _ = model
    figure = feature_importance(booster, NAMES, top=3)
    (axes,) = figure.axes
    labels = [t.get_text() for t in axes.get_yticklabels()]
    assert len(labels) == 3 and labels[-1] == "demo_requests"  # barh: last is on top
    _saved(figure, tmp_path / "importance.png")
    with pytest.raises(ValueError, match="3 feature names"):
        feature_importance(booster, NAMES[:3])


def test_shap_summary_from_pred_contrib_with_and_without_values(model, tmp_path):
    # given: SHAP values from LightGBM, without the bias column
    booster, frame, _, _ = model
    contrib = np.asarray(booster.predict(frame, pred_contrib=True))
    phi = contrib[:, :-1]
    # when
    coloured = shap_summary(phi, NAMES, frame.to_numpy(), top=3, max_points=500)
    plain = shap_summary(phi, NAMES)
    # then
    bars, dots, colour_bar = coloured.axes
    assert [t.get_text() for t in bars.get_yticklabels()][-1] == "demo_requests"
    assert len(bars.patches) == 3 and len(plain.axes[0].patches) == 4
    assert "Feature value" in colour_bar.get_ylabel()
    assert sum(len(c.get_offsets()) for c in dots.collections) == 3 * 500
    _saved(coloured, tmp_path / "shap.png")
    _saved(plain, tmp_path / "shap_plain.png")
    with pytest.raises(ValueError, match="bias column"):
        shap_summary(contrib, NAMES)


def test_log_figures_stores_pngs_with_the_run(model, tmp_path):
    # given: a real MLflow store in a temporary folder
    _, _, labels, p = model
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    connect_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment(
            "plots", artifact_location=(tmp_path / "artifacts").as_uri()
        )
        with pytest.raises(RuntimeError, match="no active MLflow run"):
            log_figures({"lift": lift_gain_chart(labels, p)})
        # when: logged in the active run, and to a run by id
        with mlflow.start_run(experiment_id=experiment) as run:
            log_figures({"reliability": reliability_diagram(labels, p)})
        log_figures({"lift": lift_gain_chart(labels, p)}, run_id=run.info.run_id)
        # then
        client = MlflowClient()
        stored = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert stored == {"plots/reliability.png", "plots/lift.png"}
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
