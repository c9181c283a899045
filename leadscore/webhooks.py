"""Hot-lead webhooks: tell the CRM the moment a lead's band rises to hot.

A notification is first stored as a delivery in the ``webhook_deliveries`` table (the live
event log's database), then sent by one background thread (:class:`WebhookSender`), off the
request path. The body is JSON; it is signed with HMAC-SHA256 over ``"<timestamp>.<body>"``
with the shared secret, sent in ``X-Leadscore-Signature: sha256=<hex>`` next to
``X-Leadscore-Timestamp`` (Unix seconds), ``X-Leadscore-Event`` and ``X-Leadscore-Delivery``
(the delivery id: receivers de-duplicate on it). A receiver checks a request with
:func:`verify_signature`.

A delivery that fails (no connection, a timeout, 408, 429 or a 5xx answer) is tried again with
exponential back-off until ``max_attempts``; any other answer outside 2xx fails it at once.
Every attempt is recorded (attempts, last status or error); failed deliveries stay listed
(``leadscore webhooks list --status failed``, ``GET /v1/admin/webhooks``) and can be sent
again (``leadscore webhooks retry``). Deliveries still pending when the service stops are sent
by the next one. Imports no pandas, pipelines or training code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from leadscore.event_log import open_database
from leadscore.score_log import json_safe

logger = logging.getLogger(__name__)

HOT_LEAD_EVENT = "lead.hot"
SIGNATURE_HEADER = "X-Leadscore-Signature"
TIMESTAMP_HEADER = "X-Leadscore-Timestamp"
DELIVERY_HEADER = "X-Leadscore-Delivery"
EVENT_HEADER = "X-Leadscore-Event"
STATUSES = ("pending", "delivered", "failed")
# Answers worth trying again: the receiver may be back later.
_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}

_METADATA = sa.MetaData()
WEBHOOK_DELIVERIES = sa.Table(
    "webhook_deliveries",
    _METADATA,
    sa.Column("delivery_id", sa.String(32), primary_key=True),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("lead_id", sa.BigInteger, nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("response_status", sa.Integer),
    sa.Column("last_error", sa.String(1000)),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value of a body sent at ``timestamp`` (Unix seconds)."""
    message = str(int(timestamp)).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    *,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    tolerance_seconds: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether a received webhook is genuine and recent (what a receiver runs).

    Args:
        secret: The shared secret (``webhooks.secret``).
        body: The raw request body, as received.
        timestamp: The ``X-Leadscore-Timestamp`` header.
        signature: The ``X-Leadscore-Signature`` header.
        tolerance_seconds: Oldest accepted timestamp (replay protection).
        now: Current Unix time (default: the clock).
    """
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


@dataclass(frozen=True)
class Delivery:
    """A stored webhook delivery."""

    delivery_id: str
    event: str
    lead_id: int
    url: str
    payload: dict[str, Any]
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    response_status: int | None
    last_error: str | None
    delivered_at: datetime | None


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back: they are UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class WebhookLog:
    """The ``webhook_deliveries`` table.

    Args:
        url: SQLAlchemy URL (the live event log's by default).
    """

    def __init__(self, url: str) -> None:
        self.engine = open_database(url, WEBHOOK_DELIVERIES)

    def add(self, *, event: str, lead_id: int, url: str, payload: Mapping[str, Any]) -> str:
        """Store a new pending delivery, due now; returns its id."""
        now = datetime.now(UTC)
        delivery_id = uuid.uuid4().hex
        with self.engine.begin() as conn:
            conn.execute(
                WEBHOOK_DELIVERIES.insert().values(
                    delivery_id=delivery_id,
                    event=event,
                    lead_id=int(lead_id),
                    url=url,
                    payload=json_safe(dict(payload)),
                    status="pending",
                    attempts=0,
                    created_at=now,
                    next_attempt_at=now,
                )
            )
        return delivery_id

    def claim_due(self, *, limit: int, lease: timedelta) -> list[Delivery]:
        """Pending deliveries due now, each leased for ``lease`` so that another sender (a
        second worker) does not send it at the same time."""
        now = datetime.now(UTC)
        t = WEBHOOK_DELIVERIES
        with self.engine.begin() as conn:
            ids = [
                row.delivery_id
                for row in conn.execute(
                    sa.select(t.c.delivery_id)
                    .where(t.c.status == "pending", t.c.next_attempt_at <= now)
                    .order_by(t.c.next_attempt_at)
                    .limit(limit)
                )
            ]
            claimed = []
            for delivery_id in ids:
                taken = conn.execute(
                    t.update()
                    .where(
                        t.c.delivery_id == delivery_id,
                        t.c.status == "pending",
                        t.c.next_attempt_at <= now,
                    )
                    .values(next_attempt_at=now + lease)
                )
                if taken.rowcount == 1:
                    claimed.append(delivery_id)
        return [d for d in (self.get(i) for i in claimed) if d is not None]

    def next_due(self) -> datetime | None:
        """When the earliest pending delivery is due (None: nothing pending)."""
        t = WEBHOOK_DELIVERIES
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(sa.func.min(t.c.next_attempt_at)).where(t.c.status == "pending")
            ).scalar()
        return _utc(value)

    def record_attempt(
        self,
        delivery_id: str,
        *,
        delivered: bool,
        response_status: int | None,
        error: str | None,
        retry_at: datetime | None,
    ) -> None:
        """Record one attempt: delivered, to be retried at ``retry_at``, or failed (neither)."""
        now = datetime.now(UTC)
        status = "delivered" if delivered else ("pending" if retry_at is not None else "failed")
        t = WEBHOOK_DELIVERIES
        with self.engine.begin() as conn:
            conn.execute(
                t.update()
                .where(t.c.delivery_id == delivery_id)
                .values(
                    status=status,
                    attempts=t.c.attempts + 1,
                    last_attempt_at=now,
                    response_status=response_status,
                    last_error=None if error is None else error[:1000],
                    delivered_at=now if delivered else None,
                    next_attempt_at=retry_at or now,
                )
            )

    def retry(self, delivery_id: str) -> bool:
        """Send a failed (or pending) delivery again now, with a fresh attempt budget.

        Returns:
            False when no such delivery exists or it was already delivered.
        """
        t = WEBHOOK_DELIVERIES
        with self.engine.begin() as conn:
            result = conn.execute(
                t.update()
                .where(t.c.delivery_id == delivery_id, t.c.status != "delivered")
                .values(status="pending", attempts=0, next_attempt_at=datetime.now(UTC))
            )
        return bool(result.rowcount)

    def get(self, delivery_id: str) -> Delivery | None:
        """One delivery by id."""
        t = WEBHOOK_DELIVERIES
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.delivery_id == delivery_id)).first()
        return None if row is None else _delivery(row)

    def list(
        self, *, status: str | None = None, lead_id: int | None = None, limit: int = 100
    ) -> list[Delivery]:
        """Deliveries, newest first, optionally of one status and one lead."""
        t = WEBHOOK_DELIVERIES
        query = sa.select(t).order_by(t.c.created_at.desc()).limit(limit)
        if status is not None:
            query = query.where(t.c.status == status)
        if lead_id is not None:
            query = query.where(t.c.lead_id == lead_id)
        with self.engine.connect() as conn:
            return [_delivery(row) for row in conn.execute(query)]

    def counts(self) -> dict[str, int]:
        """Deliveries per status."""
        t = WEBHOOK_DELIVERIES
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.status, sa.func.count()).group_by(t.c.status))
            found = {str(status): int(n) for status, n in rows}
        return {status: found.get(status, 0) for status in STATUSES}


def _delivery(row: Any) -> Delivery:
    return Delivery(
        delivery_id=row.delivery_id,
        event=row.event,
        lead_id=int(row.lead_id),
        url=row.url,
        payload=dict(row.payload),
        status=row.status,
        attempts=int(row.attempts),
        created_at=_utc(row.created_at),  # type: ignore[arg-type]
        next_attempt_at=_utc(row.next_attempt_at),  # type: ignore[arg-type]
        last_attempt_at=_utc(row.last_attempt_at),
        response_status=row.response_status,
        last_error=row.last_error,
        delivered_at=_utc(row.delivered_at),
    )


class WebhookSender:
    """Sends due deliveries in a daemon thread, with retries and back-off.

    Args:
        log: The deliveries table.
        url: Where hot-lead notifications go.
        secret: Shared HMAC secret.
        max_attempts: Attempts before a delivery is marked failed.
        backoff_seconds: Wait before the second attempt; doubled after each failure.
        max_backoff_seconds: Longest wait between two attempts.
        timeout_seconds: Timeout of one HTTP request.
        poll_seconds: How often the thread looks for due deliveries when not woken.
    """

    def __init__(
        self,
        log: WebhookLog,
        *,
        url: str,
        secret: str,
        max_attempts: int = 6,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 300.0,
        timeout_seconds: float = 5.0,
        poll_seconds: float = 5.0,
    ) -> None:
        self.log = log
        self.url = url
        self._secret = secret
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leadscore-webhooks", daemon=True)

    def start(self) -> None:
        """Start sending (deliveries left pending by an earlier run included)."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after the attempt in progress (pending deliveries stay stored)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout)

    def notify(self, *, event: str, lead_id: int, payload: Mapping[str, Any]) -> str:
        """Store a delivery and wake the sender; returns the delivery id."""
        delivery_id = self.log.add(event=event, lead_id=lead_id, url=self.url, payload=payload)
        self.wake()
        return delivery_id

    def wake(self) -> None:
        """Look for due deliveries now (after a new or retried one)."""
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        return float(min(self.backoff_seconds * 2 ** (attempts - 1), self.max_backoff_seconds))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.send_due()
                wait = self.poll_seconds
                due = self.log.next_due()
                if due is not None:
                    wait = min(wait, max((due - datetime.now(UTC)).total_seconds(), 0.0))
            except Exception:  # a background job: report, keep going
                logger.exception("webhook sender: could not read the deliveries")
                wait = self.poll_seconds
            if wait > 0:
                self._wake.wait(wait)
            self._wake.clear()

    def send_due(self) -> int:
        """Attempt every delivery due now; returns how many were attempted."""
        lease = timedelta(seconds=self.timeout_seconds * 2 + 5)
        attempted = 0
        while not self._stop.is_set():
            due = self.log.claim_due(limit=20, lease=lease)
            if not due:
                break
            for delivery in due:
                self.attempt(delivery)
                attempted += 1
        return attempted

    def attempt(self, delivery: Delivery) -> bool:
        """Send one delivery once and record the outcome; True when delivered."""
        body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
        timestamp = int(time.time())
        request = urllib.request.Request(
            delivery.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "leadscore-webhooks/1",
                EVENT_HEADER: delivery.event,
                DELIVERY_HEADER: delivery.delivery_id,
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            },
        )
        status: int | None = None
        error: str | None = None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                status = int(response.status)
        except urllib.error.HTTPError as e:
            status, error = int(e.code), f"HTTP {e.code} {e.reason}"
        except (OSError, ValueError) as e:  # refused, unreachable, timeout, bad URL
            error = f"{type(e).__name__}: {e}"
        delivered = status is not None and 200 <= status < 300
        attempts = delivery.attempts + 1
        retryable = status is None or status in _RETRYABLE
        retry_at = None
        if not delivered and retryable and attempts < self.max_attempts:
            retry_at = datetime.now(UTC) + timedelta(seconds=self.backoff(attempts))
        self.log.record_attempt(
            delivery.delivery_id,
            delivered=delivered,
            response_status=status,
            error=None if delivered else error,
            retry_at=retry_at,
        )
        if not delivered:
            outcome = f"retry at {retry_at.isoformat()}" if retry_at else "failed"
            # The delivery id only: no lead data in the logs.
            logger.warning(
                "webhook delivery %s, attempt %d: %s (%s)",
                delivery.delivery_id,
                attempts,
                error,
                outcome,
            )
        return delivered
