"""HTTP routes: validate, call the service, return a response model."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar
from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from leadscore.audit_export import MEDIA_TYPES, stream_text
from leadscore.auth import ADMIN, EVENTS_WRITE, METRICS_READ, OUTCOMES_WRITE, SCORE_READ
from leadscore.outcome_log import OutcomeLog
from leadscore.score_log import ScoreLog, ScoreRecorder, ServedScore
from leadscore.webhooks import HOT_LEAD_EVENT, WebhookLog, WebhookSender
from serving.errors import (
    BatchTooLargeError,
    InvalidInputError,
    NoScoreError,
    NotFoundError,
    NotReadyError,
    StoreUnavailableError,
)
from serving.observability import Metrics, new_request_id
from serving.outcomes import OutcomeIntake
from serving.schemas import (
    MAX_LEAD_ID,
    BatchScoreItem,
    BatchScoreRequest,
    BatchScoreResponse,
    ErrorResponse,
    EventsRequest,
    EventsResponse,
    ExplainChangeResponse,
    HealthResponse,
    ModelResponse,
    Moment,
    OutcomesRequest,
    OutcomesResponse,
    ReadyResponse,
    ReasonOut,
    ReloadResponse,
    ScoreChange,
    ScoreHistoryItem,
    ScoreHistoryResponse,
    ScorePoint,
    ScoreRequest,
    ScoreResponse,
    StoredScoreResponse,
    WebhookDeliveriesResponse,
    WebhookDeliveryOut,
)
from serving.security import require_scope
from serving.service import ScoreResult, ScoringService

router = APIRouter()

_AUTH_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse, "description": "No valid API key"},
    403: {"model": ErrorResponse, "description": "The key lacks the route's scope"},
}
_outcomes_lock = threading.Lock()


LeadIdPath = Annotated[int, Path(ge=0, le=MAX_LEAD_ID, description="The lead's id.")]


def _is_lead_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_LEAD_ID


async def get_service(request: Request) -> ScoringService:
    """The service built at start-up (503 while no model could be loaded)."""
    service: ScoringService | None = request.app.state.service
    if service is None:
        raise NotReadyError(f"no model is loaded: {request.app.state.load_error}")
    return service


ServiceDep = Annotated[ScoringService, Depends(get_service)]


@router.get(
    "/metrics",
    tags=["ops"],
    dependencies=[Depends(require_scope(METRICS_READ))],
    response_class=PlainTextResponse,
    responses={**_AUTH_ERRORS, 200: {"content": {"text/plain": {}}}},
)
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus metrics: requests and latency by route and status, scores by band and model
    version, the model serving, the score log's backlog."""
    registry: Metrics = request.app.state.metrics
    return PlainTextResponse(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/health", tags=["ops"])
def health() -> HealthResponse:
    """Liveness: the process answers."""
    return HealthResponse(status="ok")


@router.get(
    "/ready", tags=["ops"], responses={503: {"model": ReadyResponse}}, response_model=ReadyResponse
)
def ready(request: Request, response: Response) -> ReadyResponse:
    """Readiness: a model and its feature service are loaded, and the online store answers."""
    service: ScoringService | None = request.app.state.service
    if service is None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return ReadyResponse(status="not_ready", detail=str(request.app.state.load_error))
    try:
        service.lookup(0)  # a round trip to the online store
    except StoreUnavailableError as e:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return ReadyResponse(status="not_ready", detail=e.message)
    return ReadyResponse(
        status="ready",
        model_name=service.model_name,
        model_version=service.model_version,
        feature_service=service.scorer.feature_service,
    )


def _reasons_out(reasons: Iterable[Any]) -> list[ReasonOut]:
    return [
        ReasonOut(feature=r.feature, label=r.label, value=r.value, contribution=r.contribution)
        for r in reasons
    ]


def _record(request: Request, results: Iterable[ScoreResult]) -> None:
    record_scores(request.app.state, getattr(request.state, "request_id", None), results)


def record_scores(state: Any, request_id: str | None, results: Iterable[ScoreResult]) -> None:
    """Count served scores and hand them to the score log's writer (never waits for the
    database).

    Args:
        state: The app's state (its metrics and score recorder).
        request_id: The request that served them (a new id when None).
    """
    results = list(results)
    metrics: Metrics | None = getattr(state, "metrics", None)
    if metrics is not None:
        for r in results:
            metrics.served(r.band, r.model_version)
    recorder: ScoreRecorder | None = getattr(state, "score_recorder", None)
    if recorder is None:
        return
    request_id = request_id or new_request_id()
    recorder.submit(
        ServedScore(
            lead_id=r.lead_id,
            scored_at=r.scored_at,
            model_name=r.model_name,
            model_version=r.model_version,
            probability=r.probability,
            band=r.band,
            reasons=[
                {
                    "feature": x.feature,
                    "label": x.label,
                    "value": x.value,
                    "contribution": x.contribution,
                }
                for x in r.reasons
            ],
            features=dict(r.features),
            request_id=request_id,
        )
        for r in results
    )


async def get_score_log(request: Request) -> ScoreLog:
    """The score log opened at start-up."""
    log: ScoreLog | None = getattr(request.app.state, "score_log", None)
    if log is None:
        raise NotReadyError("the score log is not open")
    return log


ScoreLogDep = Annotated[ScoreLog, Depends(get_score_log)]


# One limiter per event loop (a limiter belongs to the loop it was first used in).
_score_threads: RunVar[anyio.CapacityLimiter] = RunVar("leadscore_score_threads")


async def _in_thread(fn: Callable[..., ScoreResult], *args: Any) -> ScoreResult:
    """Run a scoring call in a worker thread, at most two at a time (more threads only
    contend for the GIL)."""
    try:
        limiter = _score_threads.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(2)
        _score_threads.set(limiter)
    return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)


def score_response(result: ScoreResult) -> ScoreResponse:
    return ScoreResponse(
        lead_id=result.lead_id,
        probability=result.probability,
        band=result.band,  # type: ignore[arg-type]
        reasons=_reasons_out(result.reasons),
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
    response_model=ScoreResponse,
)
async def score(body: ScoreRequest, request: Request, service: ServiceDep) -> Response:
    """Score one lead: probability, band and reasons.

    With ``lead_id`` alone the features come from the online store (404 for a lead it does not
    know). With ``lead`` (and ``attributes``) they are built from what was sent, for a lead not
    in the store yet: no events, in the lead stage since ``created_at``.
    """
    # Scoring by lead_id from a local store takes well under a millisecond of CPU and never
    # waits on a network: it runs right here, which spares the hand-over to a worker thread
    # and the threads' contention for the GIL (measured: ~2x the throughput at 8 connections).
    # A store across the network (Redis) could stall on an outage, so those lookups, and the
    # heavier scoring from attributes, go to worker threads, at most two at a time.
    if body.lead is not None:
        lead = body.lead.model_dump()
        result = await _in_thread(service.score_inline, body.lead_id, lead, body.attributes)
    elif service.quick_lookups:
        result = service.score(body.lead_id)
    else:
        result = await _in_thread(service.score, body.lead_id)
    _record(request, [result])
    # Built (and so validated) once and serialized by pydantic directly: FastAPI would
    # validate the returned model a second time before serializing it.
    return Response(score_response(result).model_dump_json(), media_type="application/json")


@router.post(
    "/v1/score/batch",
    tags=["scoring"],
    dependencies=[Depends(require_scope(SCORE_READ))],
    response_model_exclude_unset=True,
    responses={
        **_AUTH_ERRORS,
        413: {"model": ErrorResponse, "description": "More lead ids than serving.max_batch"},
        422: {"model": ErrorResponse, "description": "Malformed body"},
        503: {"model": ErrorResponse, "description": "No model loaded"},
    },
)
def score_batch(
    body: BatchScoreRequest, request: Request, service: ServiceDep
) -> BatchScoreResponse:
    """Score several leads with one model call; one result per id, in the order requested.

    An unknown lead (status 404) or a malformed id (status 422) gets an error entry of its
    own and does not fail the batch.
    """
    max_batch: int = request.app.state.settings.serving.max_batch
    if len(body.lead_ids) > max_batch:
        raise BatchTooLargeError(
            f"{len(body.lead_ids)} lead ids in one request; at most {max_batch}"
        )
    valid = [i for i in body.lead_ids if _is_lead_id(i)]
    scored = service.score_many(valid)
    _record(request, [r for r in scored.values() if r is not None])
    results: list[BatchScoreItem] = []
    for lead_id in body.lead_ids:
        if not _is_lead_id(lead_id):
            results.append(
                BatchScoreItem(
                    lead_id=lead_id,
                    status=422,
                    error="invalid_lead_id",
                    detail=f"{lead_id!r} is not a lead id (an integer from 0 to 2**63-1)",
                )
            )
            continue
        result = scored.get(lead_id)
        if result is None:
            results.append(
                BatchScoreItem(
                    lead_id=lead_id,
                    status=404,
                    error="lead_not_found",
                    detail=f"lead_id {lead_id} has no features in the online store",
                )
            )
            continue
        results.append(
            BatchScoreItem(
                lead_id=lead_id,
                status=200,
                **score_response(result).model_dump(exclude={"lead_id"}),
            )
        )
    return BatchScoreResponse(results=results)


@router.get(
    "/v1/leads/{lead_id}/score",
    tags=["scoring"],
    dependencies=[Depends(require_scope(SCORE_READ))],
    responses={
        **_AUTH_ERRORS,
        404: {"model": ErrorResponse, "description": "The lead was never scored"},
    },
)
def latest_score(lead_id: LeadIdPath, log: ScoreLogDep) -> StoredScoreResponse:
    """The latest score the API served for the lead, with the feature values it used."""
    stored = log.latest(lead_id)
    if stored is None:
        raise NoScoreError(f"lead_id {lead_id} was never scored by the API")
    return StoredScoreResponse(
        lead_id=stored.lead_id,
        probability=stored.probability,
        band=stored.band,  # type: ignore[arg-type]
        reasons=[ReasonOut.model_validate(r) for r in stored.reasons],
        model_name=stored.model_name,
        model_version=stored.model_version,
        scored_at=stored.scored_at,
        features=stored.features,
        request_id=stored.request_id,
    )


@router.get(
    "/v1/leads/{lead_id}/scores",
    tags=["scoring"],
    dependencies=[Depends(require_scope(SCORE_READ))],
    responses={**_AUTH_ERRORS, 422: {"model": ErrorResponse, "description": "Bad query"}},
)
def score_history(
    lead_id: LeadIdPath,
    log: ScoreLogDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most scores returned.")] = 100,
    since: Annotated[
        Moment | None, Query(description="Only scores served at or after this moment.")
    ] = None,
) -> ScoreHistoryResponse:
    """The scores the API served for the lead, newest first (empty if never scored)."""
    history = log.history(lead_id, limit=limit, since=since)
    return ScoreHistoryResponse(
        lead_id=lead_id,
        scores=[
            ScoreHistoryItem(
                probability=s.probability,
                band=s.band,  # type: ignore[arg-type]
                model_version=s.model_version,
                scored_at=s.scored_at,
                reasons=[ReasonOut.model_validate(r) for r in s.reasons],
            )
            for s in history
        ],
    )


@router.get(
    "/v1/leads/{lead_id}/explain",
    tags=["scoring"],
    dependencies=[Depends(require_scope(SCORE_READ))],
    responses={
        **_AUTH_ERRORS,
        404: {"model": ErrorResponse, "description": "Unknown lead, or never scored"},
    },
)
def explain_change(
    lead_id: LeadIdPath,
    request: Request,
    service: ServiceDep,
    log: ScoreLogDep,
    since: Annotated[
        Moment, Query(description="Compare with the score the lead had at this moment.")
    ],
    top: Annotated[int, Query(ge=1, le=50, description="Most factors listed.")] = 10,
) -> ExplainChangeResponse:
    """Why the lead's score moved: its score now against the one it had at ``since`` (the last
    served at or before it, else the first after it), and the factors that changed most."""
    earlier = log.as_of(lead_id, since)
    if earlier is None:
        raise NoScoreError(f"lead_id {lead_id} was never scored by the API: nothing to compare")
    now, _, drivers = service.explain_change(lead_id, earlier.features, top_k=top)
    _record(request, [now])
    return ExplainChangeResponse(
        lead_id=lead_id,
        since=since,
        then=ScorePoint(
            probability=earlier.probability,
            band=earlier.band,  # type: ignore[arg-type]
            model_version=earlier.model_version,
            scored_at=earlier.scored_at,
        ),
        now=ScorePoint(
            probability=now.probability,
            band=now.band,  # type: ignore[arg-type]
            model_version=now.model_version,
            scored_at=now.scored_at,
        ),
        change=round(now.probability - earlier.probability, 4),
        same_model=earlier.model_version == now.model_version,
        drivers=[ScoreChange.model_validate(d) for d in drivers],
    )


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
    _record(request, results)
    turned_hot = [r for r in results if r.band == "hot" and r.previous_band not in (None, "hot")]
    _notify_hot(request, turned_hot)
    return EventsResponse(
        accepted=len(fresh),
        duplicates=len(events) - len(fresh),
        scores=[score_response(r) for r in results],
        turned_hot=[r.lead_id for r in turned_hot],
    )


def _notify_hot(request: Request, results: Iterable[ScoreResult]) -> None:
    """Queue a hot-lead webhook per lead that just turned hot (stored before the answer, sent
    by the sender thread)."""
    sender: WebhookSender | None = getattr(request.app.state, "webhooks", None)
    if sender is None:
        return
    for r in results:
        sender.notify(
            event=HOT_LEAD_EVENT,
            lead_id=r.lead_id,
            payload={
                "event": HOT_LEAD_EVENT,
                "lead_id": r.lead_id,
                "probability": r.probability,
                "band": r.band,
                "previous_band": r.previous_band,
                "model_name": r.model_name,
                "model_version": r.model_version,
                "scored_at": r.scored_at.isoformat(),
                "reasons": [
                    {"feature": x.feature, "label": x.label, "contribution": x.contribution}
                    for x in r.reasons
                ],
            },
        )


@router.get(
    "/v1/admin/scores/export",
    tags=["admin"],
    dependencies=[Depends(require_scope(ADMIN))],
    response_class=StreamingResponse,
    responses={
        **_AUTH_ERRORS,
        200: {"content": {"text/csv": {}, "application/x-ndjson": {}}},
        422: {"model": ErrorResponse, "description": "Bad query"},
    },
)
def export_scores(
    log: ScoreLogDep,
    since: Annotated[
        Moment | None, Query(description="Only scores served at or after this moment.")
    ] = None,
    until: Annotated[
        Moment | None, Query(description="Only scores served before this moment.")
    ] = None,
    lead_id: Annotated[
        int | None, Query(ge=0, le=MAX_LEAD_ID, description="Only this lead's scores.")
    ] = None,
    format_: Annotated[
        Literal["csv", "jsonl"], Query(alias="format", description="csv or jsonl.")
    ] = "jsonl",
) -> StreamingResponse:
    """The audit log of served scores (lead, time, model version, probability, band, reasons,
    feature values, request id), streamed in the order served."""
    if since is not None and until is not None and until <= since:
        raise InvalidInputError({"query.until": "must be after since"})
    scores = log.iter_scores(since=since, until=until, lead_id=lead_id)
    return StreamingResponse(
        stream_text(scores, format_),
        media_type=MEDIA_TYPES[format_],
        headers={"content-disposition": f'attachment; filename="served_scores.{format_}"'},
    )


def get_webhook_log(request: Request) -> WebhookLog:
    """The deliveries table (the sender's when webhooks are configured)."""
    state = request.app.state
    sender: WebhookSender | None = getattr(state, "webhooks", None)
    if sender is not None:
        return sender.log
    log: WebhookLog | None = getattr(state, "webhook_log", None)
    if log is None:  # opened once, on first use
        log = state.webhook_log = WebhookLog(state.settings.event_log_url)
    return log


WebhookLogDep = Annotated[WebhookLog, Depends(get_webhook_log)]


@router.get(
    "/v1/admin/webhooks",
    tags=["admin"],
    dependencies=[Depends(require_scope(ADMIN))],
    responses={**_AUTH_ERRORS, 422: {"model": ErrorResponse, "description": "Bad query"}},
)
def webhook_deliveries(
    request: Request,
    log: WebhookLogDep,
    status_: Annotated[
        Literal["pending", "delivered", "failed"] | None,
        Query(alias="status", description="Only deliveries of this status."),
    ] = None,
    lead_id: Annotated[
        int | None, Query(ge=0, le=MAX_LEAD_ID, description="Only this lead's.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most deliveries listed.")] = 100,
) -> WebhookDeliveriesResponse:
    """Hot-lead webhook deliveries, newest first: status, attempts, last answer or error."""
    return WebhookDeliveriesResponse(
        configured=getattr(request.app.state, "webhooks", None) is not None,
        counts=log.counts(),
        deliveries=[
            WebhookDeliveryOut.model_validate(d.__dict__)
            for d in log.list(status=status_, lead_id=lead_id, limit=limit)
        ],
    )


@router.post(
    "/v1/admin/webhooks/{delivery_id}/retry",
    tags=["admin"],
    dependencies=[Depends(require_scope(ADMIN))],
    responses={
        **_AUTH_ERRORS,
        404: {"model": ErrorResponse, "description": "No such undelivered delivery"},
    },
)
def retry_webhook(delivery_id: str, request: Request, log: WebhookLogDep) -> WebhookDeliveryOut:
    """Send a failed delivery again now, with a fresh budget of attempts."""
    if not log.retry(delivery_id):
        raise NotFoundError(f"no undelivered webhook delivery {delivery_id!r}")
    sender: WebhookSender | None = getattr(request.app.state, "webhooks", None)
    if sender is not None:
        sender.wake()
    delivery = log.get(delivery_id)
    assert delivery is not None
    return WebhookDeliveryOut.model_validate(delivery.__dict__)


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
