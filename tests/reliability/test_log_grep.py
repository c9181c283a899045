"""No secret, personal value or request body in the output of a whole run (issue #9, security
item 5).

``leadscore demo-data`` and ``leadscore run-all`` run on a small demo in a folder of their own,
the second one going on to serve the API with JSON logs at DEBUG. The test sends it every
kind of request (scores by id and from attributes, batches, events, outcomes, admin routes,
the report login), some with good keys, some with unknown, revoked or malformed keys and some
with bad bodies, then stops it. Everything the two commands wrote to stdout and stderr, and
every log file under the folder, is then searched for the API keys presented and their hashes,
the leads' personal values taken from the demo data and the requests' bodies.

The search is shown to work first: it finds the same values where they are meant to be (the
demo data, the key database, the event log).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.common import REPO
from bench.servers import free_port, http_status
from leadscore.auth import (
    ADMIN,
    EVENTS_WRITE,
    OUTCOMES_WRITE,
    REPORTS_READ,
    SCORE_READ,
    ApiKeyStore,
)
from tests.reliability.server import json_lines

pytestmark = [pytest.mark.long]

LEADSCORE = str(REPO / ".venv" / "bin" / "leadscore")
N_LEADS = 2000
END_DATE = "2026-10-31"


def _env(root: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    env.update(
        OMP_WAIT_POLICY="passive",
        GX_ANALYTICS_ENABLED="false",
        LEADSCORE_PATHS__ROOT=str(root),
        LEADSCORE_DEMO__N_LEADS=str(N_LEADS),
        LEADSCORE_DEMO__END_DATE=END_DATE,
        # The whole loop with a lighter training (no backtest or baseline), to stay quick.
        LEADSCORE_TRAINING__N_ESTIMATORS="100",
        LEADSCORE_TRAINING__BACKTEST_FOLDS="0",
        LEADSCORE_TRAINING__BASELINE="false",
        LEADSCORE_TRAINING__BOOTSTRAP_SAMPLES="10",
        LEADSCORE_SERVING__PORT=str(port),
        LEADSCORE_SERVING__LOG_FORMAT="json",
        LEADSCORE_SERVING__LOG_LEVEL="DEBUG",
        LEADSCORE_SERVING__RELOAD_SECONDS="2",
        LEADSCORE_SERVING__MAX_BODY_BYTES="20000",
    )
    return env


def _request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _found(needles: Iterable[str], haystack: str) -> list[str]:
    """The needles that occur in the haystack (the one search every check uses)."""
    return sorted({n for n in needles if n and n in haystack})


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


@dataclass
class Sent:
    """What the requests carried."""

    lead_ids: set[int] = field(default_factory=set)
    personal: list[str] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)  # the event topic's first: it is stored
    raw: list[str] = field(default_factory=list)
    presented_keys: list[str] = field(default_factory=list)
    statuses: list[tuple[str, int, int]] = field(default_factory=list)


def _exercise(root: Path, port: int) -> Sent:
    """Every kind of request, good and bad; returns what they carried."""
    token = secrets.token_hex(6)
    sent = Sent(
        markers=[
            f"topic-{token}",
            f"evt-{token}",
            f"utm-{token}",
            f"badjson-{token}",
            f"oversize-{token}",
            f"plain-{token}",
            f"enum-{token}",
            f"when-{token}",
            f"form-{token}",
        ]
    )
    topic, event_id, utm, bad_json, oversize, plain, enum, when, form = sent.markers
    name, phone, email = "Jane Q. Markerson", "+49 151 2345 6789", f"jane.{token}@example.org"
    sent.personal = [name, phone, email]
    keys = ApiKeyStore(f"sqlite:///{root / 'data' / 'live' / 'events.db'}")
    admin, _ = keys.create("grep-admin", [ADMIN])
    scorer, _ = keys.create("grep-score", [SCORE_READ])
    events_key, _ = keys.create("grep-events", [EVENTS_WRITE])
    outcomes_key, _ = keys.create("grep-outcomes", [OUTCOMES_WRITE])
    reports_key, _ = keys.create("grep-reports", [REPORTS_READ])
    revoked, record = keys.create("grep-revoked", [SCORE_READ])
    keys.revoke(record.prefix)
    unknown = "ls_" + secrets.token_urlsafe(24)
    malformed = f"key-{secrets.token_hex(16)}"
    sent.presented_keys = [admin, scorer, events_key, outcomes_key, reports_key, revoked]
    sent.presented_keys += [unknown, malformed]

    leads = pd.read_csv(root / "data" / "raw" / "leads.csv", dtype=str)
    firms = leads[leads["email_domain"].fillna("").str.startswith("firm")]
    lead_ids = [int(x) for x in firms["lead_id"].iloc[:20]]
    sent.lead_ids = set(lead_ids)
    inline_id = 880_000_000_000 + int(token[:4], 16)
    sent.markers.append(str(inline_id))
    now = datetime.now(UTC)

    def bearer(key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}", "content-type": "application/json"}

    def send(
        what: str,
        expected: int,
        method: str,
        path: str,
        headers: dict[str, str],
        body: Any = None,
    ) -> None:
        raw: bytes | None = None
        if isinstance(body, bytes):
            raw = body
        elif body is not None:
            raw = json.dumps(body).encode()
        if raw is not None:
            sent.raw.append(raw.decode(errors="replace"))
        status = _request(port, method, path, raw, headers)
        sent.statuses.append((what, status, expected))

    for lead_id in lead_ids:
        send("score", 200, "POST", "/v1/score", bearer(scorer), {"lead_id": lead_id})
    send(
        "score by X-API-Key",
        200,
        "POST",
        "/v1/score",
        {"x-api-key": scorer, "content-type": "application/json"},
        {"lead_id": lead_ids[0]},
    )
    inline = {
        "source_channel": "website",
        "email_domain": str(firms["email_domain"].iloc[0]),
        "utm_source": utm,
        "utm_campaign": f"{name} {phone} {email}",
        "country": "DE",
        "age": 41,
    }
    send(
        "score inline",
        200,
        "POST",
        "/v1/score",
        bearer(scorer),
        {"lead_id": inline_id, "lead": inline},
    )
    send(
        "batch",
        200,
        "POST",
        "/v1/score/batch",
        bearer(scorer),
        {"lead_ids": [*lead_ids[:10], f"id-{email}", -1]},
    )
    events = [
        {
            "event_id": f"{event_id}-{i}",
            "lead_id": lead_id,
            "occurred_at": (now - timedelta(minutes=30 + i)).isoformat(),
            "event_type": "page_view",
            "topic": topic,
        }
        for i, lead_id in enumerate(lead_ids[:3])
    ]
    send("events", 200, "POST", "/v1/events", bearer(events_key), {"events": events})
    future = {**events[0], "event_id": f"{event_id}-late", "occurred_at": "2100-01-01T00:00:00Z"}
    send("event in the future", 422, "POST", "/v1/events", bearer(events_key), {"events": [future]})
    bad_time = {**events[0], "event_id": f"{event_id}-bad", "occurred_at": when}
    send("event, bad time", 422, "POST", "/v1/events", bearer(events_key), {"events": [bad_time]})
    outcome = {
        "lead_id": lead_ids[5],
        "closed_at": now.isoformat(),
        "result": "won",
        "amount": 98765.43,
    }
    send("outcomes", 200, "POST", "/v1/outcomes", bearer(outcomes_key), {"outcomes": [outcome]})
    for path in (
        f"/v1/leads/{lead_ids[0]}/score",
        f"/v1/leads/{lead_ids[0]}/scores",
        f"/v1/leads/{lead_ids[0]}/explain?since={now:%Y-%m-%dT%H:%M:%SZ}",
        "/v1/model",
    ):
        send(path, 200, "GET", path, bearer(scorer))
    for path in (
        "/metrics",
        f"/v1/admin/scores/export?lead_id={lead_ids[0]}",
        "/v1/admin/webhooks",
    ):
        send(path, 200, "GET", path, bearer(admin))
    send("reload", 200, "POST", "/v1/admin/reload", bearer(admin), {})
    form_headers = {"content-type": "application/x-www-form-urlencoded"}
    send(
        "report login",
        303,
        "POST",
        "/reports/login",
        form_headers,
        f"key={reports_key}&next=/reports/".encode(),
    )
    send(
        "report page",
        200,
        "GET",
        "/reports/bands",
        {"cookie": f"leadscore_reports={reports_key}"},
    )
    send(
        "report login, bad key",
        401,
        "POST",
        "/reports/login",
        form_headers,
        f"key={unknown}&n={form}".encode(),
    )
    # bad keys
    send("unknown key", 401, "POST", "/v1/score", bearer(unknown), {"lead_id": lead_ids[1]})
    send("malformed key", 401, "POST", "/v1/score", bearer(malformed), {"lead_id": lead_ids[1]})
    send("revoked key", 401, "POST", "/v1/score", bearer(revoked), {"lead_id": lead_ids[1]})
    send(
        "unknown X-API-Key",
        401,
        "GET",
        "/v1/model",
        {"x-api-key": unknown},
    )
    send("scope missing", 403, "POST", "/v1/admin/reload", bearer(scorer), {})
    # bad bodies
    send(
        "bad JSON",
        422,
        "POST",
        "/v1/score",
        bearer(scorer),
        f'{{"lead_id": 12, "note": "{bad_json}'.encode(),
    )
    send(
        "extra fields",
        422,
        "POST",
        "/v1/score",
        bearer(scorer),
        {"lead_id": lead_ids[2], "email": email, "phone": phone, "name": name},
    )
    send("lead id not a number", 422, "POST", "/v1/score", bearer(scorer), {"lead_id": email})
    send(
        "unknown channel",
        422,
        "POST",
        "/v1/score",
        bearer(scorer),
        {"lead_id": inline_id, "lead": {"source_channel": enum}},
    )
    send(
        "body too large",
        413,
        "POST",
        "/v1/score",
        bearer(scorer),
        {"lead_id": 1, "padding": oversize * 2000},
    )
    send(
        "not JSON",
        422,
        "POST",
        "/v1/score",
        {**bearer(scorer), "content-type": "text/plain"},
        f"lead {plain} {name}".encode(),
    )
    send("unknown lead", 404, "POST", "/v1/score", bearer(scorer), {"lead_id": inline_id + 1})
    return sent


def test_a_whole_run_writes_no_key_personal_value_or_request_body_anywhere(tmp_path):
    root = tmp_path / "run"
    out, err = tmp_path / "run-all.stdout", tmp_path / "run-all.stderr"
    port = free_port()
    env = _env(root, port)
    # given: demo data as CSV (so that the search can be shown its values in the files) ...
    generated = subprocess.run(
        [LEADSCORE, "demo-data", "--format", "csv"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert generated.returncode == 0, generated.stderr[-3000:]
    # ... and the whole loop, serving at the end, its output captured
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [LEADSCORE, "--verbose", "run-all"], env=env, cwd=REPO, stdout=stdout, stderr=stderr
        )
    try:
        deadline = time.monotonic() + 240
        while http_status(port, "/ready") != 200:
            assert process.poll() is None, _text(err)[-3000:]
            assert time.monotonic() < deadline, _text(err)[-3000:]
            time.sleep(0.5)
        sent = _exercise(root, port)
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C does: uvicorn shuts down cleanly
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    stdout_text, stderr_text = _text(out), _text(err)
    log_files = {
        p: _text(p) for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in {".log", ".out"}
    }
    everything = "\n".join([stdout_text, stderr_text, *log_files.values()])
    # every request got the answer it was meant to get
    assert [(w, s) for w, s, e in sent.statuses if s != e] == [], sent.statuses
    # and the server logged them, as JSON lines
    access = [e for e in json_lines(stderr_text) if e.get("logger") == "leadscore.access"]
    assert len(access) >= len(sent.statuses), len(access)

    # the needles
    leads = pd.read_csv(root / "data" / "raw" / "leads.csv", dtype=str)
    used = leads[leads["lead_id"].astype(int).isin(sent.lead_ids)]
    # company e-mail domains name the company (webmail domains are common words: left out)
    domains = {d for d in used["email_domain"].dropna() if d.startswith("firm")}
    assert len(domains) >= 5, domains
    with sqlite3.connect(root / "data" / "live" / "events.db") as db:
        stored_hashes = {row[0] for row in db.execute("SELECT key_hash FROM api_keys")}
    presented = set(sent.presented_keys)
    key_needles = presented | {hashlib.sha256(k.encode()).hexdigest() for k in presented}
    key_needles |= stored_hashes
    personal = domains | set(sent.personal)

    # the search finds them where they are meant to be
    assert _found(domains, _text(root / "data" / "raw" / "leads.csv")) == sorted(domains)
    # (the database file with its write-ahead log, where recent rows may still be)
    auth_db = "".join(_text(p) for p in sorted((root / "data" / "live").glob("events.db*")))
    assert _found(stored_hashes, auth_db) == sorted(stored_hashes)
    assert _found(sent.markers[:1], auth_db)  # the event's topic is stored verbatim
    bodies = "\n".join(sent.raw)
    assert _found(sent.personal, bodies) == sorted(sent.personal)
    assert _found(sent.markers, bodies) == sorted(sent.markers)
    # the demo keys run-all prints are on its curl and report log-in lines only (by design)
    printed = [line for line in stdout_text.splitlines() if "ls_" in line]
    demo_keys = {
        word.strip("'")
        for line in printed
        for word in line.split()
        if word.strip("'").startswith("ls_")
    }
    assert demo_keys and all(("curl " in line or "log in" in line) for line in printed), printed

    # then: none of them anywhere else
    assert _found(key_needles, everything) == []
    assert _found(demo_keys, stderr_text + "\n".join(log_files.values())) == []
    assert _found(personal, everything) == []
    assert _found(sent.markers, everything) == []
    assert _found([b for b in sent.raw if len(b) > 20], everything) == []
