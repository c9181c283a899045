"""Every object of the Feast repo, in the order they are registered."""

from typing import Any

from features.data_sources import (
    lead_attributes_source,
    lead_behaviour_push,
    lead_behaviour_source,
    lead_lifecycle_source,
    lead_profile_source,
    scoring_request,
)
from features.entities import lead
from features.feature_services import lead_scoring_v2, scoring_service
from features.feature_views import attributes_view, lead_behaviour, lead_lifecycle, lead_profile
from features.on_demand import lead_recency
from leadscore.feature_catalog import FeatureSpec

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


def repo_objects(attributes: tuple[FeatureSpec, ...] = ()) -> list[Any]:
    """The objects to register: :data:`OBJECTS`, plus a view of the data set's custom
    attributes (and a feature service that includes it) when it has any."""
    if not attributes:
        return list(OBJECTS)
    view = attributes_view(attributes)
    base = [o for o in OBJECTS if o is not lead_scoring_v2]
    return [*base, lead_attributes_source, view, scoring_service((view,))]
