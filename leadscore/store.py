"""Open the Feast feature store described by the settings (training, serving and jobs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from leadscore.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig


def store_config(settings: Settings) -> RepoConfig:
    """The Feast configuration rendered from the settings."""
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
    return RepoConfig(
        project=settings.feast.project,
        provider="local",
        registry=str(repo_dir / settings.feast.registry_path),
        online_store=online,
        offline_store={"type": settings.feast.offline_store},
        entity_key_serialization_version=3,
        repo_path=repo_dir,
    )


def open_store(settings: Settings) -> FeatureStore:
    """Open the feature store configured by the settings."""
    from feast import FeatureStore

    settings.paths.feature_repo.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=store_config(settings))
