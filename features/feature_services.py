"""Feast feature services, one per version of the model's feature set."""

from typing import Any

from feast import FeatureService

from features.feature_views import lead_behaviour, lead_lifecycle, lead_profile
from features.on_demand import lead_recency


def scoring_service(extra_views: tuple[Any, ...] = ()) -> FeatureService:
    """The model's feature service; a data set with custom attributes adds their view."""
    return FeatureService(
        name="lead_scoring_v2",
        features=[lead_profile, lead_behaviour, lead_lifecycle, lead_recency, *extra_views],
        description="Profile, behaviour, lifecycle and on-demand recency features"
        + (" and the data set's custom attributes." if extra_views else "."),
    )


lead_scoring_v2 = scoring_service()
