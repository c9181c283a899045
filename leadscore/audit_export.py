"""Export of the served-score audit log: CSV, JSON lines or Parquet.

Each exported row is one served score: ``lead_id``, ``scored_at`` (ISO 8601, UTC),
``model_name``, ``model_version``, ``probability``, ``band``, ``request_id``, and the
``reasons`` and ``features`` used, as JSON (a text column in CSV and Parquet, objects in JSON
lines). Rows are streamed from the log in batches, so an export of any size runs in bounded
memory. ``leadscore audit export`` writes a file; ``GET /v1/admin/scores/export`` streams the
same rows over HTTP. Imports no pandas.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from leadscore.score_log import ServedScore, json_safe

ExportFormat = Literal["csv", "jsonl", "parquet"]
COLUMNS = (
    "lead_id",
    "scored_at",
    "model_name",
    "model_version",
    "probability",
    "band",
    "request_id",
    "reasons",
    "features",
)
MEDIA_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson"}


def export_row(score: ServedScore, *, nested: bool) -> dict[str, Any]:
    """One exported row; ``nested``: reasons and features as objects, else as JSON text."""
    reasons, features = json_safe(score.reasons), json_safe(score.features)
    return {
        "lead_id": score.lead_id,
        "scored_at": score.scored_at.isoformat(),
        "model_name": score.model_name,
        "model_version": score.model_version,
        "probability": score.probability,
        "band": score.band,
        "request_id": score.request_id,
        "reasons": reasons if nested else json.dumps(reasons, sort_keys=True),
        "features": features if nested else json.dumps(features, sort_keys=True),
    }


def stream_text(scores: Iterable[ServedScore], fmt: Literal["csv", "jsonl"]) -> Iterator[str]:
    """The export as chunks of text (a header first for CSV), one chunk per score."""
    if fmt == "jsonl":
        for score in scores:
            yield json.dumps(export_row(score, nested=True), sort_keys=True) + "\n"
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for score in scores:
        writer.writerow(export_row(score, nested=False))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


class _Counted:
    """Iterates over scores and counts them."""

    def __init__(self, scores: Iterable[ServedScore]) -> None:
        self._scores = scores
        self.n = 0

    def __iter__(self) -> Iterator[ServedScore]:
        for score in self._scores:
            self.n += 1
            yield score


def format_of(path: Path, fmt: str | None = None) -> ExportFormat:
    """The export format: ``fmt`` if given, else from the file's suffix.

    Raises:
        ValueError: Neither names csv, jsonl or parquet.
    """
    chosen = fmt or {
        ".csv": "csv",
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".parquet": "parquet",
    }.get(path.suffix.lower(), "")
    if chosen not in ("csv", "jsonl", "parquet"):
        raise ValueError(
            f"export format {chosen or path.suffix!r} unknown: use csv, jsonl or parquet "
            "(--format or the file's suffix)"
        )
    return chosen  # type: ignore[return-value]


def write_export(
    scores: Iterable[ServedScore], path: Path, fmt: ExportFormat, *, batch_rows: int = 50_000
) -> int:
    """Write the scores to ``path`` (written to a temporary file, then renamed, so a failed
    export never leaves half a file); returns how many rows were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    rows = 0
    try:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pa.schema(
                [
                    ("lead_id", pa.int64()),
                    ("scored_at", pa.string()),
                    ("model_name", pa.string()),
                    ("model_version", pa.string()),
                    ("probability", pa.float64()),
                    ("band", pa.string()),
                    ("request_id", pa.string()),
                    ("reasons", pa.string()),
                    ("features", pa.string()),
                ]
            )
            with pq.ParquetWriter(partial, schema) as writer:
                batch: list[dict[str, Any]] = []
                for score in scores:
                    batch.append(export_row(score, nested=False))
                    if len(batch) >= batch_rows:
                        writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                        rows += len(batch)
                        batch = []
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                rows += len(batch)
        else:
            counted = _Counted(scores)
            with partial.open("w", encoding="utf-8", newline="") as out:
                out.writelines(stream_text(counted, fmt))
            rows = counted.n
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return rows
