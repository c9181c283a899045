"""A small closed-loop HTTP/1.1 load generator on asyncio streams, for loopback servers.

Each connection is kept alive and sends its next request as soon as the previous answer is
read in full (closed loop: the offered load follows the server). Requests are pre-encoded
bytes, responses are framed by ``Content-Length`` (or chunked) and not parsed beyond the
status line, so the client's own CPU cost per request stays small: the machine's cores are
shared with the server being measured, and the client's CPU time is reported with the
figures. Every run is bounded by a duration and a request count.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common import percentiles_ms


def encode_post(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One pre-encoded keep-alive POST request."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    """What one load run measured."""

    connections: int
    duration_s: float
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    client_cpu_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        ok = len(self.latencies_s)
        return {
            "connections": self.connections,
            "duration_s": round(self.duration_s, 2),
            "requests": ok + self.errors,
            "errors": self.errors,
            **percentiles_ms(self.latencies_s),
            "throughput_rps": round(ok / self.duration_s, 1) if self.duration_s > 0 else 0.0,
            "client_cpu_s": round(self.client_cpu_s, 2),
            **({"error_samples": self.error_samples[:3]} if self.error_samples else {}),
        }


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                return status, b"".join(parts)
    return status, (await reader.readexactly(length) if length > 0 else b"")


async def _connection(
    host: str,
    port: int,
    requests: itertools.cycle[bytes],
    deadline: float,
    budget: list[int],
    result: LoadResult,
    expect: bytes,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            request = next(requests)
            start = time.perf_counter()
            writer.write(request)
            status, body = await _read_response(reader)
            elapsed = time.perf_counter() - start
            if status == 200 and expect in body:
                result.latencies_s.append(elapsed)
            else:
                result.errors += 1
                if len(result.error_samples) < 3:
                    result.error_samples.append(f"{status}: {body[:200]!r}")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _load(
    host: str,
    port: int,
    requests: Sequence[bytes],
    connections: int,
    duration_s: float,
    max_requests: int,
    expect: bytes,
) -> LoadResult:
    result = LoadResult(connections=connections, duration_s=0.0)
    cycle = itertools.cycle(requests)
    budget = [max_requests]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    deadline = start + duration_s
    outcomes = await asyncio.gather(
        *(
            _connection(host, port, cycle, deadline, budget, result, expect)
            for _ in range(connections)
        ),
        return_exceptions=True,
    )
    result.duration_s = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result.client_cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            result.errors += 1
            result.error_samples.append(f"connection: {outcome!r}")
    return result


def run_load(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    connections: int,
    duration_s: float,
    max_requests: int,
    expect: bytes = b"",
) -> LoadResult:
    """Drive a server with ``connections`` keep-alive connections for ``duration_s`` seconds.

    Args:
        host: Loopback address of the server.
        port: Its port.
        requests: Pre-encoded requests, sent in turn (see :func:`encode_post`).
        connections: Concurrent connections (each has one request in flight).
        duration_s: Stop sending after this long.
        max_requests: Stop after this many requests, whichever comes first.
        expect: Bytes a 200 answer must contain to count as a success.

    Returns:
        Latencies of the successful requests, the errors (with samples), elapsed time and the
        client's own CPU time.
    """
    if not requests:
        raise ValueError("requests: at least one request is needed")
    if connections < 1:
        raise ValueError(f"connections must be at least 1, not {connections}")
    return asyncio.run(_load(host, port, requests, connections, duration_s, max_requests, expect))
