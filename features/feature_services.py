"""Feast feature services, one per model version of the feature set."""

from feast import FeatureService

from features.feature_views import lead_behaviour, lead_profile

lead_scoring_v1 = FeatureService(
    name="lead_scoring_v1",
    features=[lead_profile, lead_behaviour],
    description="Profile and behaviour features of the first lead-scoring models.",
)
