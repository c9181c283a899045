"""The explanation benchmark runs in quick mode and reports what the harness reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import explain_speed

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_measures_every_engine_and_agrees_with_pred_contrib(tmp_path: Path) -> None:
    # when: the command, as the harness and a person run it
    out = tmp_path / "explain.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.explain_speed", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    # then: it prints the Markdown table and writes the JSON document
    assert "| engine | threads |" in done.stdout
    assert "leadscore treeshap" in done.stdout
    document = json.loads(out.read_text())
    table, meta = document["table"], document["meta"]
    # one flat row per engine and thread setting, the same keys in each
    keys = set(table[0])
    assert all(set(row) == keys for row in table)
    assert {"engine", "threads", "rows_per_s", "x_pred_contrib", "max_abs_diff"} <= keys
    engines = {(row["engine"], row["threads"]) for row in table}
    for threads in {1, meta["cores"]}:
        assert ("lightgbm pred_contrib", threads) in engines
        assert ("leadscore treeshap", threads) in engines
    assert ("shap TreeExplainer", 1) in engines
    for row in table:
        assert row["rows_per_s"] > 0
        assert row["max_abs_diff"] <= 1e-6
        if row["engine"] == "leadscore treeshap":
            assert row["x_pred_contrib"] > 0
            assert row["rows"] == meta["rows"] == explain_speed.QUICK["rows"]
    ours = next(r for r in table if r["engine"] == "leadscore treeshap" and r["threads"] == 1)
    assert 0 < ours["one_lead_p50_ms"] <= ours["one_lead_p99_ms"]
    # the model and the machine are described
    assert meta["quick"] is True
    assert meta["model"]["trees"] == explain_speed.QUICK["trees"]
    assert meta["model"]["paths"] > 0
    assert set(meta["versions"]) == {"python", "numpy", "lightgbm", "numba", "shap"}
