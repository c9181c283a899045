"""Sequential latency of POST /v1/score against a running server (one connection).

Usage: .venv/bin/python bench/score_latency.py [--url URL] [--requests N]

Lead ids are drawn from the validated leads table of the current settings. This is a first,
single-connection probe; the full harness (concurrency, baselines, freshness) is still to come.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import httpx
import numpy as np

from leadscore.auth import ApiKeyStore
from leadscore.settings import get_settings
from pipelines.ingest import load_table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000/v1/score")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--key", help="API key (default: LEADSCORE_API_KEY, else a new one)")
    args = parser.parse_args()
    # A key with the scopes the benchmark needs: --key, LEADSCORE_API_KEY or a new one.
    key = (
        args.key
        or os.environ.get("LEADSCORE_API_KEY")
        or ApiKeyStore(get_settings().auth_db_url).create("bench", ["score:read"])[0]
    )
    headers = {"authorization": f"Bearer {key}"}
    ids = load_table(get_settings().paths.warehouse, "leads")["lead_id"].tolist()
    rng = random.Random(0)
    latencies = []
    errors = 0
    with httpx.Client(timeout=10, headers=headers) as client:
        for _ in range(50):  # warm-up
            client.post(args.url, json={"lead_id": rng.choice(ids)})
        for _ in range(args.requests):
            start = time.perf_counter()
            response = client.post(args.url, json={"lead_id": rng.choice(ids)})
            latencies.append((time.perf_counter() - start) * 1000)
            errors += response.status_code != 200
    ms = np.array(latencies)
    print(
        json.dumps(
            {
                "requests": args.requests,
                "errors": errors,
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p90_ms": round(float(np.percentile(ms, 90)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2),
                "max_ms": round(float(ms.max()), 2),
                "rps_one_connection": round(args.requests / (ms.sum() / 1000), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
