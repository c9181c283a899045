"""HTTP routes: validate, call the service, return a response model."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from serving.errors import NotReadyError
from serving.schemas import (
    ErrorResponse,
    EventsRequest,
    EventsResponse,
    HealthResponse,
    ReadyResponse,
    ReasonOut,
    ScoreRequest,
    ScoreResponse,
)
from serving.service import ScoreResult, ScoringService

router = APIRouter()


def get_service(request: Request) -> ScoringService:
    """The service built at start-up (503 while no model could be loaded)."""
    service: ScoringService | None = request.app.state.service
    if service is None:
        raise NotReadyError(f"no model is loaded: {request.app.state.load_error}")
    return service


ServiceDep = Annotated[ScoringService, Depends(get_service)]


@router.get("/health", tags=["ops"])
def health() -> HealthResponse:
    """Liveness: the process answers."""
    return HealthResponse(status="ok")


@router.get(
    "/ready", tags=["ops"], responses={503: {"model": ReadyResponse}}, response_model=ReadyResponse
)
def ready(request: Request, response: Response) -> ReadyResponse:
    """Readiness: a model and its feature service are loaded."""
    service: ScoringService | None = request.app.state.service
    if service is None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return ReadyResponse(status="not_ready", detail=str(request.app.state.load_error))
    return ReadyResponse(
        status="ready",
        model_name=service.model_name,
        model_version=service.model_version,
        feature_service=service.scorer.feature_service,
    )


def _score_response(result: ScoreResult) -> ScoreResponse:
    return ScoreResponse(
        lead_id=result.lead_id,
        probability=result.probability,
        band=result.band,  # type: ignore[arg-type]
        reasons=[
            ReasonOut(feature=r.feature, label=r.label, value=r.value, contribution=r.contribution)
            for r in result.reasons
        ],
        model_name=result.model_name,
        model_version=result.model_version,
        scored_at=result.scored_at,
    )


@router.post(
    "/v1/score",
    tags=["scoring"],
    responses={
        404: {"model": ErrorResponse, "description": "Unknown lead"},
        422: {"model": ErrorResponse, "description": "Malformed body"},
        503: {"model": ErrorResponse, "description": "No model loaded"},
    },
)
def score(body: ScoreRequest, service: ServiceDep) -> ScoreResponse:
    """Score one lead from its online features: probability, band and reasons."""
    return _score_response(service.score(body.lead_id))


@router.post(
    "/v1/events",
    tags=["events"],
    responses={
        422: {"model": ErrorResponse, "description": "Malformed or invalid event"},
        503: {"model": ErrorResponse, "description": "No model loaded"},
    },
)
def post_events(body: EventsRequest, request: Request, service: ServiceDep) -> EventsResponse:
    """Record behaviour events (idempotent by event_id) and answer with fresh scores.

    The leads' behaviour features are recomputed and pushed to the online store before the
    answer, so the returned scores (and every later one) already reflect the events.
    """
    events = [e.model_dump() for e in body.events]
    fresh, results = service.record_events(
        events, max_events=request.app.state.settings.events.max_per_request
    )
    return EventsResponse(
        accepted=len(fresh),
        duplicates=len(events) - len(fresh),
        scores=[_score_response(r) for r in results],
    )
