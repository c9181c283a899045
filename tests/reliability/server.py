"""Real processes for the long reliability tests: a stack, `leadscore serve`, a private Redis.

Each test runs the product the way an operator does: ``leadscore serve`` (uvicorn) as a
subprocess of the test on a free loopback port, configured only through ``LEADSCORE_...``
environment variables, and driven over HTTP. The process helpers of the benchmark harness
(:mod:`bench.servers`, :mod:`bench.common`) start, probe and stop it; this module adds what the
tests need on top: a stack of their own, API keys, SIGKILL, a Redis server the test may stop,
and small HTTP clients that report every answer (status and JSON body) or the connection error.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.common import LEADSCORE, BenchError, child_env
from bench.loadgen import encode_post
from bench.servers import HOST, Server, free_port, http_status, start_server
from leadscore.auth import ApiKeyStore
from leadscore.settings import FeastSettings, Settings

# ---------------------------------------------------------------------------------------------
# A stack of the test's own
# ---------------------------------------------------------------------------------------------


def build_small_stack(
    root: Path, *, n_leads: int = 2000, feast: FeastSettings | None = None
) -> Settings:
    """Demo data -> ingest -> Feast (applied, materialized) -> a champion, under ``root``.

    Returns:
        The settings of the stack (every store under ``root``).
    """
    from tests.stack import build_stack

    return build_stack(root, n_leads=n_leads, feast=feast).settings


def stack_env(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a product subprocess on ``settings``' stores.

    Only what a built stack needs to be found again: its root and its Feast backend. The
    model is loaded once (no registry polling), so a restart is the only way a server changes.
    """
    feast = settings.feast
    env = {
        "LEADSCORE_FEAST__PROJECT": feast.project,
        "LEADSCORE_FEAST__ONLINE_STORE": feast.online_store,
        "LEADSCORE_FEAST__REDIS_CONNECTION_STRING": feast.redis_connection_string,
        "LEADSCORE_SERVING__RELOAD_SECONDS": "0",
        **(extra or {}),
    }
    return child_env(settings.paths.root, env)


def api_key(settings: Settings, *scopes: str, name: str = "reliability") -> dict[str, str]:
    """``Authorization`` header of a new key with ``scopes``, stored where the server reads."""
    key, _ = ApiKeyStore(settings.auth_db_url).create(name, tuple(scopes))
    return {"authorization": f"Bearer {key}"}


def lead_ids(settings: Settings, n: int) -> list[int]:
    """The first ``n`` validated lead ids of the stack (materialized online by the build)."""
    table = pq.read_table(settings.paths.warehouse / "leads.parquet", columns=["lead_id"])
    return sorted(table.column("lead_id").to_pylist())[:n]


# ---------------------------------------------------------------------------------------------
# `leadscore serve` as a subprocess
# ---------------------------------------------------------------------------------------------


class ServiceProcess:
    """``leadscore serve`` on a fixed free port; started, stopped and killed by the test.

    Args:
        name: Names the log files (``<log_dir>/<name>-<n>.log``, one per start).
        env: The server's environment (see :func:`stack_env`).
        log_dir: Where the logs go.
    """

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = dict(env)
        self.log_dir = log_dir
        self.port = free_port()
        self.starts = 0
        self.server: Server | None = None

    def start(self, timeout_s: float = 240.0) -> float:
        """Start the server and wait until ``/ready`` answers 200; the seconds it took."""
        assert self.server is None, "already running"
        self.starts += 1
        self.server = start_server(
            self.name,
            [LEADSCORE, "serve", "--host", HOST, "--port", str(self.port)],
            env=self.env,
            port=self.port,
            log=self.log_dir / f"{self.name}-{self.starts}.log",
        )
        try:
            return self.server.wait_ready("/ready", timeout_s=timeout_s)
        except BenchError as e:
            other = [line for line in self.logs().splitlines() if "GET /ready" not in line]
            raise AssertionError(
                f"{self.name} not ready; /ready said: {self.ready_detail()}; its log but the "
                "/ready lines:\n" + "\n".join(other[-30:])
            ) from e

    def ready_detail(self) -> str:
        """The body of ``GET /ready`` now (why the server is not ready), or the error."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
        try:
            conn.request("GET", "/ready")
            response = conn.getresponse()
            return f"{response.status} {response.read().decode(errors='replace')}"
        except OSError as e:
            return f"no answer: {e}"
        finally:
            conn.close()

    @property
    def pid(self) -> int:
        assert self.server is not None, "not running"
        return self.server.process.pid

    def alive(self) -> bool:
        return self.server is not None and self.server.process.poll() is None

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (uvicorn's graceful shutdown), wait for the exit; the exit code."""
        assert self.server is not None, "not running"
        server, self.server = self.server, None
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(timeout=timeout_s)
        finally:
            server.stop()  # kills whatever is left, closes the log
        return code

    def kill(self) -> int:
        """SIGKILL: the process ends at once, mid request or not; the exit code."""
        assert self.server is not None, "not running"
        server, self.server = self.server, None
        server.process.send_signal(signal.SIGKILL)
        code = server.process.wait(timeout=30)
        server.stop()
        return code

    def stop(self) -> None:
        """Stop if running (fixtures' clean-up)."""
        if self.server is not None:
            server, self.server = self.server, None
            server.stop()

    def health(self, timeout_s: float = 5.0) -> int | None:
        return http_status(self.port, "/health", timeout=timeout_s)

    def logs(self) -> str:
        """Every log of this service so far (for failure messages)."""
        return "\n".join(
            p.read_text(errors="replace")[-20000:]
            for p in sorted(self.log_dir.glob(f"{self.name}-*.log"))
        )


# ---------------------------------------------------------------------------------------------
# HTTP clients that report every answer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request's outcome: the status and decoded body, or the connection error."""

    status: int | None
    body: Any = None
    error: str | None = None
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def post(
    port: int, path: str, payload: Any, headers: Mapping[str, str], timeout_s: float = 30.0
) -> Answer:
    """One POST on a fresh connection (a restart never leaves a stale kept-alive socket)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    start = time.perf_counter()
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(payload).encode(),
            headers={"content-type": "application/json", **headers},
        )
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as e:
        return Answer(None, error=f"{type(e).__name__}: {e}")
    finally:
        conn.close()
    try:
        body: Any = json.loads(data)
    except ValueError:
        body = data.decode(errors="replace")
    return Answer(response.status, body, latency_s=time.perf_counter() - start)


def json_lines(text: str) -> list[dict[str, Any]]:
    """The lines of a log that are JSON objects (a server's log lines; others are skipped)."""
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def encode_request(port: int, path: str, payload: Any, headers: Mapping[str, str]) -> bytes:
    """A pre-encoded keep-alive HTTP/1.1 POST of ``payload`` as JSON."""
    return encode_post(HOST, port, path, json.dumps(payload).encode(), dict(headers))


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Read one response: status, body, and whether the server will close the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, closing = 0, False, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value:
            chunked = True
        elif name == b"connection" and value == b"close":
            closing = True
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append((await reader.readexactly(size + 2))[:-2])
            if size == 0:
                return status, b"".join(parts), closing
    return status, (await reader.readexactly(length) if length else b""), closing


@dataclass
class Tally:
    """Every answer of a load run: latencies of the 200s, statuses, bodies of the others."""

    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    refusals: list[tuple[int, bytes]] = field(default_factory=list)
    connection_errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def count(self, status: int, body: bytes, latency_s: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 200:
            self.latencies_s.append(latency_s)
        elif len(self.refusals) < 5000:
            self.refusals.append((status, body))

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + len(self.connection_errors)


class _Pool:
    """Kept-alive connections, reopened when the server closes one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = (
            asyncio.Queue()
        )

    async def send(self, request: bytes, timeout_s: float) -> tuple[int, bytes]:
        conn = await self.idle.get()
        try:
            if conn is None:
                conn = await asyncio.open_connection(HOST, self.port)
            reader, writer = conn
            writer.write(request)
            status, body, closing = await asyncio.wait_for(read_answer(reader), timeout_s)
        except BaseException:
            if conn is not None:
                conn[1].close()
            self.idle.put_nowait(None)
            raise
        if closing:
            writer.close()
            self.idle.put_nowait(None)
        else:
            self.idle.put_nowait(conn)
        return status, body

    def close(self) -> None:
        while not self.idle.empty():
            conn = self.idle.get_nowait()
            if conn is not None:
                conn[1].close()


async def _open_loop(
    port: int,
    requests: Sequence[bytes],
    rate: float,
    duration_s: float,
    connections: int,
    timeout_s: float,
) -> Tally:
    tally = Tally()
    pool = _Pool(port)
    for _ in range(connections):
        pool.idle.put_nowait(None)
    start = time.perf_counter()
    n = int(rate * duration_s)

    async def one(i: int) -> None:
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        try:
            status, body = await pool.send(requests[i % len(requests)], timeout_s)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as e:
            tally.connection_errors.append(f"{type(e).__name__}: {e}")
            return
        # From the moment the request was due, not sent: a late start is the server's delay.
        tally.count(status, body, time.perf_counter() - scheduled)

    await asyncio.gather(*(one(i) for i in range(n)))
    tally.duration_s = time.perf_counter() - start
    pool.close()
    return tally


def open_loop(
    port: int,
    requests: Sequence[bytes],
    *,
    rate: float,
    duration_s: float,
    connections: int,
    timeout_s: float = 30.0,
) -> Tally:
    """Offer ``rate`` requests a second for ``duration_s``, whatever the answers' pace.

    Request ``i`` is due at ``i / rate`` seconds; it goes out on one of ``connections``
    kept-alive connections as soon as one is free, and its latency counts from when it was due
    (so a server that falls behind shows it in the latencies instead of slowing the offer).
    """
    return asyncio.run(_open_loop(port, requests, rate, duration_s, connections, timeout_s))


async def _closed_loop(
    port: int, requests: Sequence[bytes], connections: int, duration_s: float, timeout_s: float
) -> Tally:
    tally = Tally()
    start = time.perf_counter()
    deadline = start + duration_s

    async def connection(k: int) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        i = k
        try:
            while time.perf_counter() < deadline:
                request = requests[i % len(requests)]
                i += connections
                sent = time.perf_counter()
                try:
                    if conn is None:
                        conn = await asyncio.open_connection(HOST, port)
                    conn[1].write(request)
                    status, body, closing = await asyncio.wait_for(read_answer(conn[0]), timeout_s)
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as e:
                    tally.connection_errors.append(f"{type(e).__name__}: {e}")
                    if conn is not None:
                        conn[1].close()
                    conn = None
                    continue
                tally.count(status, body, time.perf_counter() - sent)
                if closing:
                    conn[1].close()
                    conn = None
        finally:
            if conn is not None:
                conn[1].close()
                with contextlib.suppress(OSError):
                    await conn[1].wait_closed()

    await asyncio.gather(*(connection(k) for k in range(connections)))
    tally.duration_s = time.perf_counter() - start
    return tally


def closed_loop(
    port: int,
    requests: Sequence[bytes],
    *,
    connections: int,
    duration_s: float,
    timeout_s: float = 30.0,
) -> Tally:
    """``connections`` kept-alive connections, each sending its next request as soon as the
    previous answer is in, for ``duration_s``; every answer and connection error counted."""
    return asyncio.run(_closed_loop(port, requests, connections, duration_s, timeout_s))


def percentile_ms(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1) of seconds, in milliseconds (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return 1000 * ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
