"""Killed mid-way: `leadscore ingest` and `leadscore serve` under SIGKILL lose nothing.

Issue #9, item 3. An ingest of a large CRM export (CSV, tens of thousands of leads and their
events) is killed with SIGKILL part-way through, at moments chosen by what it is doing: while
it reads and validates, while it writes the new tables next to the old ones, and between two
of the renames that put them in place (``strace`` injects the SIGKILL into the second rename
system call of the commit). Afterwards the warehouse and the quarantine hold either the
previous data or the new, every file opens, and ingesting again gives exactly what an
uninterrupted ingest gives.

Then a server is killed (SIGKILL) while clients post events: every acknowledged event is in
the event log once, the SQLite databases pass ``PRAGMA integrity_check``, and a restarted
server scores again.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from bench.common import LEADSCORE, child_env
from leadscore.contracts import TABLES
from leadscore.event_log import LIVE_EVENTS
from leadscore.settings import Settings
from pipelines.ingest import list_quarantine, load_table
from tests.reliability.server import (
    Answer,
    ServiceProcess,
    api_key,
    build_small_stack,
    lead_ids,
    post,
    stack_env,
)

pytestmark = pytest.mark.long

OLD_LEADS = 3_000
NEW_LEADS = 20_000
TABLE_NAMES = ("leads", "events", "stage_changes", "outcomes")

# ---------------------------------------------------------------------------------------------
# Ingest
# ---------------------------------------------------------------------------------------------


def _env(root: Path) -> dict[str, str]:
    return child_env(root)


def _run(root: Path, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [LEADSCORE, *args],
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, (
        f"leadscore {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


def _stores(root: Path) -> list[Path]:
    return [root / "data/warehouse", root / "data/quarantine"]


def fingerprint(root: Path) -> dict[str, str]:
    """SHA-256 of every file of the warehouse and quarantine (relative path -> digest)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in _stores(root)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def visible(prints: dict[str, str]) -> dict[str, str]:
    """The files a reader can open by name: not the hidden temporary files of a commit."""
    return {k: v for k, v in prints.items() if not Path(k).name.startswith(".")}


def stored_files(prints: dict[str, str]) -> tuple[list[str], int]:
    """The visible files but the ingest reports (named by the time), and how many reports."""
    names = sorted(visible(prints))
    reports = [n for n in names if "/_ingest_reports/" in n]
    return [n for n in names if n not in reports], len(reports)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for folder in _stores(root) for p in folder.rglob(".*.tmp"))


def tables(root: Path) -> dict[str, pd.DataFrame]:
    """Every warehouse table and the quarantine, read as the product reads them, in key
    order (a valid Parquet file or the test fails here)."""
    warehouse = root / "data/warehouse"
    out = {}
    for name in TABLE_NAMES:
        frame = load_table(warehouse, name)
        key = list(TABLES[name].key)
        out[name] = frame.sort_values(key, kind="stable").reset_index(drop=True)
    quarantine = list_quarantine(root / "data/quarantine")
    out["quarantine"] = (
        quarantine[["quarantine_id", "table", "source", "row_number", "rules", "status"]]
        .sort_values("quarantine_id")
        .reset_index(drop=True)
    )
    for path in warehouse.glob("*.parquet"):
        pq.read_table(path)  # every visible Parquet file opens
    return out


def assert_same_tables(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    assert set(got) == set(want)
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name], obj=name)


@dataclass
class Exports:
    base: Path  # a root with the old export ingested
    base_prints: dict[str, str]
    new_export: Path
    reference: dict[str, pd.DataFrame]  # old + new ingested without interruption
    reference_prints: dict[str, str]
    ingest_s: float
    renames: list[str]  # rename system calls of the uninterrupted ingest, in order


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    root = tmp_path_factory.mktemp("ingest")
    base = root / "base"
    base.mkdir()
    _run(base, "demo-data", "--n-leads", str(OLD_LEADS), "--seed", "5", "--out", str(root / "old"))
    _run(base, "ingest", "--source-dir", str(root / "old"))
    _run(
        base,
        "demo-data",
        "--n-leads",
        str(NEW_LEADS),
        "--seed",
        "6",
        "--bad-row-share",
        "0.01",
        "--format",
        "csv",
        "--out",
        str(root / "new"),
    )
    (root / "new/truth.parquet").unlink(missing_ok=True)
    reference = _copy(base, root / "reference")
    trace = root / "renames.strace"
    started = time.perf_counter()
    # The uninterrupted ingest, under strace only to list its renames (no fault injected).
    done = subprocess.run(
        [
            "strace", "-f", "-qq", "-o", str(trace),
            "-e", "trace=rename,renameat,renameat2",
            LEADSCORE, "ingest", "--source-dir", str(root / "new"),
        ],
        env=_env(reference), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    ingest_s = time.perf_counter() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    renames = [line for line in trace.read_text().splitlines() if "rename" in line]
    return Exports(
        base=base,
        base_prints=fingerprint(base),
        new_export=root / "new",
        reference=tables(reference),
        reference_prints=fingerprint(reference),
        ingest_s=ingest_s,
        renames=renames,
    )


def _kill_when(root: Path, export: Path, condition: Callable[[], bool], timeout_s: float) -> float:
    """Start the ingest of ``export`` into ``root``; SIGKILL it once ``condition()`` holds.

    Returns:
        The seconds after the start at which it was killed.
    """
    process = subprocess.Popen(
        [LEADSCORE, "ingest", "--source-dir", str(export)],
        env=_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.perf_counter()
    try:
        while not condition():
            assert process.poll() is None, "the ingest ended before the moment to kill it"
            assert time.perf_counter() - started < timeout_s, "the moment to kill never came"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return time.perf_counter() - started


def test_uninterrupted_ingest_changes_the_stores(exports: Exports) -> None:
    # the reference is what the killed ingests must be compared with: it must differ from
    # the old data, or "nothing changed" would pass every test below
    assert visible(exports.reference_prints) != visible(exports.base_prints)
    assert len(exports.reference["leads"]) >= 0.95 * NEW_LEADS  # 1% bad rows quarantined
    assert not leftovers(exports.base)
    print(f"\nuninterrupted ingest of {NEW_LEADS:,} leads: {exports.ingest_s:.1f} s")


@pytest.mark.parametrize("moment", ["validating", "writing"])
def test_ingest_killed_part_way_keeps_the_previous_data_and_a_rerun_completes(
    exports: Exports, tmp_path: Path, moment: str
) -> None:
    # given: a warehouse holding the old export
    root = _copy(exports.base, tmp_path / "root")
    warehouse = root / "data/warehouse"
    if moment == "validating":
        # a third of the way through: reading, coercing and validating
        at = time.perf_counter() + exports.ingest_s / 3

        def condition() -> bool:
            return time.perf_counter() >= at
    else:
        # the first new table is being written next to the old one
        def condition() -> bool:
            return any(warehouse.glob(".*.tmp"))

    # when: the ingest of the new export is killed at that moment
    killed_at = _kill_when(root, exports.new_export, condition, timeout_s=300)

    # then: every store is as it was before, byte for byte, and opens
    after = fingerprint(root)
    print(f"\nkilled {moment} after {killed_at:.1f} s; left behind: {leftovers(root)}")
    assert visible(after) == visible(exports.base_prints)
    assert_same_tables(tables(root), tables(exports.base))

    if moment == "validating":
        return  # the rerun is checked once, after the later kill (one ingest fewer to wait)
    # when: the ingest runs again
    _run(root, "ingest", "--source-dir", str(exports.new_export))

    # then: the same tables and quarantine as the uninterrupted ingest
    assert_same_tables(tables(root), exports.reference)
    assert stored_files(fingerprint(root)) == stored_files(exports.reference_prints)


@dataclass
class RenameKill:
    root: Path
    prints: dict[str, str]
    tables: dict[str, pd.DataFrame]
    commit_renames: list[str]


@pytest.fixture(scope="module")
def killed_between_renames(
    exports: Exports, tmp_path_factory: pytest.TempPathFactory
) -> RenameKill:
    """An ingest SIGKILLed by strace as it enters the second rename of its commit."""
    commit = [line for line in exports.renames if ".tmp" in line]
    assert len(commit) >= 3, exports.renames
    position = exports.renames.index(commit[1]) + 1  # the strace count is 1-based
    root = _copy(exports.base, tmp_path_factory.mktemp("renamekill") / "root")
    done = subprocess.run(
        [
            "strace", "-f", "-qq", "-o", "/dev/null",
            "-e", "trace=rename,renameat,renameat2",
            "-e", f"inject=rename,renameat,renameat2:signal=SIGKILL:when={position}",
            LEADSCORE, "ingest", "--source-dir", str(exports.new_export),
        ],
        env=_env(root), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode != 0, "the ingest was not killed"
    return RenameKill(root, fingerprint(root), tables(root), commit)


def test_ingest_killed_between_two_renames_reruns_to_the_uninterrupted_result(
    killed_between_renames: RenameKill, exports: Exports
) -> None:
    root = killed_between_renames.root
    # every visible file opens (tables() read them all) and the rerun completes
    _run(root, "ingest", "--source-dir", str(exports.new_export))
    assert_same_tables(tables(root), exports.reference)


def test_ingest_killed_between_two_renames_leaves_old_or_new_data(
    killed_between_renames: RenameKill, exports: Exports
) -> None:
    got = killed_between_renames.tables
    old = visible(killed_between_renames.prints) == visible(exports.base_prints)
    new = all(got[n].equals(exports.reference[n]) for n in (*TABLE_NAMES, "quarantine"))
    mixed = {
        n: "new" if got[n].equals(exports.reference[n]) else "old"
        for n in (*TABLE_NAMES, "quarantine")
    }
    assert old or new, f"neither the old nor the new data: {mixed}"


# ---------------------------------------------------------------------------------------------
# A server killed while events arrive
# ---------------------------------------------------------------------------------------------

LiveStack = tuple[Settings, ServiceProcess, dict[str, str], list[int]]


@pytest.fixture(scope="module")
def live_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    root = tmp_path_factory.mktemp("killserve")
    settings = build_small_stack(root / "stack")
    headers = api_key(settings, "score:read", "events:write")
    server = ServiceProcess("serve", stack_env(settings), root / "logs")
    server.start()
    try:
        yield settings, server, headers, lead_ids(settings, 200)
    finally:
        server.stop()


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _batch(prefix: str, n: int, leads: list[int], now: datetime) -> list[dict[str, object]]:
    """Three events of consecutive leads: ``<prefix>-<n>-<j>``."""
    return [
        {
            "event_id": f"{prefix}-{n}-{j}",
            "lead_id": leads[(n + j) % len(leads)],
            "occurred_at": (now - timedelta(seconds=n)).isoformat(),
            "event_type": ("page_view", "email_click", "demo_request")[j],
        }
        for j in range(3)
    ]


def test_concurrent_events_on_the_sqlite_online_store_are_all_stored_and_pushed(
    live_stack: LiveStack,
) -> None:
    _, server, headers, leads = live_stack
    now = datetime.now(UTC) - timedelta(minutes=1)
    answers: list[Answer] = []

    def sender(k: int) -> None:
        for n in range(25):
            batch = _batch(f"concurrent{k}", n, leads[k * 20 : k * 20 + 20], now)
            answers.append(post(server.port, "/v1/events", {"events": batch}, headers))

    # given: eight clients posting batches of events at once
    threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    # then: every batch is stored and pushed (200)
    statuses = {a.status: sum(b.status == a.status for b in answers) for a in answers}
    assert statuses == {200: 8 * 25}, statuses


def test_server_killed_while_events_arrive_keeps_every_acknowledged_event(
    live_stack: LiveStack,
) -> None:
    settings, server, headers, leads = live_stack
    now = datetime.now(UTC) - timedelta(minutes=1)
    acked: dict[str, dict[str, object]] = {}
    sent: dict[str, dict[str, object]] = {}
    answers: list[Answer] = []
    stop = threading.Event()

    def sender() -> None:
        # one client (concurrent pushes on the SQLite online store are the test above)
        n = 0
        while not stop.is_set():
            batch = _batch("kill", n, leads, now)
            n += 1
            sent.update({str(e["event_id"]): e for e in batch})
            answer = post(server.port, "/v1/events", {"events": batch}, headers)
            answers.append(answer)
            if answer.ok:
                acked.update({str(e["event_id"]): e for e in batch})

    # given: a client posting batches of 3 events, one after the other
    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while len(acked) < 90:
            assert time.monotonic() < deadline, answers[-3:]
            assert all(a.ok for a in answers), [a for a in answers if not a.ok][:3]
            time.sleep(0.01)
        # when: the server is killed, most likely in the middle of a request
        assert server.kill() == -signal.SIGKILL
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=60)
    failed = [a for a in answers if not a.ok]
    print(f"\n{len(acked)} events acknowledged, {len(sent)} sent; {len(failed)} requests failed")
    # every request before the kill was acknowledged; after it, no answer at all
    assert failed and all(a.status is None for a in failed), failed[:3]

    # then: the event log and the online store open cleanly
    event_db = Path(settings.event_log_url.removeprefix("sqlite:///"))
    assert _integrity(event_db) == "ok"
    online_db = settings.paths.feature_repo / settings.feast.sqlite_path
    assert _integrity(online_db) == "ok"
    # every acknowledged event is stored once, as sent; nothing that was not sent
    engine = sa.create_engine(settings.event_log_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                LIVE_EVENTS.c.event_id, LIVE_EVENTS.c.lead_id, LIVE_EVENTS.c.event_type
            ).where(LIVE_EVENTS.c.event_id.like("kill-%"))
        ).fetchall()
    engine.dispose()
    stored = [str(r[0]) for r in rows]
    assert len(stored) == len(set(stored))
    assert set(acked) <= set(stored), sorted(set(acked) - set(stored))[:5]
    assert set(stored) <= set(sent)
    assert len(set(stored) - set(acked)) <= 3  # at most the batch the kill cut
    for event_id, lead, event_type in rows:
        assert (lead, event_type) == (sent[event_id]["lead_id"], sent[event_id]["event_type"])
    # the batch cut by the kill was stored whole or not at all (one transaction)
    for batch in {eid.rsplit("-", 1)[0] for eid in stored}:
        assert all(f"{batch}-{j}" in stored for j in range(3)), batch

    # when: the server starts again
    server.start()
    # then: it scores, and acknowledged events sent again are known duplicates
    again = post(server.port, "/v1/score", {"lead_id": leads[0]}, headers)
    assert again.status == 200, again
    some = [acked[eid] for eid in sorted(acked)[:3]]
    resent = post(server.port, "/v1/events", {"events": some}, headers)
    assert resent.status == 200, resent
    assert (resent.body["accepted"], resent.body["duplicates"]) == (0, 3)
