"""Online scoring: ``leadscore serve`` against ``mlflow models serve`` of the same model.

Both servers run on loopback, one worker each, and get the same leads:

- leadscore: ``POST /v1/score {"lead_id": ...}``: the online feature lookup (Feast, with the
  on-demand recency features), the calibrated probability, the band and the reasons (TreeSHAP),
  behind API-key authentication, with the served-score audit log written in the background;
- MLflow: ``POST /invocations`` of ``models:/<name>@champion`` (``--env-manager local``) with
  the lead's feature values in ``dataframe_split`` form, fetched from the online store
  beforehand: the probability and band only, no lookup, no reasons. A caller of this
  alternative still has to fetch the features from a feature store per request; that lookup is
  not in its figures.

Each is driven by :mod:`bench.loadgen` at 1 and 8 keep-alive connections for a fixed duration
(after an unrecorded warm-up), the runs interleaved (leadscore 1, MLflow 1, leadscore 8,
MLflow 8) so a neighbour's load on the shared cores hits both alike. Reported per run: p50 /
p90 / p99 / max latency, throughput, errors, and the CPU seconds the server and the client
used.
"""

from __future__ import annotations

import http.client
import json
import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.common import LEADSCORE, MLFLOW, BenchError, run_measured
from bench.freshness import measure_freshness
from bench.loadgen import encode_post, run_load
from bench.servers import HOST, Server, free_port, post_json, start_server
from bench.stack import Stack

# Issue #8's targets for POST /v1/score by lead_id with reasons, one worker, loopback.
# The stack's settings keep the default model name and alias.
MODEL_URI = "models:/leadscore@champion"
TARGETS = {"p50_ms": 1.5, "p99_ms": 5.0, "throughput_rps": 1000.0}


def sample_leads(stack: Stack, n: int, seed: int = 0) -> list[int]:
    """``n`` lead ids of the stack's validated leads, drawn at random."""
    ids = pq.read_table(stack.root / "data/warehouse/leads.parquet", columns=["lead_id"])
    all_ids = ids.column("lead_id").to_pylist()
    return sorted(random.Random(seed).sample(all_ids, k=min(n, len(all_ids))))


def leads_with_live_events(stack: Stack) -> set[int]:
    """The leads the stack's live event log holds events of (none before any run)."""
    import sqlalchemy as sa

    # The servers run with the default settings under the stack's root (see ``Stack.env``).
    path = stack.root / "data/live/events.db"
    if not path.exists():
        return set()
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("live_events"):
                return set()
            rows = conn.execute(sa.text("SELECT DISTINCT lead_id FROM live_events"))
            return {int(r[0]) for r in rows}
    finally:
        engine.dispose()


def create_key(stack: Stack, log_dir: Path) -> str:
    """A fresh API key with the scopes the benchmark needs (printed last by the CLI)."""
    measured = run_measured(
        [
            LEADSCORE,
            "keys",
            "create",
            "--name",
            "bench",
            "--scope",
            "score:read",
            "--scope",
            "events:write",
        ],
        env=stack.env(),
        log=log_dir / "keys-create.log",
        what="leadscore keys create",
    )
    return measured.stdout.strip().splitlines()[-1].strip()


def fetch_payloads(stack: Stack, leads: list[int], log_dir: Path) -> dict[str, Any]:
    """The champion's input columns and each lead's online feature values."""
    out = log_dir / "mlflow-payload.json"
    run_measured(
        [
            str(Path(LEADSCORE).parent / "python"),
            "-m",
            "bench.jobs",
            "features",
            "--leads",
            ",".join(map(str, leads)),
            "--out",
            str(out),
        ],
        env=stack.env(),
        log=log_dir / "mlflow-payload.log",
        what="reading the leads' online features for the MLflow server",
    )
    data: dict[str, Any] = json.loads(out.read_text())
    if not data["rows"]:
        raise BenchError(
            "none of the sampled leads has online features: was the store materialized?"
        )
    return data


def _measure(
    server: Server,
    requests: list[bytes],
    *,
    connections: int,
    duration_s: float,
    max_requests: int,
    expect: bytes,
) -> dict[str, Any]:
    run_load(
        HOST,
        server.port,
        requests,
        connections=connections,
        duration_s=min(2.0, duration_s / 4),
        max_requests=max_requests,
        expect=expect,
    )
    cpu0 = server.cpu_s()
    result = run_load(
        HOST,
        server.port,
        requests,
        connections=connections,
        duration_s=duration_s,
        max_requests=max_requests,
        expect=expect,
    )
    summary = result.summary()
    summary["server_cpu_s"] = round(server.cpu_s() - cpu0, 2)
    ok = summary["requests"] - summary["errors"]
    summary["server_cpu_ms_per_request"] = (
        round(summary["server_cpu_s"] * 1000 / ok, 3) if ok else None
    )
    summary["server_rss_mb"] = round(server.rss_mb(), 1)
    print(
        f"    {server.name}, {connections} connection(s): p50 {summary['p50_ms']} ms, "
        f"p99 {summary['p99_ms']} ms, {summary['throughput_rps']} req/s, "
        f"{summary['errors']} errors",
        flush=True,
    )
    return summary


def run_online(
    stack: Stack,
    log_dir: Path,
    *,
    duration_s: float,
    max_requests: int,
    n_leads: int,
    freshness_events: int,
    connections: tuple[int, ...] = (1, 8),
) -> dict[str, Any]:
    """Online latency of both servers and the freshness of leadscore's scores."""
    leads = sample_leads(stack, n_leads)
    # Both servers start first: the API key and the MLflow payloads are prepared meanwhile.
    ls_port, ml_port = free_port(), free_port()
    ls = start_server(
        "leadscore",
        [LEADSCORE, "serve", "--host", HOST, "--port", str(ls_port)],
        env=stack.env(),
        port=ls_port,
        log=log_dir / "leadscore-serve.log",
    )
    ml = None
    try:
        ml = start_server(
            "mlflow",
            [
                MLFLOW,
                "models",
                "serve",
                "-m",
                MODEL_URI,
                "--env-manager",
                "local",
                "--host",
                HOST,
                "--port",
                str(ml_port),
                "--workers",
                "1",
            ],
            env=stack.env({"MLFLOW_TRACKING_URI": f"sqlite:///{stack.root}/mlflow/mlflow.db"}),
            port=ml_port,
            log=log_dir / "mlflow-serve.log",
        )
        key = create_key(stack, log_dir)
        payload = fetch_payloads(stack, leads, log_dir)
        if payload["model_uri"] != MODEL_URI:
            raise BenchError(f"the stack serves {payload['model_uri']}, not {MODEL_URI}")
        served_leads = [int(x) for x in payload["rows"]]
        ready = {"leadscore": ls.wait_ready("/ready"), "mlflow": ml.wait_ready("/ping")}
        auth = {"Authorization": f"Bearer {key}"}
        same_model = _same_model(ls, ml, auth, payload)
        ls_requests = [
            encode_post(HOST, ls_port, "/v1/score", json.dumps({"lead_id": i}).encode(), auth)
            for i in served_leads
        ]
        ml_requests = [
            encode_post(
                HOST,
                ml_port,
                "/invocations",
                json.dumps(
                    {"dataframe_split": {"columns": payload["columns"], "data": [row]}}
                ).encode(),
                {},
            )
            for row in payload["rows"].values()
        ]
        runs: dict[str, list[dict[str, Any]]] = {"leadscore": [], "mlflow": []}
        for c in connections:
            runs["leadscore"].append(
                _measure(
                    ls,
                    ls_requests,
                    connections=c,
                    duration_s=duration_s,
                    max_requests=max_requests,
                    expect=b'"reasons"',
                )
            )
            runs["mlflow"].append(
                _measure(
                    ml,
                    ml_requests,
                    connections=c,
                    duration_s=duration_s,
                    max_requests=max_requests,
                    expect=b'"predictions"',
                )
            )
        ml.stop()
        ml = None
        print("    freshness ...", flush=True)
        # Leads that had live events in an earlier run (a reused stack) already show the
        # demo request: only untouched leads tell whether a new one changes the score.
        touched = leads_with_live_events(stack)
        untouched = [i for i in served_leads if i not in touched]
        freshness = measure_freshness(
            ls_port,
            key,
            untouched if len(untouched) >= freshness_events else served_leads,
            n_events=freshness_events,
        )
    finally:
        if ml is not None:
            ml.stop()
        ls.stop()
    return {
        "leads": len(served_leads),
        "duration_s_per_run": duration_s,
        "max_requests_per_run": max_requests,
        "seconds_to_ready": {k: round(v, 1) for k, v in ready.items()},
        "mlflow_model_uri": payload["model_uri"],
        "model_inputs": len(payload["columns"]),
        "same_model": same_model,
        "runs": runs,
        "ratio": _ratios(runs),
        "targets": _targets(runs["leadscore"]),
        "freshness": freshness,
    }


def _same_model(
    ls: Server, ml: Server, auth: dict[str, str], payload: dict[str, Any], n: int = 20
) -> dict[str, Any]:
    """Both servers give the same leads the same probability: one model, the same features.

    The features are not bit for bit the same: the MLflow payload was read from the online
    store a few seconds earlier, and the on-demand recency features move with the clock.

    Raises:
        BenchError: A server refused a request or the probabilities differ by more than 0.01.
    """
    diffs = []
    ls_conn = http.client.HTTPConnection(HOST, ls.port, timeout=30)
    ml_conn = http.client.HTTPConnection(HOST, ml.port, timeout=30)
    try:
        for lead, row in list(payload["rows"].items())[:n]:
            body = json.dumps({"lead_id": int(lead)}).encode()
            status, ours = post_json(ls_conn, "/v1/score", body, auth)
            frame = {"dataframe_split": {"columns": payload["columns"], "data": [row]}}
            ml_status, theirs = post_json(ml_conn, "/invocations", json.dumps(frame).encode(), {})
            if status != 200 or ml_status != 200:
                raise BenchError(
                    f"lead {lead}: leadscore answered {status} {ours}, MLflow {ml_status} {theirs}"
                )
            diffs.append(abs(ours["probability"] - theirs["predictions"][0]["probability"]))
    finally:
        ls_conn.close()
        ml_conn.close()
    result = {"leads": len(diffs), "max_abs_probability_diff": round(max(diffs), 6)}
    if result["max_abs_probability_diff"] > 0.01:
        raise BenchError(f"the two servers disagree on the same leads: {result}")
    return result


def _ratios(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """leadscore's figures divided by MLflow's, per connection count."""
    out = []
    for ls, ml in zip(runs["leadscore"], runs["mlflow"], strict=True):
        out.append(
            {
                "connections": ls["connections"],
                "p50_ratio": round(ls["p50_ms"] / ml["p50_ms"], 2) if ml["p50_ms"] else None,
                "p99_ratio": round(ls["p99_ms"] / ml["p99_ms"], 2) if ml["p99_ms"] else None,
                "throughput_ratio": (
                    round(ls["throughput_rps"] / ml["throughput_rps"], 2)
                    if ml["throughput_rps"]
                    else None
                ),
            }
        )
    return out


def _targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue #8's targets against the measured figures (latency at one connection)."""
    one = next((r for r in runs if r["connections"] == 1), runs[0])
    best = max(runs, key=lambda r: r["throughput_rps"])
    rows = []
    for name, limit, value, where in (
        ("p50 latency, 1 connection", TARGETS["p50_ms"], one["p50_ms"], "<="),
        ("p99 latency, 1 connection", TARGETS["p99_ms"], one["p99_ms"], "<="),
        (
            f"explained scores/s ({best['connections']} connection(s))",
            TARGETS["throughput_rps"],
            best["throughput_rps"],
            ">=",
        ),
    ):
        met = value <= limit if where == "<=" else value >= limit
        rows.append({"target": name, "limit": f"{where} {limit:g}", "measured": value, "met": met})
    return rows
