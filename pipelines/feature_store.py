"""Feature tables and the Feast store: build, apply, materialize.

``feast`` is imported inside the functions that need it: it takes seconds to import and most
CLI commands do not.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from leadscore.behaviour import compute_behaviour_features
from leadscore.dataset import ATTRIBUTES_TABLE, load_manifest
from leadscore.feature_catalog import FeatureSpec
from leadscore.lifecycle import compute_lifecycle_features
from leadscore.online_read import add_read_indexes
from leadscore.profile import compute_attribute_features, compute_profile_features
from leadscore.settings import Settings
from leadscore.snapshots import snapshot_times
from leadscore.store import open_store, store_config

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)

__all__ = [
    "apply_definitions",
    "build_feature_tables",
    "materialize_features",
    "open_store",
    "store_config",
]

PROFILE_TABLE = "lead_profile.parquet"
BEHAVIOUR_TABLE = "lead_behaviour.parquet"
LIFECYCLE_TABLE = "lead_lifecycle.parquet"
ATTRIBUTES_FILE = f"{ATTRIBUTES_TABLE}.parquet"


@dataclass(frozen=True)
class FeatureTables:
    """What :func:`build_feature_tables` wrote."""

    profile_path: Path
    behaviour_path: Path
    lifecycle_path: Path
    n_leads: int
    n_behaviour_rows: int
    as_of: datetime
    attributes_path: Path | None = None

    @property
    def paths(self) -> list[Path]:
        """Every table written."""
        tables = [self.profile_path, self.behaviour_path, self.lifecycle_path]
        return tables + ([self.attributes_path] if self.attributes_path else [])


def dataset_attributes(settings: Settings) -> tuple[FeatureSpec, ...]:
    """The custom attributes of the stored data set (none for data ingested without a
    mapping file), as model features."""
    return load_manifest(settings.paths.warehouse).attribute_specs()


def data_as_of(tables: dict[str, pd.DataFrame]) -> datetime:
    """The data's present: the latest timestamp found in any of the tables."""
    latest = [
        frame[column].max()
        for frame, column in (
            (tables.get("leads"), "created_at"),
            (tables.get("events"), "occurred_at"),
            (tables.get("stage_changes"), "changed_at"),
            (tables.get("outcomes"), "closed_at"),
        )
        if frame is not None and len(frame)
    ]
    if not latest:
        raise ValueError("no data: the leads table is empty; run `leadscore ingest` first")
    return pd.Timestamp(max(latest)).to_pydatetime()


def build_feature_tables(
    *,
    tables: dict[str, pd.DataFrame],
    repo_dir: Path,
    snapshot_days: list[int],
    half_life_days: float,
    horizon_days: int,
    as_of: datetime | None = None,
    attributes: pd.DataFrame | None = None,
    attribute_specs: tuple[FeatureSpec, ...] = (),
) -> FeatureTables:
    """Write the profile, behaviour and lifecycle feature tables of the offline store.

    The behaviour and lifecycle tables hold one row per lead and snapshot moment (see
    :mod:`leadscore.snapshots`) plus the lead's current state at ``as_of``, each computed only
    from what was known at that moment.

    Args:
        tables: Validated ``leads``, ``events``, ``stage_changes`` and ``outcomes``.
        repo_dir: Runtime Feast repo directory where the Parquet tables go.
        snapshot_days: Days after creation at which snapshots are taken.
        half_life_days: Half-life of the engagement score.
        horizon_days: Maturity of a lead for its channel's conversion rate.
        as_of: The present; default: the latest timestamp in the data.
        attributes: The warehouse's custom attributes table (``lead_id`` + one column per
            attribute), when the data set has any.
        attribute_specs: The attributes as features (see :mod:`leadscore.dataset`).

    Returns:
        Paths and row counts of the written tables.
    """
    moment = as_of or data_as_of(tables)
    leads = tables["leads"]
    leads = leads[pd.to_datetime(leads["created_at"], utc=True) <= pd.Timestamp(moment)]
    snapshots = snapshot_times(
        leads=leads,
        stage_changes=tables["stage_changes"],
        snapshot_days=snapshot_days,
        as_of=moment,
    )
    behaviour = compute_behaviour_features(
        events=tables["events"], snapshots=snapshots, half_life_days=half_life_days
    )
    lifecycle = compute_lifecycle_features(
        leads=tables["leads"],
        stage_changes=tables["stage_changes"],
        outcomes=tables["outcomes"],
        snapshots=snapshots,
        horizon_days=horizon_days,
    )
    profile = compute_profile_features(leads)
    repo_dir.mkdir(parents=True, exist_ok=True)
    logger.info("feature tables: %d leads, %d snapshot rows", len(profile), len(behaviour))
    attributes_path = None
    if attribute_specs:
        table = compute_attribute_features(
            leads, attributes if attributes is not None else pd.DataFrame(), attribute_specs
        )
        attributes_path = _write_atomic(table, repo_dir / ATTRIBUTES_FILE)
    return FeatureTables(
        profile_path=_write_atomic(profile, repo_dir / PROFILE_TABLE),
        behaviour_path=_write_atomic(behaviour, repo_dir / BEHAVIOUR_TABLE),
        lifecycle_path=_write_atomic(lifecycle, repo_dir / LIFECYCLE_TABLE),
        n_leads=len(profile),
        n_behaviour_rows=len(behaviour),
        as_of=moment,
        attributes_path=attributes_path,
    )


def publish_offline_tables(settings: Settings, tables: FeatureTables) -> None:
    """Publish the feature tables to PostgreSQL when it is the offline store (else nothing)."""
    if settings.feast.offline_store != "postgres":
        return
    from leadscore.offline_postgres import publish_feature_tables_from_settings

    publish_feature_tables_from_settings(settings.feast, {p.stem: p for p in tables.paths})


def _write_atomic(frame: pd.DataFrame, path: Path) -> Path:
    tmp = path.with_suffix(".tmp.parquet")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def apply_definitions(store: FeatureStore, attributes: tuple[FeatureSpec, ...] = ()) -> list[str]:
    """Register the declarative objects of ``features/`` in the store's registry.

    Args:
        store: The feature store.
        attributes: The data set's custom attributes (:func:`dataset_attributes`); they get
            a view of their own, part of the feature service.

    Returns:
        Names of the applied objects.
    """
    from feast import FileSource

    from features.repo import repo_objects

    definitions = repo_objects(attributes)

    assert store.config.repo_path is not None
    repo_dir = Path(store.config.repo_path)
    objects: list[Any]
    if store.config.offline_store.type == "postgres":
        from leadscore.offline_postgres import rebind_sources_to_postgres

        # The same definitions over the published tables (copies: the definitions stay FileSources).
        objects = rebind_sources_to_postgres(
            definitions, schema=store.config.offline_store.db_schema
        )
    else:
        # Feast's DuckDB offline store reads FileSource paths as given (relative to the
        # working directory), so they are pointed at the runtime repo before registration.
        for source in definitions:
            if isinstance(source, FileSource):
                source.file_options.uri = str(repo_dir / Path(source.file_options.uri).name)
        objects = definitions
    store.apply(objects)
    add_read_indexes(store)  # the serving reader's covering indexes (SQLite online store)
    store.config.write_to_path(repo_dir)
    return [o.name for o in objects]


def materialize_features(store: FeatureStore, *, end: datetime) -> None:
    """Load the newest feature rows up to ``end`` into the online store.

    The first run loads everything; later runs load only what arrived since the last one.
    """
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    views = store.list_feature_views()
    if all(v.most_recent_end_time is not None for v in views):
        store.materialize_incremental(end_date=end)
    else:
        store.materialize(start_date=datetime(2000, 1, 1, tzinfo=UTC), end_date=end)
