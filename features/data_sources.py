"""Feast data sources.

Paths are relative: Feast resolves them against the runtime repo directory that the settings
name (``paths.feature_repo_dir``), where ``leadscore features build`` writes the tables.
"""

from feast import FileSource, PushSource

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

lead_behaviour_push = PushSource(
    name="lead_behaviour_push",
    batch_source=lead_behaviour_source,
    description="Live path: recomputed behaviour rows of a lead after a new event.",
)
