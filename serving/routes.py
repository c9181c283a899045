"""HTTP routes: validate, call the service, return a response model."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from serving.errors import NotReadyError
from serving.schemas import (
    ErrorResponse,
    HealthResponse,
    ReadyResponse,
    ReasonOut,
    ScoreRequest,
    ScoreResponse,
)
from serving.service import ScoringService

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
    result = service.score(body.lead_id)
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
