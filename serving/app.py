"""FastAPI app factory; ``leadscore serve`` runs ``serving.app:create_app`` as a factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from leadscore.settings import Settings, get_settings
from serving.errors import InvalidInputError, LeadscoreError
from serving.routes import router
from serving.service import ScoringService, load_service

logger = logging.getLogger(__name__)

ServiceLoader = Callable[[Settings], ScoringService]


def create_app(settings: Settings | None = None, loader: ServiceLoader = load_service) -> FastAPI:
    """Build the API.

    Args:
        settings: Configuration; default: :func:`get_settings`.
        loader: Builds the scoring service at start-up (the model from the registry and the
            online store by default).
    """
    cfg = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = None
        app.state.load_error = None
        app.state.settings = cfg
        try:
            app.state.service = loader(cfg)
        except (LookupError, OSError, ValueError, TypeError) as e:
            # Start anyway so /health answers and /ready says why scoring is unavailable.
            app.state.load_error = str(e)
            logger.error("scoring service not ready: %s", e)
        yield
        app.state.service = None

    app = FastAPI(
        title="leadscore",
        version="0.1.0",
        description="Calibrated lead-conversion probabilities with bands and reasons.",
        lifespan=lifespan,
    )
    app.include_router(router)

    @app.exception_handler(LeadscoreError)
    async def domain_error(request: Request, exc: LeadscoreError) -> JSONResponse:
        detail: object = exc.message
        if isinstance(exc, InvalidInputError):
            detail = [{"field": f, "problem": p} for f, p in exc.problems.items()]
        return JSONResponse(
            status_code=exc.status_code, content={"error": exc.code, "detail": detail}
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
