"""Feast data sources.

Paths are relative: they name tables in the runtime repo directory that the settings name
(``paths.feature_repo_dir``), where ``leadscore features build`` writes them.
"""

from feast import Field, FileSource, PushSource, RequestSource
from feast.types import Float64

lead_profile_source = FileSource(
    name="lead_profile_source",
    path="lead_profile.parquet",
    timestamp_field="event_timestamp",
    description="One row per lead: profile and fit attributes, stamped at lead creation.",
)

lead_behaviour_source = FileSource(
    name="lead_behaviour_source",
    path="lead_behaviour.parquet",
    timestamp_field="event_timestamp",
    description="Behaviour aggregates of each lead at each snapshot moment and now.",
)

lead_lifecycle_source = FileSource(
    name="lead_lifecycle_source",
    path="lead_lifecycle.parquet",
    timestamp_field="event_timestamp",
    description="Stage and channel history of each lead at each snapshot moment and now.",
)

lead_attributes_source = FileSource(
    name="lead_attributes_source",
    path="lead_attributes.parquet",
    timestamp_field="event_timestamp",
    description="One row per lead: custom attributes of a user's CRM export, stamped at creation.",
)

lead_behaviour_push = PushSource(
    name="lead_behaviour_push",
    batch_source=lead_behaviour_source,
    description="Live path: recomputed behaviour rows of a lead after a new event.",
)

scoring_request = RequestSource(
    name="scoring_request",
    schema=[Field(name="request_ts", dtype=Float64, description="Scoring time, epoch seconds.")],
    description="The moment a score is asked for (the snapshot moment in training).",
)
