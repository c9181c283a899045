"""The audit log of the scores the API serves (``served_scores``).

Every score the API answers with (``POST /v1/score``, the rescoring of ``POST /v1/events`` and
``POST /v1/score/batch``) is recorded in the ``served_scores`` table of the live event log's
database, with the model version and the feature values it was computed from. Recording is
kept off the request path: routes hand scores to a :class:`ScoreRecorder`, whose bounded queue
one writer thread empties in batches. A full queue drops the score (and counts it) rather than
blocking a request. Serving imports this module; it imports no pipelines or training code and
no pandas.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from leadscore.event_log import open_database

logger = logging.getLogger(__name__)
# Waits between attempts to write a batch while the database is unreachable.
_FIRST_RETRY_WAIT = 0.5
_MAX_RETRY_WAIT = 10.0

_METADATA = sa.MetaData()
SERVED_SCORES = sa.Table(
    "served_scores",
    _METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("lead_id", sa.BigInteger, nullable=False),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("band", sa.String(16), nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("request_id", sa.String(200)),
    sa.Index("ix_served_scores_lead_scored_at", "lead_id", "scored_at"),
)
_COLUMNS = [c.name for c in SERVED_SCORES.columns if c.name != "id"]
_JSON_COLUMNS = {"reasons", "features"}


@dataclass(frozen=True)
class ServedScore:
    """One recorded score.

    Attributes:
        lead_id: The lead.
        scored_at: When it was scored (UTC).
        model_name: Registered model name.
        model_version: Registered model version.
        probability: Calibrated probability.
        band: Band of the probability.
        reasons: The reasons answered (``feature``, ``label``, ``value``, ``contribution``).
        features: The feature values the score was computed from.
        request_id: The API request that served it.
    """

    lead_id: int
    scored_at: datetime
    model_name: str
    model_version: str
    probability: float
    band: str
    reasons: list[dict[str, Any]]
    features: dict[str, Any]
    request_id: str | None = None


def json_safe(value: Any) -> Any:
    """A value JSON can store: numpy scalars as Python ones, NaN as None, times as ISO text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def encode_json(value: Any) -> str:
    """JSON text of a value for a JSON column: plain Python values are encoded as they are
    (the common case, in C), anything else (NaN, numpy scalars, times) through
    :func:`json_safe`."""
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(json_safe(value))


def _utc(moment: datetime) -> datetime:
    """Aware UTC (SQLite gives naive datetimes back; they are stored as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class ScoreLog:
    """The ``served_scores`` table: append and read served scores.

    Args:
        url: SQLAlchemy URL (the live event log's by default).
    """

    def __init__(self, url: str) -> None:
        # Served scores wait in memory before they are written: no fsync per batch either.
        self.engine = open_database(url, SERVED_SCORES, durable=False)
        dialect = self.engine.dialect
        # Rows are inserted through the driver with their values prepared beforehand (see
        # :meth:`encode`): SQLAlchemy's per-value processing in the writer thread held the
        # GIL long enough to delay the requests being served.
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        json_mark = mark if dialect.name == "sqlite" else f"CAST({mark} AS JSON)"
        marks = [json_mark if c in _JSON_COLUMNS else mark for c in _COLUMNS]
        self._insert = (
            f"INSERT INTO {SERVED_SCORES.name} ({', '.join(_COLUMNS)}) VALUES ({', '.join(marks)})"
        )
        stamp = SERVED_SCORES.c.scored_at.type.dialect_impl(dialect).bind_processor(dialect)
        self._stamp = stamp or (lambda value: value)

    def encode(self, score: ServedScore) -> tuple[Any, ...]:
        """The score as the row the database stores (JSON encoded, the time as the driver
        takes it): cheap, and done by the caller so the writer has little left to do."""
        return (
            int(score.lead_id),
            self._stamp(_utc(score.scored_at)),
            score.model_name,
            score.model_version,
            float(score.probability),
            score.band,
            encode_json(score.reasons),
            encode_json(score.features),
            score.request_id,
        )

    def append(self, scores: Sequence[ServedScore]) -> int:
        """Store the scores in one transaction; returns how many were stored."""
        return self.append_encoded([self.encode(s) for s in scores])

    def append_encoded(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Store rows made by :meth:`encode` in one transaction; returns how many."""
        if not rows:
            return 0
        with self.engine.begin() as conn:
            conn.exec_driver_sql(self._insert, list(rows))
        return len(rows)

    def history(
        self, lead_id: int, *, limit: int = 100, since: datetime | None = None
    ) -> list[ServedScore]:
        """The lead's recorded scores, newest first.

        Args:
            lead_id: The lead.
            limit: Most scores returned.
            since: Only scores served at or after this moment.
        """
        t = SERVED_SCORES.c
        query = sa.select(SERVED_SCORES).where(t.lead_id == int(lead_id))
        if since is not None:
            query = query.where(t.scored_at >= _utc(since))
        query = query.order_by(t.scored_at.desc(), t.id.desc()).limit(limit)
        return self._rows(query)

    def iter_scores(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        lead_id: int | None = None,
        batch_size: int = 5000,
    ) -> Iterator[ServedScore]:
        """Every recorded score in the order recorded, read ``batch_size`` rows at a time (an
        export of any size in bounded memory).

        Args:
            since: Only scores served at or after this moment.
            until: Only scores served before this moment.
            lead_id: Only this lead's.
            batch_size: Rows per query.
        """
        t = SERVED_SCORES.c
        after = 0
        while True:
            query = sa.select(SERVED_SCORES).where(t.id > after)
            if since is not None:
                query = query.where(t.scored_at >= _utc(since))
            if until is not None:
                query = query.where(t.scored_at < _utc(until))
            if lead_id is not None:
                query = query.where(t.lead_id == int(lead_id))
            with self.engine.connect() as conn:
                rows = conn.execute(query.order_by(t.id).limit(batch_size)).mappings().all()
            if not rows:
                return
            yield from self._scores(rows)
            after = int(rows[-1]["id"])

    def _rows(self, query: Any) -> list[ServedScore]:
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return self._scores(rows)

    @staticmethod
    def _scores(rows: Sequence[Any]) -> list[ServedScore]:
        return [
            ServedScore(
                lead_id=int(r["lead_id"]),
                scored_at=_utc(r["scored_at"]),
                model_name=str(r["model_name"]),
                model_version=str(r["model_version"]),
                probability=float(r["probability"]),
                band=str(r["band"]),
                reasons=list(r["reasons"] or []),
                features=dict(r["features"] or {}),
                request_id=r["request_id"],
            )
            for r in rows
        ]

    def as_of(self, lead_id: int, moment: datetime) -> ServedScore | None:
        """The score the lead had at ``moment``: the last one served at or before it, else
        (the lead was first scored later) the first one served after it; None if never."""
        t = SERVED_SCORES.c
        earlier = (
            sa.select(t.id)
            .where(t.lead_id == int(lead_id), t.scored_at <= _utc(moment))
            .order_by(t.scored_at.desc(), t.id.desc())
            .limit(1)
        )
        later = (
            sa.select(t.id)
            .where(t.lead_id == int(lead_id), t.scored_at > _utc(moment))
            .order_by(t.scored_at.asc(), t.id.asc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            found = conn.execute(earlier).scalar() or conn.execute(later).scalar()
        if found is None:
            return None
        return next(s for s in self._rows(sa.select(SERVED_SCORES).where(t.id == found)))

    def latest(self, lead_id: int) -> ServedScore | None:
        """The lead's most recent recorded score, or None if it was never scored."""
        found = self.history(lead_id, limit=1)
        return found[0] if found else None


class ScoreRecorder:
    """Writes served scores to a :class:`ScoreLog` from one background thread.

    :meth:`submit` never blocks and wakes no thread: scores go into a bounded in-memory queue
    (when it is full the score is dropped and counted in :attr:`dropped`), which the writer
    drains every ``linger_seconds``, up to ``batch_size`` scores per transaction. One
    transaction for many scores costs far less than one per score, and a request does not pay
    for handing its score to another thread.

    Args:
        log: Where the scores go.
        max_queue: Most scores waiting to be written.
        batch_size: Most scores per insert.
        linger_seconds: How often the writer looks for scores to write.
    """

    def __init__(
        self,
        log: ScoreLog,
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        linger_seconds: float = 0.05,
    ) -> None:
        self.log = log
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.linger_seconds = linger_seconds
        self.dropped = 0
        self.failed = 0
        self.written = 0
        self._pending: deque[tuple[Any, ...]] = deque()  # rows encoded by ScoreLog.encode
        self._lock = threading.Lock()
        self._submitted = 0  # scores accepted so far
        self._handled = 0  # of those, written or given up
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leadscore-score-log", daemon=True)

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def submit(self, scores: Iterable[ServedScore]) -> int:
        """Queue scores for writing without waiting; returns how many were dropped.

        The scores are encoded here, in the caller's thread (in C, tens of microseconds): the
        writer thread is then left with little Python work to compete for the GIL with.
        """
        scores = list(scores)
        with self._lock:
            room = max(self.max_queue - len(self._pending), 0)
            accepted = scores[:room]
            self._pending.extend(self.log.encode(s) for s in accepted)
            self._submitted += len(accepted)
            dropped = len(scores) - len(accepted)
            if dropped:
                self.dropped += dropped
                total = self.dropped
        if dropped:
            logger.warning(
                "score log queue full: %d served score(s) not recorded (%d in total)",
                dropped,
                total,
            )
        return dropped

    def flush(self) -> None:
        """Return once every score queued so far is written (or its write failed)."""
        with self._lock:
            target = self._submitted
        if not self._thread.is_alive():
            while self._write_next(block=False):
                pass
            return
        while self._handled < target and self._thread.is_alive():
            time.sleep(min(self.linger_seconds, 0.01))

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        else:
            self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.linger_seconds)
            while self._write_next(block=True):
                pass
        while self._write_next(block=False):  # what came in while stopping
            pass

    @property
    def queued(self) -> int:
        """Scores waiting to be written."""
        return len(self._pending)

    def _write_next(self, *, block: bool) -> bool:
        """Write one batch; False when nothing was queued.

        While the database is unreachable the batch is tried again with growing waits (up to
        ``_MAX_RETRY_WAIT``), so no score is lost to an outage; meanwhile new scores wait in
        the bounded queue. Only at shutdown is a batch that still fails given up (and counted).
        """
        with self._lock:
            batch = [
                self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))
            ]
        if not batch:
            return False
        wait = _FIRST_RETRY_WAIT
        try:
            while True:
                try:
                    self.written += self.log.append_encoded(batch)
                    break
                except Exception as e:  # a background writer: report, keep serving, retry
                    if self._stop.is_set() or not block:
                        self.failed += len(batch)
                        logger.error("gave up recording %d served score(s): %s", len(batch), e)
                        break
                    logger.warning(
                        "could not record %d served score(s), retrying in %.1f s: %s",
                        len(batch),
                        wait,
                        e,
                    )
                    self._stop.wait(wait)
                    wait = min(wait * 2, _MAX_RETRY_WAIT)
        finally:
            self._handled += len(batch)
        return True
