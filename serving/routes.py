"""HTTP routes: validate, call the service, return a response model."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from leadscore.auth import ADMIN, EVENTS_WRITE, OUTCOMES_WRITE, SCORE_READ
from leadscore.outcome_log import OutcomeLog
from serving.errors import NotReadyError
from serving.outcomes import OutcomeIntake
from serving.schemas import (
    ErrorResponse,
    EventsRequest,
    EventsResponse,
    HealthResponse,
    ModelResponse,
    OutcomesRequest,
    OutcomesResponse,
    ReadyResponse,
    ReasonOut,
    ReloadResponse,
    ScoreRequest,
    ScoreResponse,
)
from serving.security import require_scope
from serving.service import ScoreResult, ScoringService

router = APIRouter()

_AUTH_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse, "description": "No valid API key"},
    403: {"model": ErrorResponse, "description": "The key lacks the route's scope"},
}
_outcomes_lock = threading.Lock()


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
    dependencies=[Depends(require_scope(SCORE_READ))],
    responses={
        **_AUTH_ERRORS,
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
    dependencies=[Depends(require_scope(EVENTS_WRITE))],
    responses={
        **_AUTH_ERRORS,
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


def get_outcomes(request: Request) -> OutcomeIntake:
    """The app's outcome intake, opened on first use (it needs no model)."""
    state = request.app.state
    intake: OutcomeIntake | None = getattr(state, "outcomes", None)
    if intake is None:
        with _outcomes_lock:
            intake = getattr(state, "outcomes", None)
            if intake is None:
                settings = state.settings
                intake = OutcomeIntake(
                    log=OutcomeLog(settings.event_log_url),
                    warehouse_leads=settings.paths.warehouse / "leads.parquet",
                )
                state.outcomes = intake
    return intake


@router.post(
    "/v1/outcomes",
    tags=["outcomes"],
    dependencies=[Depends(require_scope(OUTCOMES_WRITE))],
    responses={
        **_AUTH_ERRORS,
        422: {"model": ErrorResponse, "description": "Malformed or invalid outcome"},
    },
)
def post_outcomes(
    body: OutcomesRequest,
    request: Request,
    intake: Annotated[OutcomeIntake, Depends(get_outcomes)],
) -> OutcomesResponse:
    """Record closed deals (idempotent by lead_id and closed_at) for the next training.

    Validated like ingest (known lead, closed_at with a time zone, not in the future and not
    before the lead was created), all or nothing.
    """
    outcomes = [o.model_dump() for o in body.outcomes]
    accepted, duplicates = intake.record(
        outcomes, max_outcomes=request.app.state.settings.events.max_per_request
    )
    return OutcomesResponse(accepted=accepted, duplicates=duplicates)


@router.get(
    "/v1/model",
    tags=["model"],
    dependencies=[Depends(require_scope(SCORE_READ))],
    responses={**_AUTH_ERRORS, 503: {"model": ErrorResponse, "description": "No model loaded"}},
)
def model(service: ServiceDep) -> ModelResponse:
    """The served model version: registry facts, test metrics, bands, calibration, features."""
    return ModelResponse.model_validate(service.describe())


@router.post(
    "/v1/admin/reload",
    tags=["admin"],
    dependencies=[Depends(require_scope(ADMIN))],
    responses={
        **_AUTH_ERRORS,
        503: {"model": ErrorResponse, "description": "The load failed; the old model serves"},
    },
)
def admin_reload(request: Request) -> ReloadResponse:
    """Serve the version the alias points to now (what the reload thread does periodically)."""
    from serving.app import reload_model

    app = request.app
    changed = reload_model(app)
    service: ScoringService | None = app.state.service
    if app.state.reload_error is not None:
        raise NotReadyError(f"reload failed, serving as before: {app.state.reload_error}")
    if service is None:
        raise NotReadyError(f"no model is loaded: {app.state.load_error}")
    return ReloadResponse(
        model_name=service.model_name, model_version=service.model_version, changed=changed
    )
