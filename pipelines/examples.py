"""Pick demo leads worth showing: the hottest and the coldest current lead."""

from __future__ import annotations

import pandas as pd

from leadscore.contracts import epoch_seconds
from leadscore.scorer import LeadScorer
from leadscore.settings import Settings
from leadscore.tracking import connect_tracking
from pipelines.feature_store import (
    ATTRIBUTES_FILE,
    BEHAVIOUR_TABLE,
    LIFECYCLE_TABLE,
    PROFILE_TABLE,
)


def current_features(settings: Settings) -> pd.DataFrame:
    """Each lead's current features from the offline feature tables (batch path).

    The latest profile, behaviour and lifecycle rows of every lead (and its custom attributes,
    if the data set has any), and the on-demand features computed by the same transform Feast
    runs, at the moment the latest rows were built.
    """
    from features.on_demand import lead_recency

    repo = settings.paths.feature_repo
    profile = pd.read_parquet(repo / PROFILE_TABLE).drop(columns="event_timestamp")
    frame = profile
    if (repo / ATTRIBUTES_FILE).exists():
        attributes = pd.read_parquet(repo / ATTRIBUTES_FILE).drop(columns="event_timestamp")
        frame = frame.merge(attributes, on="lead_id", how="left")
    for table in (BEHAVIOUR_TABLE, LIFECYCLE_TABLE):
        rows = pd.read_parquet(repo / table)
        latest = rows.sort_values("event_timestamp").drop_duplicates("lead_id", keep="last")
        frame = frame.merge(latest, on="lead_id", how="inner", suffixes=("", "_dup"))
        frame = frame.drop(columns=[c for c in frame.columns if c.endswith("_dup")])
    inputs = frame.to_dict("list")  # NaN marks a missing value, as None does online
    inputs["request_ts"] = list(epoch_seconds(frame["event_timestamp"]))
    derived = lead_recency.feature_transformation.udf(inputs)
    return frame.drop(columns="event_timestamp").assign(**derived)


def load_champion(settings: Settings) -> LeadScorer:
    """The scorer behind the serving alias."""
    import mlflow

    connect_tracking(settings.tracking_uri)
    uri = f"models:/{settings.mlflow.model_name}@{settings.serving.model_alias}"
    scorer = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    if not isinstance(scorer, LeadScorer):
        raise TypeError(f"{uri} is not a LeadScorer")
    return scorer


def example_leads(settings: Settings) -> tuple[int, int]:
    """The lead ids with the highest and the lowest current probability."""
    frame = current_features(settings)
    probability = load_champion(settings).predict_proba_frame(frame)
    ranked = frame.assign(p=probability).sort_values("p")
    return int(ranked["lead_id"].iloc[-1]), int(ranked["lead_id"].iloc[0])
