"""Start, probe and stop the servers the harness measures (each one a subprocess of ours)."""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from bench.common import REPO, BenchError

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """Status of ``GET path`` on loopback, or None when nothing answers."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


@dataclass
class Server:
    """A server subprocess listening on loopback."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    _log_file: IO[bytes]
    started_at: float = field(default_factory=time.perf_counter)

    def tail(self, lines: int = 25) -> str:
        self._log_file.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, path: str, timeout_s: float = 300.0) -> float:
        """Wait until ``GET path`` answers 200; returns the seconds since the server started.

        Raises:
            BenchError: The process ended, or did not get ready in time (log tail shown).
        """
        start = time.perf_counter()
        while time.perf_counter() - start < timeout_s:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.name} ended with exit {self.process.returncode} before it was "
                    f"ready (log {self.log}):\n{self.tail()}"
                )
            if http_status(self.port, path) == 200:
                return time.perf_counter() - self.started_at
            time.sleep(0.25)
        raise BenchError(f"{self.name} not ready after {timeout_s:.0f} s:\n{self.tail()}")

    def _tree(self) -> list[psutil.Process]:
        try:
            parent = psutil.Process(self.process.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu_s(self) -> float:
        """CPU seconds used so far by the server and its child processes."""
        total = 0.0
        for p in self._tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def rss_mb(self) -> float:
        """Resident memory of the server and its child processes now."""
        total = 0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20

    def stop(self) -> None:
        """Terminate the server (and its children), waiting for each; kill after 10 s."""
        tree = self._tree()
        for p in reversed(tree):
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(tree, timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_file.close()


def start_server(
    name: str, args: Sequence[str], *, env: Mapping[str, str], port: int, log: Path
) -> Server:
    """Start a server subprocess with its output going to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("wb")
    process = subprocess.Popen(
        list(args), env=dict(env), cwd=REPO, stdout=out, stderr=subprocess.STDOUT
    )
    return Server(name=name, port=port, process=process, log=log, _log_file=out)


def post_json(
    conn: http.client.HTTPConnection, path: str, body: bytes, headers: Mapping[str, str]
) -> tuple[int, Any]:
    """POST a JSON body on a kept-alive connection; the status and the decoded answer."""
    import json

    conn.request("POST", path, body=body, headers={"content-type": "application/json", **headers})
    response = conn.getresponse()
    data = response.read()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data.decode(errors="replace")
