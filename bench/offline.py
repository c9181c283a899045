"""Batch scoring and training, each a measured subprocess inside a stack.

- Batch: ``leadscore score-batch --include-closed --output <file>``: every lead of the stack
  scored from the offline feature tables with the champion, with its band and reasons,
  written to Parquet. Leads per second are over the whole command (process start, model load,
  feature read, scoring and explaining, writing); peak memory is the process's.
- Training: ``python -m bench.jobs training``: the point-in-time training set (labels, then
  Feast's historical join) and LightGBM + calibration of the given number of closed examples,
  each phase timed with its own peak memory.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from bench.common import LEADSCORE, BenchError, run_measured
from bench.stack import Stack


def run_batch(stack: Stack, log_dir: Path) -> dict[str, Any]:
    """Time ``leadscore score-batch`` over every lead of the stack (with reasons)."""
    out = stack.root / "bench-scores.parquet"
    out.unlink(missing_ok=True)  # upserting into an older file would add a read and a merge
    measured = run_measured(
        [LEADSCORE, "score-batch", "--include-closed", "--output", str(out)],
        env=stack.env(),
        log=log_dir / f"score-batch-{stack.n_leads}.log",
        what=f"leadscore score-batch on {stack.n_leads:,} leads",
    )
    found = re.search(r"scored (\d+) leads", measured.stdout)
    if found is None:
        raise BenchError(f"score-batch did not say how many leads it scored:\n{measured.stdout}")
    scored = int(found.group(1))
    import pyarrow.parquet as pq

    columns = pq.read_schema(out).names
    if "reasons" not in columns:
        raise BenchError(f"{out} has no reasons column: {columns}")
    print(
        f"    {scored:,} leads in {measured.wall_s:.1f} s "
        f"({scored / measured.wall_s:,.0f} leads/s), peak {measured.peak_rss_mb:,.0f} MB",
        flush=True,
    )
    return {
        "n_leads": stack.n_leads,
        "scored": scored,
        **measured.to_dict(),
        "leads_per_s": round(scored / measured.wall_s, 1),
    }


def run_training(stack: Stack, n_examples: int, log_dir: Path) -> dict[str, Any]:
    """Time the training set and the fit + calibration of ``n_examples`` closed examples."""
    out = log_dir / f"training-{stack.n_leads}-{n_examples}.json"
    measured = run_measured(
        [
            sys.executable,
            "-m",
            "bench.jobs",
            "training",
            "--examples",
            str(n_examples),
            "--out",
            str(out),
        ],
        env=stack.env(),
        log=log_dir / f"training-{stack.n_leads}-{n_examples}.log",
        what=f"training benchmark ({n_examples:,} examples, {stack.n_leads:,}-lead stack)",
    )
    result: dict[str, Any] = json.loads(out.read_text())
    result["n_leads"] = stack.n_leads
    # The job resets its peak before each phase (the kernel's ru_maxrss then only covers the
    # last one), so the whole process's peak is the larger phase's.
    process = measured.to_dict()
    process["peak_rss_mb"] = max(result["build"]["peak_rss_mb"], result["fit"]["peak_rss_mb"])
    result["process"] = process
    b, f = result["build"], result["fit"]
    print(
        f"    {result['examples']:,} examples: training set {b['wall_s']} s "
        f"(peak {b['peak_rss_mb']:,.0f} MB), fit + calibration {f['wall_s']} s "
        f"(peak {f['peak_rss_mb']:,.0f} MB)",
        flush=True,
    )
    return result
