"""Ingest: read CRM/marketing exports, validate them against the contracts, store or quarantine.

One call of :func:`ingest_tables` reads every source, coerces each column to its contract
kind, runs the rules derived from the contracts (:mod:`pipelines.validation`, with Great
Expectations), merges the good rows by key into ``<warehouse_dir>/<table>.parquet`` and
appends the bad ones, with their original values and the reasons, to
``<quarantine_dir>/quarantine.parquet``. Nothing is dropped silently: every row read is either
accepted or quarantined.

Rule names (see :func:`pipelines.validation.derive_rules`), each followed by the column:

* ``parseable:<column>``: the value cannot be read as the column's kind;
* ``not_null:<column>``: a required value is missing;
* ``allowed_values:<column>``: a categorical value outside the contract's set;
* ``range:<column>``: a number outside the contract's min/max;
* ``not_in_future:<column>`` / ``not_before_2000:<column>``: implausible timestamps;
* ``not_before_first_lead:<column>``: an event older than the first lead stored, or a lead
  older than the ``first_lead_date`` of its mapping file;
* ``unique_key:<key>``: rows share a key but differ (``+`` joins compound keys);
* ``lead_exists:lead_id``: the lead is neither in this ingest nor in the warehouse;
* ``after_lead_created:closed_at`` / ``:changed_at``: an outcome or a stage change dated
  before its lead was created;
* ``duplicate_row``: an exact copy of an earlier row of the same file (the first is kept).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pandas._typing import DtypeObj
from pandas.api.types import pandas_dtype

from leadscore.contracts import LEADS, OUTCOMES, TABLES, Column, Kind, TableContract
from leadscore.dataset import (
    ATTRIBUTES_TABLE,
    MANIFEST_FILE,
    DatasetManifest,
    load_manifest,
)
from pipelines.mapping import (
    LoadedMapping,
    expand_env,
    load_mapping,
    map_sources,
    resolve_path,
    source_label,
)
from pipelines.sources import SourceError, read_source
from pipelines.validation import (
    LEAD_CREATED_AT,
    ROW_NUMBER,
    RowNumbers,
    Rule,
    as_utc,
    derive_rules,
    leads_reference,
    validate_frame,
)

logger = logging.getLogger(__name__)

QUARANTINE_FILE = "quarantine.parquet"
REPORTS_DIR = "_ingest_reports"
DUPLICATE_ROW = "duplicate_row"
QUARANTINE_COLUMNS: dict[str, str] = {
    "quarantine_id": "object",
    "table": "object",
    "source": "object",
    "row_number": "int64",
    "original_row": "object",
    "rules": "object",
    "messages": "object",
    "quarantined_at": "datetime64[us, UTC]",
    "mapping": "object",
    "status": "object",
    "resolved_at": "datetime64[us, UTC]",
}
"""Columns of the quarantine: ``rules`` is ``;``-joined, ``messages`` is ``; ``-joined;
``quarantine_id`` is a digest of table, source and original row (the same bad row ingested
twice is kept once); ``mapping`` is the mapping file that read the row (empty for a
contract-shaped file); ``status`` is ``open`` until a replay accepts the row (``replayed``)
or quarantines a corrected version of it instead (``superseded``)."""
OPEN, REPLAYED, SUPERSEDED = "open", "replayed", "superseded"

# Cells that mean "no value" in an export. "NA" is a country code (Namibia), so it only
# counts as missing in columns that are not strings.
_NULL_TOKENS: tuple[str, ...] = (
    *("", "null", "NULL", "Null", "None", "none", "NaN", "nan", "NAN", "NaT", "nat", "<NA>"),
    *("N/A", "n/a", "#N/A"),
)
_NULL_TOKENS_NON_STR: tuple[str, ...] = (*_NULL_TOKENS, "NA", "na")
_BOOLEANS: dict[str, bool] = {
    "true": True,
    "false": False,
    "t": True,
    "f": False,
    "yes": True,
    "no": False,
    "y": True,
    "n": False,
    "1": True,
    "0": False,
    "1.0": True,
    "0.0": False,
}
_KIND_LABELS: dict[str, str] = {
    "timestamp": "timestamp",
    "int": "integer",
    "float": "number",
    "bool": "boolean (true/false, 1/0, yes/no)",
    "str": "string",
}


class IngestError(ValueError):
    """A source cannot be ingested (missing, unreadable or lacking a required column)."""


@dataclass(frozen=True)
class TableReport:
    """What happened to one source table.

    Attributes:
        table: Contract table name.
        source: The file read.
        rows_read: Data rows in the file.
        rows_accepted: Rows merged into the warehouse.
        rows_quarantined: Rows sent to quarantine (``rows_read`` = accepted + quarantined).
        rule_counts: Rule name -> number of rows that broke it (a row may break several).
        extra_columns: Columns of the file that are not in the contract (ignored).
        rows_stored: Rows of the warehouse table after the merge.
    """

    table: str
    source: str
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    rule_counts: dict[str, int]
    extra_columns: tuple[str, ...] = ()
    rows_stored: int = 0


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did, per table.

    Attributes:
        tables: Table name -> its report, in ingest order.
        quarantine_path: The quarantine file, if any row was quarantined by this ingest.
        ingested_at: When the ingest ran (UTC); also the "now" of the future-timestamp rule.
    """

    tables: dict[str, TableReport]
    quarantine_path: Path | None
    ingested_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "ingested_at": self.ingested_at.isoformat(),
            "quarantine_path": str(self.quarantine_path) if self.quarantine_path else None,
            "tables": {
                name: {**asdict(t), "extra_columns": list(t.extra_columns)}
                for name, t in self.tables.items()
            },
        }

    def summary(self) -> str:
        """A human-readable table: rows per table, then rows per broken rule."""
        header = f"{'table':<14} {'read':>10} {'accepted':>10} {'quarantined':>12} {'stored':>10}"
        lines = [f"ingest at {self.ingested_at.isoformat()}", header, "-" * len(header)]
        for t in self.tables.values():
            lines.append(
                f"{t.table:<14} {t.rows_read:>10,} {t.rows_accepted:>10,} "
                f"{t.rows_quarantined:>12,} {t.rows_stored:>10,}"
            )
        for t in self.tables.values():
            lines.append("")
            lines.append(f"{t.table}: {t.source}")
            broken = {rule: n for rule, n in t.rule_counts.items() if n}
            if not broken:
                lines.append("  every row passed every rule")
            for rule, n in sorted(broken.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"  {rule:<40} {n:>10,} rows")
            if t.extra_columns:
                lines.append(f"  extra columns ignored: {', '.join(t.extra_columns)}")
        lines.append("")
        where = self.quarantine_path if self.quarantine_path else "nothing quarantined"
        lines.append(f"quarantine: {where}")
        return "\n".join(lines)


# --- Reading ----------------------------------------------------------------------------------


def read_table(path: Path) -> pd.DataFrame:
    """Read a contract-shaped CSV (``.csv``, ``.csv.gz``, ...) or Parquet file as it is.

    CSV cells are returned as strings, exactly as written (nothing is inferred or turned
    into NaN), so that the original values survive into the quarantine; Parquet columns keep
    their stored types (see :mod:`pipelines.sources`).

    Raises:
        IngestError: If the file is missing, has an unsupported suffix or cannot be read.
    """
    try:
        frame = read_source(Path(path))
    except SourceError as e:
        raise IngestError(str(e)) from e
    frame.index = pd.RangeIndex(len(frame))
    return frame


# --- Coercion ---------------------------------------------------------------------------------


def contract_dtypes(contract: TableContract) -> dict[str, DtypeObj]:
    """Pandas dtype of every contract column as stored in the warehouse.

    ``int`` is ``int64`` (``Int64`` if nullable), ``float`` ``float64``, ``bool``
    ``boolean``, ``str`` ``object`` (None for missing) and ``timestamp``
    ``datetime64[us, UTC]``.
    """
    return {c.name: _dtype(c) for c in contract.columns}


_VALIDATION_DTYPES: dict[str, str] = {
    "int": "Int64",
    "float": "float64",
    "bool": "boolean",
    "str": "object",
    "timestamp": "datetime64[us, UTC]",
}


def _dtype(col: Column) -> DtypeObj:
    if col.kind == "int" and not col.nullable:
        return pandas_dtype("int64")
    return _validation_dtype(col.kind)


def _validation_dtype(kind: Kind) -> DtypeObj:
    """Dtype while validating: every kind must be able to hold a missing value."""
    return pandas_dtype(_VALIDATION_DTYPES[kind])


def _with_none(values: pd.Series, keep: pd.Series) -> pd.Series:
    """``values`` as objects, with None wherever ``keep`` is False."""
    out = values.astype(object)
    out[~keep.to_numpy(dtype=bool)] = None
    return out


def _null_series(kind: Kind, index: pd.Index) -> pd.Series:
    if kind == "str":
        return pd.Series([None] * len(index), index=index, dtype="object")
    return pd.Series(None, index=index, dtype=_validation_dtype(kind))


def _present(values: pd.Series, kind: Kind) -> pd.Series:
    """True where the raw cell holds a value (not NaN/None nor a null token)."""
    present = values.notna()
    if values.dtype == object or isinstance(values.dtype, pd.StringDtype):
        tokens = _NULL_TOKENS if kind == "str" else _NULL_TOKENS_NON_STR
        present &= ~values.isin(tokens)
    return present


def _as_timestamps(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        out = values.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        out = values.dt.tz_localize("UTC")
    else:
        text = _with_none(values, values.notna())
        # ISO 8601 only: a lenient parser reads "3" or "12/11" as some date, silently.
        out = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    return out.dt.as_unit("us")


def _as_ints(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype):
        return pd.Series(pd.NA, index=values.index, dtype="Int64")
    numbers = pd.to_numeric(values, errors="coerce", dtype_backend="numpy_nullable")
    if pd.api.types.is_integer_dtype(numbers.dtype):
        return numbers.astype("Int64")
    floats = numbers.astype("float64")
    whole = np.isfinite(floats) & (floats == np.floor(floats)) & (floats.abs() < 2.0**63)
    return floats.where(whole).astype("Int64")


def _as_floats(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype):
        return pd.Series(np.nan, index=values.index, dtype="float64")
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    return numbers.where(np.isfinite(numbers))  # "inf" is not a plausible amount


def _as_bools(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("boolean")
    keys = values.astype(str).str.strip().str.lower()
    return keys.map(_BOOLEANS).astype("boolean")


def _as_strings(values: pd.Series) -> pd.Series:
    return values.astype(str).astype(object)


def coerce_column(raw: pd.Series, kind: Kind) -> tuple[pd.Series, npt.NDArray[np.bool_]]:
    """Coerce raw cells to a contract kind.

    Args:
        raw: Cells as read (strings from CSV, typed values from Parquet).
        kind: The contract kind.

    Returns:
        The coerced column (missing and unreadable values as nulls) and a boolean array that
        is True where a value was present but could not be read as ``kind``.
    """
    present = _present(raw, kind)
    values = raw.where(present)
    if kind == "timestamp":
        out = _as_timestamps(values)
    elif kind == "int":
        out = _as_ints(values)
    elif kind == "float":
        out = _as_floats(values)
    elif kind == "bool":
        out = _as_bools(values)
    else:
        out = _as_strings(values)
    out = out.where(present)
    out = _with_none(out, present) if kind == "str" else out.astype(_validation_dtype(kind))
    invalid = (present & out.isna()).to_numpy(dtype=bool)
    return out, invalid


def conform(frame: pd.DataFrame, contract: TableContract) -> pd.DataFrame:
    """``frame`` with exactly the contract columns and dtypes (see :func:`contract_dtypes`).

    Missing columns are filled with nulls and extra ones dropped; values must already be of
    the column's kind (this casts, it does not parse).
    """
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for col in contract.columns:
        if col.name in frame.columns:
            values = frame[col.name].reset_index(drop=True)
        else:
            values = _null_series(col.kind, out.index)
        if col.kind == "str":
            out[col.name] = _with_none(values, values.notna())
        elif col.kind == "timestamp":
            out[col.name] = _as_timestamps(values)
        else:
            out[col.name] = values.astype(_dtype(col))
    return out


# --- One table --------------------------------------------------------------------------------


@dataclass
class _Source:
    contract: TableContract
    label: str  # the file, or url#table, as the quarantine and the report name it
    raw: pd.DataFrame  # contract-named cells, indexed by ROW_NUMBER
    extra_columns: tuple[str, ...] = ()
    original: pd.DataFrame | None = None  # the source rows, when a mapping reshaped them
    mapping: str = ""  # the mapping file, if any

    @property
    def rows(self) -> pd.DataFrame:
        """The rows as the source holds them (what the quarantine keeps)."""
        return self.raw if self.original is None else self.original

    def restricted(self, rows: RowNumbers) -> _Source:
        """Only the given row numbers (a replay of quarantined rows)."""
        keep = self.raw.index[self.raw.index.isin(rows)]
        original = None if self.original is None else self.original.loc[keep]
        return _Source(
            self.contract,
            self.label,
            self.raw.loc[keep],
            self.extra_columns,
            original,
            self.mapping,
        )


@dataclass
class _Checked:
    accepted: pd.DataFrame  # contract columns and dtypes
    quarantine: pd.DataFrame  # QUARANTINE_COLUMNS
    rule_counts: dict[str, int] = field(default_factory=dict)


def _load_source(name: str, path: Path) -> _Source:
    contract = TABLES[name]
    raw = read_table(path)
    raw.index = pd.RangeIndex(1, len(raw) + 1, name=ROW_NUMBER)
    columns = [str(c) for c in raw.columns]
    missing = [c for c in contract.columns if c.name not in columns]
    required = [c.name for c in missing if not c.nullable]
    if required:
        raise IngestError(
            f"{path}: table {name!r} is missing required column(s) {', '.join(required)} "
            f"(found: {', '.join(columns) or 'no columns'})"
        )
    if missing:
        logger.warning(
            "%s: optional column(s) %s of %s missing; filled with nulls",
            path,
            ", ".join(c.name for c in missing),
            name,
        )
    extra = tuple(c for c in columns if c not in contract.column_names)
    return _Source(contract, str(path), raw, extra)


def _duplicates(raw: pd.DataFrame) -> tuple[RowNumbers, RowNumbers]:
    """Rows that repeat an earlier row exactly, and the earlier row each repeats."""
    if raw.empty or raw.shape[1] == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    try:
        repeats = raw.duplicated(keep=False).to_numpy()
    except TypeError:  # unhashable cells (lists in a Parquet column): compare their text
        raw = raw.astype(str)
        repeats = raw.duplicated(keep=False).to_numpy()
    involved = raw[repeats]
    if involved.empty:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    # ngroup numbers groups 0..k-1 in order of first appearance (sort=False)
    group = involved.groupby(list(raw.columns), dropna=False, sort=False).ngroup().to_numpy()
    _, first = np.unique(group, return_index=True)
    rows = involved.index.to_numpy(dtype=np.int64)
    repeated = first[group] != np.arange(len(group))
    return rows[repeated], rows[first[group[repeated]]]


def _display(raw: pd.DataFrame, column: str, rows: RowNumbers) -> pd.Series:
    """The raw cells of ``column`` at ``rows`` as quoted text, for messages."""
    if column not in raw.columns:
        return pd.Series("''", index=rows)
    return "'" + raw[column].reindex(rows).astype(str) + "'"


def _describe_bounds(rule: Rule) -> str:
    lo, hi = rule.min_value, rule.max_value
    if lo is not None and hi is not None:
        return f"is outside [{lo}, {hi}]"
    if lo is not None:
        return f"is below the minimum {lo}"
    return f"is above the maximum {hi}"


def _messages(
    rule: Rule, rows: RowNumbers, raw: pd.DataFrame, typed: pd.DataFrame
) -> pd.Series | str:
    """Why each of ``rows`` broke ``rule``, naming the column and the bad value."""
    col = rule.column
    if rule.check == "not_null":
        return f"{col}: missing value (required)"
    if rule.check == "unique_key":
        values = [_display(raw, c, rows) for c in rule.columns]
        joined = values[0]
        for v in values[1:]:
            joined = joined + ", " + v
        return f"key ({', '.join(rule.columns)}) = (" + joined + ") is shared by rows that differ"
    shown = _display(raw, col, rows)
    if rule.check == "allowed_values":
        allowed = ", ".join(rule.allowed or ())
        return f"{col}: " + shown + f" is not an allowed value ({allowed})"
    if rule.check == "range":
        return f"{col}: " + shown + f" {_describe_bounds(rule)}"
    if rule.check == "not_in_future":
        now = pd.Timestamp(rule.max_value).isoformat() if rule.max_value is not None else "now"
        return f"{col}: " + shown + f" is in the future (after {now})"
    if rule.check == "not_before_2000":
        start = pd.Timestamp(rule.min_value).date().isoformat() if rule.min_value else "?"
        return f"{col}: " + shown + f" is before {start}"
    if rule.check == "not_before_first_lead":
        first = pd.Timestamp(rule.min_value).isoformat() if rule.min_value is not None else "?"
        return f"{col}: " + shown + f" is before the company's first lead ({first})"
    if rule.check == "lead_exists":
        return f"{col}: lead " + shown + " is not among the accepted leads"
    if rule.check == "after_lead_created":
        created = typed[LEAD_CREATED_AT].reindex(rows).astype(str)
        return f"{col}: " + shown + " is before the lead's created_at '" + created + "'"
    return f"{col}: broke {rule.name}"


def _coerce_table(
    raw: pd.DataFrame, contract: TableContract
) -> tuple[pd.DataFrame, dict[str, RowNumbers]]:
    """The contract columns coerced to their kinds, and per column the unreadable rows."""
    typed = pd.DataFrame(index=raw.index)
    unreadable: dict[str, RowNumbers] = {}
    rows = raw.index.to_numpy(dtype=np.int64)
    for col in contract.columns:
        if col.name in raw.columns:
            values, invalid = coerce_column(raw[col.name], col.kind)
            typed[col.name] = values
            unreadable[col.name] = rows[invalid]
        else:
            typed[col.name] = _null_series(col.kind, raw.index)
            unreadable[col.name] = np.empty(0, dtype=np.int64)
    return typed, unreadable


def _check_table(
    source: _Source,
    *,
    now: pd.Timestamp,
    leads_ref: pd.Series | None,
    earliest: pd.Timestamp | None = None,
) -> _Checked:
    """Coerce and validate one source; split its rows into accepted and quarantined."""
    contract, raw = source.contract, source.raw
    n = len(raw)
    typed, unreadable = _coerce_table(raw, contract)
    duplicate_rows, duplicate_of = _duplicates(raw)
    candidates = typed.drop(duplicate_rows) if duplicate_rows.size else typed
    first_lead = earliest
    if contract.name == "events" and leads_ref is not None and leads_ref.notna().any():
        first_lead = leads_ref.min()
    rules = derive_rules(contract, now=now.to_pydatetime(), earliest=first_lead)
    if contract.references_leads:
        if leads_ref is None:
            raise ValueError(f"table {contract.name!r} needs the accepted leads")
        candidates = candidates.assign(**{LEAD_CREATED_AT: candidates["lead_id"].map(leads_ref)})
        candidates[LEAD_CREATED_AT] = _as_timestamps(candidates[LEAD_CREATED_AT])
    failed = validate_frame(candidates, contract, rules=rules)

    # A value that could not be read is reported once, as unreadable, not also as missing;
    # a row without a lead id is not also "an unknown lead".
    for rule in rules:
        if rule.check == "not_null":
            failed[rule.name] = np.setdiff1d(failed[rule.name], unreadable[rule.column])
        elif rule.check == "lead_exists":
            no_id = candidates.index[candidates["lead_id"].isna()].to_numpy(dtype=np.int64)
            failed[rule.name] = np.setdiff1d(failed[rule.name], no_id)

    parts: list[pd.DataFrame] = []
    counts: dict[str, int] = {}

    def add(name: str, rows: RowNumbers, message: pd.Series | str) -> None:
        if not rows.size:
            return
        counts[name] = int(rows.size)
        msg = message.to_numpy() if isinstance(message, pd.Series) else message
        parts.append(pd.DataFrame({"row": rows, "order": len(parts), "rule": name, "message": msg}))

    for col in contract.columns:
        rows = unreadable[col.name]
        if rows.size:
            label = _KIND_LABELS[col.kind]
            add(
                f"parseable:{col.name}",
                rows,
                f"{col.name}: not a valid {label}: " + _display(raw, col.name, rows),
            )
    for rule in rules:
        rows = failed[rule.name]
        add(rule.name, rows, _messages(rule, rows, raw, candidates) if rows.size else "")
    add(
        DUPLICATE_ROW,
        duplicate_rows,
        "exact duplicate of row " + pd.Series(duplicate_of, index=duplicate_rows).astype(str),
    )

    per_row = _rules_per_row(parts)
    bad_rows = per_row.index.to_numpy(dtype=np.int64)
    accepted = conform(typed.drop(bad_rows), contract)
    if len(accepted) + len(bad_rows) != n:
        raise AssertionError(
            f"{source.label}: {n} rows read but {len(accepted)} accepted + "
            f"{len(bad_rows)} quarantined"
        )
    quarantine = _quarantine_rows(source, per_row, now=now)
    return _Checked(accepted=accepted, quarantine=quarantine, rule_counts=counts)


def _rules_per_row(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Row number -> ``rules`` (``;``-joined) and ``messages`` (``; ``-joined), sorted."""
    if not parts:
        return pd.DataFrame(
            {"rules": pd.Series(dtype=object), "messages": pd.Series(dtype=object)},
            index=pd.Index([], dtype="int64", name="row"),
        )
    broken = pd.concat(parts, ignore_index=True).sort_values(["row", "order"], kind="stable")
    # Most bad rows break one rule: only rows with several need a (per-group) string join.
    several = broken["row"].duplicated(keep=False).to_numpy()
    single = broken.loc[~several, ["row", "rule", "message"]].set_index("row")
    joined = (
        broken.loc[several]
        .groupby("row", sort=False)
        .agg(rule=("rule", ";".join), message=("message", "; ".join))
    )
    per_row = pd.concat([single, joined]).sort_index()
    return per_row.rename(columns={"rule": "rules", "message": "messages"})


def _original_rows(raw: pd.DataFrame, rows: RowNumbers) -> list[str]:
    """The raw cells of ``rows`` as one JSON object per row."""
    if not rows.size:
        return []
    subset = raw.loc[rows]
    subset.columns = [str(c) for c in subset.columns]
    text = subset.to_json(
        orient="records",
        lines=True,
        date_format="iso",
        date_unit="us",
        force_ascii=False,
        default_handler=str,
    )
    lines = text.rstrip("\n").split("\n")
    if len(lines) != rows.size:  # JSON escapes newlines inside values, so this cannot happen
        raise AssertionError(f"expected {rows.size} JSON rows, got {len(lines)}")
    return lines


def _quarantine_id(table: str, source: str, original_row: str) -> str:
    digest = hashlib.sha256(f"{table}\x1f{source}\x1f{original_row}".encode())
    return digest.hexdigest()[:20]


def _quarantine_rows(source: _Source, per_row: pd.DataFrame, *, now: pd.Timestamp) -> pd.DataFrame:
    rows = per_row.index.to_numpy(dtype=np.int64)
    table = source.contract.name
    originals = _original_rows(source.rows, rows)
    frame = pd.DataFrame(
        {
            "quarantine_id": [_quarantine_id(table, source.label, o) for o in originals],
            "table": table,
            "source": source.label,
            "row_number": rows,
            "original_row": originals,
            "rules": per_row["rules"].to_numpy(dtype=object),
            "messages": per_row["messages"].to_numpy(dtype=object),
            "quarantined_at": now,
            "mapping": source.mapping,
            "status": OPEN,
            "resolved_at": pd.Series(
                pd.NaT, index=range(len(rows)), dtype=QUARANTINE_COLUMNS["resolved_at"]
            ),
        },
        index=pd.RangeIndex(len(rows)),
    )
    return frame.astype(QUARANTINE_COLUMNS)


# --- Storage ----------------------------------------------------------------------------------


JOURNAL_FILE = ".commit.json"


class _Commit:
    """Files staged next to their targets and moved into place together.

    Every new table, the quarantine and the data set manifest are written (and synced) first.
    Then a journal naming every staged file and its target is written atomically into the
    warehouse, the files are renamed into place and the journal is removed. A process killed
    between two renames leaves the journal: :func:`recover_commit` (run before every ingest
    and every read of a table) finishes those renames, so a reader sees all the old tables or
    all the new ones, never a mix.
    """

    def __init__(self, journal_dir: Path) -> None:
        self.journal = Path(journal_dir) / JOURNAL_FILE
        self.staged: list[tuple[Path, Path]] = []

    def _stage(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        self.staged.append((tmp, path))
        return tmp

    def parquet(self, frame: pd.DataFrame, path: Path) -> None:
        tmp = self._stage(path)
        frame.to_parquet(tmp, index=False)
        _fsync(tmp)

    def text(self, text: str, path: Path) -> None:
        tmp = self._stage(path)
        tmp.write_text(text, encoding="utf-8")
        _fsync(tmp)

    def apply(self) -> None:
        if len(self.staged) <= 1:  # one rename is atomic by itself
            for tmp, path in self.staged:
                os.replace(tmp, path)
            self.staged.clear()
            return
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        pending = self.journal.with_name(f"{JOURNAL_FILE}.{uuid.uuid4().hex}.tmp")
        pending.write_text(
            json.dumps([[str(tmp), str(path)] for tmp, path in self.staged]), encoding="utf-8"
        )
        _fsync(pending)
        os.replace(pending, self.journal)  # the commit point
        _fsync_dir(self.journal.parent)
        _roll_forward(self.journal)
        self.staged.clear()

    def discard(self) -> None:
        for tmp, _ in self.staged:
            tmp.unlink(missing_ok=True)
        self.staged.clear()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _roll_forward(journal: Path) -> None:
    """Rename every staged file of the journal still in place, then drop the journal."""
    try:
        moves = json.loads(journal.read_text(encoding="utf-8"))
    except FileNotFoundError:  # another process finished it
        return
    folders = set()
    for tmp, path in moves:
        with contextlib.suppress(FileNotFoundError):  # moved already (here or by another)
            os.replace(tmp, path)
        folders.add(Path(path).parent)
    for folder in folders:
        _fsync_dir(folder)
    journal.unlink(missing_ok=True)


def recover_commit(warehouse_dir: Path) -> bool:
    """Finish a commit that a killed ingest left half done (see :class:`_Commit`).

    Returns:
        Whether there was one.
    """
    journal = Path(warehouse_dir) / JOURNAL_FILE
    if not journal.exists():
        return False
    logger.warning("finishing the commit of an interrupted ingest (%s)", journal)
    _roll_forward(journal)
    return True


def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write Parquet next to ``path`` and move it into place, so readers never see half."""
    commit = _Commit(path.parent)
    try:
        commit.parquet(frame, path)
        commit.apply()
    finally:
        commit.discard()


def _merge(existing: pd.DataFrame, new: pd.DataFrame, key: tuple[str, ...]) -> pd.DataFrame:
    """Rows of ``existing`` whose key is not in ``new``, then ``new``."""
    if existing.empty:
        return new.reset_index(drop=True)
    if new.empty:
        return existing.reset_index(drop=True)
    merged = pd.concat([existing, new], ignore_index=True)
    return merged.drop_duplicates(subset=list(key), keep="last").reset_index(drop=True)


def load_table(warehouse_dir: Path, name: str) -> pd.DataFrame:
    """Read a validated table back from the warehouse.

    Args:
        warehouse_dir: The warehouse folder.
        name: Table name (``leads``, ``events``, ``stage_changes`` or ``outcomes``).

    Returns:
        The table with exactly the contract columns and dtypes; empty if never ingested.

    Raises:
        KeyError: If ``name`` is not a contract table.
    """
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r}; expected one of {', '.join(TABLES)}")
    contract = TABLES[name]
    recover_commit(warehouse_dir)
    path = Path(warehouse_dir) / f"{name}.parquet"
    if not path.exists():
        return conform(pd.DataFrame(), contract)
    return conform(pd.read_parquet(path), contract)


def load_outcomes(warehouse_dir: Path, log_url: str) -> pd.DataFrame:
    """The outcomes training and scoring use: the validated table plus those posted to the API.

    Args:
        warehouse_dir: The warehouse folder.
        log_url: SQLAlchemy URL of the live event log, whose ``api_outcomes`` table holds the
            outcomes of ``POST /v1/outcomes`` (``settings.event_log_url``).

    Returns:
        One row per lead (its latest close), with the contract columns and dtypes.
    """
    from leadscore.outcome_log import OutcomeLog, all_outcomes

    return all_outcomes(warehouse=load_table(warehouse_dir, OUTCOMES.name), log=OutcomeLog(log_url))


def _attributes_contract(manifest: DatasetManifest) -> TableContract:
    return TableContract(
        name=ATTRIBUTES_TABLE,
        key=("lead_id",),
        columns=(LEADS.column("lead_id"), *(a.column() for a in manifest.attributes)),
        time_column="lead_id",
        description="Custom lead attributes declared by a mapping file.",
        references_leads=False,
    )


def load_attributes(warehouse_dir: Path) -> pd.DataFrame:
    """The custom lead attributes (``lead_id`` + one column per attribute of the data set's
    manifest); empty when the data set has none."""
    contract = _attributes_contract(load_manifest(warehouse_dir))
    path = Path(warehouse_dir) / f"{ATTRIBUTES_TABLE}.parquet"
    frame = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    return conform(frame, contract)


def list_quarantine(quarantine_dir: Path) -> pd.DataFrame:
    """Every quarantined row so far, oldest first (see :data:`QUARANTINE_COLUMNS`)."""
    path = Path(quarantine_dir) / QUARANTINE_FILE
    if not path.exists():
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in QUARANTINE_COLUMNS.items()})
    frame = pd.read_parquet(path)
    defaults: dict[str, Any] = {"mapping": "", "status": OPEN}
    for column, value in defaults.items():  # quarantines written before these columns
        if column not in frame.columns:
            frame[column] = value
    if "resolved_at" not in frame.columns:
        frame["resolved_at"] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us, UTC]")
    return frame[list(QUARANTINE_COLUMNS)].astype(QUARANTINE_COLUMNS)


def _updated_quarantine(existing: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``existing`` with ``rows`` added; a row already quarantined (same id) is replaced by
    its new version, reopened, instead of being added twice."""
    if existing.empty:
        return rows.astype(QUARANTINE_COLUMNS)
    if rows.empty:
        return existing
    kept = existing[~existing["quarantine_id"].isin(rows["quarantine_id"])]
    return pd.concat([kept, rows], ignore_index=True).astype(QUARANTINE_COLUMNS)


def _save_report(warehouse_dir: Path, report: IngestReport, commit: _Commit) -> Path:
    folder = Path(warehouse_dir) / REPORTS_DIR
    stem = report.ingested_at.strftime("%Y%m%dT%H%M%S%fZ")
    path, n = folder / f"{stem}.json", 1
    while path.exists():  # two ingests with the same explicit `now`
        path, n = folder / f"{stem}-{n}.json", n + 1
    commit.text(json.dumps(report.to_dict(), indent=2), path)
    return path


# --- The step ---------------------------------------------------------------------------------


def ingest_tables(
    *,
    sources: Mapping[str, Path],
    warehouse_dir: Path,
    quarantine_dir: Path,
    now: datetime | None = None,
) -> IngestReport:
    """Validate contract-shaped source tables; merge good rows, quarantine bad ones.

    Every source is read and checked for its required columns before anything is written,
    so a bad file leaves the warehouse and the quarantine untouched. Leads are validated
    first: the other tables' ``lead_id`` must name a lead accepted now or already stored.

    Args:
        sources: Table name -> CSV or Parquet file. Without ``leads``, the other tables are
            checked against the leads already in the warehouse.
        warehouse_dir: Folder of the validated ``<table>.parquet`` files (created if
            missing); a report is saved under ``_ingest_reports/``.
        quarantine_dir: Folder of ``quarantine.parquet`` (created if missing).
        now: The present (UTC; naive is taken as UTC); later timestamps are rejected as
            future. Default: the current time.

    Returns:
        Per table: rows read, accepted, quarantined and the count per broken rule.

    Raises:
        IngestError: If there are no leads (in ``sources`` or stored), ``sources`` names an
            unknown table, or a file is missing, unreadable or lacks a required column.
    """
    unknown = sorted(set(sources) - set(TABLES))
    if unknown:
        raise IngestError(f"unknown table(s) {', '.join(unknown)}; expected {', '.join(TABLES)}")
    order = [name for name in TABLES if name in sources]  # leads first
    loaded = [_load_source(name, Path(sources[name])) for name in order]
    return ingest_sources(
        loaded, warehouse_dir=warehouse_dir, quarantine_dir=quarantine_dir, now=now
    )


def ingest_mapping(
    mapping_path: Path,
    *,
    warehouse_dir: Path,
    quarantine_dir: Path,
    now: datetime | None = None,
) -> IngestReport:
    """Ingest a foreign CRM export described by a mapping file (:mod:`pipelines.mapping`).

    The sources are read and mapped onto the contracts, then validated, merged and
    quarantined exactly like contract-shaped files; the quarantine keeps each rejected
    row as the source holds it. Custom attributes go to the ``lead_attributes`` table and
    the data set's manifest (``dataset.json``) records them and the post-outcome columns.

    Raises:
        MappingError: If the mapping file is wrong or a source lacks a column it names.
        IngestError: If a source cannot be read.
    """
    mapping = load_mapping(mapping_path)
    moment = as_utc(now if now is not None else datetime.now(UTC))
    loaded = _mapped_sources(mapping, warehouse_dir=warehouse_dir, now=moment)
    return ingest_sources(
        loaded,
        warehouse_dir=warehouse_dir,
        quarantine_dir=quarantine_dir,
        now=moment,
        manifest=mapping.manifest(),
        first_lead=_first_lead(mapping),
    )


def _first_lead(mapping: LoadedMapping) -> pd.Timestamp | None:
    day = mapping.spec.first_lead_date
    return pd.Timestamp(day, tz="UTC") if day is not None else None


def _read_mapping_sources(mapping: LoadedMapping) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    frames: dict[str, pd.DataFrame] = {}
    labels: dict[str, str] = {}
    for name, cfg in mapping.spec.sources.items():
        labels[name] = source_label(cfg, mapping.base_dir)
        try:
            if cfg.path is not None:
                frame = read_source(
                    str(resolve_path(cfg.path, mapping.base_dir)),
                    delimiter=cfg.delimiter,
                    encoding=cfg.encoding,
                )
            else:
                frame = read_source(expand_env(cfg.url or ""), table=cfg.table, query=cfg.query)
        except SourceError as e:
            raise IngestError(f"source {name!r}: {e}") from e
        frame.index = pd.RangeIndex(1, len(frame) + 1, name=ROW_NUMBER)
        frames[name] = frame
    return frames, labels


def _mapped_sources(
    mapping: LoadedMapping, *, warehouse_dir: Path, now: pd.Timestamp
) -> list[_Source]:
    frames, labels = _read_mapping_sources(mapping)
    stored = load_table(warehouse_dir, OUTCOMES.name)["lead_id"]
    tables = map_sources(
        mapping,
        frames,
        labels=labels,
        now=now,
        stored_outcome_leads={int(i) for i in stored},
    )
    return [_Source(t.contract, t.source, t.raw, (), t.original, str(mapping.path)) for t in tables]


def ingest_sources(
    loaded: list[_Source],
    *,
    warehouse_dir: Path,
    quarantine_dir: Path,
    now: datetime | pd.Timestamp | None = None,
    manifest: DatasetManifest | None = None,
    first_lead: pd.Timestamp | None = None,
) -> IngestReport:
    """Validate loaded sources in order and commit the result in one step."""
    report, _ = _ingest_sources(
        loaded,
        warehouse_dir=warehouse_dir,
        quarantine_dir=quarantine_dir,
        now=now,
        manifest=manifest,
        first_lead=first_lead,
    )
    return report


def _ingest_sources(
    loaded: list[_Source],
    *,
    warehouse_dir: Path,
    quarantine_dir: Path,
    now: datetime | pd.Timestamp | None,
    manifest: DatasetManifest | None,
    first_lead: pd.Timestamp | None,
) -> tuple[IngestReport, pd.DataFrame]:
    """:func:`ingest_sources`, also returning the rows this ingest quarantined."""
    warehouse_dir, quarantine_dir = Path(warehouse_dir), Path(quarantine_dir)
    recover_commit(warehouse_dir)
    moment = as_utc(now if now is not None else datetime.now(UTC))
    merged: dict[str, pd.DataFrame] = {}
    leads_ref: pd.Series | None = None
    if not any(s.contract.name == LEADS.name for s in loaded):
        # New events or outcomes for leads that are already stored.
        stored_leads = load_table(warehouse_dir, LEADS.name)
        if stored_leads.empty:
            raise IngestError(
                "no leads: sources has no 'leads' entry and the warehouse holds no leads yet"
            )
        leads_ref = leads_reference(stored_leads)

    stored_manifest = load_manifest(warehouse_dir)
    try:
        new_manifest = stored_manifest.merged(manifest) if manifest else stored_manifest
    except ValueError as e:
        raise IngestError(str(e)) from e
    attributes: pd.DataFrame | None = None
    checked: list[_Checked] = []
    for source in loaded:
        name = source.contract.name
        result = _check_table(source, now=moment, leads_ref=leads_ref, earliest=first_lead)
        checked.append(result)
        accepted = result.accepted
        if name == LEADS.name and len(source.contract.columns) > len(LEADS.columns):
            attr_contract = _attributes_contract(new_manifest)
            if attributes is None:
                attributes = load_attributes(warehouse_dir)
                attributes = conform(attributes, attr_contract)
            attributes = _merge(attributes, conform(accepted, attr_contract), ("lead_id",))
            accepted = conform(accepted, LEADS)
        if name not in merged:
            merged[name] = load_table(warehouse_dir, name)
        merged[name] = _merge(merged[name], accepted, source.contract.key)
        if name == LEADS.name:
            leads_ref = leads_reference(merged[name])

    quarantined = [c.quarantine for c in checked if not c.quarantine.empty]
    new_rows = (
        pd.concat(quarantined, ignore_index=True).drop_duplicates("quarantine_id")
        if quarantined
        else pd.DataFrame({c: pd.Series(dtype=t) for c, t in QUARANTINE_COLUMNS.items()})
    )
    commit = _Commit(warehouse_dir)
    try:
        for name, frame in merged.items():
            commit.parquet(frame, warehouse_dir / f"{name}.parquet")
        if attributes is not None:
            commit.parquet(attributes, warehouse_dir / f"{ATTRIBUTES_TABLE}.parquet")
        if manifest is not None:
            commit.text(json.dumps(new_manifest.to_dict(), indent=2), warehouse_dir / MANIFEST_FILE)
        quarantine_path = None
        if quarantined:
            quarantine_path = quarantine_dir / QUARANTINE_FILE
            rows = pd.concat(quarantined, ignore_index=True).drop_duplicates("quarantine_id")
            commit.parquet(
                _updated_quarantine(list_quarantine(quarantine_dir), rows), quarantine_path
            )
        report = _report(loaded, checked, merged, quarantine_path, moment)
        report_path = _save_report(warehouse_dir, report, commit)
        commit.apply()
    finally:
        commit.discard()
    for t in report.tables.values():
        logger.info(
            "ingested %s: %d read, %d accepted, %d quarantined",
            t.table,
            t.rows_read,
            t.rows_accepted,
            t.rows_quarantined,
        )
    logger.info("ingest report saved to %s", report_path)
    return report, new_rows


def _report(
    loaded: list[_Source],
    checked: list[_Checked],
    merged: dict[str, pd.DataFrame],
    quarantine_path: Path | None,
    moment: pd.Timestamp,
) -> IngestReport:
    tables: dict[str, TableReport] = {}
    for source, result in zip(loaded, checked, strict=True):
        name = source.contract.name
        key, n = name, 2
        while key in tables:  # a table fed by several sources (outcomes + derived lost)
            key, n = f"{name}[{n}]", n + 1
        tables[key] = TableReport(
            table=name,
            source=source.label,
            rows_read=len(source.raw),
            rows_accepted=len(result.accepted),
            rows_quarantined=len(result.quarantine),
            rule_counts=result.rule_counts,
            extra_columns=source.extra_columns,
            rows_stored=len(merged[name]),
        )
    return IngestReport(
        tables=tables, quarantine_path=quarantine_path, ingested_at=moment.to_pydatetime()
    )


# --- Replay -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayReport:
    """What a replay of quarantined rows did.

    Attributes:
        replayed: Open quarantine entries re-read from their (fixed) sources.
        accepted: Entries whose row now passed and was stored.
        still_quarantined: Entries whose row failed again (kept open, reasons refreshed).
        missing: Entries whose row is no longer in its source (left open).
        ingest: The ingest of the re-read rows (None when there was nothing to replay).
    """

    replayed: int
    accepted: int
    still_quarantined: int
    missing: int
    ingest: IngestReport | None

    def summary(self) -> str:
        lines = [
            f"replayed {self.replayed:,} quarantined rows: {self.accepted:,} accepted, "
            f"{self.still_quarantined:,} still quarantined, {self.missing:,} no longer in "
            "their source"
        ]
        if self.ingest is not None:
            lines += ["", self.ingest.summary()]
        return "\n".join(lines)


def replay_quarantine(
    *,
    warehouse_dir: Path,
    quarantine_dir: Path,
    table: str | None = None,
    now: datetime | None = None,
) -> ReplayReport:
    """Re-ingest the open quarantined rows from their sources, after the sources are fixed.

    Each open entry's source is read again (through its mapping file, if it came through
    one) and the rows at the quarantined row numbers are validated against the current
    warehouse: rows that now pass are stored and their entries marked ``replayed``; rows
    that fail again stay quarantined with fresh reasons (an entry whose row was changed
    but is still wrong is ``superseded`` by the new version). Fix rows in place (same row
    position) or fix the mapping or the missing reference data (e.g. ingest the leads an
    event refers to), then replay.

    Args:
        warehouse_dir: The warehouse.
        quarantine_dir: The quarantine folder.
        table: Replay only this table's rows.
        now: The present (default: the current time).

    Raises:
        IngestError: If a source or mapping can no longer be read (nothing is changed).
    """
    warehouse_dir, quarantine_dir = Path(warehouse_dir), Path(quarantine_dir)
    recover_commit(warehouse_dir)
    moment = as_utc(now if now is not None else datetime.now(UTC))
    entries = list_quarantine(quarantine_dir)
    todo = entries[entries["status"] == OPEN]
    if table is not None:
        if table not in TABLES:
            raise IngestError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
        todo = todo[todo["table"] == table]
    if todo.empty:
        return ReplayReport(0, 0, 0, 0, None)

    loaded: list[_Source] = []
    manifest: DatasetManifest | None = None
    first_lead: pd.Timestamp | None = None
    for mapping_path in todo["mapping"].unique():
        group = todo[todo["mapping"] == mapping_path]
        if mapping_path:
            mapping = load_mapping(Path(mapping_path))
            manifest = (
                mapping.manifest() if manifest is None else manifest.merged(mapping.manifest())
            )
            first_lead = _first_lead(mapping)
            sources = _mapped_sources(mapping, warehouse_dir=warehouse_dir, now=moment)
        else:
            pairs = group[["table", "source"]].drop_duplicates()
            sources = [_load_source(t, Path(s)) for t, s in pairs.itertuples(index=False)]
        for source in sources:
            mine = group[
                (group["table"] == source.contract.name) & (group["source"] == source.label)
            ]
            if not mine.empty or source.contract.name == LEADS.name:
                loaded.append(source.restricted(mine["row_number"].to_numpy(dtype=np.int64)))
    loaded.sort(key=lambda s: list(TABLES).index(s.contract.name))  # leads first
    present = {(s.contract.name, s.label, int(r)) for s in loaded for r in s.raw.index.to_numpy()}
    if not any(len(s.raw) for s in loaded):
        return ReplayReport(len(todo), 0, 0, len(todo), None)
    loaded = [s for s in loaded if len(s.raw) or s.contract.name != LEADS.name]
    report, fresh = _ingest_sources(
        loaded,
        warehouse_dir=warehouse_dir,
        quarantine_dir=quarantine_dir,
        now=moment,
        manifest=manifest,
        first_lead=first_lead,
    )
    # Close the replayed entries: accepted now, or superseded by their re-quarantined version.
    failed_again = {
        (t, s, int(r))
        for t, s, r in zip(fresh["table"], fresh["source"], fresh["row_number"], strict=True)
    }
    fresh_ids = set(fresh["quarantine_id"])
    replayed_ids = set(todo["quarantine_id"])
    after = list_quarantine(quarantine_dir)
    keys = zip(after["table"], after["source"], after["row_number"], strict=True)
    status = after["status"].to_numpy(dtype=object).copy()
    resolved = after["resolved_at"].copy()
    accepted = again = 0
    for i, (qid, (table_name, source_label_, row)) in enumerate(
        zip(after["quarantine_id"], keys, strict=True)
    ):
        key = (table_name, source_label_, int(row))
        if qid not in replayed_ids or key not in present:
            continue
        if key in failed_again:
            if qid not in fresh_ids:  # the row changed and is still wrong
                status[i] = SUPERSEDED
                resolved.iloc[i] = moment
            again += 1
        else:
            status[i] = REPLAYED
            resolved.iloc[i] = moment
            accepted += 1
    after = after.assign(status=status, resolved_at=resolved)
    _write_atomically(after.astype(QUARANTINE_COLUMNS), quarantine_dir / QUARANTINE_FILE)
    missing = len(todo) - accepted - again
    return ReplayReport(len(todo), accepted, again, missing, report)
