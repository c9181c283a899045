"""Jobs the harness runs as subprocesses inside a stack (settings from ``LEADSCORE_...``).

    python -m bench.jobs features --leads 1,2,3 --out payload.json
    python -m bench.jobs training --examples 100000 --out training.json

``features`` reads the leads' online features of the champion's input columns (what a caller
of ``mlflow models serve`` has to fetch from the feature store before every call);
``training`` times the point-in-time training set and the fit + calibration of a given number
of closed examples, each phase with its own peak memory (the kernel's high-water mark of
resident memory, reset before each phase through ``/proc/self/clear_refs``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any


def _reset_peak() -> None:
    """Reset this process's peak resident memory (VmHWM) to its current size (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _json_value(value.item())
    return value


def features(lead_ids: list[int], out: Path) -> None:
    """Write ``{"columns": [...], "rows": {lead_id: [...]}}``: the champion's inputs per lead."""
    from mlflow.models import get_model_info

    from leadscore.settings import get_settings
    from leadscore.store import open_store
    from leadscore.tracking import connect_tracking
    from serving.service import OnlineFeatures

    settings = get_settings()
    connect_tracking(settings.tracking_uri)
    uri = f"models:/{settings.mlflow.model_name}@{settings.mlflow.champion_alias}"
    info = get_model_info(uri)
    if info.signature is None:
        raise RuntimeError(f"{uri} has no signature: its input columns are unknown")
    columns = list(info.signature.inputs.input_names())
    lookup = OnlineFeatures(open_store(settings, serving=True), settings.feast.feature_service)
    rows: dict[str, list[Any]] = {}
    for lead_id in lead_ids:
        row = lookup(lead_id)
        if row is not None:
            rows[str(lead_id)] = [_json_value(row.get(c)) for c in columns]
    out.write_text(json.dumps({"model_uri": uri, "columns": columns, "rows": rows}))


def training(n_examples: int, out: Path, seed: int = 0) -> None:
    """Time the point-in-time training set and the fit + calibration of ``n_examples``."""
    import numpy as np

    from leadscore.feature_catalog import MODEL_FEATURES
    from leadscore.settings import get_settings
    from pipelines.feature_store import data_as_of, open_store
    from pipelines.ingest import load_outcomes, load_table
    from pipelines.train_flow import model_params
    from training.dataset import fetch_training_features, label_snapshots
    from training.model import fit_scorer

    settings = get_settings()
    cfg = settings.training
    result: dict[str, Any] = {"requested_examples": n_examples, "rss_after_imports_mb": _rss_mb()}

    # Phase 1: the point-in-time training set (labels from the warehouse, then Feast's join).
    _reset_peak()
    start = time.perf_counter()
    warehouse = settings.paths.warehouse
    tables = {name: load_table(warehouse, name) for name in ("leads", "stage_changes", "events")}
    tables["outcomes"] = load_outcomes(warehouse, settings.event_log_url)
    examples, _ = label_snapshots(
        leads=tables["leads"],
        stage_changes=tables["stage_changes"],
        outcomes=tables["outcomes"],
        snapshot_days=cfg.snapshot_days,
        horizon_days=cfg.horizon_days,
        as_of=data_as_of(tables),
        target=cfg.target,
    )
    del tables
    result["closed_examples_available"] = len(examples)
    if len(examples) > n_examples:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(examples), size=n_examples, replace=False))
        examples = examples.iloc[keep].reset_index(drop=True)
    frame = fetch_training_features(
        store=open_store(settings),
        examples=examples,
        feature_service=settings.feast.feature_service,
    )
    result["examples"] = len(frame)
    result["features"] = len(MODEL_FEATURES)
    result["build"] = {
        "wall_s": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(_peak_mb(), 1),
    }

    # Phase 2: LightGBM (the production parameters) and its calibration on the later slice,
    # split as training does (calibration_share of what is not the test share).
    _reset_peak()
    start = time.perf_counter()
    frame = frame.sort_values("event_timestamp", kind="stable", ignore_index=True)
    cut = int(len(frame) * (1 - cfg.calibration_share / (1 - cfg.test_share)))
    scorer = fit_scorer(
        train=frame.iloc[:cut],
        calibration=frame.iloc[cut:],
        specs=list(MODEL_FEATURES),
        params=model_params(cfg),
        bands={"hot_min": settings.bands.hot_min, "warm_min": settings.bands.warm_min},
        feature_service=settings.feast.feature_service,
        seed=cfg.seed,
        calibration_method=cfg.calibration,
    )
    result["fit"] = {
        "wall_s": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(_peak_mb(), 1),
        "train_examples": cut,
        "calibration_examples": len(frame) - cut,
        "calibration": scorer.calibration_method,
        "n_estimators": cfg.n_estimators,
    }
    out.write_text(json.dumps(result, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs")
    sub = parser.add_subparsers(dest="job", required=True)
    f = sub.add_parser("features", help="online features of leads, as the champion's inputs")
    f.add_argument("--leads", required=True, help="comma-separated lead ids")
    f.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("training", help="time the training set and the fit + calibration")
    t.add_argument("--examples", type=int, required=True)
    t.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.job == "features":
        features([int(x) for x in args.leads.split(",") if x], args.out)
    else:
        if args.examples < 1:
            parser.error(f"--examples must be at least 1, not {args.examples}")
        training(args.examples, args.out)


if __name__ == "__main__":
    main()
