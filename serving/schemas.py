"""Request and response models of the API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
    model_validator,
)

from leadscore.contracts import EVENT_CHANNELS, EVENT_TYPES, LEADS, RESULTS, Column

# Lead ids are stored as 64-bit integers everywhere (Feast, SQL, Parquet).
MAX_LEAD_ID = 2**63 - 1


def _not_a_bool(value: Any) -> Any:
    # pydantic's lax mode would read true/false as lead 1/0.
    if isinstance(value, bool):
        raise ValueError("a lead id is an integer, not true or false")
    return value


LeadId = Annotated[int, BeforeValidator(_not_a_bool), Field(ge=0, le=MAX_LEAD_ID)]
"""A lead id in a request body: an integer of 0 to 2^63-1 (a numeric string is read as one)."""

# Times are stored as UTC microseconds; the tables' tools (pandas) stop at 2262.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2262, 1, 1, tzinfo=UTC)


def _plausible(moment: datetime) -> datetime:
    if not _EARLIEST <= moment < _LATEST:
        raise ValueError(f"{moment.isoformat()} is outside 1970-2261")
    return moment


Moment = Annotated[AwareDatetime, AfterValidator(_plausible)]
"""A time with a time zone, between 1970 and 2261."""
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
EventChannel = Literal[EVENT_CHANNELS]  # type: ignore[valid-type]
OutcomeResult = Literal[RESULTS]  # type: ignore[valid-type]


def _lead_field(column: Column) -> tuple[Any, Any]:
    """A pydantic field of a ``leads`` contract column (every one optional but the channel)."""
    kinds: dict[str, Any] = {
        "str": str,
        "int": int,
        "float": float,
        "bool": bool,
        "timestamp": Moment,
    }
    kind: Any = Literal[column.allowed] if column.allowed else kinds[column.kind]
    limits: dict[str, Any] = {"description": column.description}
    if column.min_value is not None:
        limits["ge"] = column.min_value
    if column.max_value is not None:
        limits["le"] = column.max_value
    if column.kind == "str" and not column.allowed:
        limits["max_length"] = 200
    if not column.nullable and column.name != "created_at":
        return (kind, Field(**limits))
    return (kind | None, Field(default=None, **limits))


LeadIn = create_model(  # type: ignore[call-overload]
    "LeadIn",
    __config__=ConfigDict(extra="forbid"),
    __doc__="A lead's profile (the ``leads`` contract's columns), for a lead not yet in the "
    "feature store; ``created_at`` defaults to now.",
    **{c.name: _lead_field(c) for c in LEADS.columns if c.name != "lead_id"},
)

AttributeValue = (
    Annotated[str, Field(max_length=200)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
    | None
)


class ScoreRequest(BaseModel):
    """Score one lead: from the feature store (``lead_id`` alone), or from its attributes
    (``lead`` and ``attributes``) for a lead not in the store yet."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"lead_id": 42},
                {
                    "lead_id": 90001,
                    "lead": {
                        "source_channel": "website",
                        "industry": "software",
                        "company_size": "51-200",
                        "job_role": "it",
                        "seniority": "director",
                        "email_domain": "acme.com",
                    },
                },
            ]
        },
    )

    lead_id: LeadId = Field(description="Lead identifier, as in the CRM export.")
    lead: LeadIn | None = Field(  # type: ignore[valid-type]
        default=None,
        description="Score from these attributes instead of the feature store (a new lead: "
        "no events yet, in the lead stage since created_at).",
    )
    attributes: dict[Annotated[str, Field(max_length=100)], AttributeValue] = Field(
        default={},
        max_length=200,
        description="Custom attributes of the data set (with lead only).",
    )

    @model_validator(mode="after")
    def _attributes_with_lead(self) -> ScoreRequest:
        if self.attributes and self.lead is None:
            raise ValueError("attributes go with lead: scoring by lead_id reads the store")
        return self


class EventIn(BaseModel):
    """One behaviour event of a lead (the ``events`` data contract)."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=200, description="Idempotency key.")
    lead_id: LeadId
    occurred_at: Moment = Field(description="When it happened, with a time zone.")
    event_type: EventType
    topic: str | None = Field(default=None, max_length=200)
    channel: EventChannel | None = None


class EventsRequest(BaseModel):
    """Live events of one or more leads."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {
                            "event_id": "web-81723",
                            "lead_id": 42,
                            "occurred_at": "2026-11-22T10:15:00Z",
                            "event_type": "demo_request",
                            "channel": "web",
                        }
                    ]
                }
            ]
        },
    )

    events: list[EventIn] = Field(min_length=1)


class ReasonOut(BaseModel):
    """One factor behind a score."""

    feature: str = Field(description="Model feature name.")
    label: str = Field(description="Plain-language description with the lead's value.")
    value: str | float | None = Field(description="The lead's value of the feature.")
    contribution: float = Field(description="Probability change this factor causes (signed).")


class ScoreResponse(BaseModel):
    """A calibrated conversion probability with its band and reasons."""

    lead_id: int
    probability: float = Field(ge=0.0, le=1.0, description="Calibrated P(lead converts).")
    band: Literal["hot", "warm", "cold"]
    reasons: list[ReasonOut] = Field(description="Strongest factors first.")
    model_name: str
    model_version: str
    scored_at: datetime


class StoredScoreResponse(ScoreResponse):
    """A score the API served, as recorded in the score log."""

    features: dict[str, object] = Field(description="The feature values it was computed from.")
    request_id: str | None = Field(default=None, description="The request that served it.")


class ScoreHistoryItem(BaseModel):
    """One served score of a lead."""

    probability: float = Field(ge=0.0, le=1.0)
    band: Literal["hot", "warm", "cold"]
    model_version: str
    scored_at: datetime
    reasons: list[ReasonOut]


class ScoreHistoryResponse(BaseModel):
    """The scores served for a lead, newest first."""

    lead_id: int
    scores: list[ScoreHistoryItem]


class BatchScoreRequest(BaseModel):
    """Score several leads in one call."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"lead_ids": [42, 43, 44]}]}
    )

    lead_ids: list[Any] = Field(
        min_length=1,
        description="Lead identifiers; an unknown or malformed one gets its own error entry "
        "in the results and does not fail the batch.",
    )


class BatchScoreItem(BaseModel):
    """The result for one lead id of a batch: a score (status 200) or an error."""

    lead_id: Any
    status: int = Field(description="200, 404 (unknown lead) or 422 (malformed id).")
    probability: float | None = Field(default=None, ge=0.0, le=1.0)
    band: Literal["hot", "warm", "cold"] | None = None
    reasons: list[ReasonOut] | None = None
    model_name: str | None = None
    model_version: str | None = None
    scored_at: datetime | None = None
    error: str | None = None
    detail: str | None = None


class BatchScoreResponse(BaseModel):
    """One result per requested lead id, in the order requested."""

    results: list[BatchScoreItem]


class EventsResponse(BaseModel):
    """What happened to the events, and the leads' new scores."""

    accepted: int = Field(description="Events stored now.")
    duplicates: int = Field(description="Events already stored before (same event_id).")
    scores: list[ScoreResponse] = Field(description="Fresh score of every lead in the request.")
    turned_hot: list[int] = Field(
        default=[],
        description="Leads whose band rose to hot with these events (a webhook is sent for each "
        "when webhooks are configured).",
    )


class OutcomeIn(BaseModel):
    """One closed deal (the ``outcomes`` data contract)."""

    model_config = ConfigDict(extra="forbid")

    lead_id: LeadId
    closed_at: Moment = Field(description="When the deal closed, with a time zone.")
    result: OutcomeResult
    amount: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Deal value (USD)."
    )


class OutcomesRequest(BaseModel):
    """Closed deals fed back by the CRM (idempotent by lead_id and closed_at)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "outcomes": [
                        {
                            "lead_id": 42,
                            "closed_at": "2026-11-20T16:00:00Z",
                            "result": "won",
                            "amount": 12000.0,
                        }
                    ]
                }
            ]
        },
    )

    outcomes: list[OutcomeIn] = Field(min_length=1)


class OutcomesResponse(BaseModel):
    """What happened to the outcomes."""

    accepted: int = Field(description="Outcomes stored now (used by the next training).")
    duplicates: int = Field(description="Outcomes stored before (same lead_id and closed_at).")


class ModelResponse(BaseModel):
    """The model version the API serves."""

    name: str
    version: str
    aliases: list[str] = Field(description="Registry aliases of the version.")
    registered_at: datetime | None = None
    trained_at: datetime | None = Field(default=None, description="Start of its training run.")
    run_id: str | None = None
    test_metrics: dict[str, float] = Field(
        description="Metrics on the test period as logged by training (test_ prefix removed)."
    )
    bands: dict[str, float] = Field(description="Probability cut-offs: hot_min, warm_min.")
    band_policy: dict[str, object] = Field(description="How the cut-offs were chosen.")
    calibration: str = Field(description="sigmoid (Platt scaling) or isotonic.")
    feature_service: str
    features: list[str]


class ReloadResponse(BaseModel):
    """The outcome of a reload."""

    model_name: str
    model_version: str
    changed: bool = Field(description="Whether another version is served now.")


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    model_name: str | None = None
    model_version: str | None = None
    feature_service: str | None = None
    detail: str | None = None


class ErrorResponse(BaseModel):
    error: str
    detail: str | list[dict[str, object]]


class ScoreChange(BaseModel):
    """One factor whose effect on the score changed."""

    feature: str
    label: str = Field(description="Plain-language description with the lead's value now.")
    before: object = Field(default=None, description="The feature's value then.")
    now: object = Field(default=None, description="The feature's value now.")
    contribution_change: float = Field(
        description="How much more (or less) this factor adds to the probability now."
    )


class ScorePoint(BaseModel):
    """A score at one moment."""

    probability: float = Field(ge=0.0, le=1.0)
    band: Literal["hot", "warm", "cold"]
    model_version: str
    scored_at: datetime


class ExplainChangeResponse(BaseModel):
    """Why a lead's score moved since an earlier score."""

    lead_id: int
    since: datetime
    then: ScorePoint = Field(description="The score the lead had then, as served.")
    now: ScorePoint
    change: float = Field(description="Probability now minus then (as served).")
    same_model: bool = Field(description="Whether one model version served both scores.")
    drivers: list[ScoreChange] = Field(
        description="The factors that moved it, strongest first, both moments explained by "
        "the model serving now."
    )


class WebhookDeliveryOut(BaseModel):
    """A hot-lead webhook delivery and how its attempts went."""

    delivery_id: str
    event: str
    lead_id: int
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="When a pending delivery is tried next.")
    last_attempt_at: datetime | None
    response_status: int | None = Field(description="HTTP status of the last attempt.")
    last_error: str | None
    delivered_at: datetime | None
    payload: dict[str, Any]


class WebhookDeliveriesResponse(BaseModel):
    """Webhook deliveries, newest first, and the count of each status."""

    configured: bool = Field(description="Whether webhooks.url is set on this service.")
    counts: dict[str, int]
    deliveries: list[WebhookDeliveryOut]
