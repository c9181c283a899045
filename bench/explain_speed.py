"""Speed and exactness of the explanation engine against LightGBM ``pred_contrib`` and shap.

Usage: ``.venv/bin/python -m bench.explain_speed [--quick] [--out PATH]``

The model is the project's own: :func:`training.model.fit_scorer` on a synthetic frame with every
model feature of the catalog (``leadscore.feature_catalog``: 13 categorical, 4 flags, 70
numeric of which 52 are event counts per window), drawn from one latent intent like the demo
data (counts nested over the 1/7/30/90-day windows, missing values in every kind of column,
categories with effects of their own). The full run trains 300 trees of 31 leaves on 100k leads
(the synthetic frame stands in for the demo pipeline, whose Feast materialisation would take
minutes on its own) and explains the same 100k leads.

Measured in one run, same model, same machine:

* rows/s of LightGBM ``pred_contrib``, of ``shap.TreeExplainer`` (path-dependent) and of the
  engine, at 1 thread and at every core. LightGBM and shap cost the same per row whatever the
  row, so they are timed on the first ``reference_rows`` rows (all rows in ``--quick``); the
  engine explains every row.
* one-lead latency (median, p99) of the engine and of ``pred_contrib`` (1 thread each).
* the largest absolute difference between the engine and ``pred_contrib`` over every row
  explained by both, and between ``shap`` and ``pred_contrib``.

Writes the JSON document (``--out``, default ``bench/results/explain_speed.json``) and prints
its Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import lightgbm as lgb
import numba
import numpy as np
import pandas as pd

from leadscore.feature_catalog import FEATURES_BY_NAME, FeatureSpec
from leadscore.scorer import LeadScorer
from leadscore.treeshap import TreeShapEngine

DEFAULT_OUT = Path("bench/results/explain_speed.json")
FULL = {"rows": 100_000, "trees": 300, "leaves": 31, "reference_rows": 3_000, "leads": 2_000}
QUICK = {"rows": 2_000, "trees": 30, "leaves": 15, "reference_rows": 2_000, "leads": 100}


def model_specs() -> list[FeatureSpec]:
    """Every model feature of the catalog (the ``internal`` columns are no model input)."""
    return [spec for spec in FEATURES_BY_NAME.values() if spec.kind != "internal"]


def lead_frame(n: int, seed: int, specs: list[FeatureSpec]) -> pd.DataFrame:
    """``n`` synthetic leads with every feature of ``specs`` and a ``label``.

    One latent intent per lead drives the behaviour counts (nested windows: the 1-day count is
    part of the 7-day one, and so on) and, with per-category effects, the conversion label.
    """
    rng = np.random.default_rng(seed)
    intent = rng.normal(0.0, 1.0, n)
    logit = -2.2 + 1.1 * intent
    columns: dict[str, Any] = {}
    windows = (1, 7, 30, 90)
    for spec in specs:
        name = spec.name
        if spec.kind == "categorical":
            levels = int(rng.integers(3, 13))
            weights = rng.dirichlet(np.full(levels, 2.0))
            codes = rng.choice(levels, n, p=weights)
            effect = rng.normal(0.0, 0.35, levels)
            logit += effect[codes]
            values = np.array([f"{name}_{c}" for c in range(levels)], dtype=object)[codes]
            values[rng.random(n) < 0.06] = None
            columns[name] = values
        elif spec.kind == "flag":
            flag = (rng.random(n) < 1 / (1 + np.exp(-(intent - 0.3)))).astype(float)
            logit += 0.3 * flag
            flag[rng.random(n) < 0.15] = np.nan
            columns[name] = flag
    for spec in specs:
        name = spec.name
        if spec.kind != "numeric" or name in columns:
            continue
        stem, _, window = name.rpartition("_")
        if window.endswith("d") and window[:-1].isdigit() and int(window[:-1]) in windows:
            if any(f"{stem}_{w}d" in columns for w in windows):
                continue
            rate = np.exp(rng.normal(-1.0, 0.6) + rng.uniform(0.2, 0.9) * intent)
            total = np.zeros(n)
            for days in windows:  # each window adds its own events: nested counts
                total = total + rng.poisson(rate * days / 30)
                columns[f"{stem}_{days}d"] = total.copy()
        else:
            value = np.exp(rng.normal(1.0, 1.0, n) + 0.3 * intent * rng.choice([-1, 1]))
            value[rng.random(n) < 0.1] = np.nan
            columns[name] = value
    frame = pd.DataFrame({spec.name: columns[spec.name] for spec in specs})
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def train_scorer(rows: int, trees: int, leaves: int) -> LeadScorer:
    """The project's scorer (:func:`training.model.fit_scorer`) on synthetic leads."""
    from training.model import fit_scorer

    specs = model_specs()
    return fit_scorer(
        train=lead_frame(rows, 1, specs),
        calibration=lead_frame(max(rows // 5, 1_000), 2, specs),
        specs=specs,
        params={
            "n_estimators": trees,
            "num_leaves": leaves,
            "learning_rate": 0.05,
            "min_child_samples": 20,
        },
        bands={"hot_min": 0.4, "warm_min": 0.15},
        feature_service="lead_scoring_v2",
        seed=0,
        calibration_method="sigmoid",
    )


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and its wall-clock seconds."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def _latency_ms(fn: Callable[[np.ndarray], Any], X: np.ndarray) -> tuple[float, float]:
    """Median and p99 (ms) of ``fn`` on each row of ``X`` alone, after a few warm-up calls."""
    for i in range(min(10, len(X))):
        fn(X[i : i + 1])
    times = []
    for i in range(len(X)):
        start = time.perf_counter()
        fn(X[i : i + 1])
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), float(np.percentile(times, 99))


def _row(
    engine: str,
    threads: int,
    rows: int,
    seconds: float,
    reference_per_s: float | None,
    latency: tuple[float, float] | None,
    max_diff: float | None,
) -> dict[str, Any]:
    per_s = rows / seconds
    return {
        "engine": engine,
        "threads": threads,
        "rows": rows,
        "rows_per_s": round(per_s, 1),
        "x_pred_contrib": round(per_s / reference_per_s, 1) if reference_per_s else None,
        "one_lead_p50_ms": round(latency[0], 4) if latency else None,
        "one_lead_p99_ms": round(latency[1], 4) if latency else None,
        "max_abs_diff": float(f"{max_diff:.3g}") if max_diff is not None else None,
    }


def run(quick: bool) -> dict[str, Any]:
    """Train, explain, time; the JSON document (``table`` rows and ``meta``)."""
    import shap

    size = QUICK if quick else FULL
    load_before = os.getloadavg()
    scorer, fit_seconds = _timed(train_scorer, size["rows"], size["trees"], size["leaves"])
    booster = scorer.booster
    engine, build_seconds = _timed(TreeShapEngine.from_booster, booster)
    X = scorer.encoder.transform(lead_frame(size["rows"], 3, model_specs()).drop(columns="label"))
    reference_rows = min(size["reference_rows"], len(X))
    X_ref = X[:reference_rows]
    leads = X[: size["leads"]]
    cores = os.cpu_count() or 1
    table = []
    for threads in sorted({1, cores}):
        contrib, seconds = _timed(booster.predict, X_ref, pred_contrib=True, num_threads=threads)
        expected = np.asarray(contrib)
        lgb_per_s = reference_rows / seconds
        latency = (
            _latency_ms(lambda x: booster.predict(x, pred_contrib=True, num_threads=1), leads)
            if threads == 1
            else None
        )
        table.append(
            _row("lightgbm pred_contrib", threads, reference_rows, seconds, None, latency, 0.0)
        )
        if threads == 1:
            explainer = shap.TreeExplainer(booster, feature_perturbation="tree_path_dependent")
            with warnings.catch_warnings():  # "output has changed to a list of ndarray"
                warnings.simplefilter("ignore", UserWarning)
                values, seconds = _timed(explainer.shap_values, X_ref)
            diff = float(np.abs(np.asarray(values) - expected[:, :-1]).max())
            table.append(
                _row("shap TreeExplainer", 1, reference_rows, seconds, lgb_per_s, None, diff)
            )
        ours, seconds = _timed(engine.contributions, X, num_threads=threads)
        diff = float(np.abs(ours[:reference_rows] - expected).max())
        latency = (
            _latency_ms(lambda x: engine.contributions(x, num_threads=1), leads)
            if threads == 1
            else None
        )
        table.append(_row("leadscore treeshap", threads, len(X), seconds, lgb_per_s, latency, diff))
    dump = booster.dump_model()
    meta = {
        "quick": quick,
        "cores": cores,
        "numba_threads": int(numba.config.NUMBA_NUM_THREADS),  # type: ignore[attr-defined]
        "numba_threading_layer": numba.threading_layer(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "lightgbm": lgb.__version__,
            "numba": numba.__version__,
            "shap": shap.__version__,
        },
        "model": {
            "trees": len(dump["tree_info"]),
            "max_leaves": max(t["num_leaves"] for t in dump["tree_info"]),
            "features": engine.n_features,
            "paths": engine.n_paths,
            "quadrature_points": engine.max_points,
            "prepared_mb": round(engine.nbytes / 2**20, 2),
            "prepare_seconds": round(build_seconds, 2),
            "fit_seconds": round(fit_seconds, 1),
        },
        "rows": len(X),
        "reference_rows": reference_rows,
        "latency_leads": size["leads"],
        "data": "synthetic leads with every catalog feature (bench.explain_speed.lead_frame)",
    }
    return {"table": table, "meta": meta}


def markdown(document: dict[str, Any]) -> str:
    """The table as Markdown."""
    rows = document["table"]
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join("" if row[k] is None else str(row[k]) for k in keys) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model and data (seconds)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args()
    document = run(args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(markdown(document))
    print(f"\nmodel: {document['meta']['model']}; written to {args.out}")


if __name__ == "__main__":
    main()
