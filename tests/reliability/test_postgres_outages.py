"""PostgreSQL outages under a real server (issue #9, reliability item 2).

Each test runs ``leadscore serve`` (uvicorn, a subprocess) on the session's demo stack with one
of its databases on a PostgreSQL cluster of the test's own (:mod:`tests.reliability.pg`), stops
that cluster while requests keep coming, and starts it again:

- the score log (the audit log of served scores) on PostgreSQL: every score answered during
  the outage is in the audit table once the database is back, exactly once;
- the MLflow tracking store and registry on PostgreSQL: a reload during the outage fails with
  a clear 503 while scoring goes on with the same version; once the database is back, a newly
  promoted version is served after a reload.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from bench.common import REPO
from bench.servers import Server, free_port, start_server
from leadscore.auth import ADMIN, ApiKeyStore
from pipelines.ingest import load_table
from tests.reliability.pg import private_postgres
from tests.reliability.server import json_lines

pytestmark = [pytest.mark.long]

LEADSCORE = str(REPO / ".venv" / "bin" / "leadscore")


def leadscore_env(root: Path, **settings: str) -> dict[str, str]:
    """The environment of a ``leadscore`` subprocess on the stack under ``root``.

    ``settings`` are ``LEADSCORE_`` variables without the prefix (``SERVING__PORT="8001"``);
    the caller's own ``LEADSCORE_`` variables are left out.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    env.update(
        OMP_WAIT_POLICY="passive",
        GX_ANALYTICS_ENABLED="false",
        LEADSCORE_PATHS__ROOT=str(root),
        LEADSCORE_SERVING__LOG_FORMAT="json",
    )
    env.update({f"LEADSCORE_{k}": v for k, v in settings.items()})
    return env


@contextmanager
def serving(root: Path, log: Path, **settings: str) -> Iterator[Server]:
    """``leadscore serve`` on a free port (no periodic reload), ready; stopped at the end."""
    port = free_port()
    server = start_server(
        "leadscore serve",
        [LEADSCORE, "serve", "--port", str(port)],
        env=leadscore_env(root, SERVING__RELOAD_SECONDS="0", **settings),
        port=port,
        log=log,
    )
    try:
        server.wait_ready("/ready", timeout_s=180)
        yield server
    finally:
        server.stop()


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, Any]:
    """One request on a fresh connection: the status and the decoded JSON answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(
            method, path, body=data, headers={"content-type": "application/json", **(headers or {})}
        )
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


@dataclass(frozen=True)
class Answer:
    request_id: str
    lead_id: int
    status: int
    body: Any
    sent: float  # time.monotonic() before the request
    done: float  # and once answered


class ScoreLoad:
    """Client threads sending ``POST /v1/score`` (a fresh request id each) until stopped."""

    def __init__(
        self, port: int, headers: dict[str, str], lead_ids: list[int], threads: int = 3
    ) -> None:
        self.port = port
        self.headers = headers
        self.lead_ids = lead_ids
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def _run(self, worker: int) -> None:
        i = worker
        while not self._stop.is_set():
            lead_id = self.lead_ids[i % len(self.lead_ids)]
            i += len(self._threads)
            request_id = f"outage-{uuid.uuid4().hex}"
            sent = time.monotonic()
            try:
                status, body = call(
                    self.port,
                    "POST",
                    "/v1/score",
                    {"lead_id": lead_id},
                    {**self.headers, "x-request-id": request_id},
                )
            except OSError as e:  # no answer at all: as much a failure as a 5xx
                with self._lock:
                    self.errors.append(f"{request_id}: {type(e).__name__}: {e}")
                continue
            with self._lock:
                self.answers.append(
                    Answer(request_id, lead_id, status, body, sent, time.monotonic())
                )

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def wait_for_more(self, n: int, timeout: float = 120.0) -> None:
        """Wait until ``n`` requests sent from now on are answered."""
        since = time.monotonic()
        wait_until(lambda: self.answered_since(since) >= n, timeout, f"{n} more answers")

    def answered_since(self, moment: float) -> int:
        with self._lock:
            return sum(1 for a in self.answers if a.sent >= moment)

    def __enter__(self) -> ScoreLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)


def _known_leads(stack: Any, n: int) -> list[int]:
    """Leads the warehouse holds (so the online store knows them)."""
    leads = load_table(stack.settings.paths.warehouse, "leads")
    return [int(x) for x in leads["lead_id"].iloc[:n]]


def _admin_key(auth_url: str) -> dict[str, str]:
    key, _ = ApiKeyStore(auth_url).create("reliability", [ADMIN])
    return {"authorization": f"Bearer {key}"}


def _log_messages(server: Server) -> list[dict[str, Any]]:
    """The server's JSON log lines (others, such as a traceback's lines, are skipped)."""
    return json_lines(server.log.read_text(errors="replace"))


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not in /metrics")


# -- the audit log's database goes away ------------------------------------------------------
def test_every_score_served_while_the_audit_database_is_down_is_recorded_once(stack, tmp_path):
    # given: the API with its score log on a private PostgreSQL (API keys in SQLite, so that
    # only the audit log depends on it), under steady scoring load
    auth_url = f"sqlite:///{tmp_path / 'auth.db'}"
    headers = _admin_key(auth_url)
    leads = _known_leads(stack, 60)
    with (
        private_postgres("audit") as pg,
        serving(
            stack.settings.paths.root,
            tmp_path / "server.log",
            EVENTS__LOG_URL=pg.url,
            AUTH__DB_URL=auth_url,
        ) as server,
    ):
        with ScoreLoad(server.port, headers, leads) as load:
            load.wait_for_more(40)
            # when: the database stops (as a crash: no shutdown checkpoint)
            pg.stop("immediate")
            down_at = time.monotonic()
            assert not pg.running()
            # the writer meets the outage, and scoring goes on through it
            wait_until(
                lambda: any(
                    "could not record" in e.get("message", "") for e in _log_messages(server)
                ),
                60,
                "the score log writer reports the outage",
            )
            load.wait_for_more(50)
            up_at = time.monotonic()
            pg.start()
            load.wait_for_more(40)
        answers = list(load.answers)
        assert not load.errors, load.errors[:5]
        # then: every request was answered with a score, also during the outage
        refused = [(a.status, a.body) for a in answers if a.status != 200]
        assert not refused, refused[:5]
        during = [a for a in answers if a.sent >= down_at and a.done <= up_at]
        assert len(during) >= 50, len(during)
        # and once the database is back, every served score is in the audit table, once
        with pg.connect() as conn:

            def recorded() -> int:
                (count,) = conn.execute("SELECT count(*) FROM served_scores").fetchall()[0]
                return int(count)

            wait_until(
                lambda: recorded() >= len(answers),
                90,
                f"{len(answers)} served scores recorded (have {recorded()})",
            )
            rows = conn.execute(
                "SELECT request_id, lead_id, model_version, probability FROM served_scores"
            ).fetchall()
        status, metrics = call(server.port, "GET", "/metrics", headers=headers)
    copies = Counter(row[0] for row in rows)
    assert [rid for rid, n in copies.items() if n > 1] == []
    assert set(copies) == {a.request_id for a in answers}
    stored = {row[0]: row[1:] for row in rows}
    for a in answers:
        lead_id, version, probability = stored[a.request_id]
        assert (lead_id, version) == (a.lead_id, a.body["model_version"])
        assert probability == pytest.approx(a.body["probability"], abs=1e-9)
    # nothing was dropped or given up, and the server said what happened
    assert status == 200
    assert _metric(metrics, "leadscore_score_log_dropped") == 0
    assert _metric(metrics, "leadscore_score_log_failed_writes") == 0
    assert _metric(metrics, "leadscore_score_log_queued") == 0
    assert _metric(metrics, "leadscore_score_log_written") == len(answers)


# -- the model registry's database goes away ------------------------------------------------
def test_a_reload_while_the_registry_database_is_down_fails_clearly_and_scoring_goes_on(
    stack, tmp_path
):
    root = stack.settings.paths.root
    lead_id = _known_leads(stack, 1)[0]
    with private_postgres("mlflow") as pg:
        # given: a version trained into an MLflow registry on the private PostgreSQL (the
        # champion) and a second version of the same model, and the API serving the champion
        quick = {
            "MLFLOW__TRACKING_URI": pg.url,
            "MLFLOW__ARTIFACT_DIR": str(tmp_path / "artifacts"),
            "MLFLOW__EXPERIMENT": "reliability",
            "TRAINING__N_ESTIMATORS": "100",
            "TRAINING__BACKTEST_FOLDS": "0",
            "TRAINING__BASELINE": "false",
            "TRAINING__BOOTSTRAP_SAMPLES": "10",
        }
        trained = subprocess.run(
            [LEADSCORE, "train"],
            env=leadscore_env(root, **quick),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert trained.returncode == 0, trained.stderr[-3000:]
        registry = MlflowClient(tracking_uri=pg.url, registry_uri=pg.url)
        # (registered from version 1's stored artifacts: a second training would only cost time)
        second = registry.create_model_version(
            "leadscore",
            registry.get_model_version_download_uri("leadscore", "1"),
            run_id=registry.get_model_version("leadscore", "1").run_id,
        )
        assert second.version in ("2", 2)
        auth_url = f"sqlite:///{tmp_path / 'auth.db'}"
        headers = _admin_key(auth_url)
        settings = {"MLFLOW__TRACKING_URI": pg.url, "AUTH__DB_URL": auth_url}
        with serving(root, tmp_path / "server.log", **settings) as server:
            status, first = call(server.port, "POST", "/v1/score", {"lead_id": lead_id}, headers)
            assert status == 200 and first["model_version"] == "1", first

            # when: the registry's database stops and a reload is asked for
            pg.stop("immediate")
            reload_status, refused = call(server.port, "POST", "/v1/admin/reload", {}, headers)
            # then: a clear 503 that says the old model still serves, and why
            assert reload_status == 503, refused
            assert refused["error"] == "not_ready"
            assert refused["detail"].startswith("reload failed, serving as before: "), refused
            # scoring keeps answering with the same version (also a second reload later)
            for _ in range(20):
                status, again = call(
                    server.port, "POST", "/v1/score", {"lead_id": lead_id}, headers
                )
                assert status == 200, again
                assert again["model_version"] == "1"
                assert again["probability"] == pytest.approx(first["probability"])
            assert call(server.port, "POST", "/v1/admin/reload", {}, headers)[0] == 503
            ready_status, ready = call(server.port, "GET", "/ready")
            assert ready_status == 200 and ready["model_version"] == "1", ready

            # when: the database is back and version 2 is promoted
            pg.start()
            promoted = subprocess.run(
                [LEADSCORE, "promote", "--version", "2", "--force", "--reason", "outage test"],
                env=leadscore_env(root, **settings),
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert promoted.returncode == 0, promoted.stderr[-3000:]
            reload_status, reloaded = call(server.port, "POST", "/v1/admin/reload", {}, headers)
            # then: the reload succeeds and the new version serves
            assert reload_status == 200, reloaded
            assert reloaded == {"model_name": "leadscore", "model_version": "2", "changed": True}
            status, after = call(server.port, "POST", "/v1/score", {"lead_id": lead_id}, headers)
            assert status == 200 and after["model_version"] == "2", after
        errors = [e for e in _log_messages(server) if e.get("level") == "ERROR"]
    assert any("model reload failed, serving as before" in e["message"] for e in errors), errors


def test_an_unreachable_registry_is_reported_as_such_not_as_a_missing_model():
    from serving.service import aliased_version

    with private_postgres("mlflow") as pg:
        # given: a registry on PostgreSQL that holds no model: the missing alias is named
        with pytest.raises(LookupError, match="run `leadscore train` first"):
            aliased_version(pg.url, "leadscore", "champion")
        # when: its database is down
        pg.stop("immediate")
        with pytest.raises(Exception) as down:  # whatever it raises: its message is the question
            aliased_version(pg.url, "leadscore", "champion")
    # then: the error says the registry cannot be reached, not that no model was trained
    message = str(down.value)
    assert "leadscore train" not in message, message
    assert "registry" in message and "cannot be reached" in message, message
