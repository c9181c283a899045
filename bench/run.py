"""The benchmark harness: ``make bench`` (``python -m bench.run``).

Builds (or reuses) demo stacks under a work folder through the ``leadscore`` CLI, then
measures, side by side with the alternatives where there is one:

1. online scoring: ``leadscore serve`` against ``mlflow models serve`` of the same registered
   model, at 1 and 8 connections (:mod:`bench.online`);
2. freshness: ``POST /v1/events`` to a changed score (:mod:`bench.freshness`);
3. batch scoring with reasons, per stack size (:mod:`bench.offline`);
4. training: the point-in-time training set and LightGBM + calibration, per size;
5. the explanation engine, when ``bench/explain_speed.py`` is present.

Writes ``results.json`` and ``results.md`` to the output folder. ``--quick`` uses tiny data
and second-long runs: it proves the harness works (``make test`` runs it) and says nothing
about speed.

    python -m bench.run                           # the full run (see the README for times)
    python -m bench.run --sizes 100000            # only the 100k-lead stack
    python -m bench.run --sections online         # only the online section
    python -m bench.run --quick --work /tmp/w --out /tmp/r
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import json
import os
import shlex
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    BenchError,
    busy_processes,
    child_env,
    machine,
    run_measured,
    write_json,
)
from bench.offline import run_batch, run_training
from bench.online import run_online
from bench.report import render
from bench.stack import Stack, ensure_stack, existing_stack

SECTIONS = ("online", "batch", "training", "explain")
DEFAULT_SIZES = (100_000, 1_000_000)
QUICK_SIZE = 3_000


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(x.replace("_", "")) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes: comma-separated lead counts, e.g. 100000,1000000, not {text!r}"
        ) from None
    if not sizes or sizes[0] < 1000:
        raise argparse.ArgumentTypeError(f"--sizes: each size must be at least 1000: {text!r}")
    return sizes


def _sections(text: str) -> list[str]:
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"--sections: unknown {', '.join(unknown) or '(none)'}; choose from "
            f"{', '.join(SECTIONS)}"
        )
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help="Demo lead counts of the stacks; batch scores each, training uses as many closed "
        "examples (default: 100000,1000000; quick: 3000).",
    )
    parser.add_argument(
        "--online-size",
        type=int,
        default=None,
        help="The stack the servers run on (default: the smallest size).",
    )
    parser.add_argument(
        "--sections",
        type=_sections,
        default=list(SECTIONS),
        help=f"Comma-separated, from {', '.join(SECTIONS)} (default: all).",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="Seconds per online load run (default 20; quick 1.5).",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=200_000,
        help="Most requests per online load run (default 200000).",
    )
    parser.add_argument(
        "--leads",
        type=int,
        default=None,
        help="Distinct leads the load generator cycles through (default 2000).",
    )
    parser.add_argument(
        "--freshness-events",
        type=int,
        default=None,
        help="Events of the freshness section (default 200; quick 10).",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=REPO / "bench" / "work",
        help="Where the stacks are built and every command logs (default bench/work, git-ignored).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results",
        help="Where results.json and results.md go (default bench/results).",
    )
    parser.add_argument(
        "--stack-root",
        type=Path,
        default=None,
        help="Run every section on this already built stack (a settings root with data/ and "
        "mlflow/) instead of building stacks; --sizes is then its lead count.",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="Build the stacks again even when the work folder holds them.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Tiny data, second-long runs: proves the harness, not the speed.",
    )
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    quick = args.quick
    args.sizes = args.sizes or ([QUICK_SIZE] if quick else list(DEFAULT_SIZES))
    args.online_size = args.online_size or args.sizes[0]
    if args.online_size not in args.sizes:
        parser.error(f"--online-size {args.online_size} is not one of --sizes {args.sizes}")
    args.duration = args.duration or (1.5 if quick else 20.0)
    args.leads = args.leads or (200 if quick else 2000)
    args.freshness_events = args.freshness_events or (10 if quick else 200)
    for name in ("duration", "max_requests", "leads", "freshness_events"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


def _explain(args: argparse.Namespace, log_dir: Path) -> dict[str, Any] | None:
    """Run ``bench.explain_speed.run(quick)`` in its own process, if the module has it."""
    spec = importlib.util.find_spec("bench.explain_speed")
    source = Path(spec.origin) if spec is not None and spec.origin else None
    # Looked up in the source, not imported: the module loads LightGBM and numba.
    if source is None or not any(
        isinstance(node, ast.FunctionDef) and node.name == "run"
        for node in ast.parse(source.read_text()).body
    ):
        print("  bench/explain_speed.py has no run(quick): section skipped", flush=True)
        return {"skipped": "bench/explain_speed.py has no run(quick)"}
    out = log_dir / "explain.json"
    code = (
        "import json; from bench.explain_speed import run; "
        f"json.dump(run(quick={args.quick!r}), open({str(out)!r}, 'w'), default=str)"
    )
    root = (args.work / "explain").resolve()
    root.mkdir(parents=True, exist_ok=True)
    measured = run_measured(
        [sys.executable, "-c", code],
        env=child_env(root),
        log=log_dir / "explain.log",
        what="bench.explain_speed",
    )
    result: dict[str, Any] = json.loads(out.read_text())
    if not isinstance(result.get("table"), list):
        raise BenchError("bench.explain_speed.run() returned no 'table' list")
    result["process"] = measured.to_dict()
    return result


def _batch(stack: Callable[[int, bool], Stack], n: int, log_dir: Path) -> dict[str, Any]:
    return run_batch(stack(n, False), log_dir)


def _training(stack: Callable[[int, bool], Stack], n: int, log_dir: Path) -> dict[str, Any]:
    return run_training(stack(n, False), n, log_dir)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every chosen section; a failed section is recorded in ``errors`` and the rest go on."""
    started = time.perf_counter()
    log_dir = args.work / "logs"  # every command's output (git-ignored with the work folder)
    log_dir.mkdir(parents=True, exist_ok=True)
    print("checking whether other processes use the cores ...", flush=True)
    busy = busy_processes()
    results: dict[str, Any] = {
        "command": " ".join(["python -m bench.run", *(shlex.quote(a) for a in args.argv)]),
        "quick": args.quick,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "sizes": args.sizes,
            "online_size": args.online_size,
            "sections": args.sections,
            "duration_s": args.duration,
            "max_requests": args.max_requests,
            "leads": args.leads,
            "freshness_events": args.freshness_events,
        },
        "stacks": [],
        "errors": [],
    }
    stacks: dict[int, Stack] = {}
    if args.stack_root is not None:
        given = existing_stack(args.stack_root)
        stacks[given.n_leads] = given
        args.sizes = [given.n_leads]
        args.online_size = given.n_leads
        results["settings"].update(sizes=args.sizes, online_size=args.online_size)

    lock = threading.Lock()  # one build per stack, even with sections running side by side
    failed: dict[int, BenchError] = {}

    def stack(n: int, online: bool) -> Stack:
        with lock:
            if n in failed:
                raise failed[n]
            if n not in stacks or (online and not stacks[n].online):
                print(f"stack of {n:,} leads", flush=True)
                try:
                    stacks[n] = ensure_stack(
                        args.work,
                        n,
                        online=online,
                        rebuild=args.rebuild and n not in stacks,
                        log_dir=log_dir,
                    )
                except BenchError as e:
                    failed[n] = e
                    raise
            return stacks[n]

    def online() -> dict[str, Any]:
        s = stack(args.online_size, online=True)
        return {
            "n_leads": s.n_leads,
            **run_online(
                s,
                log_dir,
                duration_s=args.duration,
                max_requests=args.max_requests,
                n_leads=args.leads,
                freshness_events=args.freshness_events,
            ),
        }

    # (section, name, what to run), in the order of the report.
    jobs: list[tuple[str, str, Callable[[], Any]]] = []
    if "online" in args.sections:
        jobs.append(("online", "online scoring and freshness", online))
    for n in args.sizes if "batch" in args.sections else []:
        jobs.append(("batch", f"batch scoring, {n:,} leads", partial(_batch, stack, n, log_dir)))
    for n in args.sizes if "training" in args.sections else []:
        jobs.append(
            ("training", f"training, {n:,} examples", partial(_training, stack, n, log_dir))
        )
    if "explain" in args.sections:
        jobs.append(("explain", "explanation engine", partial(_explain, args, log_dir)))

    def attempt(name: str, fn: Callable[[], Any]) -> Any:
        print(name, flush=True)
        try:
            return fn()
        except (BenchError, OSError, ValueError, KeyError) as e:
            traceback.print_exc()
            results["errors"].append(f"{name}: {e}")
            return None

    if args.quick:
        # Quick figures judge nothing, so the sections run side by side to finish sooner; the
        # stacks are built first (materializing rewrites the Feast registry other jobs read).
        for n in args.sizes:
            with contextlib.suppress(BenchError):  # the sections report it
                stack(n, n == args.online_size and "online" in args.sections)
        with ThreadPoolExecutor(max_workers=len(jobs) or 1) as pool:
            outcomes = list(pool.map(lambda job: attempt(job[1], job[2]), jobs))
    else:
        outcomes = []
        for _, name, fn in jobs:
            outcomes.append(attempt(name, fn))
            busy += busy_processes()  # who else used the cores, section by section
    for (key, _, _), outcome in zip(jobs, outcomes, strict=True):
        if key in ("batch", "training"):
            results.setdefault(key, [])
            if outcome is not None:
                results[key].append(outcome)
        else:
            results[key] = outcome
    results["stacks"] = [s.describe() for s in stacks.values()]
    busy += busy_processes()
    results["shared_machine"] = {
        # Each command once, in the order first seen.
        "busy_other_processes": list(dict.fromkeys(busy)),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["wall_s"] = round(time.perf_counter() - started, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    write_json(args.out / "results.json", results)
    (args.out / "results.md").write_text(render(results) + "\n")
    print(f"\nwritten: {args.out / 'results.json'} and {args.out / 'results.md'}")
    if results["errors"]:
        print("errors:\n" + "\n".join(results["errors"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
