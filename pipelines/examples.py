"""Pick demo leads worth showing: the hottest and the coldest current lead."""

from __future__ import annotations

import pandas as pd

from leadscore.scorer import LeadScorer
from leadscore.settings import Settings
from leadscore.tracking import connect_tracking
from pipelines.feature_store import BEHAVIOUR_TABLE, PROFILE_TABLE


def current_features(settings: Settings) -> pd.DataFrame:
    """Each lead's latest profile and behaviour row from the offline feature tables."""
    repo = settings.paths.feature_repo
    profile = pd.read_parquet(repo / PROFILE_TABLE).drop(columns="event_timestamp")
    behaviour = pd.read_parquet(repo / BEHAVIOUR_TABLE)
    latest = behaviour.sort_values("event_timestamp").drop_duplicates("lead_id", keep="last")
    return profile.merge(latest.drop(columns="event_timestamp"), on="lead_id", how="inner")


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
