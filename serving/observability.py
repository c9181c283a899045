"""Operations: request ids, body size limits, Prometheus metrics and JSON logs.

One pure-ASGI middleware (:class:`RequestContext`, cheaper per request than Starlette's
``BaseHTTPMiddleware``) gives every request an id (the client's ``X-Request-ID`` when it sends
a sane one, else a new one; echoed in the response), counts requests and their latency by
route template and status, refuses a body whose ``Content-Length`` is over
``serving.max_body_bytes`` with a JSON 413 before reading it (FastAPI's own limit stops a
chunked one at the same size), and writes one access-log line per request. The line holds the
method, route template (``/v1/leads/{lead_id}/score``, never the lead id), status, duration and
request id: no key, body, query string or personal field is ever logged.

Metrics live in a registry of the app's own (several apps in one process, as in the tests, do
not collide) and are exposed on ``GET /metrics`` in Prometheus' text format.
"""

from __future__ import annotations

import contextvars
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.middleware import body_limit as _starlette_body_limit
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("leadscore.access")
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "leadscore_request_id", default=None
)
# Starlette's body-limit error, which FastAPI lets through while reading a body (a private
# class: without it, an over-long chunked body gets FastAPI's 400 instead of 413).
_TooLarge: type[Exception] = getattr(
    _starlette_body_limit, "_RequestBodyTooLarge", type("_TooLarge", (Exception,), {})
)
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def new_request_id() -> str:
    """A random 128-bit id in hex: unique, not secret, so no system entropy per request."""
    return f"{random.getrandbits(128):032x}"


# Latency buckets (seconds) around the scoring targets: 1.5 ms p50, 5 ms p99.
_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class Metrics:
    """The app's Prometheus metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "leadscore_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "leadscore_http_request_duration_seconds",
            "Time from request to the end of the response, by method and route template.",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.scores = Counter(
            "leadscore_scores_served",
            "Scores served, by band and model version.",
            ["band", "model_version"],
            registry=self.registry,
        )

        # Labelled series by their labels: ``labels()`` costs microseconds per call.
        self._request_series: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._score_series: dict[tuple[str, str], Any] = {}

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count a request and its latency."""
        key = (method, route, str(status))
        series = self._request_series.get(key)
        if series is None:
            series = (
                self.requests.labels(method=method, route=route, status=key[2]),
                self.latency.labels(method=method, route=route),
            )
            self._request_series[key] = series
        series[0].inc()
        series[1].observe(seconds)

    def served(self, band: str, model_version: str) -> None:
        """Count a served score."""
        key = (band, model_version)
        series = self._score_series.get(key)
        if series is None:
            series = self._score_series[key] = self.scores.labels(
                band=band, model_version=model_version
            )
        series.inc()

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)


class StateCollector(Collector):
    """Gauges read from the app's state at scrape time: the model serving now
    (``leadscore_model_info{model_name,model_version} 1``) and the score log's counts."""

    def __init__(
        self,
        read: Callable[[], dict[str, float]],
        model: Callable[[], tuple[str, str] | None],
    ) -> None:
        self._read = read
        self._model = model

    def collect(self) -> Any:
        served = self._model()
        if served is not None:
            info = GaugeMetricFamily(
                "leadscore_model_info",
                "The model version serving now (value 1).",
                labels=["model_name", "model_version"],
            )
            info.add_metric(list(served), 1.0)
            yield info
        for name, value in self._read().items():
            family = GaugeMetricFamily(f"leadscore_{name}", name.replace("_", " ") + ".")
            family.add_metric([], value)
            yield family


async def _refuse(
    send: Send,
    status: int,
    request_id: str,
    error: str,
    detail: str,
    *,
    retry_after: int | None = None,
) -> None:
    """Answer a request the app never saw (JSON, in the API's error shape)."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    if status == 413:
        headers.append((b"connection", b"close"))  # the unread body stays behind
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class RequestContext:
    """Request id, metrics and access log (see the module docstring).

    Args:
        app: The ASGI app.
        metrics: Where request counts and latency go.
    """

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, max_in_flight: int = 0
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = ""
        length = 0
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if _SANE_ID.match(candidate) else ""
            elif name == b"content-length" and value.isdigit():
                length = int(value)
        request_id = request_id or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        status = 500
        if length > self.max_body_bytes:  # refused before reading it
            status = 413
            await _refuse(
                send,
                413,
                request_id,
                "body_too_large",
                f"request body of {length} bytes; at most {self.max_body_bytes} bytes "
                "(serving.max_body_bytes)",
            )
            self._done(scope, status, start, request_id)
            request_id_var.reset(token)
            return
        # Shed load beyond what the service can hold: a quick 503 with Retry-After instead of
        # a queue that makes every request late. Health checks always pass.
        if (
            self.max_in_flight
            and self.in_flight >= self.max_in_flight
            and scope.get("path") not in ("/health", "/ready")
        ):
            status = 503
            await _refuse(
                send,
                503,
                request_id,
                "overloaded",
                f"{self.in_flight} requests in progress (serving.max_in_flight): try again",
                retry_after=1,
            )
            self._done(scope, status, start, request_id)
            request_id_var.reset(token)
            return
        self.in_flight += 1
        received = 0
        started = False

        async def limited_receive() -> Message:
            # A chunked body has no length up front: count it as it arrives.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _TooLarge()
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        # FastAPI turns errors while reading a body into 400, except the body-limit error
        # while this key is in the scope: that one reaches the handler below.
        scope[MAX_BODY_SIZE_SCOPE_KEY] = self.max_body_bytes
        try:
            await self.app(scope, limited_receive, send_with_id)
        except _TooLarge:
            if started:
                raise
            status = 413
            await _refuse(
                send,
                413,
                request_id,
                "body_too_large",
                f"request body over {received - 1} bytes; at most {self.max_body_bytes} bytes "
                "(serving.max_body_bytes)",
            )
        finally:
            self.in_flight -= 1
            self._done(scope, status, start, request_id)
            request_id_var.reset(token)

    def _done(self, scope: Scope, status: int, start: float, request_id: str) -> None:
        elapsed = time.perf_counter() - start
        route = _route_of(scope)
        method = str(scope.get("method", ""))
        self.metrics.request(method, route, status, elapsed)
        if access_log.isEnabledFor(logging.INFO):
            # What access_log.info() does, less its search of the stack for the caller's file
            # and line, which no log format here shows (a third of the record's cost).
            record = access_log.makeRecord(
                access_log.name,
                logging.INFO,
                __file__,
                0,
                "%s %s %d",
                (method, route, status),
                None,
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
            access_log.handle(record)


_JSON_FIELDS = ("request_id", "method", "route", "status", "duration_ms")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id of the request
    being served (if any) and the access-log fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for name in _JSON_FIELDS[1:]:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_config(fmt: str, level: str = "INFO") -> dict[str, Any]:
    """``logging.config.dictConfig`` of ``leadscore serve`` (uvicorn's ``log_config``).

    ``json``: every record, leadscore's and uvicorn's, as one JSON line on stderr; ``text``:
    the same records as plain lines. Uvicorn's own access log is off: the app writes its own
    (route templates, no query strings).
    """
    formatter = (
        {"()": "serving.observability.JsonFormatter"}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"level": level},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"level": "WARNING", "propagate": False},
        },
    }
