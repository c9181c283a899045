"""Feast feature views; field names and descriptions come from the feature catalog."""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, String

from features.data_sources import lead_behaviour_push, lead_profile_source
from features.entities import lead
from leadscore.feature_catalog import BEHAVIOUR_FEATURES, PROFILE_FEATURES

lead_profile = FeatureView(
    name="lead_profile",
    entities=[lead],
    ttl=timedelta(0),
    schema=[
        Field(
            name=f.name,
            dtype=String if f.kind == "categorical" else Float64,
            description=f.description,
        )
        for f in PROFILE_FEATURES
    ],
    source=lead_profile_source,
    online=True,
    description="Who the lead is: firmographics, role and BANT answers.",
)

lead_behaviour = FeatureView(
    name="lead_behaviour",
    entities=[lead],
    ttl=timedelta(0),
    schema=[
        Field(name=f.name, dtype=Float64, description=f.description) for f in BEHAVIOUR_FEATURES
    ],
    source=lead_behaviour_push,
    online=True,
    description="What the lead did: windowed event counts, recency and decayed engagement.",
)
