"""The stack a benchmark runs against: demo data -> ingest -> features -> model, via the CLI.

Each size gets its own root folder (``<work>/stack-<n_leads>``) holding every store (raw data,
warehouse, Feast repo and online store, MLflow registry, event log). A finished build writes
``bench-stack.json``; a later run reuses the folder when that file names the same size (and
says so), so the expensive build is paid once. The online store is only materialized for the
stack the API is benchmarked on.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import LEADSCORE, BenchError, child_env, run_measured

MARKER = "bench-stack.json"
# The registered model has the production LightGBM settings; the evaluation extras (backtest,
# baseline, many bootstrap resamples) are not what a benchmark stack is for.
TRAIN_ENV = {
    "LEADSCORE_TRAINING__BACKTEST_FOLDS": "0",
    "LEADSCORE_TRAINING__BASELINE": "false",
    "LEADSCORE_TRAINING__BOOTSTRAP_SAMPLES": "20",
}


@dataclass
class Stack:
    """A built stack: where it lives, its size, and how its build went."""

    root: Path
    n_leads: int
    online: bool
    reused: bool
    steps: dict[str, dict[str, float]] = field(default_factory=dict)
    built_at: str = ""

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return child_env(self.root, {**TRAIN_ENV, **(extra or {})})

    def describe(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "n_leads": self.n_leads,
            "online_store_materialized": self.online,
            "reused": self.reused,
            "built_at": self.built_at,
            "build_steps": self.steps,
        }


def _write_marker(stack: Stack) -> None:
    data = {
        "root": str(stack.root),
        "n_leads": stack.n_leads,
        "online": stack.online,
        "steps": stack.steps,
        "built_at": stack.built_at,
    }
    (stack.root / MARKER).write_text(json.dumps(data, indent=2) + "\n")


def _step(stack: Stack, name: str, args: list[str], log_dir: Path) -> None:
    print(f"  stack {stack.n_leads:,}: {name} ...", flush=True)
    measured = run_measured(
        [LEADSCORE, *args],
        env=stack.env({"LEADSCORE_DEMO__N_LEADS": str(stack.n_leads)}),
        log=log_dir / f"stack-{stack.n_leads}-{name.replace(' ', '-')}.log",
        what=f"building the {stack.n_leads:,}-lead stack: leadscore {' '.join(args)}",
    )
    stack.steps[name] = measured.to_dict()
    print(f"    {measured.wall_s:.1f} s, peak {measured.peak_rss_mb:,.0f} MB", flush=True)


def ensure_stack(work: Path, n_leads: int, *, online: bool, rebuild: bool, log_dir: Path) -> Stack:
    """A stack of ``n_leads`` demo leads under ``work``: reused when one is there, else built.

    Args:
        work: The harness's work folder.
        n_leads: Demo leads to generate.
        online: Materialize the online store (needed to serve the API).
        rebuild: Build from scratch even when a stack of that size exists.
        log_dir: Where each step's output is written.

    Raises:
        BenchError: A step failed (its log's tail is in the message).
    """
    root = (work / f"stack-{n_leads}").resolve()
    marker = root / MARKER
    if marker.exists() and not rebuild:
        data = json.loads(marker.read_text())
        # The registry and the Feast repo hold absolute paths: a moved stack is rebuilt.
        if data.get("n_leads") == n_leads and data.get("root", str(root)) == str(root):
            stack = Stack(
                root,
                n_leads,
                bool(data.get("online")),
                reused=True,
                steps=data.get("steps", {}),
                built_at=data.get("built_at", ""),
            )
            print(f"  stack {n_leads:,}: reusing {root} (built {stack.built_at})", flush=True)
            if online and not stack.online:
                _materialize(stack, log_dir)
            return stack
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    stack = Stack(root, n_leads, online=False, reused=False)
    started = time.perf_counter()
    for name, args in (
        ("demo-data", ["demo-data", "--n-leads", str(n_leads)]),
        ("ingest", ["ingest"]),
        ("features build", ["features", "build"]),
        ("features apply", ["features", "apply"]),
        ("train", ["train"]),
    ):
        _step(stack, name, args, log_dir)
    stack.built_at = datetime.now(UTC).isoformat(timespec="seconds")
    stack.steps["total"] = {"wall_s": round(time.perf_counter() - started, 1)}
    _write_marker(stack)
    if online:
        _materialize(stack, log_dir)
    return stack


def existing_stack(root: Path) -> Stack:
    """A stack built elsewhere (e.g. the tests' session stack), used as it is.

    Raises:
        BenchError: ``root`` holds no validated leads or no MLflow registry.
    """
    root = root.resolve()
    leads = root / "data/warehouse/leads.parquet"
    for needed in (leads, root / "mlflow/mlflow.db", root / "data/feature_repo/online_store.db"):
        if not needed.exists():
            raise BenchError(f"--stack-root {root}: {needed.relative_to(root)} is missing")
    import pyarrow.parquet as pq

    n_leads = pq.read_metadata(leads).num_rows
    print(f"  using the stack in {root} ({n_leads:,} leads) as it is", flush=True)
    return Stack(root, n_leads, online=True, reused=True, built_at="(given by --stack-root)")


def _materialize(stack: Stack, log_dir: Path) -> None:
    _step(stack, "features materialize", ["features", "materialize"], log_dir)
    stack.online = True
    _write_marker(stack)
