"""Feast feature services, one per version of the model's feature set."""

from feast import FeatureService

from features.feature_views import lead_behaviour, lead_lifecycle, lead_profile
from features.on_demand import lead_recency

lead_scoring_v2 = FeatureService(
    name="lead_scoring_v2",
    features=[lead_profile, lead_behaviour, lead_lifecycle, lead_recency],
    description="Profile, behaviour, lifecycle and on-demand recency features.",
)
