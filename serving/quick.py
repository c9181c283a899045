"""The quick path of ``POST /v1/score`` by ``lead_id``: the API's most frequent request,
answered without FastAPI's routing, dependency solving and body validation.

FastAPI's routing, dependency solving and validation cost ~0.2 ms of CPU per request here, a
fifth of an explained score. :class:`QuickScore`, an ASGI middleware inside
:class:`~serving.observability.RequestContext` (request id, body limit, load shedding,
metrics and the access log still apply), answers a request itself only when it is the plain
case, everything checked the way the route would:

- ``POST /v1/score`` with a JSON body (``Content-Type`` absent or ``application/json``) that
  is exactly ``{"lead_id": <integer 0..2^63-1>}``;
- a model is loaded and its online store is a local file (no thread hand-over needed);
- authentication is off, or the key (``Authorization: Bearer`` or ``X-API-Key``) was checked
  less than ``auth.cache_seconds`` ago, is active and carries ``score:read``, and the client
  is not locked out by failed attempts;
- the lead is in the online store and scoring raises no API error.

It then scores through the same service, records the score the same way (metrics and score
log) and answers the same JSON as the route. Any other request, and any of these checks
failing, goes on to the FastAPI route with the body it sent: every error answer (401, 403,
404, 422, 429, 503) and every other form of the request has one implementation, the route's.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import Headers

from leadscore.auth import SCORE_READ
from serving.errors import LeadscoreError
from serving.observability import ASGIApp, Message, Receive, Scope, Send
from serving.routes import record_scores, score_response
from serving.schemas import MAX_LEAD_ID
from serving.security import admitted_from_memory, api_routes
from serving.service import ScoreResult, ScoringService

PATH = "/v1/score"


class QuickScore:
    """Answers plain ``POST /v1/score {"lead_id": n}`` requests (see the module docstring);
    passes every other request on untouched.

    ``app.state.quick_scores`` counts the requests it answered.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: Any = None  # the route's APIRoute, for the metrics' route label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        result = self._score(scope, body)
        if result is None:
            await self.app(scope, _replay(body, receive), send)
            return
        state = scope["app"].state
        record_scores(state, scope.get("state", {}).get("request_id"), [result])
        state.quick_scores = getattr(state, "quick_scores", 0) + 1
        if self._route is None:
            self._route = _score_route(scope["app"])
        scope["route"] = self._route
        content = score_response(result).model_dump_json().encode()
        headers = [
            (b"content-length", str(len(content)).encode()),
            (b"content-type", b"application/json"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    @staticmethod
    def _score(scope: Scope, body: bytes) -> ScoreResult | None:
        """The lead's score when the request is the plain case, else None (the route's)."""
        app = scope["app"]
        state = app.state
        service: ScoringService | None = getattr(state, "service", None)
        if service is None or not service.quick_lookups:
            return None
        headers = Headers(scope=scope)
        if headers.get("content-type", "application/json") != "application/json":
            return None
        lead_id = _plain_lead_id(body)
        if lead_id is None:
            return None
        client = scope.get("client")
        if not admitted_from_memory(app, headers, client[0] if client else "unknown", SCORE_READ):
            return None
        try:
            return service.score(lead_id)
        except LeadscoreError:
            return None


def _plain_lead_id(body: bytes) -> int | None:
    """``n`` of a body that is exactly ``{"lead_id": n}`` with n a valid lead id."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if type(parsed) is not dict or len(parsed) != 1:
        return None
    lead_id = parsed.get("lead_id")
    if type(lead_id) is not int or not 0 <= lead_id <= MAX_LEAD_ID:
        return None
    return lead_id


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the route the body already read, then what the client sends."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _score_route(app: Any) -> Any:
    """The FastAPI route of ``POST /v1/score``."""
    routes = api_routes(app.routes)
    return next((r for r in routes if r.path == PATH and "POST" in (r.methods or ())), None)
