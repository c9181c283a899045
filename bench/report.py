"""The Markdown rendering of a harness run's results (the JSON is the record)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "yes" if value else "**no**"
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            if value != value:  # NaN
                return ""
            return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _machine(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    v = m["versions"]
    out = [
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, {m['os']}, "
        f"Python {m['python']}.",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        f"Run: {results['started_at']} to {results['finished_at']} "
        f"({results['wall_s'] / 60:.1f} min), `{results['command']}`.",
    ]
    shared = results.get("shared_machine", {})
    if shared.get("busy_other_processes"):
        out.append(
            f"**Shared machine**: {len(shared['busy_other_processes'])} other processes used at "
            "least 20% of a core at the start, end or between sections of this run (load "
            f"average {shared.get('load_average_at_end')} at the end), e.g. "
            + "; ".join(f"`{c}`" for c in shared["busy_other_processes"][:4])
            + ". The figures are pessimistic: a quiet machine gives better ones."
        )
    if results["quick"]:
        out.append(
            "**Quick mode**: tiny data and seconds-long runs, to prove the harness works; "
            "these figures say nothing about speed."
        )
    return out


def render(results: dict[str, Any]) -> str:
    """The whole report: machine and versions, then one table per section."""
    parts = ["# leadscore benchmark", "", *_machine(results), ""]
    online = results.get("online")
    if online:
        parts += [
            f"## Online scoring ({online['leads']:,} leads of the "
            f"{online['n_leads']:,}-lead stack, {online['duration_s_per_run']:g} s per run)",
            "",
            "leadscore: `POST /v1/score` by lead_id (online lookup, probability, band, reasons). "
            f"MLflow: `mlflow models serve` of `{online['mlflow_model_uri']}` "
            "(`--env-manager local`), `dataframe_split` of the lead's "
            f"{online['model_inputs']} feature values fetched beforehand; probability only. "
            "One worker each, loopback, keep-alive. Same model, same leads: the two servers' "
            f"probabilities for {online['same_model']['leads']} leads differ by at most "
            f"{online['same_model']['max_abs_probability_diff']:g} (any difference comes from "
            "the on-demand recency features, which move with the clock between the two reads).",
            "",
            table(
                [
                    "server",
                    "connections",
                    "requests",
                    "errors",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "req/s",
                    "server CPU ms/req",
                    "client CPU s",
                ],
                [
                    [
                        name,
                        r["connections"],
                        r["requests"],
                        r["errors"],
                        r["p50_ms"],
                        r["p90_ms"],
                        r["p99_ms"],
                        r["max_ms"],
                        r["throughput_rps"],
                        r["server_cpu_ms_per_request"],
                        r["client_cpu_s"],
                    ]
                    for name in ("leadscore", "mlflow")
                    for r in online["runs"][name]
                ],
            ),
            "",
            "leadscore / MLflow (below 1: leadscore is faster for latency; above 1: more "
            "throughput):",
            "",
            table(
                ["connections", "p50", "p99", "throughput"],
                [
                    [r["connections"], r["p50_ratio"], r["p99_ratio"], r["throughput_ratio"]]
                    for r in online["ratio"]
                ],
            ),
            "",
            "Issue #8's targets (`POST /v1/score` with reasons, one worker, loopback):",
            "",
            table(
                ["target", "limit", "measured", "met"],
                [[t["target"], t["limit"], t["measured"], t["met"]] for t in online["targets"]],
            ),
            "",
        ]
        f = online["freshness"]
        parts += [
            "## Freshness (`POST /v1/events` to a changed score)",
            "",
            table(
                [
                    "events",
                    "scores changed",
                    "until the POST's answer (p50 / p99 ms)",
                    "until a following score (p50 / p99 ms)",
                ],
                [
                    [
                        f["events"],
                        f"{f['scores_changed_on_next_score']} / {f['events']}",
                        f"{f['post_events']['p50_ms']} / {f['post_events']['p99_ms']}",
                        f"{f['event_to_fresh_score']['p50_ms']} / "
                        f"{f['event_to_fresh_score']['p99_ms']}",
                    ]
                ],
            ),
            "",
        ]
    if results.get("batch"):
        parts += [
            "## Batch scoring (`leadscore score-batch --include-closed`, with reasons)",
            "",
            table(
                ["leads", "scored", "wall s", "leads/s", "peak memory MB"],
                [
                    [b["n_leads"], b["scored"], b["wall_s"], b["leads_per_s"], b["peak_rss_mb"]]
                    for b in results["batch"]
                ],
            ),
            "",
        ]
    if results.get("training"):
        rows = []
        for t in results["training"]:
            rows.append(
                [
                    t["examples"],
                    t["n_leads"],
                    "point-in-time training set",
                    t["build"]["wall_s"],
                    t["build"]["peak_rss_mb"],
                ]
            )
            rows.append(
                [
                    t["examples"],
                    t["n_leads"],
                    f"LightGBM + {t['fit']['calibration']} calibration "
                    f"({t['fit']['train_examples']:,} + "
                    f"{t['fit']['calibration_examples']:,})",
                    t["fit"]["wall_s"],
                    t["fit"]["peak_rss_mb"],
                ]
            )
        parts += [
            "## Training",
            "",
            table(["closed examples", "stack leads", "phase", "wall s", "peak memory MB"], rows),
            "",
        ]
    explain = results.get("explain")
    if explain and explain.get("skipped"):
        parts += ["## Explanation engine", "", f"Skipped: {explain['skipped']}.", ""]
    if explain and explain.get("table"):
        header = list(dict.fromkeys(k for row in explain["table"] for k in row))
        parts += [
            "## Explanation engine (`bench.explain_speed`)",
            "",
            table(header, [[row.get(k) for k in header] for row in explain["table"]]),
            "",
        ]
    if results.get("stacks"):
        parts += [
            "## Stacks",
            "",
            table(
                ["leads", "reused", "built at", "build steps (wall s / peak MB)"],
                [
                    [
                        s["n_leads"],
                        s["reused"],
                        s["built_at"],
                        "; ".join(
                            f"{k} {v.get('wall_s')} s"
                            + (f" / {v['peak_rss_mb']:,.0f} MB" if "peak_rss_mb" in v else "")
                            for k, v in s["build_steps"].items()
                        ),
                    ]
                    for s in results["stacks"]
                ],
            ),
            "",
        ]
    if results.get("errors"):
        parts += ["## Errors", "", *(f"- {e}" for e in results["errors"]), ""]
    return "\n".join(parts)
