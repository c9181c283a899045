"""Feast feature views; field names and descriptions come from the feature catalog."""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, String

from features.data_sources import lead_behaviour_push, lead_lifecycle_source, lead_profile_source
from features.entities import lead
from leadscore.feature_catalog import (
    BEHAVIOUR_FEATURES,
    LIFECYCLE_FEATURES,
    PROFILE_FEATURES,
    FeatureSpec,
)


def _fields(specs: tuple[FeatureSpec, ...]) -> list[Field]:
    return [
        Field(
            name=f.name,
            dtype=String if f.kind == "categorical" else Float64,
            description=f.description,
        )
        for f in specs
    ]


lead_profile = FeatureView(
    name="lead_profile",
    entities=[lead],
    ttl=timedelta(0),
    schema=_fields(PROFILE_FEATURES),
    source=lead_profile_source,
    online=True,
    description="Who the lead is: firmographics, role, BANT answers, e-mail domain type.",
)

lead_behaviour = FeatureView(
    name="lead_behaviour",
    entities=[lead],
    ttl=timedelta(0),
    schema=_fields(BEHAVIOUR_FEATURES),
    source=lead_behaviour_push,
    online=True,
    description="What the lead did: windowed event counts, intent, momentum, engagement.",
)

lead_lifecycle = FeatureView(
    name="lead_lifecycle",
    entities=[lead],
    ttl=timedelta(0),
    schema=_fields(LIFECYCLE_FEATURES),
    source=lead_lifecycle_source,
    online=True,
    description="Where the lead stands: lifecycle stage and its channel's track record.",
)
