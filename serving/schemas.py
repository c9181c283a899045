"""Request and response models of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ScoreRequest(BaseModel):
    """Score one lead known to the feature store."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"lead_id": 42}]})

    lead_id: int = Field(ge=0, description="Lead identifier, as in the CRM export.")


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
