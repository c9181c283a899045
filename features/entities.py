"""Feast entities."""

from feast import Entity, ValueType

lead = Entity(
    name="lead",
    join_keys=["lead_id"],
    value_type=ValueType.INT64,
    description="A lead (person or account contact) from the CRM.",
)
