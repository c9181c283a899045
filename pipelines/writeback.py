"""Hand scores back to the CRM: a CSV/Parquet file or a PostgreSQL table, upserted by lead.

A scores frame has one row per lead (see :data:`SCORE_COLUMNS`):

- ``lead_id`` (int64), ``probability`` (float in [0, 1]), ``band`` (``hot``/``warm``/``cold``),
- ``reasons``: a JSON array of the top reasons, each ``{"feature", "label", "contribution"}``,
- ``model_version`` (str) and ``scored_at`` (``datetime64[us, UTC]``).

Both writers *upsert* by ``lead_id``: a lead scored again gets its new row, leads not in the
frame keep theirs. Files are replaced atomically (a reader sees the old or the new file); the
PostgreSQL table is upserted in one transaction (``COPY`` into a temporary table, then
``INSERT ... ON CONFLICT (lead_id) DO UPDATE``), so a failure leaves it as it was.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.sources import SourceError, postgres_sqlalchemy_url, read_csv, redact_url

__all__ = [
    "BANDS",
    "FILE_SUFFIXES",
    "SCORE_COLUMNS",
    "WritebackError",
    "validate_scores",
    "write_scores_file",
    "write_scores_postgres",
]

#: Columns of a scores frame and their pandas dtypes.
SCORE_COLUMNS: dict[str, str] = {
    "lead_id": "int64",
    "probability": "float64",
    "band": "object",
    "reasons": "object",
    "model_version": "object",
    "scored_at": "datetime64[us, UTC]",
}
BANDS: tuple[str, ...] = ("hot", "warm", "cold")
FILE_SUFFIXES: tuple[str, ...] = (".csv", ".parquet")

#: Column definitions of the PostgreSQL table (``lead_id`` is the primary key).
_PG_COLUMNS: dict[str, str] = {
    "lead_id": "bigint PRIMARY KEY",
    "probability": "double precision NOT NULL",
    "band": "text NOT NULL",
    "reasons": "jsonb NOT NULL",
    "model_version": "text NOT NULL",
    "scored_at": "timestamptz NOT NULL",
}
_CSV_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class WritebackError(ValueError):
    """Scores cannot be written: a bad scores frame, destination or database error."""


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _examples(values: pd.Series, limit: int = 5) -> str:
    shown = [repr(v) for v in values.head(limit).tolist()]
    more = f" (and {len(values) - limit} more)" if len(values) > limit else ""
    return ", ".join(shown) + more


def validate_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Check a scores frame and return a copy with exactly :data:`SCORE_COLUMNS`, typed.

    Extra columns are dropped. Naive ``scored_at`` values are taken as UTC.

    Raises:
        WritebackError: A required column is missing, ``lead_id`` is null, not an integer or
            repeated, ``probability`` is null or outside [0, 1], ``band`` is not one of
            :data:`BANDS`, ``reasons`` is not a JSON array, ``model_version`` is empty or
            ``scored_at`` is not a timestamp. The message names the column and the values.
    """
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise WritebackError(
            f"scores frame lacks required column(s) {', '.join(missing)}; "
            f"expected {', '.join(SCORE_COLUMNS)}"
        )
    frame = scores[list(SCORE_COLUMNS)].reset_index(drop=True)

    lead_id = frame["lead_id"]
    if lead_id.isna().any():
        raise WritebackError(f"lead_id is null in {int(lead_id.isna().sum())} row(s)")
    if pd.api.types.is_integer_dtype(lead_id.dtype):
        ids = lead_id.astype("int64")
    else:
        numeric = pd.to_numeric(lead_id, errors="coerce")
        fractional = numeric.isna() | (numeric != np.floor(numeric))
        if fractional.any():
            raise WritebackError(f"lead_id must be integers: {_examples(lead_id[fractional])}")
        ids = numeric.astype("int64")
    repeated = ids[ids.duplicated()].unique()
    if len(repeated):
        raise WritebackError(f"lead_id must be unique; repeated: {_examples(pd.Series(repeated))}")

    probability = pd.to_numeric(frame["probability"], errors="coerce").astype("float64")
    bad_p = probability.isna() | (probability < 0.0) | (probability > 1.0)
    if bad_p.any():
        raise WritebackError(
            f"probability must be a number within [0, 1]; {int(bad_p.sum())} row(s) are not "
            f"(lead_id {_examples(ids[bad_p])}: {_examples(frame['probability'][bad_p])})"
        )

    band = frame["band"]
    bad_band = ~band.isin(BANDS)
    if bad_band.any():
        raise WritebackError(
            f"band must be one of {', '.join(BANDS)}; got {_examples(band[bad_band])} "
            f"(lead_id {_examples(ids[bad_band])})"
        )

    reasons = frame["reasons"]
    bad_reasons = ~reasons.map(_is_json_array).astype(bool)
    if bad_reasons.any():
        raise WritebackError(
            f"reasons must be a JSON array (text); got {_examples(reasons[bad_reasons])} "
            f"(lead_id {_examples(ids[bad_reasons])})"
        )

    version = frame["model_version"]
    bad_version = version.isna() | (version.astype(str).str.strip() == "")
    if bad_version.any():
        raise WritebackError(
            f"model_version is empty in {int(bad_version.sum())} row(s) "
            f"(lead_id {_examples(ids[bad_version])})"
        )

    try:
        scored_at = pd.to_datetime(frame["scored_at"], utc=True, format="ISO8601")
    except (ValueError, TypeError) as e:
        raise WritebackError(f"scored_at must be timestamps: {e}") from e
    if scored_at.isna().any():
        raise WritebackError(f"scored_at is null in {int(scored_at.isna().sum())} row(s)")

    return pd.DataFrame(
        {
            "lead_id": ids,
            "probability": probability,
            "band": band.astype(str).astype(object),
            "reasons": reasons.astype(object),
            "model_version": version.astype(str).astype(object),
            "scored_at": scored_at.astype("datetime64[us, UTC]"),
        }
    )


def _is_json_array(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return isinstance(json.loads(value), list)
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    for suffix in FILE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise WritebackError(
        f"{path}: unsupported file type for scores; expected {' or '.join(FILE_SUFFIXES)}"
    )


def _read_scores_file(path: Path, kind: str) -> pd.DataFrame:
    """The scores already in ``path`` (validated), to merge the new ones into."""
    try:
        if kind == ".csv":
            stored = read_csv(path, delimiter=",", encoding="utf-8")
        else:
            stored = pd.read_parquet(path)
    except (SourceError, OSError, ValueError) as e:
        raise WritebackError(f"{path}: cannot read the existing scores file: {e}") from e
    if kind == ".csv":
        for column in ("lead_id", "probability"):
            if column in stored.columns:
                stored[column] = _parse_numbers(stored[column], integer=column == "lead_id")
    try:
        return validate_scores(stored)
    except WritebackError as e:
        raise WritebackError(
            f"{path}: the existing file is not a scores file this writer can update: {e}"
        ) from e


def _parse_numbers(text: pd.Series, *, integer: bool) -> pd.Series:
    """Numbers of a CSV column, exactly (``pd.to_numeric`` may be off in the last digit)."""
    try:
        return text.astype("int64" if integer else "float64")
    except (ValueError, OverflowError):  # left for validate_scores to report
        return pd.to_numeric(text, errors="coerce")


def _write_atomically(frame: pd.DataFrame, path: Path, kind: str) -> None:
    """Write next to ``path`` and move into place, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if kind == ".csv":
            frame.to_csv(tmp, index=False, date_format=_CSV_TIME_FORMAT, encoding="utf-8")
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_scores_file(scores: pd.DataFrame, path: Path | str) -> int:
    """Upsert scores into a CSV (``.csv``) or Parquet (``.parquet``) file by ``lead_id``.

    Rows of an existing file whose ``lead_id`` is not in ``scores`` are kept, the others are
    replaced; the file is sorted by ``lead_id`` and replaced atomically (temporary file +
    ``os.replace``). CSV timestamps are written as ``2026-11-01T08:00:00.000000Z``.

    Args:
        scores: A scores frame (see :func:`validate_scores`).
        path: The file; its folder is created if missing.

    Returns:
        Rows in the file after the write.

    Raises:
        WritebackError: Another suffix, an invalid scores frame, or an existing file that is
            not a readable scores file.
    """
    path = Path(path)
    kind = _file_kind(path)
    new = validate_scores(scores)
    if path.exists():
        old = _read_scores_file(path, kind)
        kept = old[~old["lead_id"].isin(new["lead_id"])]
        merged = pd.concat([kept, new], ignore_index=True) if len(kept) else new
    else:
        merged = new
    merged = merged.sort_values("lead_id", kind="stable").reset_index(drop=True)
    _write_atomically(merged, path, kind)
    return len(merged)


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def _table_parts(table: str) -> tuple[str | None, str]:
    parts = table.split(".")
    if len(parts) > 2 or not all(parts):
        raise WritebackError(
            f"table {table!r} must be a table name or schema.table (no other dots)"
        )
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def _libpq_conninfo(url: str) -> str:
    """A libpq URL for psycopg from any accepted PostgreSQL URL (driver suffix dropped)."""
    try:
        parsed = postgres_sqlalchemy_url(url)
    except SourceError as e:
        raise WritebackError(str(e)) from e
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def write_scores_postgres(scores: pd.DataFrame, *, url: str, table: str) -> int:
    """Upsert scores into a PostgreSQL table by ``lead_id``, in one transaction.

    The table (and its schema) is created if missing: ``lead_id bigint primary key,
    probability double precision, band text, reasons jsonb, model_version text, scored_at
    timestamptz``. The rows are copied (``COPY``) into a temporary table, then inserted with
    ``ON CONFLICT (lead_id) DO UPDATE``; any failure rolls everything back.

    Args:
        scores: A scores frame (validated first, before connecting).
        url: ``postgresql+psycopg://``, ``postgresql://`` or ``postgres://`` URL.
        table: ``name`` or ``schema.name`` (quoted as given: case matters).

    Returns:
        Rows upserted (inserted or updated).

    Raises:
        WritebackError: An invalid scores frame or table name, or a connection/SQL error
            (the message names the URL without its password and the table).
    """
    import psycopg
    from psycopg import sql

    frame = validate_scores(scores)
    schema, name = _table_parts(table)
    conninfo = _libpq_conninfo(url)
    target = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    columns = list(SCORE_COLUMNS)
    column_list = sql.SQL(", ").join(map(sql.Identifier, columns))
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns[1:]
    )
    staging = sql.Identifier(f"lead_scores_staging_{uuid.uuid4().hex[:12]}")
    rows = zip(
        frame["lead_id"].tolist(),
        frame["probability"].tolist(),
        frame["band"].tolist(),
        frame["reasons"].tolist(),
        frame["model_version"].tolist(),
        [ts.to_pydatetime() for ts in frame["scored_at"]],
        strict=True,
    )
    create_columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(definition))
        for c, definition in _PG_COLUMNS.items()
    )
    try:
        with (
            psycopg.connect(conninfo, connect_timeout=10, autocommit=True) as conn,
            conn.transaction(),
        ):
            # Creating needs CREATE rights even with IF NOT EXISTS: only create what is missing,
            # so that a role allowed to write an existing table only can upsert.
            found = conn.execute("SELECT to_regclass(%s)", (target.as_string(conn),)).fetchone()
            if found is None or found[0] is None:
                if schema:
                    conn.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                    )
                conn.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(target, create_columns)
                )
            conn.execute(
                sql.SQL(
                    "CREATE TEMPORARY TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP"
                ).format(staging, target)
            )
            with conn.cursor() as cur:
                copy_rows = sql.SQL("COPY {} ({}) FROM STDIN").format(staging, column_list)
                with cur.copy(copy_rows) as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {target} ({columns}) SELECT {columns} FROM {staging} "
                        "ON CONFLICT (lead_id) DO UPDATE SET {updates}"
                    ).format(target=target, columns=column_list, staging=staging, updates=updates)
                )
                upserted = cur.rowcount
    except psycopg.Error as e:
        raise WritebackError(
            f"{redact_url(url)} table {table!r}: cannot upsert the scores: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        ) from e
    return int(upserted)
