"""API keys with scopes: created once, stored hashed, verified with a short in-memory cache.

A key is ``ls_`` followed by 32 URL-safe random characters. It is shown once, when it is
created; the database keeps its first characters (the *prefix*, which names the key in logs
and on the command line), a random salt and the SHA-256 digest of salt + key, compared in
constant time. A verified key is trusted for ``cache_seconds`` without asking the database
again, so a request costs no extra round trip and a revocation takes effect within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from leadscore.event_log import open_database

logger = logging.getLogger(__name__)

SCORE_READ = "score:read"
EVENTS_WRITE = "events:write"
OUTCOMES_WRITE = "outcomes:write"
REPORTS_READ = "reports:read"
METRICS_READ = "metrics:read"
ADMIN = "admin"
#: Every scope; ``admin`` implies all the others.
SCOPES: tuple[str, ...] = (
    SCORE_READ,
    EVENTS_WRITE,
    OUTCOMES_WRITE,
    REPORTS_READ,
    METRICS_READ,
    ADMIN,
)

KEY_PREFIX = "ls_"
_RANDOM_CHARS = 32
# "ls_" + 8 random characters: what names a key (unique, stored in clear, safe to log).
_PREFIX_LENGTH = len(KEY_PREFIX) + 8

_METADATA = sa.MetaData()
API_KEYS = sa.Table(
    "api_keys",
    _METADATA,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("prefix", sa.String(16), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("scopes", sa.String(500), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("last_used_at", sa.DateTime(timezone=True)),
)


class UnknownKeyError(LookupError):
    """No key matches the given prefix or id."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key (never the key itself)."""

    key_id: str
    prefix: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    def allows(self, scope: str) -> bool:
        """Whether the key carries ``scope`` (``admin`` carries every scope)."""
        return scope in self.scopes or ADMIN in self.scopes

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(key: str, salt: str) -> str:
    """SHA-256 (hex) of salt + key."""
    return hashlib.sha256(f"{salt}{key}".encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes, deduplicated in order.

    Raises:
        ValueError: A scope is unknown, or none is given.
    """
    chosen = list(dict.fromkeys(scopes))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; expected {', '.join(SCOPES)}")
    if not chosen:
        raise ValueError(f"a key needs at least one scope: {', '.join(SCOPES)}")
    return chosen


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back: they were stored as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        prefix=row.prefix,
        name=row.name,
        scopes=frozenset(s for s in row.scopes.split() if s),
        created_at=_aware(row.created_at) or datetime.now(UTC),
        revoked_at=_aware(row.revoked_at),
        last_used_at=_aware(row.last_used_at),
    )


class ApiKeyStore:
    """The ``api_keys`` table, with a short cache of verified keys.

    Args:
        url: SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``).
        cache_seconds: How long a verification is reused without the database (0: never).
    """

    def __init__(self, url: str, *, cache_seconds: float = 10.0) -> None:
        self.engine = open_database(url, API_KEYS)
        self.cache_seconds = cache_seconds
        # sha256(key) -> (key record or None when unknown, monotonic expiry)
        self._cache: dict[str, tuple[ApiKey | None, float]] = {}
        self._lock = threading.Lock()

    def create(self, name: str, scopes: Iterable[str]) -> tuple[str, ApiKey]:
        """Create a key; returns the key itself (shown once, never stored) and its record.

        Raises:
            ValueError: No scope, an unknown scope, or an empty name.
        """
        if not name.strip():
            raise ValueError("a key needs a name")
        chosen = check_scopes(scopes)
        key = KEY_PREFIX + secrets.token_urlsafe(_RANDOM_CHARS * 3 // 4)  # 24 bytes: 32 chars
        salt = secrets.token_hex(16)
        record = {
            "key_id": secrets.token_hex(8),
            "prefix": key[:_PREFIX_LENGTH],
            "name": name.strip(),
            "key_hash": hash_key(key, salt),
            "salt": salt,
            "scopes": " ".join(chosen),
            "created_at": datetime.now(UTC),
            "revoked_at": None,
            "last_used_at": None,
        }
        with self.engine.begin() as conn:
            conn.execute(API_KEYS.insert(), [record])
        logger.info("API key %s (%s) created with scopes %s", record["prefix"], name, chosen)
        return key, _api_key(_Obj(record))

    def list(self) -> list[ApiKey]:
        """Every key, oldest first (revoked ones too)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(API_KEYS).order_by(API_KEYS.c.created_at)).fetchall()
        return [_api_key(r) for r in rows]

    def find(self, name: str) -> ApiKey | None:
        """The newest active key with this name, if any."""
        active = [k for k in self.list() if k.name == name and k.active]
        return active[-1] if active else None

    def revoke(self, prefix_or_id: str) -> ApiKey:
        """Revoke a key by its prefix (``ls_xxxxxxxx``) or its id.

        Returns:
            The key as it is now (revoked; a key revoked before keeps its first revocation).

        Raises:
            UnknownKeyError: No key has this prefix or id.
        """
        where = sa.or_(API_KEYS.c.prefix == prefix_or_id, API_KEYS.c.key_id == prefix_or_id)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(API_KEYS).where(where)).fetchone()
            if row is None:
                raise UnknownKeyError(f"no API key has prefix or id {prefix_or_id!r}")
            if row.revoked_at is None:
                conn.execute(
                    API_KEYS.update()
                    .where(API_KEYS.c.key_id == row.key_id)
                    .values(revoked_at=datetime.now(UTC))
                )
            row = conn.execute(sa.select(API_KEYS).where(API_KEYS.c.key_id == row.key_id)).one()
        logger.info("API key %s revoked", row.prefix)
        return _api_key(row)

    def verify(self, key: str) -> ApiKey | None:
        """The active key matching ``key``, or None (unknown, malformed or revoked).

        A result is cached for ``cache_seconds``; a database check also records the key's
        last use.
        """
        known, found = self.cached(key)
        if known:
            return found
        found = self._check(key)
        if self.cache_seconds > 0:
            digest = hashlib.sha256(key.encode()).hexdigest()
            with self._lock:
                if len(self._cache) > 10_000:  # wrong keys must not grow it without bound
                    self._cache.clear()
                self._cache[digest] = (found, time.monotonic() + self.cache_seconds)
        return found

    def cached(self, key: str) -> tuple[bool, ApiKey | None]:
        """``(True, what verify answers)`` when it needs no database (a malformed key, or one
        checked less than ``cache_seconds`` ago), else ``(False, None)``."""
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return True, None
        digest = hashlib.sha256(key.encode()).hexdigest()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return True, cached[0]
        return False, None

    def _check(self, key: str) -> ApiKey | None:
        prefix = key[:_PREFIX_LENGTH]
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(API_KEYS).where(API_KEYS.c.prefix == prefix)).fetchone()
            if row is None or not hmac.compare_digest(hash_key(key, row.salt), row.key_hash):
                # Nothing of what was sent is logged: an unknown "key" may be any secret.
                logger.info("API key refused: unknown")
                return None
            if row.revoked_at is not None:
                logger.info("API key %s refused: revoked", prefix)
                return None
            conn.execute(
                API_KEYS.update()
                .where(API_KEYS.c.key_id == row.key_id)
                .values(last_used_at=datetime.now(UTC))
            )
        return _api_key(row)


class _Obj:
    """Attribute access to a dict (a freshly inserted record as a row)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
