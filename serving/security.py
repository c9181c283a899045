"""API-key authentication of the routes: a dependency per scope.

The key comes from ``Authorization: Bearer <key>`` or ``X-API-Key``; it is checked against
the ``api_keys`` table (:mod:`leadscore.auth`, with its short cache). Only the key's prefix
is ever logged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated

from fastapi import FastAPI, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from leadscore.auth import ApiKey, ApiKeyStore
from serving.errors import ForbiddenError, UnauthorizedError

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key.")
_lock = threading.Lock()


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


def require_scope(scope: str, *, cookie: str | None = None) -> Callable[..., ApiKey | None]:
    """A dependency admitting requests whose API key carries ``scope`` (or ``admin``).

    ``cookie`` names a cookie that may carry the key when no header does (the report pages'
    login); other routes accept headers only.

    Raises (in the dependency):
        UnauthorizedError: No key, or an unknown or revoked one (401).
        ForbiddenError: The key lacks the scope (403).
    """

    def check(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        header: Annotated[str | None, Security(_header)],
    ) -> ApiKey | None:
        if not request.app.state.settings.auth.required:
            return None
        presented = bearer.credentials if bearer is not None else header
        if not presented and cookie is not None:
            presented = request.cookies.get(cookie)
        if not presented:
            raise UnauthorizedError(
                "an API key is needed: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
            )
        key = key_store(request.app).verify(presented.strip())
        if key is None:
            raise UnauthorizedError("the API key is unknown or revoked")
        if not key.allows(scope):
            raise ForbiddenError(f"needs scope {scope}")
        request.state.api_key_prefix = key.prefix
        return key

    return check
