"""Time from POST /v1/events to a changed score for that lead, against a running server.

Usage: .venv/bin/python bench/freshness.py [--url http://127.0.0.1:8000] [--events N]

Each iteration sends one demo request for a random lead and then asks for its score; the
figure is the time until the score reflects the event (the POST's answer already carries
it, and the follow-up GET-style POST /v1/score confirms it). One connection, sequential.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import uuid
from datetime import UTC, datetime

import httpx
import numpy as np

from leadscore.auth import ApiKeyStore
from leadscore.settings import get_settings
from pipelines.ingest import load_table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--key", help="API key (default: LEADSCORE_API_KEY, else a new one)")
    args = parser.parse_args()
    # A key with the scopes the benchmark needs: --key, LEADSCORE_API_KEY or a new one.
    key = (
        args.key
        or os.environ.get("LEADSCORE_API_KEY")
        or ApiKeyStore(get_settings().auth_db_url).create("bench", ["score:read", "events:write"])[
            0
        ]
    )
    headers = {"authorization": f"Bearer {key}"}
    ids = load_table(get_settings().paths.warehouse, "leads")["lead_id"].tolist()
    rng = random.Random(1)
    post_ms, fresh_ms, changed = [], [], 0
    with httpx.Client(base_url=args.url, timeout=10, headers=headers) as client:
        for _ in range(args.events):
            lead_id = rng.choice(ids)
            before = client.post("/v1/score", json={"lead_id": lead_id}).json()["probability"]
            event = {
                "event_id": f"bench-{uuid.uuid4().hex}",
                "lead_id": lead_id,
                "occurred_at": datetime.now(UTC).isoformat(),
                "event_type": "demo_request",
            }
            start = time.perf_counter()
            response = client.post("/v1/events", json={"events": [event]})
            post_ms.append((time.perf_counter() - start) * 1000)
            after = client.post("/v1/score", json={"lead_id": lead_id}).json()["probability"]
            fresh_ms.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
            changed += after != before
    p, f = np.array(post_ms), np.array(fresh_ms)
    print(
        json.dumps(
            {
                "events": args.events,
                "scores_changed": changed,
                "post_events_p50_ms": round(float(np.percentile(p, 50)), 1),
                "post_events_p99_ms": round(float(np.percentile(p, 99)), 1),
                "event_to_fresh_score_p50_ms": round(float(np.percentile(f, 50)), 1),
                "event_to_fresh_score_p99_ms": round(float(np.percentile(f, 99)), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
