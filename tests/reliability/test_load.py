"""Load held: a real server under a steady load it can sustain, then a burst far beyond it.

Issue #9, item 1. ``leadscore serve`` runs as a subprocess on a stack of its own. Its capacity
is measured first (closed loop), then it is offered half of that for 60 s at a fixed rate
(open loop): every answer must be a 200. Then 150 connections hammer it: with
``serving.max_in_flight`` low, the excess must be shed with a quick 503 ``overloaded`` (or a
429) carrying a JSON body, never a dropped connection or another 5xx; the process stays up,
``/health`` answers 200 throughout, and scoring answers 200 again within seconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from tests.reliability.server import (
    ServiceProcess,
    api_key,
    build_small_stack,
    closed_loop,
    encode_request,
    lead_ids,
    open_loop,
    percentile_ms,
    post,
    stack_env,
)

pytestmark = pytest.mark.long

MAX_IN_FLIGHT = 8
STEADY_SECONDS = 60.0
BURST_CONNECTIONS = 150
BURST_SECONDS = 10.0


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServiceProcess, dict[str, str], list[int]]]:
    root = tmp_path_factory.mktemp("load")
    settings = build_small_stack(root / "stack")
    headers = api_key(settings, "score:read")
    env = stack_env(settings, {"LEADSCORE_SERVING__MAX_IN_FLIGHT": str(MAX_IN_FLIGHT)})
    server = ServiceProcess("serve", env, root / "logs")
    server.start()
    try:
        yield server, headers, lead_ids(settings, 300)
    finally:
        server.stop()


class HealthWatch:
    """Polls ``GET /health`` every 0.2 s in a thread, recording every status (None: no answer
    within 5 s)."""

    def __init__(self, server: ServiceProcess) -> None:
        self.server = server
        self.statuses: list[int | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.statuses.append(self.server.health(timeout_s=5.0))
            self._stop.wait(0.2)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_steady_load_then_a_burst_beyond_capacity(
    service: tuple[ServiceProcess, dict[str, str], list[int]],
) -> None:
    server, headers, leads = service
    requests = [encode_request(server.port, "/v1/score", {"lead_id": i}, headers) for i in leads]
    with HealthWatch(server) as health:
        # given: the server's capacity here, now (4 connections, closed loop)
        closed_loop(server.port, requests, connections=2, duration_s=2.0)  # warm-up
        capacity = closed_loop(server.port, requests, connections=4, duration_s=6.0)
        assert capacity.statuses == {200: len(capacity.latencies_s)}, capacity.refusals[:3]
        assert not capacity.connection_errors, capacity.connection_errors[:3]
        capacity_rps = len(capacity.latencies_s) / capacity.duration_s
        rate = max(2.0, capacity_rps / 2)

        # when: half of it is offered at a fixed rate for 60 s
        steady = open_loop(
            server.port, requests, rate=rate, duration_s=STEADY_SECONDS, connections=4
        )

        # then: every request is answered 200
        expected = int(rate * STEADY_SECONDS)
        print(
            f"\ncapacity {capacity_rps:.1f} req/s; steady {rate:.1f} req/s for "
            f"{STEADY_SECONDS:.0f} s: {steady.requests} requests, statuses {steady.statuses}, "
            f"p50 {percentile_ms(steady.latencies_s, 0.5):.1f} ms, "
            f"p99 {percentile_ms(steady.latencies_s, 0.99):.1f} ms, "
            f"max {percentile_ms(steady.latencies_s, 1.0):.1f} ms"
        )
        assert steady.requests == expected
        assert not steady.connection_errors, steady.connection_errors[:3]
        assert steady.statuses == {200: expected}, steady.refusals[:3]
        assert steady.duration_s < STEADY_SECONDS + 30, "the server fell far behind the offer"

        # when: a burst far beyond capacity
        burst = closed_loop(
            server.port, requests, connections=BURST_CONNECTIONS, duration_s=BURST_SECONDS
        )
        burst_over = time.monotonic()

        # then: each request got a full answer: a score, or a quick JSON refusal
        print(
            f"burst {BURST_CONNECTIONS} connections for {BURST_SECONDS:.0f} s: "
            f"{burst.requests} requests, statuses {burst.statuses}, "
            f"{len(burst.connection_errors)} connection errors"
        )
        assert not burst.connection_errors, burst.connection_errors[:5]
        assert set(burst.statuses) <= {200, 429, 503}, burst.refusals[:5]
        assert burst.statuses.get(200, 0) > 0
        assert burst.statuses.get(503, 0) > 0, "the burst never exceeded max_in_flight"
        for status, body in burst.refusals:
            answer = json.loads(body)
            assert answer["error"] == (
                "overloaded" if status == 503 else "too_many_failed_attempts"
            ), (
                status,
                body,
            )
        # the process is alive and scoring answers 200 again within a few seconds
        assert server.alive(), server.logs()
        while (
            again := post(server.port, "/v1/score", {"lead_id": leads[0]}, headers)
        ).status != 200:
            assert time.monotonic() - burst_over < 5.0, again
            time.sleep(0.1)
        recovered_s = time.monotonic() - burst_over
        assert again.body["lead_id"] == leads[0] and 0.0 <= again.body["probability"] <= 1.0
        print(f"scoring answered 200 again {recovered_s:.2f} s after the burst")

    # /health answered 200 every time it was asked, from the first request to the last
    assert len(health.statuses) > (STEADY_SECONDS + BURST_SECONDS) / 0.5
    assert set(health.statuses) == {200}, {
        s: health.statuses.count(s) for s in set(health.statuses)
    }
    assert server.alive(), server.logs()
