"""Freshness: time from ``POST /v1/events`` to a changed score for that lead.

For each of ``n_events`` leads (distinct, drawn at random): score the lead, send one
``demo_request`` event for it, then score it again. Two figures per event, both from the
moment the event is sent:

- ``post``: until the ``POST /v1/events`` answer, which already carries the lead's fresh score
  (the behaviour row is recomputed and pushed to the online store before the answer);
- ``fresh``: until a following ``POST /v1/score`` by lead_id has answered, i.e. a separate
  caller sees the new score.

A score counts as changed when the probability differs from the one before the event. One
keep-alive connection, sequential, against a running server (see :mod:`bench.run`).
"""

from __future__ import annotations

import http.client
import json
import random
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bench.common import BenchError, percentiles_ms
from bench.servers import HOST, post_json


def measure_freshness(
    port: int, key: str, lead_ids: Sequence[int], *, n_events: int, seed: int = 1
) -> dict[str, Any]:
    """Send ``n_events`` events to the API on ``port`` and time each until a changed score.

    Raises:
        BenchError: The API refused a request (the status and answer are in the message).
    """
    rng = random.Random(seed)
    leads = rng.sample(list(lead_ids), k=min(n_events, len(lead_ids)))
    headers = {"authorization": f"Bearer {key}"}
    post_s: list[float] = []
    fresh_s: list[float] = []
    changed_in_post = changed_after = 0
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        for lead_id in leads:
            score = json.dumps({"lead_id": lead_id}).encode()
            status, before = post_json(conn, "/v1/score", score, headers)
            if status != 200:
                raise BenchError(f"POST /v1/score for lead {lead_id}: {status} {before}")
            event = {
                "event_id": f"bench-{uuid.uuid4().hex}",
                "lead_id": lead_id,
                "occurred_at": datetime.now(UTC).isoformat(),
                "event_type": "demo_request",
            }
            body = json.dumps({"events": [event]}).encode()
            start = time.perf_counter()
            status, answer = post_json(conn, "/v1/events", body, headers)
            post_s.append(time.perf_counter() - start)
            if status != 200:
                raise BenchError(f"POST /v1/events for lead {lead_id}: {status} {answer}")
            _, after = post_json(conn, "/v1/score", score, headers)
            fresh_s.append(time.perf_counter() - start)
            posted = {s["lead_id"]: s["probability"] for s in answer["scores"]}
            changed_in_post += posted.get(lead_id) != before["probability"]
            changed_after += after["probability"] != before["probability"]
    finally:
        conn.close()
    post, fresh = percentiles_ms(post_s), percentiles_ms(fresh_s)
    return {
        "events": len(leads),
        "scores_changed_in_post_answer": changed_in_post,
        "scores_changed_on_next_score": changed_after,
        "post_events": post,
        "event_to_fresh_score": fresh,
    }
