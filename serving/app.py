"""FastAPI app factory; ``leadscore serve`` runs ``serving.app:create_app`` as a factory.

While the app runs, a background thread asks the registry every ``serving.reload_seconds``
which version the served alias points to, and swaps in a new one (:func:`reload_model`).
Another one writes the served scores to the score log (:class:`~leadscore.score_log.ScoreRecorder`),
and writes what is still queued when the app shuts down. A third sends hot-lead webhooks
(:class:`~leadscore.webhooks.WebhookSender`) when ``webhooks.url`` is set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from leadscore.score_log import ScoreLog, ScoreRecorder
from leadscore.settings import Settings, get_settings
from leadscore.webhooks import WebhookLog, WebhookSender
from reports.web import router as reports_router
from serving.errors import (
    InvalidInputError,
    LeadscoreError,
    TooManyFailuresError,
    UnauthorizedError,
)
from serving.observability import Metrics, RequestContext, StateCollector
from serving.quick import QuickScore
from serving.routes import router
from serving.security import document_security
from serving.service import ScoringService, load_service

logger = logging.getLogger(__name__)

ServiceLoader = Callable[[Settings], ScoringService]
# How long shutdown waits for a reload in progress (the thread is a daemon: it never blocks exit).
_STOP_TIMEOUT_SECONDS = 10.0


def reload_model(app: FastAPI) -> bool:
    """Serve the version the alias points to now, if it changed: what the reload thread runs.

    Without a service yet (no model at start-up), the app's loader is tried again, so an API
    started before the first training becomes ready once a version has the alias. A failed
    load is logged and leaves the served model (and ``/ready``) as they were.

    Returns:
        Whether another model version is served now.
    """
    service: ScoringService | None = app.state.service
    try:
        if service is None:
            app.state.service = app.state.loader(app.state.settings)
            app.state.load_error = app.state.reload_error = None
            logger.info("scoring service ready: version %s", app.state.service.model_version)
            return True
        changed = service.reload_if_changed() is not None
        app.state.reload_error = None
        return changed
    except Exception as e:  # a background job: report, keep serving, try again next time
        app.state.reload_error = f"{type(e).__name__}: {e}"
        if service is None:
            app.state.load_error = str(e)
        logger.error("model reload failed, serving as before: %s", app.state.reload_error)
        return False


class ModelReloader:
    """Calls :func:`reload_model` every ``interval`` seconds in a daemon thread."""

    def __init__(self, app: FastAPI, interval: float) -> None:
        self._app = app
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="leadscore-model-reload", daemon=True
        )

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            reload_model(self._app)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=_STOP_TIMEOUT_SECONDS)


def _backlogs(app: FastAPI) -> dict[str, float]:
    """What /metrics reads from the app at scrape time: the score log's writer counts."""
    recorder: ScoreRecorder | None = getattr(app.state, "score_recorder", None)
    if recorder is None:
        return {}
    return {
        "score_log_queued": float(recorder.queued),
        "score_log_written": float(recorder.written),
        "score_log_dropped": float(recorder.dropped),
        "score_log_failed_writes": float(recorder.failed),
    }


def _serving(app: FastAPI) -> tuple[str, str] | None:
    """The model name and version serving now, if any."""
    service: ScoringService | None = getattr(app.state, "service", None)
    return None if service is None else (service.model_name, service.model_version)


def _webhook_sender(cfg: Settings) -> WebhookSender | None:
    """The hot-lead webhook sender, when ``webhooks.url`` is set."""
    hooks = cfg.webhooks
    if hooks.url is None or hooks.secret is None:
        return None
    return WebhookSender(
        WebhookLog(cfg.event_log_url),
        url=hooks.url,
        secret=hooks.secret.get_secret_value(),
        max_attempts=hooks.max_attempts,
        backoff_seconds=hooks.backoff_seconds,
        max_backoff_seconds=hooks.max_backoff_seconds,
        timeout_seconds=hooks.timeout_seconds,
    )


def create_app(settings: Settings | None = None, loader: ServiceLoader = load_service) -> FastAPI:
    """Build the API.

    Args:
        settings: Configuration; default: :func:`get_settings`.
        loader: Builds the scoring service at start-up (the model from the registry and the
            online store by default); also retried by the reload thread while it failed.
    """
    cfg = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = None
        app.state.load_error = None
        app.state.reload_error = None
        app.state.settings = cfg
        app.state.loader = loader
        app.state.keys = None  # opened on the first authenticated request
        app.state.outcomes = None  # opened on the first POST /v1/outcomes
        # Served scores are written by one background thread, off the request path.
        app.state.score_log = ScoreLog(cfg.event_log_url)
        app.state.score_recorder = recorder = ScoreRecorder(
            app.state.score_log, max_queue=cfg.serving.score_log_queue
        )
        recorder.start()
        app.state.webhooks = sender = _webhook_sender(cfg)
        if sender is not None:
            sender.start()
        try:
            app.state.service = loader(cfg)
        except (LookupError, OSError, ValueError, TypeError) as e:
            # Start anyway so /health answers and /ready says why scoring is unavailable.
            app.state.load_error = str(e)
            logger.error("scoring service not ready: %s", e)
        reloader = None
        if cfg.serving.reload_seconds > 0:
            reloader = ModelReloader(app, cfg.serving.reload_seconds)
            reloader.start()
        try:
            yield
        finally:
            if reloader is not None:
                reloader.stop()
            recorder.stop()
            if sender is not None:
                sender.stop()
            app.state.service = None

    app = FastAPI(
        title="leadscore",
        version="0.1.0",
        description="Calibrated lead-conversion probabilities with bands and reasons.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics = Metrics()
    metrics.add_collector(StateCollector(lambda: _backlogs(app), lambda: _serving(app)))
    # Innermost: plain POST /v1/score requests answered before FastAPI's routing.
    app.add_middleware(QuickScore)
    if cfg.serving.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cfg.serving.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    # Outermost: sees every answer.
    app.add_middleware(
        RequestContext,
        metrics=metrics,
        max_body_bytes=cfg.serving.max_body_bytes,
        max_in_flight=cfg.serving.max_in_flight,
    )
    app.include_router(router)
    app.include_router(reports_router)
    document_security(app)

    @app.exception_handler(LeadscoreError)
    async def domain_error(request: Request, exc: LeadscoreError) -> JSONResponse:
        detail: object = exc.message
        if isinstance(exc, InvalidInputError):
            detail = [{"field": f, "problem": p} for f, p in exc.problems.items()]
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, UnauthorizedError) else None
        if isinstance(exc, TooManyFailuresError):
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": exc.code, "detail": detail},
            headers=headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": code, "detail": exc.detail},
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {
                "field": ".".join(str(p) for p in err["loc"] if p != "body"),
                "problem": err["msg"],
            }
            for err in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"error": "invalid_request", "detail": detail})

    return app
