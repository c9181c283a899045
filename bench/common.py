"""What every section of the harness shares: measured subprocesses, percentiles, the machine.

The harness runs the product as a user would (the ``leadscore`` CLI and servers, as
subprocesses, with ``LEADSCORE_...`` settings in their environment) and measures each
subprocess's wall time and peak resident memory (``os.wait4``: the peak of that process, not
of everything the harness started).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LEADSCORE = str(BIN / "leadscore")
MLFLOW = str(BIN / "mlflow")

# Libraries whose version changes the figures.
VERSIONS = (
    "leadscore",
    "feast",
    "mlflow",
    "lightgbm",
    "fastapi",
    "uvicorn",
    "starlette",
    "pydantic",
    "numpy",
    "pandas",
    "duckdb",
)


# A measured job is stopped when the machine's available memory falls below this.
MIN_AVAILABLE_MB = 1500


class BenchError(RuntimeError):
    """A step of the harness failed; the message names the step and shows its output."""


@dataclass(frozen=True)
class Measured:
    """One finished subprocess: its wall time, peak memory and output."""

    args: list[str]
    wall_s: float
    peak_rss_mb: float
    stdout: str

    def to_dict(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall_s, 2), "peak_rss_mb": round(self.peak_rss_mb, 1)}


def child_env(root: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a product subprocess whose every store lives under ``root``."""
    env = {
        k: v
        for k, v in os.environ.items()
        # The harness's own settings never leak into the stack it measures.
        if not k.startswith("LEADSCORE_")
    }
    env.update(
        {
            "LEADSCORE_PATHS__ROOT": str(root),
            "OMP_WAIT_POLICY": "passive",
            "GX_ANALYTICS_ENABLED": "false",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "PYTHONUNBUFFERED": "1",
            # Tools that start further commands by name (mlflow runs `uvicorn`) find the venv's.
            "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
            # Rich would otherwise wrap the CLI's output at 80 columns in a pipe.
            "COLUMNS": "200",
        }
    )
    env.update(extra or {})
    return env


# A forked child starts with the parent's resident size as its peak, and exec keeps that peak
# (Linux carries the old image's high-water mark into ru_maxrss). So the measured command is
# started by this small trampoline: its peak is its own from a ~10 MB start, not the harness's.
_TRAMPOLINE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    what: str,
    timeout_s: float = 4 * 3600,
) -> Measured:
    """Run a command to its end and measure its wall time and its own peak resident memory.

    Its output goes to ``log`` (and is returned).

    Raises:
        BenchError: The command failed or ran past ``timeout_s`` (the log's tail is shown).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    peak_file = log.with_suffix(".maxrss")
    peak_file.unlink(missing_ok=True)
    start = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, str(peak_file), *args],
            env=dict(env),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout stops all of it
        )
        deadline = start + timeout_s
        while process.poll() is None:
            problem = None
            if time.perf_counter() > deadline:
                problem = f"still running after {timeout_s:.0f} s"
            elif (available := psutil.virtual_memory().available / 2**20) < MIN_AVAILABLE_MB:
                # The machine is shared: stop our job before the kernel's OOM killer picks one.
                problem = f"the machine's available memory fell to {available:,.0f} MB"
            if problem:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise BenchError(f"{what}: {problem}; stopped (log {log})")
            time.sleep(0.2)
    wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    if process.returncode != 0:
        peak_file.unlink(missing_ok=True)
        tail = "\n".join(text.splitlines()[-25:])
        raise BenchError(f"{what} failed (exit {process.returncode}, log {log}):\n{tail}")
    # ru_maxrss is in KiB on Linux.
    peak_kib = int(peak_file.read_text())
    peak_file.unlink()
    return Measured(list(args), wall, peak_kib / 1024, text)


def percentiles_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of latencies in seconds, in milliseconds (nearest-rank, no numpy)."""
    if not latencies_s:
        return {
            "p50_ms": float("nan"),
            "p90_ms": float("nan"),
            "p99_ms": float("nan"),
            "max_ms": float("nan"),
        }
    ordered = sorted(latencies_s)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))] * 1000

    return {
        "p50_ms": round(rank(0.50), 3),
        "p90_ms": round(rank(0.90), 3),
        "p99_ms": round(rank(0.99), 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def busy_processes(min_cpu_percent: float = 20.0, sample_s: float = 0.5) -> list[str]:
    """Other processes using at least ``min_cpu_percent`` of a core now (the machine may be
    shared): their command lines, shortened."""
    own = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
    procs = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if p.pid not in own]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(sample_s)
    busy = []
    for p in procs:
        try:
            cpu = p.cpu_percent(None)
        except psutil.Error:
            continue
        if cpu >= min_cpu_percent:
            cmd = " ".join(p.info.get("cmdline") or [p.info.get("name") or "?"])
            busy.append(cmd[:100])
    return busy


def machine() -> dict[str, Any]:
    """Cores, processor, memory, Python and library versions, load: printed with every figure."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in VERSIONS},
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
