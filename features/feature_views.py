"""Feast feature views; field names and descriptions come from the feature catalog."""

from datetime import timedelta
from typing import Any

from feast import FeatureView, Field
from feast.types import Float64, String

from features.data_sources import (
    lead_attributes_source,
    lead_behaviour_push,
    lead_lifecycle_source,
    lead_profile_source,
)
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


def _view(name: str, specs: tuple[FeatureSpec, ...], source: Any, description: str) -> FeatureView:
    # ttl 0: rows never expire; each row already says when it was computed.
    return FeatureView(
        name=name,
        entities=[lead],
        ttl=timedelta(0),
        schema=_fields(specs),
        source=source,
        online=True,
        description=description,
    )


lead_profile = _view(
    "lead_profile",
    PROFILE_FEATURES,
    lead_profile_source,
    "Who the lead is: firmographics, role, BANT answers, e-mail domain type.",
)
lead_behaviour = _view(
    "lead_behaviour",
    BEHAVIOUR_FEATURES,
    lead_behaviour_push,
    "What the lead did: windowed event counts, intent, momentum, engagement.",
)
lead_lifecycle = _view(
    "lead_lifecycle",
    LIFECYCLE_FEATURES,
    lead_lifecycle_source,
    "Where the lead stands: lifecycle stage and its channel's track record.",
)


def attributes_view(specs: tuple[FeatureSpec, ...]) -> FeatureView:
    """The custom attributes a mapping file declared (see ``leadscore.dataset``)."""
    return _view(
        "lead_attributes",
        specs,
        lead_attributes_source,
        "Custom lead attributes of the CRM export, as declared in its mapping file.",
    )
