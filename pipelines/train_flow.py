"""Training flow: wires the training steps together (no logic of its own)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from leadscore.bands import band_expectations
from leadscore.dataset import load_manifest
from leadscore.feature_catalog import MODEL_FEATURES, FeatureSpec
from leadscore.scorer import LeadScorer
from leadscore.settings import Settings, TrainingSettings
from pipelines.feature_store import data_as_of, open_store
from pipelines.ingest import load_outcomes, load_table
from training.audit import AuditReport, audit_features, check_feature_names
from training.backtest import BacktestDataError, BacktestResult, rolling_origin_backtest
from training.baseline import BaselineModel, fit_baseline, log_baseline
from training.dataset import (
    ExampleSplit,
    LabelReport,
    SplitKind,
    check_minimum_outcomes,
    fetch_training_features,
    label_snapshots,
    split_by_time,
)
from training.evaluate import Evaluation, metrics_with_intervals
from training.model import fit_scorer
from training.plots import (
    feature_importance,
    lift_gain_chart,
    log_figures,
    reliability_diagram,
    score_distribution,
    shap_summary,
)
from training.promotion import evaluate_champion_on, outcome_params
from training.register import RegisteredModel, log_and_register, setup_mlflow
from training.search import search_lightgbm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced."""

    labels: LabelReport
    metrics: dict[str, float]
    model: RegisteredModel
    n_train: int
    n_calibration: int
    n_test: int
    audit: AuditReport
    split: SplitKind
    evaluation: Evaluation
    baseline: Evaluation | None
    backtest: BacktestResult | None
    calibration_method: str
    bands: dict[str, float]


def model_params(cfg: TrainingSettings) -> dict[str, float | int]:
    """The LightGBM parameters the settings choose."""
    return {
        "n_estimators": cfg.n_estimators,
        "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate,
        "min_child_samples": cfg.min_child_samples,
        "lambda_l2": cfg.lambda_l2,
    }


def build_training_frame(
    settings: Settings, *, as_of: datetime | None = None
) -> tuple[pd.DataFrame, LabelReport, datetime]:
    """Labelled snapshots joined point in time with their features.

    Returns:
        The examples with their features, the label counts and the data's present.

    Raises:
        TrainingDataError: Too few won or lost leads (checked before the feature join).
    """
    warehouse = settings.paths.warehouse
    tables = {name: load_table(warehouse, name) for name in ("leads", "stage_changes")}
    # Outcomes posted to the API (POST /v1/outcomes) count as much as ingested ones.
    tables["outcomes"] = load_outcomes(warehouse, settings.event_log_url)
    tables["events"] = load_table(warehouse, "events")
    moment = as_of or data_as_of(tables)
    cfg = settings.training
    examples, label_report = label_snapshots(
        leads=tables["leads"],
        stage_changes=tables["stage_changes"],
        outcomes=tables["outcomes"],
        snapshot_days=cfg.snapshot_days,
        horizon_days=cfg.horizon_days,
        as_of=moment,
        target=cfg.target,
    )
    logger.info("labels (%s): %s", cfg.target, label_report)
    check_minimum_outcomes(examples, min_won=cfg.min_won, min_lost=cfg.min_lost)
    frame = fetch_training_features(
        store=open_store(settings),
        examples=examples,
        feature_service=settings.feast.feature_service,
    )
    return frame, label_report, moment


def split_examples(frame: pd.DataFrame, cfg: TrainingSettings) -> ExampleSplit:
    """Training, calibration and test parts as the settings split them."""
    return split_by_time(
        frame,
        calibration_share=cfg.calibration_share,
        test_share=cfg.test_share,
        seed=cfg.seed,
        kind=cfg.split,
    )


def newest_period(settings: Settings) -> pd.DataFrame:
    """The newest period's examples, rebuilt exactly as the last training split them."""
    frame, _, _ = build_training_frame(settings)
    return split_examples(frame, settings.training).test


def run_training(
    settings: Settings,
    *,
    as_of: datetime | None = None,
    post_outcome: Sequence[str] | None = None,
    specs: Sequence[FeatureSpec] | None = None,
) -> TrainingResult:
    """Label snapshots, join features point in time, audit, fit, calibrate, evaluate, register.

    Args:
        settings: Paths, stores, training parameters, band thresholds, MLflow names.
        as_of: The data's present; default: the latest timestamp in the warehouse.
        post_outcome: Columns known only after the outcome, refused as features; default:
            those the data set's mapping file declared.
        specs: Candidate features; default: every model feature of the catalog and the
            data set's custom attributes.

    Returns:
        Label counts, the leakage audit, test metrics and the registered model version.

    Raises:
        TrainingDataError: Too few won or lost leads.
        LeakageError: A candidate feature looks leaky or is declared post-outcome.
        UnknownFeatureError: ``training.exclude_features`` or ``confirmed_features`` names an
            unknown feature.
    """
    cfg = settings.training
    manifest = load_manifest(settings.paths.warehouse)
    # The catalog's features plus the custom attributes of the data set's mapping file.
    candidates = tuple(MODEL_FEATURES + manifest.attribute_specs() if specs is None else specs)
    if post_outcome is None:
        post_outcome = manifest.post_outcome
    # Before the expensive join: a typo in a feature name should fail at once.
    check_feature_names(candidates, exclude=cfg.exclude_features, confirmed=cfg.confirmed_features)
    frame, label_report, moment = build_training_frame(settings, as_of=as_of)
    split = split_examples(frame, cfg)
    train, calibration, test = split.train, split.calibration, split.test
    audit = audit_features(
        train,
        candidates,
        max_auc=cfg.leakage_auc_max,
        exclude=cfg.exclude_features,
        confirmed=cfg.confirmed_features,
        post_outcome=post_outcome,
        seed=cfg.seed,
    )
    logger.info("leakage audit: %s", audit.summary())
    params: dict[str, float | int] = model_params(cfg)
    search = None
    if cfg.search_seconds > 0:
        search = search_lightgbm(
            train=train,
            calibration=calibration,
            specs=audit.kept,
            base_params=params,
            budget_seconds=cfg.search_seconds,
            max_trials=cfg.search_max_trials,
            seed=cfg.seed,
        )
        params = dict(search.best_params)
        logger.info("search: trial %d of %d best", search.best_trial, len(search.trials))

    def fit(train_part: pd.DataFrame, calibration_part: pd.DataFrame) -> LeadScorer:
        return fit_scorer(
            train=train_part,
            calibration=calibration_part,
            specs=audit.kept,
            params=params,
            bands={"hot_min": settings.bands.hot_min, "warm_min": settings.bands.warm_min},
            feature_service=settings.feast.feature_service,
            seed=cfg.seed,
            calibration_method=cfg.calibration,
            band_settings=settings.bands,
            dask_scheduler=cfg.dask_scheduler,
            dask_partitions=cfg.dask_partitions,
        )

    scorer = fit(train, calibration)
    labels = test["label"].to_numpy()
    probability = scorer.predict_proba_frame(test)
    evaluation = metrics_with_intervals(
        labels=labels,
        probabilities=probability,
        bands=scorer.band_of(probability),
        n_boot=cfg.bootstrap_samples,
        seed=cfg.seed,
    )
    metrics = evaluation.metrics
    logger.info("test metrics: %s", metrics)
    expected = band_expectations(probability, labels, scorer.bands, lead_ids=test["lead_id"])
    baseline = baseline_evaluation = None
    if cfg.baseline:
        baseline = fit_baseline(
            train=train, calibration=calibration, specs=audit.kept, seed=cfg.seed
        )
        baseline_evaluation = metrics_with_intervals(
            labels=labels,
            probabilities=baseline.predict_proba_frame(test),
            n_boot=cfg.bootstrap_samples,
            seed=cfg.seed,
        )
    backtest = _backtest(frame, fit, cfg)
    setup_mlflow(
        tracking_uri=settings.tracking_uri,
        experiment=settings.mlflow.experiment,
        artifact_dir=settings.artifact_dir,
    )
    # The champion on the same, newest period: what `leadscore promote` compares with.
    champion = evaluate_champion_on(
        test,
        tracking_uri=settings.tracking_uri,
        model_name=settings.mlflow.model_name,
        champion_alias=settings.mlflow.champion_alias,
    )
    logged_metrics = {
        **evaluation.as_mlflow_metrics("test_"),
        **{f"test_band_{k}": float(v) for k, v in expected.items()},
        **(baseline_evaluation.as_mlflow_metrics("baseline_test_") if baseline_evaluation else {}),
        **(backtest.as_mlflow_metrics("backtest_") if backtest else {}),
    }
    artifacts: dict[str, Any] = {
        "leakage_audit.json": audit.as_dict(),
        "calibration.json": scorer.calibration_report,
        "band_policy.json": {**scorer.band_policy, "test_period": expected},
    }
    if search is not None:
        artifacts["search.json"] = search.as_dict()
    if backtest is not None:
        artifacts["backtest.json"] = backtest.as_dict()
    registered = log_and_register(
        scorer=scorer,
        input_example=test,
        params={
            **params,
            **scorer.bands,
            "band_policy": settings.bands.policy,
            "calibration": scorer.calibration_method,
            "target": cfg.target,
            "horizon_days": cfg.horizon_days,
            "snapshot_days": ",".join(map(str, cfg.snapshot_days)),
            "as_of": moment.isoformat(),
            **{f"examples_{k}": v for k, v in label_report.as_dict().items()},
            "n_train": len(train),
            "n_calibration": len(calibration),
            "n_test": len(test),
            "n_features": len(audit.kept),
            "n_dropped_constant": len(audit.dropped_constant),
            "n_excluded": len(audit.excluded),
            "n_confirmed_above_max_auc": len(audit.confirmed),
            "leakage_auc_max": cfg.leakage_auc_max,
            "min_won": cfg.min_won,
            "min_lost": cfg.min_lost,
            "search_trials": len(search.trials) if search else 0,
            "dask_scheduler": cfg.dask_scheduler or "",
            # What `leadscore retrain` counts new outcomes against.
            **outcome_params(
                load_outcomes(settings.paths.warehouse, settings.event_log_url), as_of=moment
            ),
        },
        metrics=logged_metrics,
        tags={
            "target": cfg.target,
            "test_start": str(test["event_timestamp"].min()),
            "split": split.kind,
        },
        model_name=settings.mlflow.model_name,
        champion_alias=settings.mlflow.champion_alias,
        challenger_alias=settings.mlflow.challenger_alias,
        champion=champion,
        artifacts=artifacts,
    )
    _log_review(registered.run_id, scorer, test, probability, baseline, cfg.seed)
    return TrainingResult(
        label_report,
        metrics,
        registered,
        len(train),
        len(calibration),
        len(test),
        audit,
        split.kind,
        evaluation,
        baseline_evaluation,
        backtest,
        scorer.calibration_method,
        dict(scorer.bands),
    )


def _backtest(
    frame: pd.DataFrame,
    fit: Callable[[pd.DataFrame, pd.DataFrame], LeadScorer],
    cfg: TrainingSettings,
) -> BacktestResult | None:
    """Rolling-origin backtest of the same model settings (None when off or too little data)."""
    if cfg.backtest_folds == 0 or cfg.split != "time":
        return None

    def fitted(train: pd.DataFrame, calibration: pd.DataFrame) -> Callable[..., np.ndarray]:
        return fit(train, calibration).predict_proba_frame

    try:
        return rolling_origin_backtest(
            frame,
            fit=fitted,
            n_folds=cfg.backtest_folds,
            test_share=cfg.backtest_test_share,
            calibration_share=cfg.calibration_share,
        )
    except BacktestDataError as e:
        logger.warning("backtest skipped: %s", e)
        return None


REVIEW_ROWS = 2_000
"""Test rows the SHAP summary explains (TreeSHAP costs milliseconds a row)."""


def _log_review(
    run_id: str,
    scorer: LeadScorer,
    test: pd.DataFrame,
    probability: np.ndarray,
    baseline: BaselineModel | None,
    seed: int,
) -> None:
    """Log the review plots (and the baseline model) to the training run."""
    import mlflow

    labels = test["label"].to_numpy()
    sample = test.sample(min(len(test), REVIEW_ROWS), random_state=seed)
    encoded = scorer.encoder.transform(sample)
    contributions = np.asarray(scorer.booster.predict(encoded, pred_contrib=True))[:, :-1]
    figures = {
        "reliability": reliability_diagram(labels, probability),
        "lift_gain": lift_gain_chart(labels, probability),
        "score_distribution": score_distribution(labels, probability),
        "feature_importance": feature_importance(scorer.booster, scorer.features),
        "shap_summary": shap_summary(contributions, scorer.features, values=encoded),
    }
    log_figures(figures, run_id=run_id)
    if baseline is not None:
        with mlflow.start_run(run_id=run_id):
            log_baseline(baseline, input_example=test)
