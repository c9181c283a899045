"""Training flow: wires the training steps together (no logic of its own)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from leadscore.dataset import load_manifest
from leadscore.feature_catalog import MODEL_FEATURES, FeatureSpec
from leadscore.settings import Settings, TrainingSettings
from pipelines.feature_store import data_as_of, open_store
from pipelines.ingest import load_table
from training.audit import AuditReport, audit_features, check_feature_names
from training.dataset import (
    LabelReport,
    SplitKind,
    check_minimum_outcomes,
    fetch_training_features,
    label_snapshots,
    split_by_time,
)
from training.evaluate import evaluate_probabilities
from training.model import fit_scorer
from training.promotion import evaluate_champion_on, outcome_params
from training.register import RegisteredModel, log_and_register, setup_mlflow

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
    tables = {name: load_table(warehouse, name) for name in ("leads", "stage_changes", "outcomes")}
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
    split = split_by_time(
        frame,
        calibration_share=cfg.calibration_share,
        test_share=cfg.test_share,
        seed=cfg.seed,
        kind=cfg.split,
    )
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
    params = model_params(cfg)
    bands = {"hot_min": settings.bands.hot_min, "warm_min": settings.bands.warm_min}
    scorer = fit_scorer(
        train=train,
        calibration=calibration,
        specs=audit.kept,
        params=params,
        bands=bands,
        feature_service=settings.feast.feature_service,
        seed=cfg.seed,
    )
    probability = scorer.predict_proba_frame(test)
    metrics = evaluate_probabilities(
        labels=test["label"].to_numpy(),
        probabilities=probability,
        bands=scorer.band_of(probability),
    )
    logger.info("test metrics: %s", metrics)
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
    registered = log_and_register(
        scorer=scorer,
        input_example=test,
        params={
            **params,
            **bands,
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
            # What `leadscore retrain` counts new outcomes against.
            **outcome_params(load_table(settings.paths.warehouse, "outcomes"), as_of=moment),
        },
        metrics={f"test_{k}": v for k, v in metrics.items()},
        tags={
            "target": cfg.target,
            "test_start": str(test["event_timestamp"].min()),
            "split": split.kind,
        },
        model_name=settings.mlflow.model_name,
        champion_alias=settings.mlflow.champion_alias,
        challenger_alias=settings.mlflow.challenger_alias,
        champion=champion,
        artifacts={"leakage_audit.json": audit.as_dict()},
    )
    return TrainingResult(
        label_report,
        metrics,
        registered,
        len(train),
        len(calibration),
        len(test),
        audit,
        split.kind,
    )
