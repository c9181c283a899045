"""Connect to the MLflow tracking store and registry (shared by training, serving and jobs)."""

from __future__ import annotations

from pathlib import Path


def connect_tracking(uri: str) -> None:
    """Point MLflow's tracking and registry at ``uri``, creating a SQLite file's folder."""
    import mlflow

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
