"""Mapping files: a foreign CRM export described in YAML, mapped onto the four contracts.

A mapping file names the export's sources (CSV, Parquet or PostgreSQL tables/queries) and,
for each contract table, where every column comes from: a source column (with a value map
and placeholders treated as missing) or a constant; how the time column is built (a column
with an optional format, date parts, row order, or none); which columns are custom lead
attributes (model features the contracts do not know); which column or joined table is the
outcome; and which source columns are known only after the outcome. See
``examples/bank-marketing/mapping.yaml`` and the README for the full reference.

:func:`load_mapping` validates a file and reports every mistake at once;
:func:`map_sources` turns the read sources into contract-shaped raw tables that ingest
validates exactly like a contract-shaped export.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from leadscore.contracts import LEADS, OUTCOMES, TABLES, Column, TableContract
from leadscore.dataset import Attribute, DatasetManifest
from leadscore.feature_catalog import FEATURES_BY_NAME
from pipelines.sources import redact_url

ROW_NUMBER_SOURCE = "row_number"
"""``lead_id: {from: row_number}``: an export without ids numbers its leads by row (1 = first)."""

DEFAULT_MISSING: tuple[str, ...] = ("", "null", "none", "n/a", "#n/a", "nan", "nat")
"""Cells that mean "no value" in every mapping (compared trimmed and case-insensitively)."""

_MONTHS = {
    name: i
    for i, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class MappingError(ValueError):
    """A mapping file is missing, unreadable or wrong (the message lists every mistake)."""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. In YAML 1.1 ``won: [yes]`` would read as True and
    ``country: NO`` as False, and the export's own spelling would be lost."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _texts(value: Any) -> Any:
    """Value-map keys/values and won/lost lists as text (YAML reads ``-1`` as a number)."""
    if isinstance(value, dict):
        return {str(k): (None if v is None else str(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [str(v) for v in value]
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Model):
    """One export: a file (CSV/Parquet) or a PostgreSQL table or query."""

    path: str | None = Field(default=None, description="File, relative to the mapping file.")
    url: str | None = Field(
        default=None, description="PostgreSQL URL; ${VAR} is replaced from the environment."
    )
    table: str | None = Field(default=None, description="Table (or schema.table) at `url`.")
    query: str | None = Field(default=None, description="SELECT query at `url`.")
    delimiter: str | None = Field(default=None, description="CSV delimiter (default: sniffed).")
    encoding: str | None = Field(default=None, description="CSV encoding (default: detected).")

    @model_validator(mode="after")
    def _one_kind(self) -> SourceConfig:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of `path` (a file) or `url` (PostgreSQL)")
        if self.url is not None and (self.table is None) == (self.query is None):
            raise ValueError("a `url` source needs exactly one of `table` or `query`")
        if self.path is not None and (self.table or self.query):
            raise ValueError("`table` and `query` belong to `url` sources, not files")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ValueError(f"`delimiter` must be one character, not {self.delimiter!r}")
        return self


class FieldSpec(_Model):
    """Where one contract column comes from. A plain string is short for ``{column: ...}``."""

    column: str | None = Field(default=None, description="Source column.")
    constant: str | float | bool | None = Field(default=None, description="Fixed value.")
    from_: Literal["row_number"] | None = Field(
        default=None, alias="from", description="`row_number`: number the rows (ids only)."
    )
    values: dict[str, str | None] = Field(
        default_factory=dict,
        description="Value map (source value -> contract value; null: missing).",
    )
    missing: list[str] = Field(
        default_factory=list, description="More placeholders meaning missing in this column."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"column": data} if isinstance(data, str) else data

    _text_values = field_validator("values", "missing", mode="before")(_texts)

    @model_validator(mode="after")
    def _one_origin(self) -> FieldSpec:
        given = [k for k in ("column", "constant", "from_") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `column`, `constant` or `from: row_number`")
        return self


class DateParts(_Model):
    """A date assembled from columns (year optional: then inferred from row order)."""

    year: str | int | None = Field(default=None, description="Year column or a fixed year.")
    month: str = Field(description="Month column (1-12 or a month name).")
    day: str = Field(description="Day-of-month column.")
    hour: str | None = Field(default=None, description="Hour column (default 0).")
    start_year: int | None = Field(
        default=None,
        ge=1900,
        le=2200,
        description="Without `year`: the first row's year; it goes up by one each time the "
        "month goes back in row order (rows must be in time order).",
    )

    @model_validator(mode="after")
    def _year_known(self) -> DateParts:
        if self.year is None and self.start_year is None:
            raise ValueError("give `year` (a column or a number) or `start_year`")
        return self


class RowOrder(_Model):
    """Timestamps spread evenly from ``start`` (first row) to ``end`` (last row)."""

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered(self) -> RowOrder:
        if self.end < self.start:
            raise ValueError("`end` is before `start`")
        return self


class TimeSpec(_Model):
    """How a time column is built: exactly one way. ``none`` is short for ``{none: true}``."""

    column: str | None = Field(default=None, description="Source column.")
    format: str | None = Field(
        default=None, description="strptime format of `column` (default: ISO 8601)."
    )
    timezone: str = Field(default="UTC", description="Zone of timestamps without an offset.")
    parts: DateParts | None = None
    row_order: RowOrder | None = None
    none: bool = Field(default=False, description="The export has no time: see `at`.")
    at: datetime | None = Field(
        default=None,
        description="With `none`: the moment every row gets (default: ingest - 1 day).",
    )
    after_created_days: float | None = Field(
        default=None,
        gt=0,
        description="Outcomes only: closed this many days after the lead's created_at.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if data == "none":
            return {"none": True}
        return {"column": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_way(self) -> TimeSpec:
        ways = [
            self.column is not None,
            self.parts is not None,
            self.row_order is not None,
            self.none,
            self.after_created_days is not None,
        ]
        if sum(ways) != 1:
            raise ValueError(
                "give exactly one of `column`, `parts`, `row_order`, `none` or `after_created_days`"
            )
        if self.format is not None and self.column is None:
            raise ValueError("`format` applies to a `column` only")
        if self.at is not None and not self.none:
            raise ValueError("`at` applies to `none` only")
        return self


class AttributeConfig(_Model):
    """A custom lead attribute: a model feature the contracts do not know."""

    column: str | None = Field(default=None, description="Source column (default: the name).")
    kind: Literal["categorical", "numeric", "flag"]
    description: str = ""
    label: str = Field(default="", description="Reason phrase with {value} (default: name).")
    values: dict[str, str | None] = Field(default_factory=dict, description="Value map.")
    missing: list[str] = Field(default_factory=list, description="More placeholders.")
    allowed: list[str] | None = Field(default=None, description="Closed set (categorical).")
    min: float | None = Field(default=None, description="Smallest plausible value (numeric).")
    max: float | None = Field(default=None, description="Largest plausible value (numeric).")

    _text_values = field_validator("values", "missing", "allowed", mode="before")(_texts)

    @model_validator(mode="after")
    def _consistent(self) -> AttributeConfig:
        if self.kind != "numeric" and (self.min is not None or self.max is not None):
            raise ValueError("`min`/`max` apply to numeric attributes only")
        if self.kind != "categorical" and self.allowed is not None:
            raise ValueError("`allowed` applies to categorical attributes only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"`min` ({self.min}) is above `max` ({self.max})")
        if self.label and "{value}" not in self.label:
            raise ValueError("`label` must contain {value}")
        return self


class ResultSpec(_Model):
    """The outcome column and which of its values mean won and lost."""

    column: str
    won: list[str] = Field(min_length=1)
    lost: list[str] = Field(min_length=1)

    _text_values = field_validator("won", "lost", mode="before")(_texts)

    @model_validator(mode="after")
    def _disjoint(self) -> ResultSpec:
        both = {_norm(v) for v in self.won} & {_norm(v) for v in self.lost}
        if both:
            raise ValueError(f"values listed as both won and lost: {sorted(both)}")
        return self


class TableMapping(_Model):
    """Events or stage changes: contract columns from one source."""

    source: str
    columns: dict[str, FieldSpec] = Field(default_factory=dict)
    time: TimeSpec = Field(description="The table's time column (occurred_at / changed_at).")


class LeadsMapping(_Model):
    source: str
    lead_id: FieldSpec
    created_at: TimeSpec
    columns: dict[str, FieldSpec] = Field(
        default_factory=dict, description="Other contract columns (source_channel is required)."
    )
    attributes: dict[str, AttributeConfig] = Field(default_factory=dict)


class OutcomesMapping(_Model):
    source: str
    lead_id: FieldSpec | None = Field(
        default=None, description="Default: the leads' lead_id (same source only)."
    )
    result: ResultSpec
    closed_at: TimeSpec
    amount: FieldSpec | None = None
    lost_without_outcome_after_days: float | None = Field(
        default=None,
        gt=0,
        description="Leads without an outcome row are lost once this many days old "
        "(closed at created_at + this); younger ones stay open.",
    )


class TablesMapping(_Model):
    leads: LeadsMapping
    events: TableMapping | None = None
    stage_changes: TableMapping | None = None
    outcomes: OutcomesMapping | None = None


class MappingFile(_Model):
    """A whole mapping file (see the module docstring)."""

    version: Literal[1] = 1
    name: str = Field(min_length=1)
    description: str = ""
    sources: dict[str, SourceConfig] = Field(min_length=1)
    missing_values: list[str] = Field(
        default_factory=list, description="Placeholders meaning missing in every column."
    )
    normalise_categories: bool = Field(
        default=True,
        description="Match categories ignoring case, spaces, - and _ ('Paid Search' = "
        "'paid_search'); lower-case free-text categories.",
    )
    first_lead_date: date | None = Field(
        default=None, description="No timestamp of the data set is older than this."
    )
    post_outcome: list[str] = Field(
        default_factory=list, description="Source columns known only after the outcome."
    )
    tables: TablesMapping

    _text_values = field_validator("missing_values", "post_outcome", mode="before")(_texts)


@dataclass(frozen=True)
class LoadedMapping:
    """A validated mapping file and where it lives (relative paths resolve against it)."""

    spec: MappingFile
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def manifest(self) -> DatasetManifest:
        """What the warehouse records about this mapping's data set."""
        attributes = tuple(
            Attribute(
                name=name,
                kind=cfg.kind,
                description=cfg.description,
                label=cfg.label,
                allowed=tuple(cfg.allowed) if cfg.allowed is not None else None,
                min_value=cfg.min,
                max_value=cfg.max,
            )
            for name, cfg in self.spec.tables.leads.attributes.items()
        )
        return DatasetManifest(
            attributes=attributes,
            post_outcome=tuple(self.spec.post_outcome),
            mappings=(str(self.path),),
        )

    def leads_contract(self) -> TableContract:
        """The leads contract extended by the custom attributes (validated alike)."""
        extra = tuple(a.column() for a in self.manifest().attributes)
        return TableContract(
            name=LEADS.name,
            key=LEADS.key,
            columns=LEADS.columns + extra,
            time_column=LEADS.time_column,
            description=LEADS.description,
            references_leads=False,
        )


# --- Loading ----------------------------------------------------------------------------------


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-after")) or "(top)"


def load_mapping(path: Path) -> LoadedMapping:
    """Read and validate a mapping file.

    Raises:
        MappingError: Listing every mistake, each with its place in the file
            (``tables.leads.columns.industry: ...``).
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise MappingError(f"{path}: mapping file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise MappingError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise MappingError(f"{path}: expected a YAML mapping at the top, got {type(data).__name__}")
    try:
        spec = MappingFile.model_validate(data)
    except ValidationError as e:
        problems = [f"  {_location(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise MappingError(f"{path}: {len(problems)} mistake(s):\n" + "\n".join(problems)) from e
    problems = _semantic_problems(spec)
    if problems:
        listed = "\n".join(f"  {p}" for p in problems)
        raise MappingError(f"{path}: {len(problems)} mistake(s):\n{listed}")
    return LoadedMapping(spec=spec, path=path)


def _semantic_problems(spec: MappingFile) -> list[str]:
    """Every cross-field mistake: unknown sources and columns, clashes, post-outcome use."""
    problems: list[str] = []
    tables = spec.tables
    post = set(spec.post_outcome)
    for name, table in (
        ("leads", tables.leads),
        ("events", tables.events),
        ("stage_changes", tables.stage_changes),
        ("outcomes", tables.outcomes),
    ):
        if table is not None and table.source not in spec.sources:
            problems.append(
                f"tables.{name}.source: {table.source!r} is not among the sources "
                f"({', '.join(spec.sources)})"
            )
    leads = tables.leads
    problems += _columns_problems(
        "leads", LEADS, leads.columns, post, skip=("lead_id", "created_at")
    )
    if "source_channel" not in leads.columns:
        problems.append(
            "tables.leads.columns.source_channel: required (a column, or a constant such as "
            "`{constant: outbound_call}`)"
        )
    if leads.lead_id.constant is not None:
        problems.append("tables.leads.lead_id: a constant cannot identify leads")
    problems += _used_post_outcome("tables.leads.lead_id", leads.lead_id.column, post)
    problems += _time_problems("tables.leads.created_at", leads.created_at, post)
    if leads.created_at.after_created_days is not None:
        problems.append("tables.leads.created_at: `after_created_days` applies to outcomes only")
    for name, attr in leads.attributes.items():
        where = f"tables.leads.attributes.{name}"
        if not _IDENTIFIER.match(name):
            problems.append(f"{where}: name must be lower-case letters, digits and _")
        if name in LEADS.column_names or name in FEATURES_BY_NAME:
            problems.append(f"{where}: {name!r} is already a contract column or feature name")
        problems += _used_post_outcome(where, attr.column or name, post)
        if attr.kind == "categorical" and attr.allowed is not None:
            bad = {v for v in attr.values.values() if v is not None and v not in attr.allowed}
            if bad:
                problems.append(f"{where}.values: maps to values outside `allowed`: {sorted(bad)}")
    for name in ("events", "stage_changes"):
        table = getattr(tables, name)
        if table is None:
            continue
        contract = TABLES[name]
        problems += _columns_problems(
            name, contract, table.columns, post, skip=(contract.time_column,)
        )
        required = [c.name for c in contract.columns if not c.nullable and c.kind != "timestamp"]
        for column in required:
            if column not in table.columns:
                problems.append(f"tables.{name}.columns.{column}: required")
        problems += _time_problems(f"tables.{name}.time", table.time, post)
        if table.time.after_created_days is not None:
            problems.append(f"tables.{name}.time: `after_created_days` applies to outcomes only")
    outcomes = tables.outcomes
    if outcomes is not None:
        if outcomes.lead_id is None and outcomes.source != leads.source:
            problems.append(
                "tables.outcomes.lead_id: required when outcomes come from another source than "
                "the leads (the column that holds the lead's id)"
            )
        if outcomes.lead_id is not None:
            problems += _used_post_outcome("tables.outcomes.lead_id", outcomes.lead_id.column, post)
        problems += _time_problems("tables.outcomes.closed_at", outcomes.closed_at, post)
    return problems


def _columns_problems(
    table: str,
    contract: TableContract,
    columns: Mapping[str, FieldSpec],
    post: set[str],
    *,
    skip: tuple[str, ...],
) -> list[str]:
    problems = []
    for name, field_spec in columns.items():
        where = f"tables.{table}.columns.{name}"
        if name in skip:
            problems.append(f"{where}: set it with its own key, not under `columns`")
            continue
        if name not in contract.column_names:
            known = ", ".join(c for c in contract.column_names if c not in skip)
            problems.append(f"{where}: {table} has no column {name!r} (columns: {known})")
            continue
        col = contract.column(name)
        problems += _used_post_outcome(where, field_spec.column, post)
        if field_spec.from_ is not None and name != "event_id":
            problems.append(f"{where}: `from: row_number` is for ids only")
        if col.allowed is not None:
            targets = [v for v in field_spec.values.values() if v is not None]
            if field_spec.constant is not None:
                targets.append(str(field_spec.constant))
            bad = sorted({v for v in targets if _canonical(v, col.allowed) is None})
            if bad:
                problems.append(
                    f"{where}: {bad} not allowed for {name} (allowed: {', '.join(col.allowed)})"
                )
    return problems


def _time_problems(where: str, spec: TimeSpec, post: set[str]) -> list[str]:
    problems = _used_post_outcome(where, spec.column, post)
    if spec.parts is not None:
        for part in ("year", "month", "day", "hour"):
            value = getattr(spec.parts, part)
            if isinstance(value, str):
                problems += _used_post_outcome(f"{where}.parts.{part}", value, post)
    return problems


def _used_post_outcome(where: str, column: str | None, post: set[str]) -> list[str]:
    if column is not None and column in post:
        return [f"{where}: {column!r} is declared post_outcome and can never be used"]
    return []


# --- Mapping ----------------------------------------------------------------------------------


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _norm(value: object) -> str:
    """A category compared ignoring case, surrounding space and the separators ' ', - and _.

    Numbers (``-1`` is not ``1``) and cells made of separators only (``-``) are compared as
    written, trimmed.
    """
    text = str(value).strip().lower()
    if _NUMBER.match(text):
        return text
    normed = re.sub(r"[\s\-_]+", "_", text).strip("_")
    return normed if normed or not text else text


def _canonical(value: str, allowed: tuple[str, ...]) -> str | None:
    """The allowed value ``value`` normalises to, if any."""
    by_norm = {_norm(v): v for v in allowed}
    return by_norm.get(_norm(value))


@dataclass
class MappedTable:
    """One contract table produced from one source.

    Attributes:
        contract: The table's contract (leads: extended by the custom attributes).
        source: Where the rows come from (file path or ``url#table``, no password).
        raw: Contract-named cells, indexed by the source's row number.
        original: The source rows themselves, same index (what the quarantine keeps).
    """

    contract: TableContract
    source: str
    raw: pd.DataFrame
    original: pd.DataFrame


class _Mapper:
    """Applies one mapping to the frames read from its sources."""

    def __init__(
        self, mapping: LoadedMapping, frames: Mapping[str, pd.DataFrame], labels: Mapping[str, str]
    ) -> None:
        self.spec = mapping.spec
        self.frames = frames
        self.labels = labels
        self.placeholders = {_norm(v) for v in (*DEFAULT_MISSING, *self.spec.missing_values)}

    # -- cells -------------------------------------------------------------------------------
    def _source_column(self, source: str, column: str, where: str) -> pd.Series:
        frame = self.frames[source]
        if column not in frame.columns:
            found = ", ".join(map(str, frame.columns))
            raise MappingError(
                f"{where}: source {source!r} ({self.labels[source]}) has no column {column!r} "
                f"(found: {found})"
            )
        return frame[column]

    def _missing_mask(self, values: pd.Series, extra: list[str]) -> np.ndarray:
        if not (values.dtype == object or isinstance(values.dtype, pd.StringDtype)):
            return values.isna().to_numpy(dtype=bool)
        tokens = self.placeholders | {_norm(v) for v in extra}
        text = values.astype(object).where(values.notna(), "")
        normed = text.map(_norm)
        return (values.isna() | normed.isin(tokens)).to_numpy(dtype=bool)

    def field(
        self,
        source: str,
        spec: FieldSpec,
        where: str,
        *,
        normalise: Callable[[str], str] | None = None,
    ) -> pd.Series:
        """Cells of one contract column: source values with placeholders blanked, the value
        map applied, then ``normalise`` (for categories); unmapped values pass unchanged so
        that validation reports them."""
        index = self.frames[source].index
        if spec.from_ is not None:
            return pd.Series(index.astype(str), index=index, dtype=object)
        if spec.constant is not None:
            value = spec.constant
            fixed = str(value).lower() if isinstance(value, bool) else str(value)
            fixed = normalise(fixed) if normalise else fixed
            return pd.Series([fixed] * len(index), index=index, dtype=object)
        assert spec.column is not None
        values = self._source_column(source, spec.column, where)
        missing = self._missing_mask(values, spec.missing)
        if not spec.values and normalise is None:
            if values.dtype == object:
                return values.where(~missing, "")
            return values.where(~missing)
        text = values.astype(object).where(values.notna(), "").map(str)
        out = text.copy()
        if spec.values:
            lookup = {_norm(k): v for k, v in spec.values.items()}
            keys = text.map(_norm)
            hit = keys.isin(list(lookup)).to_numpy(dtype=bool)
            mapped = keys[hit].map(lookup)
            out[hit] = mapped.where(mapped.notna(), "")
            missing |= hit & mapped.reindex(text.index).isna().to_numpy(dtype=bool)
        if normalise is not None:
            present = ~missing
            out[present] = out[present].map(normalise)
        return out.where(~missing, "").astype(object)

    def category(self, source: str, spec: FieldSpec, where: str, col: Column) -> pd.Series:
        """A contract column with its kind's normalisation (when the mapping asks for it)."""
        if not self.spec.normalise_categories or col.kind != "str":
            return self.field(source, spec, where)
        if col.allowed is not None:
            allowed = col.allowed

            def to_allowed(value: str) -> str:
                return _canonical(value, allowed) or value

            return self.field(source, spec, where, normalise=to_allowed)
        if col.name == "country":
            return self.field(source, spec, where, normalise=lambda v: v.strip().upper())
        if col.name in ("utm_source", "utm_medium", "utm_campaign", "email_domain"):
            return self.field(source, spec, where, normalise=lambda v: v.strip().lower())
        return self.field(source, spec, where, normalise=lambda v: v.strip())

    def attribute(self, source: str, name: str, cfg: AttributeConfig) -> pd.Series:
        where = f"tables.leads.attributes.{name}"
        spec = FieldSpec(column=cfg.column or name, values=cfg.values, missing=cfg.missing)
        if cfg.kind != "categorical" or not self.spec.normalise_categories:
            return self.field(source, spec, where)
        if cfg.allowed is not None:
            allowed = tuple(cfg.allowed)
            return self.field(source, spec, where, normalise=lambda v: _canonical(v, allowed) or v)
        return self.field(source, spec, where, normalise=_norm)

    # -- time --------------------------------------------------------------------------------
    def time(self, source: str, spec: TimeSpec, where: str, *, now: pd.Timestamp) -> pd.Series:
        """ISO 8601 text of each row's moment; unreadable inputs pass as their text."""
        index = self.frames[source].index
        if spec.none:
            at = pd.Timestamp(spec.at) if spec.at else now - pd.Timedelta(days=1)
            at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")
            return pd.Series([at.isoformat()] * len(index), index=index, dtype=object)
        if spec.row_order is not None:
            start = _utc(pd.Timestamp(spec.row_order.start), spec.timezone)
            end = _utc(pd.Timestamp(spec.row_order.end), spec.timezone)
            n = len(index)
            step = (end - start) / max(n - 1, 1)
            moments = [start + step * i for i in range(n)]
            return pd.Series([m.isoformat() for m in moments], index=index, dtype=object)
        if spec.parts is not None:
            return self._from_parts(source, spec, where)
        assert spec.column is not None
        values = self._source_column(source, spec.column, where)
        missing = self._missing_mask(values, [])
        if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(
            values.dtype
        ):
            parsed = pd.to_datetime(values, utc=False)
            return _iso(parsed, spec.timezone, missing, fallback=values)
        text = values.astype(object).where(~missing, "").map(str)
        if spec.format is not None:
            parsed = pd.to_datetime(text.where(~missing), format=spec.format, errors="coerce")
        else:
            parsed = pd.to_datetime(
                text.where(~missing), format="ISO8601", errors="coerce", utc=False
            )
        return _iso(parsed, spec.timezone, missing, fallback=text)

    def _from_parts(self, source: str, spec: TimeSpec, where: str) -> pd.Series:
        parts = spec.parts
        assert parts is not None
        index = self.frames[source].index
        month_text = self._source_column(source, parts.month, f"{where}.parts.month")
        day_text = self._source_column(source, parts.day, f"{where}.parts.day")
        month = month_text.map(_month_number).astype("float64")
        day = pd.to_numeric(day_text, errors="coerce")
        if isinstance(parts.year, int):
            year = pd.Series(float(parts.year), index=index)
        elif isinstance(parts.year, str):
            year = pd.to_numeric(
                self._source_column(source, parts.year, f"{where}.parts.year"), errors="coerce"
            )
        else:
            assert parts.start_year is not None
            # A month earlier than the previous row's starts a new year (rows in time order).
            filled = month.ffill().fillna(month.dropna().iloc[0] if month.notna().any() else 1)
            wraps = (filled.diff() < 0).cumsum()
            year = parts.start_year + wraps.astype("float64")
        hour = (
            pd.to_numeric(
                self._source_column(source, parts.hour, f"{where}.parts.hour"), errors="coerce"
            )
            if parts.hour
            else pd.Series(0.0, index=index)
        )
        frame = pd.DataFrame({"year": year, "month": month, "day": day, "hour": hour})
        parsed = pd.to_datetime(frame, errors="coerce")
        shown = (
            "year="
            + year.astype(str)
            + " month="
            + month_text.astype(str)
            + " day="
            + day_text.astype(str)
        )
        return _iso(parsed, spec.timezone, np.zeros(len(index), dtype=bool), fallback=shown)


def _month_number(value: object) -> float:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    text = str(value).strip().lower()
    if text in _MONTHS:
        return float(_MONTHS[text])
    try:
        number = float(text)
    except ValueError:
        return np.nan
    return number if number in range(1, 13) else np.nan


def _utc(ts: pd.Timestamp, timezone: str) -> pd.Timestamp:
    return ts.tz_localize(timezone).tz_convert("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _iso(
    parsed: pd.Series, timezone: str, missing: np.ndarray, *, fallback: pd.Series
) -> pd.Series:
    """Parsed moments as UTC ISO text; unparsed cells keep their text (validation reports
    them as unreadable) and missing ones become empty."""
    parsed = pd.Series(parsed)
    if not isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = pd.to_datetime(parsed, errors="coerce")
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):
            parsed = parsed.dt.tz_convert("UTC")
        else:
            try:
                parsed = parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
            except TypeError:
                parsed = pd.to_datetime(parsed, utc=True, errors="coerce")
            parsed = parsed.dt.tz_convert("UTC")
    else:
        parsed = parsed.dt.tz_convert("UTC")
    text = parsed.map(lambda t: t.isoformat() if not pd.isna(t) else None)
    out = text.where(text.notna(), fallback.astype(object).map(str)).astype(object)
    out[missing] = ""
    return out


def map_sources(
    mapping: LoadedMapping,
    frames: Mapping[str, pd.DataFrame],
    *,
    labels: Mapping[str, str],
    now: pd.Timestamp,
    stored_outcome_leads: set[int] | None = None,
) -> list[MappedTable]:
    """Map the read sources onto the contract tables.

    Args:
        mapping: A validated mapping.
        frames: Source name -> rows as read (indexed by row number, 1 = first).
        labels: Source name -> how to name it in messages and the quarantine.
        now: The ingest moment (for ``none`` times and outcome maturity).
        stored_outcome_leads: Leads that already have an outcome in the warehouse (never
            declared lost for lack of one).

    Returns:
        The tables in ingest order (leads first). Leads carry the custom attributes; with
        ``lost_without_outcome_after_days`` a second outcomes table holds the leads declared
        lost for want of an outcome.

    Raises:
        MappingError: If a source lacks a column the mapping names.
    """
    spec = mapping.spec
    mapper = _Mapper(mapping, frames, labels)
    leads_cfg = spec.tables.leads
    src = leads_cfg.source
    leads = pd.DataFrame(index=frames[src].index)
    leads["lead_id"] = mapper.field(src, leads_cfg.lead_id, "tables.leads.lead_id")
    leads["created_at"] = mapper.time(src, leads_cfg.created_at, "tables.leads.created_at", now=now)
    for name, field_spec in leads_cfg.columns.items():
        leads[name] = mapper.category(
            src, field_spec, f"tables.leads.columns.{name}", LEADS.column(name)
        )
    for name, cfg in leads_cfg.attributes.items():
        leads[name] = mapper.attribute(src, name, cfg)
    out = [MappedTable(mapping.leads_contract(), labels[src], leads, frames[src])]

    for name in ("stage_changes", "events"):
        cfg = getattr(spec.tables, name)
        if cfg is None:
            continue
        contract = TABLES[name]
        table = pd.DataFrame(index=frames[cfg.source].index)
        for column, field_spec in cfg.columns.items():
            table[column] = mapper.category(
                cfg.source, field_spec, f"tables.{name}.columns.{column}", contract.column(column)
            )
        table[contract.time_column] = mapper.time(
            cfg.source, cfg.time, f"tables.{name}.time", now=now
        )
        out.append(MappedTable(contract, labels[cfg.source], table, frames[cfg.source]))

    outcomes_cfg = spec.tables.outcomes
    if outcomes_cfg is not None:
        out += _map_outcomes(
            mapper, outcomes_cfg, leads, leads_source=src, now=now, stored=stored_outcome_leads
        )
    return out


def _map_outcomes(
    mapper: _Mapper,
    cfg: OutcomesMapping,
    leads: pd.DataFrame,
    *,
    leads_source: str,
    now: pd.Timestamp,
    stored: set[int] | None,
) -> list[MappedTable]:
    spec = mapper.spec
    src = cfg.source
    lead_spec = cfg.lead_id or spec.tables.leads.lead_id
    table = pd.DataFrame(index=mapper.frames[src].index)
    table["lead_id"] = mapper.field(src, lead_spec, "tables.outcomes.lead_id")
    result_spec = FieldSpec(
        column=cfg.result.column,
        values={**{v: "won" for v in cfg.result.won}, **{v: "lost" for v in cfg.result.lost}},
    )
    table["result"] = mapper.field(src, result_spec, "tables.outcomes.result")
    created = pd.to_datetime(leads["created_at"], utc=True, errors="coerce", format="ISO8601")
    if cfg.closed_at.after_created_days is not None:
        by_lead = pd.Series(created.to_numpy(), index=leads["lead_id"].astype(str).to_numpy())
        by_lead = by_lead[~by_lead.index.duplicated()]
        lead_created = table["lead_id"].astype(str).map(by_lead)
        closed = pd.to_datetime(lead_created, utc=True) + pd.Timedelta(
            days=cfg.closed_at.after_created_days
        )
        table["closed_at"] = closed.map(lambda t: t.isoformat() if not pd.isna(t) else "")
    else:
        table["closed_at"] = mapper.time(src, cfg.closed_at, "tables.outcomes.closed_at", now=now)
    if cfg.amount is not None:
        table["amount"] = mapper.field(src, cfg.amount, "tables.outcomes.amount")
    # A row without a result is an open lead, not an outcome (flat exports hold both).
    has_result = table["result"].astype(str) != ""
    original = mapper.frames[src]
    out = [MappedTable(OUTCOMES, mapper.labels[src], table[has_result], original[has_result])]

    days = cfg.lost_without_outcome_after_days
    if days is not None:
        known = set(table["lead_id"].astype(str)) | {str(i) for i in (stored or set())}
        age_ok = created + pd.Timedelta(days=days) <= now
        candidates = age_ok & ~leads["lead_id"].astype(str).isin(known) & created.notna()
        lost = pd.DataFrame(
            {
                "lead_id": leads.loc[candidates, "lead_id"],
                "closed_at": (created[candidates] + pd.Timedelta(days=days)).map(
                    lambda t: t.isoformat()
                ),
                "result": "lost",
                "amount": "0",
            },
            index=leads.index[candidates],
        )
        label = f"{mapper.labels[leads_source]} (no outcome within {days:g} days: lost)"
        out.append(MappedTable(OUTCOMES, label, lost, mapper.frames[leads_source].loc[lost.index]))
    return out


def source_label(cfg: SourceConfig, base_dir: Path) -> str:
    """How a source is named in messages and the quarantine (URL without its password)."""
    if cfg.path is not None:
        return str(resolve_path(cfg.path, base_dir))
    return f"{redact_url(expand_env(cfg.url or ''))}#{cfg.table or 'query'}"


def resolve_path(path: str, base_dir: Path) -> Path:
    candidate = Path(os.path.expanduser(path))
    return candidate if candidate.is_absolute() else (base_dir / candidate).resolve()


def expand_env(text: str) -> str:
    """``${VAR}`` replaced from the environment (a missing variable is an error)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise MappingError(f"environment variable {name} (used in a source url) is not set")
        return os.environ[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value, text)
