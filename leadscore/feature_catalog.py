"""Every model feature with its description and the plain-language label used in reasons.

The Feast definitions (``features/``) take their field names and descriptions from here, the
behaviour aggregation (:mod:`leadscore.behaviour`) produces exactly these columns, and the
trained model carries the labels so that serving can explain a score without this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from leadscore.contracts import EVENT_TYPES

WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30, 90)

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

# Buying-intent signals, weighted apart from the low-intent noise of opens and visits.
HIGH_INTENT_WEIGHTS: dict[str, float] = {
    "pricing_page_view": 1.0,
    "demo_request": 3.0,
    "trial_signup": 3.0,
}
LOW_INTENT_WEIGHTS: dict[str, float] = {
    "email_open": 1.0,
    "email_click": 1.0,
    "page_view": 1.0,
    "social_interaction": 1.0,
}

FeatureKind = Literal["categorical", "numeric", "flag", "internal"]


@dataclass(frozen=True)
class FeatureSpec:
    """One model feature.

    Attributes:
        name: Column name in the feature tables and the model.
        kind: ``categorical`` (string), ``numeric`` (float), ``flag`` (0/1 as float), or
            ``internal`` (stored for an on-demand transform, never a model input).
        view: Feast feature view computing it.
        description: What the feature measures.
        label: Plain-language phrase used in score reasons; ``{value}`` is the lead's value.
        percent: Show the value as a percentage in the label.
    """

    name: str
    kind: FeatureKind
    view: str
    description: str
    label: str
    percent: bool = False

    def describe(self, value: object) -> str:
        """Render the reason label for a value of this feature."""
        if value is None or (isinstance(value, float) and value != value):
            head, colon, _ = self.label.partition(":")
            if colon and "{value}" not in head:  # "industry: {value}" -> "industry: unknown"
                return f"{head}: unknown"
            return self.label.format(value="unknown")  # "reached by {value}" -> "... unknown"
        if self.kind == "flag":
            return self.label.format(value="yes" if float(value) >= 0.5 else "no")  # type: ignore[arg-type]
        if self.kind == "numeric":
            number = float(value)  # type: ignore[arg-type]
            if self.percent:
                return self.label.format(value=f"{100 * number:.0f}%")
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
    FeatureSpec(
        "bant_completeness",
        "numeric",
        "lead_profile",
        "Share of the four BANT questions answered (0-1).",
        "BANT questions answered: {value}",
        percent=True,
    ),
    FeatureSpec(
        "email_domain_type",
        "categorical",
        "lead_profile",
        "corporate or free (webmail) e-mail domain.",
        "{value} e-mail address",
    ),
)


def _window_label(days: int) -> str:
    return "in the last day" if days == 1 else f"in the last {days} days"


def _behaviour_specs() -> tuple[FeatureSpec, ...]:
    view = "lead_behaviour"
    specs = [
        FeatureSpec(
            f"{event_type}_{days}d",
            "numeric",
            view,
            f"Number of {EVENT_NOUNS[event_type]} in the {days} days before scoring.",
            f"{EVENT_NOUNS[event_type]} {_window_label(days)}: {{value}}",
        )
        for days in WINDOWS_DAYS
        for event_type in EVENT_TYPES
    ]
    for days in WINDOWS_DAYS:
        specs += [
            FeatureSpec(
                f"high_intent_{days}d",
                "numeric",
                view,
                f"Weighted pricing-page views, demo requests and trial sign-ups in {days} days.",
                f"buying-intent actions {_window_label(days)} (weighted): {{value}}",
            ),
            FeatureSpec(
                f"low_intent_{days}d",
                "numeric",
                view,
                f"E-mail opens and clicks, page views and social interactions in {days} days.",
                f"routine interactions {_window_label(days)}: {{value}}",
            ),
        ]
    specs += [
        FeatureSpec(
            "momentum",
            "numeric",
            view,
            "Daily event rate of the last 7 days against the 21 days before (1 = steady; "
            "both smoothed by a prior rate of one event per 28 days).",
            "activity trend (last week vs. the 3 before): {value}x",
        ),
        FeatureSpec(
            "distinct_topics_90d",
            "numeric",
            view,
            "Distinct content topics touched in 90 days.",
            "content topics explored in the last 90 days: {value}",
        ),
        FeatureSpec(
            "distinct_channels_90d",
            "numeric",
            view,
            "Distinct interaction channels used in 90 days.",
            "channels engaged through in the last 90 days: {value}",
        ),
        FeatureSpec(
            "webinars_missed_90d",
            "numeric",
            view,
            "Webinar registrations without an attendance in 90 days.",
            "webinars registered for but missed in the last 90 days: {value}",
        ),
        FeatureSpec(
            "unsubscribed",
            "flag",
            view,
            "Whether the lead ever unsubscribed.",
            "unsubscribed: {value}",
        ),
        FeatureSpec(
            "first_activity_at",
            "internal",
            view,
            "Epoch seconds of the lead's first event (missing: none yet).",
            "first activity at {value}",
        ),
        FeatureSpec(
            "last_activity_at",
            "internal",
            view,
            "Epoch seconds of the lead's latest event (missing: none yet).",
            "last activity at {value}",
        ),
        FeatureSpec(
            "engagement_at_as_of",
            "internal",
            view,
            "Engagement score at the moment the row was computed (``as_of_ts``).",
            "engagement {value}",
        ),
        FeatureSpec(
            "as_of_ts",
            "internal",
            view,
            "Epoch seconds of the moment the row was computed.",
            "computed at {value}",
        ),
        FeatureSpec(
            "engagement_half_life_days",
            "internal",
            view,
            "Half-life the engagement score decays with (from the settings at build time).",
            "half-life {value} days",
        ),
    ]
    return tuple(specs)


LIFECYCLE_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "lifecycle_stage",
        "categorical",
        "lead_lifecycle",
        "Latest lifecycle stage entered (lead, MQL, SQL, opportunity, ...).",
        "stage: {value}",
    ),
    FeatureSpec(
        "stage_entered_at",
        "internal",
        "lead_lifecycle",
        "Epoch seconds at which the lead entered its current stage.",
        "stage entered at {value}",
    ),
    FeatureSpec(
        "channel_conversion_rate",
        "numeric",
        "lead_lifecycle",
        "Share of the lead's channel's matured leads won, as known at scoring time (smoothed "
        "toward the overall rate).",
        "its channel converts {value} of leads",
        percent=True,
    ),
)

ON_DEMAND_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "days_since_last_activity",
        "numeric",
        "lead_recency",
        "Days between the lead's latest event and scoring time (missing: no event yet).",
        "last activity {value} days ago",
    ),
    FeatureSpec(
        "days_since_first_activity",
        "numeric",
        "lead_recency",
        "Days between the lead's first event and scoring time (missing: no event yet).",
        "first activity {value} days ago",
    ),
    FeatureSpec(
        "engagement_score",
        "numeric",
        "lead_recency",
        "Weighted sum of all events, each decayed by its age at scoring time.",
        "engagement score {value}",
    ),
    FeatureSpec(
        "days_in_stage",
        "numeric",
        "lead_recency",
        "Days since the lead entered its current lifecycle stage.",
        "{value} days in the current stage",
    ),
)

BEHAVIOUR_FEATURES: tuple[FeatureSpec, ...] = _behaviour_specs()
ALL_FEATURES: tuple[FeatureSpec, ...] = (
    PROFILE_FEATURES + BEHAVIOUR_FEATURES + LIFECYCLE_FEATURES + ON_DEMAND_FEATURES
)
FEATURES_BY_NAME: dict[str, FeatureSpec] = {f.name: f for f in ALL_FEATURES}
MODEL_FEATURES: tuple[FeatureSpec, ...] = tuple(f for f in ALL_FEATURES if f.kind != "internal")
