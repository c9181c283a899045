"""API-key authentication of the routes: a dependency per scope.

The key comes from ``Authorization: Bearer <key>`` or ``X-API-Key``; it is checked against
the ``api_keys`` table (:mod:`leadscore.auth`, with its short cache). Only the key's prefix
is ever logged.

The dependency reads both headers itself rather than through FastAPI's ``HTTPBearer`` and
``APIKeyHeader`` sub-dependencies: each dependency FastAPI solves costs tens of microseconds
per request, a good part of a scored lead's budget. The OpenAPI document still shows the two
schemes on every protected operation (:func:`document_security`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from leadscore.auth import ADMIN, ApiKey, ApiKeyStore
from serving.errors import ForbiddenError, TooManyFailuresError, UnauthorizedError

_lock = threading.Lock()
# The OpenAPI security schemes of the key (the names FastAPI's security classes would give).
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "HTTPBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <API key>",
    },
    "APIKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The API key.",
    },
}


def key_store(app: FastAPI) -> ApiKeyStore:
    """The app's key store, opened on first use."""
    store: ApiKeyStore | None = getattr(app.state, "keys", None)
    if store is None:
        with _lock:
            store = getattr(app.state, "keys", None)
            if store is None:
                settings = app.state.settings
                store = ApiKeyStore(settings.auth_db_url, cache_seconds=settings.auth.cache_seconds)
                app.state.keys = store
    return store


def require_scope(
    scope: str, *, cookie: str | None = None
) -> Callable[..., Awaitable[ApiKey | None]]:
    """A dependency admitting requests whose API key carries ``scope`` (or ``admin``).

    ``cookie`` names a cookie that may carry the key when no header does (the report pages'
    login); other routes accept headers only.

    Raises (in the dependency):
        UnauthorizedError: No key, or an unknown or revoked one (401).
        ForbiddenError: The key lacks the scope (403).
    """

    # Async, so a request does not wait for a worker thread just to check its key: a key seen
    # in the last ``auth.cache_seconds`` is answered from memory; only a database check goes
    # to a thread.
    async def check(request: Request) -> ApiKey | None:
        auth = request.app.state.settings.auth
        if not auth.required:
            return None
        limiter = failure_limiter(request.app, auth.max_failures_per_minute)
        client = request.client.host if request.client else "unknown"
        limiter.check(client)
        try:
            return await _authorize(request, scope, cookie)
        except UnauthorizedError:
            limiter.failed(client)
            raise

    check.scope = scope  # type: ignore[attr-defined]  # read by document_security
    return check


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key of ``Authorization: Bearer <key>`` (any case of "Bearer"), else of
    ``X-API-Key``: what FastAPI's ``HTTPBearer`` and ``APIKeyHeader`` would read."""
    scheme, _, credentials = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return headers.get("x-api-key") or None


def admitted_from_memory(app: FastAPI, headers: Mapping[str, str], client: str, scope: str) -> bool:
    """Whether :func:`require_scope`'s check would admit a request without waiting on
    anything: authentication is off, or the key (from the headers) was checked in the last
    ``auth.cache_seconds``, is active and carries ``scope``, and the client is not locked out.
    False means: let the check decide (it also gives every refusal its answer)."""
    auth = app.state.settings.auth
    if not auth.required:
        return True
    presented = presented_key(headers)
    if presented is None:
        return False
    try:
        failure_limiter(app, auth.max_failures_per_minute).check(client)
    except TooManyFailuresError:
        return False
    known, key = key_store(app).cached(presented.strip())
    return known and key is not None and key.allows(scope)


async def _authorize(request: Request, scope: str, cookie: str | None) -> ApiKey:
    """The request's key if it is valid and carries ``scope``."""
    presented = presented_key(request.headers)
    if not presented and cookie is not None:
        presented = request.cookies.get(cookie)
    if not presented:
        raise UnauthorizedError(
            "an API key is needed: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        )
    store = key_store(request.app)
    known, key = store.cached(presented.strip())
    if not known:
        key = await run_in_threadpool(store.verify, presented.strip())
    if key is None:
        raise UnauthorizedError("the API key is unknown or revoked")
    if not key.allows(scope):
        raise ForbiddenError(f"needs scope {scope}")
    request.state.api_key_prefix = key.prefix
    return key


class FailureLimiter:
    """Counts failed authentications per client over a sliding minute.

    A client (IP address) past ``max_per_minute`` failures gets 429 with ``Retry-After``
    until its oldest failure in the window is a minute old, before its key is even looked up:
    guessing keys costs a minute per ``max_per_minute`` guesses. ``max_per_minute`` 0: no limit.
    """

    WINDOW = 60.0

    def __init__(self, max_per_minute: int) -> None:
        self.max_per_minute = max_per_minute
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        while times and now - times[0] >= self.WINDOW:
            times.popleft()
        return times

    def check(self, client: str) -> None:
        """Raise 429 when the client used up its failures."""
        if self.max_per_minute <= 0:
            return
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            if len(times) < self.max_per_minute:
                if not times:
                    self._failures.pop(client, None)
                return
            wait = int(self.WINDOW - (now - times[0])) + 1
        raise TooManyFailuresError(
            f"too many failed authentications from this client: try again in {wait} s",
            retry_after=wait,
        )

    def failed(self, client: str) -> None:
        """Record a failed authentication."""
        if self.max_per_minute <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self._recent(client, now).append(now)


def failure_limiter(app: FastAPI, max_per_minute: int) -> FailureLimiter:
    """The app's limiter of failed authentications, made on first use."""
    limiter: FailureLimiter | None = getattr(app.state, "auth_failures", None)
    if limiter is None:
        with _lock:
            limiter = getattr(app.state, "auth_failures", None)
            if limiter is None:
                limiter = FailureLimiter(max_per_minute)
                app.state.auth_failures = limiter
    return limiter


def api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """The API routes, those of included routers too (included without a prefix of their
    own, as the app includes them: their routes carry their full paths)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from api_routes(included.routes)


def _scopes(dependant: Any) -> list[str]:
    """The scopes the dependencies of a route (or of a dependency) require, outermost first."""
    found: list[str] = []
    for sub in dependant.dependencies:
        scope = getattr(sub.call, "scope", None)
        if scope:
            found.append(scope)
        found.extend(_scopes(sub))
    return found


def document_security(app: FastAPI) -> None:
    """Show the key's schemes, and the scope needed, on every operation behind
    :func:`require_scope` in the app's OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        for route in api_routes(app.routes):
            if not route.include_in_schema:
                continue
            scopes = _scopes(route.dependant)
            if not scopes:
                continue
            for method in route.methods or ():
                operation = schema["paths"].get(route.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
                needs = f"Needs an API key with scope `{scopes[0]}`" + (
                    "." if scopes[0] == ADMIN else " (or `admin`)."
                )
                operation["description"] = f"{operation.get('description', '')}\n\n{needs}".strip()
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
