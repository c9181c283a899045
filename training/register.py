"""Log a trained scorer to MLflow and register it as the challenger (champion if none is)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import mlflow
from leadscore.scorer import LeadScorer
from leadscore.tracking import connect_tracking
from training.promotion import ChampionEvaluation, record_bootstrap, registration_tags

logger = logging.getLogger(__name__)

PIP_REQUIREMENTS = [
    "lightgbm>=4.7,<4.8",
    "scikit-learn>=1.9,<1.10",
    "pandas>=2.3,<3",
    "numpy>=2.0,<3",
]


@dataclass(frozen=True)
class RegisteredModel:
    """Where a trained scorer went."""

    run_id: str
    name: str
    version: str
    aliases: list[str]


def setup_mlflow(*, tracking_uri: str, experiment: str, artifact_dir: Path) -> str:
    """Point MLflow at the tracking store and make sure the experiment exists.

    A new experiment keeps its artifacts in ``artifact_dir`` when the tracking store is a
    database; an MLflow server (``http(s)://``) decides where they go (its
    ``--artifacts-destination``), so they reach it over HTTP.

    Returns:
        The experiment id.
    """
    connect_tracking(tracking_uri)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is not None:
        experiment_id: str = existing.experiment_id
    elif tracking_uri.startswith(("http://", "https://")):
        experiment_id = mlflow.create_experiment(experiment)
    else:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        experiment_id = mlflow.create_experiment(
            experiment, artifact_location=artifact_dir.as_uri()
        )
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def log_and_register(
    *,
    scorer: LeadScorer,
    input_example: pd.DataFrame,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    model_name: str,
    champion_alias: str,
    artifacts: Mapping[str, Mapping[str, Any]] | None = None,
    challenger_alias: str = "challenger",
    champion: ChampionEvaluation | None = None,
) -> RegisteredModel:
    """Log params, metrics and the model in one run; register it as the challenger.

    Every new version takes the challenger alias (from whichever version held it). It also
    becomes the champion when no version is (the first model must serve); that bootstrap is
    recorded in the decision history. Promotion is otherwise ``leadscore promote``'s decision.

    The band thresholds, feature service, registration time, test metrics and the champion's
    metrics on the same test examples are also written as model version tags so that they
    can be read (and compared) from the registry without loading the model.

    Args:
        metrics: The version's test metrics (``test_roc_auc``, ...).
        tags: Run tags, also written on the version (``test_start``, ...).
        artifacts: JSON documents logged with the run, by file name (e.g. the leakage audit
            as ``leakage_audit.json``).
        challenger_alias: Alias every new version takes.
        champion: The champion's evaluation on this version's test examples
            (:func:`training.promotion.evaluate_champion_on`); None: there is no champion.
    """
    example = input_example[scorer.features].head(5)
    output = scorer.predict(None, example)
    with mlflow.start_run() as run:
        mlflow.log_params(params)
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})
        if champion is not None:
            mlflow.log_metrics(champion.run_metrics())
        mlflow.set_tags(tags)
        for file_name, document in (artifacts or {}).items():
            mlflow.log_dict(dict(document), file_name)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=scorer,
            signature=infer_signature(example, output),
            input_example=example,
            registered_model_name=model_name,
            pip_requirements=PIP_REQUIREMENTS,
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    version_tags = {
        "feature_service": scorer.feature_service,
        "band_hot_min": str(scorer.bands["hot_min"]),
        "band_warm_min": str(scorer.bands["warm_min"]),
        **tags,
        **registration_tags(metrics=metrics, champion=champion, now=datetime.now(UTC)),
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.set_registered_model_alias(model_name, challenger_alias, version)
    aliases = [challenger_alias]
    logger.info("version %s of %s is the %s", version, model_name, challenger_alias)
    try:
        client.get_model_version_by_alias(model_name, champion_alias)
    except MlflowException:
        client.set_registered_model_alias(model_name, champion_alias, version)
        aliases.append(champion_alias)
        record_bootstrap(client, model_name, version)
        logger.info("version %s of %s is the new %s", version, model_name, champion_alias)
    return RegisteredModel(run.info.run_id, model_name, version, aliases)
