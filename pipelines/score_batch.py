"""Batch scoring: every open lead's calibrated probability, band and reasons, for the CRM.

:func:`score_open_leads` scores each lead's *current* features as the offline feature tables
hold them (the batch side of the store: no online lookups), with the model version behind the
serving alias, the same probabilities and reasons as the API. :func:`write_scores` hands the
result to :mod:`pipelines.writeback` (a CSV/Parquet file and/or a PostgreSQL table, upserted by
``lead_id``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd

from leadscore.settings import Settings
from pipelines.writeback import (
    SCORE_COLUMNS,
    WritebackError,
    write_scores_file,
    write_scores_postgres,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_OUTPUT", "Written", "score_open_leads", "write_scores"]

#: Where scores go when neither a file nor a PostgreSQL table is configured (under paths.root).
DEFAULT_OUTPUT = Path("data/scores/lead_scores.parquet")


@dataclass(frozen=True)
class Written:
    """Where scores went.

    Attributes:
        destination: The file path, or the PostgreSQL URL (without password) and table.
        kind: ``file`` or ``postgres``.
        rows_written: Score rows written (inserted or updated).
        rows_stored: Rows the destination holds afterwards (files; None for PostgreSQL).
    """

    destination: str
    kind: Literal["file", "postgres"]
    rows_written: int
    rows_stored: int | None

    def describe(self) -> str:
        """One line for people: what went where."""
        if self.rows_stored is None:
            return f"upserted {self.rows_written} scores into {self.destination}"
        return (
            f"wrote {self.rows_written} scores to {self.destination} "
            f"({self.rows_stored} rows in the file)"
        )


def _champion_version(settings: Settings) -> str:
    """The registered version behind the serving alias."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from leadscore.tracking import connect_tracking

    connect_tracking(settings.tracking_uri)
    name, alias = settings.mlflow.model_name, settings.serving.model_alias
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as e:
        raise LookupError(
            f"no version of model {name!r} has alias {alias!r}: run `leadscore train` first"
        ) from e


def score_open_leads(
    settings: Settings, *, include_closed: bool = False, scored_at: datetime | None = None
) -> pd.DataFrame:
    """Score every open lead (or every lead) from the offline feature tables.

    A lead is open while the warehouse ``outcomes`` table has no row for it. Its features are
    the latest rows of the feature tables (:func:`pipelines.examples.current_features`), the
    model the version behind ``settings.serving.model_alias``; reasons are the
    ``settings.serving.top_reasons`` strongest, as the API gives them.

    Args:
        settings: Paths, registry, alias and number of reasons.
        include_closed: Score leads with an outcome too.
        scored_at: The time stamped on every row (default: now, UTC).

    Returns:
        A scores frame (:data:`pipelines.writeback.SCORE_COLUMNS`), one row per lead, sorted
        by ``lead_id``; ``reasons`` is JSON text.

    Raises:
        LookupError: No model version carries the alias, or the alias moved to another
            version while the model was loading.
        FileNotFoundError: The feature tables were not built yet.
    """
    from pipelines.examples import current_features, load_champion
    from pipelines.ingest import load_outcomes

    version = _champion_version(settings)
    scorer = load_champion(settings)
    if _champion_version(settings) != version:
        raise LookupError(
            f"alias {settings.serving.model_alias!r} moved to another version while the model "
            "was loading: run again"
        )
    features = current_features(settings)
    if not include_closed:
        outcomes = load_outcomes(settings.paths.warehouse, settings.event_log_url)
        features = features[~features["lead_id"].isin(outcomes["lead_id"])]
    features = features.sort_values("lead_id", kind="stable").reset_index(drop=True)
    explained = scorer.explain_frame(features, top_k=settings.serving.top_reasons)
    moment = pd.Timestamp(scored_at or datetime.now(UTC))
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    scores = pd.DataFrame(
        {
            "lead_id": features["lead_id"].astype("int64"),
            "probability": explained["probability"].astype("float64"),
            "band": explained["band"].astype(object),
            "reasons": [json.dumps(r, ensure_ascii=False) for r in explained["reasons"]],
            "model_version": version,
            "scored_at": pd.Series([moment] * len(features), dtype="datetime64[us, UTC]"),
        }
    )
    logger.info(
        "scored %d leads (%s) with %s version %s",
        len(scores),
        "open and closed" if include_closed else "open only",
        settings.mlflow.model_name,
        version,
    )
    return scores[list(SCORE_COLUMNS)]


def write_scores(
    settings: Settings,
    scores: pd.DataFrame,
    *,
    output: Path | None = None,
    postgres_url: str | None = None,
    table: str | None = None,
) -> list[Written]:
    """Upsert scores into the chosen destinations.

    Explicit destinations (``output`` and/or ``postgres_url``) replace the configured ones;
    without any, ``settings.writeback.output_path`` and ``settings.writeback.postgres_url``
    are used, and without those either :data:`DEFAULT_OUTPUT` under ``paths.root``.

    Args:
        settings: Paths and writeback defaults.
        scores: A scores frame (:func:`score_open_leads`).
        output: A ``.csv`` or ``.parquet`` file (relative: to ``paths.root``).
        postgres_url: A PostgreSQL URL.
        table: The PostgreSQL table (default: ``settings.writeback.postgres_table``).

    Returns:
        What was written where, file first.

    Raises:
        WritebackError: A table without a PostgreSQL URL, a bad frame, destination or
            database error.
    """
    cfg = settings.writeback
    if output is None and postgres_url is None:
        output, postgres_url = cfg.output_path, cfg.postgres_url
        if output is None and postgres_url is None:
            output = DEFAULT_OUTPUT
    if table is not None and postgres_url is None:
        raise WritebackError(f"table {table!r} given without a PostgreSQL URL to write it to")
    written: list[Written] = []
    if output is not None:
        path = settings.paths.resolve(Path(output))
        stored = write_scores_file(scores, path)
        written.append(Written(str(path), "file", len(scores), stored))
    if postgres_url is not None:
        from pipelines.sources import redact_url

        target = table or cfg.postgres_table
        rows = write_scores_postgres(scores, url=postgres_url, table=target)
        where = f"{redact_url(postgres_url)} table {target}"
        written.append(Written(where, "postgres", rows, None))
    return written
