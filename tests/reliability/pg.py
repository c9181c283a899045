"""A PostgreSQL cluster of a test's own, which the test may stop and start.

The machine's PostgreSQL (127.0.0.1:5432) is shared by every test and must never stop, so a
test that takes the database away starts a private cluster: ``initdb`` into a temporary
folder, ``pg_ctl start`` on a free loopback port with its socket in that folder, trust
authentication. :meth:`PrivatePostgres.stop` shuts it down (``immediate`` by default: a crash
as far as the clients can tell), :meth:`PrivatePostgres.start` brings it back on the same port
with the same data. The binaries refuse to run as root, so as root they run as the
``postgres`` user (``runuser``) in a folder it owns.

Without the server binaries the test is skipped (failed under ``CI=true``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.services import service_unavailable

INSTALL = "apt-get install postgresql"


def _binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and pg_ctl."""
    found = [
        Path(p).parent
        for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
        if (Path(p).parent / "pg_ctl").exists()
    ]
    if not found:
        return None
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """A private PostgreSQL cluster (see the module docstring).

    Args:
        database: Database created at the first start (besides ``postgres``).
    """

    def __init__(self, database: str = "leadscore") -> None:
        bin_dir = _binaries()
        if bin_dir is None:
            service_unavailable(
                "PostgreSQL server binaries", "no /usr/lib/postgresql/*/bin/initdb", INSTALL
            )
        self.bin_dir = bin_dir
        self.database = database
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root and shutil.which("runuser") is None:
            service_unavailable(
                "runuser", "needed to run PostgreSQL as root", "apt-get install util-linux"
            )
        # Not under pytest's tmp_path: that folder is private to root, and the server runs
        # as postgres.
        self.folder = Path(tempfile.mkdtemp(prefix="leadscore-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        if self._as_root:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.folder, ignore_errors=True)
                service_unavailable("the postgres user", "no such account", INSTALL)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self._initialised = False

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the test database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}"

    def _command(self, *args: str) -> list[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        return ["runuser", "-u", "postgres", "--", *command] if self._as_root else command

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self._command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:1])} failed ({done.returncode}): {done.stderr or done.stdout}"
                f"\nserver log:\n{self.log_tail()}"
            )
        return done

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def start(self) -> None:
        """Start the cluster (initialised and its database created the first time) and wait
        until it accepts connections."""
        if not self._initialised:
            self._run(
                "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                "--no-sync",
            )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"  # a process crash loses nothing without fsync
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
            "start",
        )  # fmt: skip
        self._wait_accepting()
        if not self._initialised:
            with self.connect("postgres") as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"')
            self._initialised = True

    def stop(self, mode: str = "immediate") -> None:
        """Stop the cluster: ``immediate`` (no shutdown checkpoint: what clients see of a
        crash), ``fast`` (connections cut, clean shutdown) or ``smart``."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        """Whether the server accepts connections now."""
        try:
            with self.connect("postgres", timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def connect(self, database: str | None = None, *, timeout: int = 5) -> psycopg.Connection:
        """An autocommit connection to ``database`` (default: the test database)."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            dbname=database or self.database,
            user="postgres",
            connect_timeout=timeout,
            autocommit=True,
        )

    def _wait_accepting(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.running():
            if time.monotonic() > deadline:
                raise RuntimeError(f"private PostgreSQL did not start:\n{self.log_tail()}")
            time.sleep(0.1)

    def cleanup(self) -> None:
        """Stop the cluster if it runs and remove its folder."""
        if self.data.exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                status = subprocess.run(
                    self._command("pg_ctl", "-D", str(self.data), "status"),
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
                if status.returncode == 0:  # running
                    self.stop("fast")
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def private_postgres(database: str = "leadscore") -> Iterator[PrivatePostgres]:
    """A started private cluster with ``database``, stopped and removed at the end."""
    server = PrivatePostgres(database)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
