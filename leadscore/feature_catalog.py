"""Every model feature with its description and the plain-language label used in reasons.

The Feast definitions (``features/``) take their field names and descriptions from here, the
behaviour aggregation (:mod:`leadscore.behaviour`) produces exactly these columns, and the
trained model carries the labels so that serving can explain a score without this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from leadscore.contracts import EVENT_TYPES

WINDOWS_DAYS: tuple[int, ...] = (7, 30, 90)

# What a count of each event type is called in a sentence.
EVENT_NOUNS: dict[str, str] = {
    "page_view": "page views",
    "pricing_page_view": "pricing page views",
    "content_download": "content downloads",
    "webinar_registered": "webinar registrations",
    "webinar_attended": "webinars attended",
    "event_attended": "events attended",
    "email_open": "email opens",
    "email_click": "email clicks",
    "form_submit": "form submissions",
    "demo_request": "demo requests",
    "trial_signup": "trial sign-ups",
    "social_interaction": "social interactions",
    "unsubscribe": "unsubscribes",
}

# How much each event type adds to the engagement score before decay.
ENGAGEMENT_WEIGHTS: dict[str, float] = {
    "page_view": 1.0,
    "pricing_page_view": 4.0,
    "content_download": 3.0,
    "webinar_registered": 3.0,
    "webinar_attended": 6.0,
    "event_attended": 6.0,
    "email_open": 0.5,
    "email_click": 1.5,
    "form_submit": 4.0,
    "demo_request": 10.0,
    "trial_signup": 10.0,
    "social_interaction": 1.0,
    "unsubscribe": -5.0,
}

FeatureKind = Literal["categorical", "numeric", "flag"]


@dataclass(frozen=True)
class FeatureSpec:
    """One model feature.

    Attributes:
        name: Column name in the feature tables and the model.
        kind: ``categorical`` (string), ``numeric`` (float) or ``flag`` (0/1 as float).
        view: Feast feature view holding it (``lead_profile`` or ``lead_behaviour``).
        description: What the feature measures.
        label: Plain-language phrase used in score reasons; ``{value}`` is the lead's value.
    """

    name: str
    kind: FeatureKind
    view: str
    description: str
    label: str

    def describe(self, value: object) -> str:
        """Render the reason label for a value of this feature."""
        if value is None or (isinstance(value, float) and value != value):
            return f"{self.label.split(':')[0]}: unknown"
        if self.kind == "flag":
            return self.label.format(value="yes" if float(value) >= 0.5 else "no")  # type: ignore[arg-type]
        if self.kind == "numeric":
            number = float(value)  # type: ignore[arg-type]
            text = f"{number:.0f}" if number == int(number) else f"{number:.1f}"
            return self.label.format(value=text)
        return self.label.format(value=str(value).replace("_", " "))


PROFILE_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "source_channel", "categorical", "lead_profile", "Lead source channel.", "came via {value}"
    ),
    FeatureSpec("utm_medium", "categorical", "lead_profile", "UTM medium.", "UTM medium: {value}"),
    FeatureSpec("region", "categorical", "lead_profile", "Sales region.", "region: {value}"),
    FeatureSpec("country", "categorical", "lead_profile", "Country code.", "country: {value}"),
    FeatureSpec("industry", "categorical", "lead_profile", "Industry.", "industry: {value}"),
    FeatureSpec(
        "company_size", "categorical", "lead_profile", "Employee band.", "company size {value}"
    ),
    FeatureSpec(
        "annual_revenue", "categorical", "lead_profile", "Revenue band.", "annual revenue {value}"
    ),
    FeatureSpec("job_role", "categorical", "lead_profile", "Job function.", "job role: {value}"),
    FeatureSpec("seniority", "categorical", "lead_profile", "Seniority.", "seniority: {value}"),
    FeatureSpec(
        "is_decision_maker",
        "flag",
        "lead_profile",
        "Signs off purchases.",
        "decision maker: {value}",
    ),
    FeatureSpec(
        "bant_budget", "categorical", "lead_profile", "BANT budget.", "stated budget: {value}"
    ),
    FeatureSpec(
        "bant_authority", "flag", "lead_profile", "BANT authority.", "has buying authority: {value}"
    ),
    FeatureSpec("bant_need", "flag", "lead_profile", "BANT need.", "confirmed need: {value}"),
    FeatureSpec(
        "bant_timeline", "categorical", "lead_profile", "BANT timeline.", "timeline: {value}"
    ),
)


def _behaviour_specs() -> tuple[FeatureSpec, ...]:
    specs = [
        FeatureSpec(
            f"{event_type}_{days}d",
            "numeric",
            "lead_behaviour",
            f"Number of {EVENT_NOUNS[event_type]} in the {days} days before scoring.",
            f"{EVENT_NOUNS[event_type]} in the last {days} days: {{value}}",
        )
        for days in WINDOWS_DAYS
        for event_type in EVENT_TYPES
    ]
    specs += [
        FeatureSpec(
            "days_since_last_activity",
            "numeric",
            "lead_behaviour",
            "Days between the lead's latest event and scoring time (missing: no event yet).",
            "last activity {value} days ago",
        ),
        FeatureSpec(
            "days_since_first_activity",
            "numeric",
            "lead_behaviour",
            "Days between the lead's first event and scoring time (missing: no event yet).",
            "first activity {value} days ago",
        ),
        FeatureSpec(
            "engagement_score",
            "numeric",
            "lead_behaviour",
            "Weighted sum of all events, each decayed by its age (configurable half-life).",
            "engagement score {value}",
        ),
    ]
    return tuple(specs)


BEHAVIOUR_FEATURES: tuple[FeatureSpec, ...] = _behaviour_specs()
ALL_FEATURES: tuple[FeatureSpec, ...] = PROFILE_FEATURES + BEHAVIOUR_FEATURES
FEATURES_BY_NAME: dict[str, FeatureSpec] = {f.name: f for f in ALL_FEATURES}
