"""Open the Feast feature store described by the settings (training, serving and jobs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from leadscore.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig


def store_config(settings: Settings, *, registry_ttl_seconds: int = 600) -> RepoConfig:
    """The Feast configuration rendered from the settings.

    Args:
        settings: Paths and backends.
        registry_ttl_seconds: How long the registry is cached; 0 loads it once.
    """
    from feast.repo_config import RepoConfig

    repo_dir = settings.paths.feature_repo
    online: dict[str, Any]
    if settings.feast.online_store == "redis":
        online = {
            "type": "redis",
            "connection_string": settings.feast.redis_connection_string,
        }
    else:
        online = {"type": "sqlite", "path": str(repo_dir / settings.feast.sqlite_path)}
    offline: dict[str, Any] = {"type": settings.feast.offline_store}
    extra: dict[str, Any] = {}
    if settings.feast.offline_store == "postgres":
        from leadscore.offline_postgres import postgres_offline_config_from_settings

        offline = postgres_offline_config_from_settings(settings.feast)
        # Feast pulls every row of the table to materialize unless told to take the newest.
        extra["materialization"] = {"pull_latest_features": True}
    return RepoConfig(
        project=settings.feast.project,
        provider="local",
        registry={
            "path": str(repo_dir / settings.feast.registry_path),
            "cache_ttl_seconds": registry_ttl_seconds,
            # Materializing marks views MATERIALIZING; without this, servers refuse to read
            # them (last-materialized values are what a score should use meanwhile).
            "serve_features_while_materializing": True,
        },
        online_store=online,
        offline_store=offline,
        entity_key_serialization_version=3,
        repo_path=repo_dir,
        **extra,
    )


def open_store(settings: Settings, *, serving: bool = False) -> FeatureStore:
    """Open the feature store configured by the settings.

    Args:
        settings: Paths and backends.
        serving: Load the registry once and keep it. A job that materializes rewrites the
            registry file in place; a server that re-read it meanwhile could see it half
            written. The definitions a model version needs do not change under it.
    """
    from feast import FeatureStore

    settings.paths.feature_repo.mkdir(parents=True, exist_ok=True)
    ttl = 0 if serving else 600
    return FeatureStore(config=store_config(settings, registry_ttl_seconds=ttl))
