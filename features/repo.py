"""Every object of the Feast repo, in the order they are registered."""

from typing import Any

from features.data_sources import (
    lead_behaviour_push,
    lead_behaviour_source,
    lead_lifecycle_source,
    lead_profile_source,
    scoring_request,
)
from features.entities import lead
from features.feature_services import lead_scoring_v2
from features.feature_views import lead_behaviour, lead_lifecycle, lead_profile
from features.on_demand import lead_recency

OBJECTS: list[Any] = [
    lead,
    lead_profile_source,
    lead_behaviour_source,
    lead_lifecycle_source,
    lead_behaviour_push,
    scoring_request,
    lead_profile,
    lead_behaviour,
    lead_lifecycle,
    lead_recency,
    lead_scoring_v2,
]
