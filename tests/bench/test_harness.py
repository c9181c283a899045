"""The benchmark harness works: it proves the harness, never judges speed (that is bench/'s job).

The end-to-end test runs ``python -m bench.run --quick`` on a copy of the session stack (the
servers, the load generator, ``mlflow models serve``, freshness events, batch scoring and the
training job all for real) and checks that every figure is there and consistent. The others
check the parts whose mistakes would silently skew figures: the load generator's bounds and
error counting, per-process peak memory, percentiles, argument errors.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from bench.common import BenchError, child_env, percentiles_ms, run_measured
from bench.loadgen import encode_post, run_load
from bench.report import render
from bench.run import main, parse_args

# --- the load generator against a real HTTP/1.1 server on loopback -------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.bodies.append(body)  # type: ignore[attr-defined]
        if body == b"fail":
            self._send(500, b'{"detail": "boom"}')
        elif body == b"chunked":
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for part in (b'{"ok": ', b"true}"):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(200, b'{"ok": true}')

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _requests(server: ThreadingHTTPServer, *bodies: bytes) -> list[bytes]:
    port = server.server_address[1]
    return [encode_post("127.0.0.1", port, "/x", b, {"x-test": "1"}) for b in bodies]


def test_load_stops_at_the_request_budget_and_counts_every_answer(
    http_server: ThreadingHTTPServer,
) -> None:
    port = http_server.server_address[1]
    requests = _requests(http_server, b"a", b"fail", b"chunked", b"b")
    result = run_load(
        "127.0.0.1", port, requests, connections=3, duration_s=60, max_requests=40, expect=b"ok"
    )
    summary = result.summary()
    assert summary["requests"] == 40 == len(http_server.bodies)  # type: ignore[attr-defined]
    # Requests are sent in turn: one in four is the failing one.
    assert summary["errors"] == 10
    assert summary["error_samples"][0].startswith("500:")
    assert len(result.latencies_s) == 30  # chunked answers were read whole and counted
    assert summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert summary["duration_s"] < 60


def test_a_body_without_the_expected_bytes_is_an_error(http_server: ThreadingHTTPServer) -> None:
    port = http_server.server_address[1]
    result = run_load(
        "127.0.0.1",
        port,
        _requests(http_server, b"a"),
        connections=1,
        duration_s=60,
        max_requests=5,
        expect=b'"reasons"',
    )
    assert result.errors == 5 and not result.latencies_s


def test_a_refused_connection_is_counted_not_hidden() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_load(
        "127.0.0.1", port, [b"x"], connections=2, duration_s=1, max_requests=10, expect=b""
    )
    assert result.errors == 2
    assert "connection" in result.error_samples[0]


def test_load_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="connections must be at least 1"):
        run_load("127.0.0.1", 1, [b"x"], connections=0, duration_s=1, max_requests=1)
    with pytest.raises(ValueError, match="requests"):
        run_load("127.0.0.1", 1, [], connections=1, duration_s=1, max_requests=1)


# --- measured subprocesses, percentiles, arguments -----------------------------------------


def test_peak_memory_is_each_process_own(tmp_path: Path) -> None:
    env = child_env(tmp_path)
    big = run_measured(
        [sys.executable, "-c", "x = bytearray(300 * 2**20); x[::4096] = b'1' * len(x[::4096])"],
        env=env,
        log=tmp_path / "big.log",
        what="big",
    )
    small = run_measured(
        [sys.executable, "-c", "print('small')"], env=env, log=tmp_path / "s.log", what="small"
    )
    assert big.peak_rss_mb > 300
    assert small.peak_rss_mb < 100  # not the largest child so far (RUSAGE_CHILDREN would be)
    assert small.stdout.strip() == "small"


def test_a_failed_subprocess_names_the_step_and_shows_its_output(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"the step failed \(exit 3.*\n.*went wrong"):
        run_measured(
            [sys.executable, "-c", "import sys; print('went wrong'); sys.exit(3)"],
            env=child_env(tmp_path),
            log=tmp_path / "f.log",
            what="the step",
        )


def test_child_env_roots_every_store_and_drops_the_callers_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADSCORE_DEMO__N_LEADS", "7")
    env = child_env(tmp_path, {"LEADSCORE_SERVING__PORT": "9"})
    assert env["LEADSCORE_PATHS__ROOT"] == str(tmp_path)
    assert "LEADSCORE_DEMO__N_LEADS" not in env
    assert env["LEADSCORE_SERVING__PORT"] == "9"
    assert env["OMP_WAIT_POLICY"] == "passive"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_percentiles_are_nearest_rank() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1 .. 100 ms
    assert percentiles_ms(latencies) == {
        "p50_ms": 50.0,
        "p90_ms": 90.0,
        "p99_ms": 99.0,
        "max_ms": 100.0,
    }
    assert percentiles_ms([0.002]) == {"p50_ms": 2.0, "p90_ms": 2.0, "p99_ms": 2.0, "max_ms": 2.0}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sizes", "100k"], "--sizes: comma-separated lead counts"),
        (["--sizes", "10"], "--sizes: each size must be at least 1000"),
        (["--sections", "online,speed"], "--sections: unknown speed"),
        (["--sizes", "5000", "--online-size", "6000"], "--online-size 6000 is not one of"),
        (["--duration", "-1"], "--duration must be positive"),
    ],
)
def test_bad_arguments_are_named(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_defaults_cover_the_issue_and_quick_is_tiny() -> None:
    full = parse_args([])
    assert full.sizes == [100_000, 1_000_000] and full.online_size == 100_000
    assert full.sections == ["online", "batch", "training", "explain"]
    quick = parse_args(["--quick"])
    assert quick.sizes == [3000] and quick.duration < 5


def test_the_explanation_section_is_rendered_from_its_table() -> None:
    results: dict[str, Any] = {
        "machine": {
            "cores": 2,
            "cpu": "cpu",
            "memory_gb": 1.0,
            "os": "linux",
            "python": "3.11",
            "versions": {"lightgbm": "4.7.0"},
        },
        "started_at": "a",
        "finished_at": "b",
        "wall_s": 60.0,
        "command": "python -m bench.run",
        "quick": False,
        "explain": {
            "table": [
                {"method": "engine", "rows_per_s": 12345.6, "max_abs_diff": 1e-9},
                {"method": "pred_contrib", "rows_per_s": 1000.0, "threads": 1},
            ],
            "meta": {},
        },
    }
    text = render(results)
    assert "## Explanation engine" in text
    assert "| method | rows_per_s | max_abs_diff | threads |" in text
    assert "| engine | 12,346 | 1e-09 |  |" in text
    assert "Quick mode" not in text


# --- the whole harness, quick, on a copy of the session stack ------------------------------


@pytest.mark.slow
def test_quick_run_measures_every_section(stack: Any, tmp_path: Path) -> None:
    # A copy: the freshness events and the bench's API key must not change the shared stack.
    root = tmp_path / "stack"
    shutil.copytree(stack.settings.paths.root, root)
    out = tmp_path / "out"
    code = main(
        [
            "--quick",
            "--stack-root",
            str(root),
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(out),
            "--sections",
            "online,batch,training",
        ]
    )
    results = json.loads((out / "results.json").read_text())
    assert code == 0, results["errors"]
    assert results["errors"] == []
    n_leads = pq.read_metadata(root / "data/warehouse/leads.parquet").num_rows
    assert results["machine"]["cores"] == os.cpu_count()
    assert results["machine"]["versions"]["lightgbm"] == __import__("lightgbm").__version__

    online = results["online"]
    assert online["n_leads"] == n_leads
    for server in ("leadscore", "mlflow"):
        runs = online["runs"][server]
        assert [r["connections"] for r in runs] == [1, 8]
        for r in runs:
            assert r["requests"] > 0 and r["errors"] == 0, r
            assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
            assert r["throughput_rps"] > 0 and r["server_cpu_s"] > 0
    assert [r["connections"] for r in online["ratio"]] == [1, 8]
    # Side by side means the same model on the same leads.
    assert online["same_model"]["leads"] == 20
    assert online["same_model"]["max_abs_probability_diff"] <= 0.01
    assert len(online["targets"]) == 3
    for t in online["targets"]:
        sign, limit = t["limit"].split()
        assert t["met"] == (
            t["measured"] <= float(limit) if sign == "<=" else t["measured"] >= float(limit)
        )
    fresh = online["freshness"]
    assert fresh["events"] == 10
    # The POST's answer already carries what a following score sees.
    assert fresh["scores_changed_in_post_answer"] == fresh["scores_changed_on_next_score"] > 0
    assert fresh["post_events"]["p50_ms"] <= fresh["event_to_fresh_score"]["p50_ms"]

    (batch,) = results["batch"]
    assert batch["scored"] == batch["n_leads"] == n_leads  # --include-closed: every lead
    assert batch["leads_per_s"] > 0 and batch["peak_rss_mb"] > 100

    (training,) = results["training"]
    assert training["examples"] == min(n_leads, training["closed_examples_available"])
    fit = training["fit"]
    assert fit["train_examples"] + fit["calibration_examples"] == training["examples"]
    assert fit["calibration_examples"] > 0
    for phase in (training["build"], fit):
        assert phase["wall_s"] > 0 and phase["peak_rss_mb"] >= training["rss_after_imports_mb"]

    markdown = (out / "results.md").read_text()
    for heading in ("## Online scoring", "## Freshness", "## Batch scoring", "## Training"):
        assert heading in markdown
    assert "**Quick mode**" in markdown
    assert f"Machine: {os.cpu_count()} cores" in markdown
    assert "| leadscore | 1 |" in markdown and "| mlflow | 8 |" in markdown
    # The shared stack was not touched: the bench's key and events went to the copy.
    assert not (stack.settings.paths.root / "bench-scores.parquet").exists()
