"""Request and response models of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from leadscore.contracts import EVENT_CHANNELS, EVENT_TYPES

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
EventChannel = Literal[EVENT_CHANNELS]  # type: ignore[valid-type]


class ScoreRequest(BaseModel):
    """Score one lead known to the feature store."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"lead_id": 42}]})

    lead_id: int = Field(ge=0, description="Lead identifier, as in the CRM export.")


class EventIn(BaseModel):
    """One behaviour event of a lead (the ``events`` data contract)."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=200, description="Idempotency key.")
    lead_id: int = Field(ge=0)
    occurred_at: AwareDatetime = Field(description="When it happened, with a time zone.")
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


class EventsResponse(BaseModel):
    """What happened to the events, and the leads' new scores."""

    accepted: int = Field(description="Events stored now.")
    duplicates: int = Field(description="Events already stored before (same event_id).")
    scores: list[ScoreResponse] = Field(description="Fresh score of every lead in the request.")


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
