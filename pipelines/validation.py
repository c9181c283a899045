"""Great Expectations suites derived from the data contracts, and the rows that broke them.

Every rule is derived from a :class:`~leadscore.contracts.TableContract`: nothing here is
written per table. A rule has a stable name (``"not_null:lead_id"``) that ingest uses to
count, quarantine and explain the rows that broke it.

Great Expectations is imported lazily (``import great_expectations`` takes seconds and the
CLI must start fast). Two choices keep it fast on millions of rows:

* frames are validated by the validator behind ``ValidationDefinition.run`` without the run
  itself: ``run`` serialises every result, including the full lists of failing rows, into
  the results store (minutes for a file with a million bad rows), and ``Batch.validate``
  loads and fingerprints the whole frame twice;
* the row number is the frame's *named index*, and results are requested with
  ``exclude_unexpected_values``: GE then returns the failing row numbers as one plain list
  per rule instead of building a dict per failing row.
"""

from __future__ import annotations

import os

# GE reads this variable once, when it is first imported; without it every ephemeral context
# would try to send usage statistics. setdefault keeps an explicit choice of the caller.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import logging
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from leadscore.contracts import LEADS, TableContract

if TYPE_CHECKING:
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.expectations.expectation import Expectation

logger = logging.getLogger(__name__)

ROW_NUMBER = "_row"
"""Name of the frame index that numbers the rows of a source (1 = first data row)."""

LEAD_CREATED_AT = "_lead_created_at"
"""Helper column joined onto tables that reference leads: the lead's ``created_at``, or
NaT if the lead is unknown."""

EARLIEST_TIMESTAMP = pd.Timestamp("2000-01-01", tz="UTC")
"""No timestamp of the CRM history is older than this."""

NOT_BEFORE_LEAD_CREATED: dict[str, str] = {"outcomes": "closed_at", "stage_changes": "changed_at"}
"""Table -> time column that must not be earlier than the lead's ``created_at``."""

Check = Literal[
    "not_null",
    "allowed_values",
    "range",
    "not_in_future",
    "not_before_2000",
    "not_before_first_lead",
    "unique_key",
    "lead_exists",
    "after_lead_created",
]

RowNumbers = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Rule:
    """One check derived from a contract.

    Attributes:
        name: Stable rule name, ``"<check>:<column>"`` (``"unique_key:a+b"`` for compound
            keys); what the quarantine and the reports record.
        check: Kind of check.
        columns: Columns the rule looks at.
        allowed: Allowed values (``allowed_values``).
        min_value: Smallest allowed value (``range``, ``not_before_2000``).
        max_value: Largest allowed value (``range``, ``not_in_future``).
    """

    name: str
    check: Check
    columns: tuple[str, ...]
    allowed: tuple[str, ...] | None = None
    min_value: float | pd.Timestamp | None = None
    max_value: float | pd.Timestamp | None = None

    @property
    def column(self) -> str:
        """The (first) column the rule is about."""
        return self.columns[0]


def as_utc(moment: datetime | pd.Timestamp) -> pd.Timestamp:
    """``moment`` as a UTC timestamp (naive values are taken as UTC)."""
    ts = pd.Timestamp(moment)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def derive_rules(
    contract: TableContract, *, now: datetime, earliest: pd.Timestamp | None = None
) -> list[Rule]:
    """Derive every row-level rule of a table from its contract.

    Args:
        contract: The table's contract.
        now: The present (UTC); timestamps after it are in the future.
        earliest: The company's first lead (leads: as a mapping declares it; events: the
            earliest lead stored); the table's time column must not be older.

    Returns:
        The rules, in a stable order: per column (not null, allowed values, range, time
        bounds), then the key, then the rules against the leads table.
    """
    now_ts = as_utc(now)
    rules: list[Rule] = []
    for col in contract.columns:
        name = col.name
        if not col.nullable:
            rules.append(Rule(f"not_null:{name}", "not_null", (name,)))
        if col.allowed is not None:
            rules.append(Rule(f"allowed_values:{name}", "allowed_values", (name,), col.allowed))
        if col.kind in ("int", "float") and (
            col.min_value is not None or col.max_value is not None
        ):
            rules.append(
                Rule(
                    f"range:{name}",
                    "range",
                    (name,),
                    min_value=col.min_value,
                    max_value=col.max_value,
                )
            )
        if col.kind == "timestamp":
            rules.append(Rule(f"not_in_future:{name}", "not_in_future", (name,), max_value=now_ts))
            rules.append(
                Rule(
                    f"not_before_2000:{name}",
                    "not_before_2000",
                    (name,),
                    min_value=EARLIEST_TIMESTAMP,
                )
            )
            if earliest is not None and name == contract.time_column:
                rules.append(
                    Rule(
                        f"not_before_first_lead:{name}",
                        "not_before_first_lead",
                        (name,),
                        min_value=as_utc(earliest),
                    )
                )
    rules.append(Rule(f"unique_key:{'+'.join(contract.key)}", "unique_key", contract.key))
    if contract.references_leads:
        rules.append(Rule("lead_exists:lead_id", "lead_exists", ("lead_id",)))
        time_column = NOT_BEFORE_LEAD_CREATED.get(contract.name)
        if time_column is not None:
            rules.append(
                Rule(f"after_lead_created:{time_column}", "after_lead_created", (time_column,))
            )
    return rules


def _expectation(rule: Rule) -> Expectation:
    """The GE expectation that checks ``rule``; its ``meta`` carries the rule name back."""
    import great_expectations.expectations as gxe

    meta = {"rule": rule.name}
    column = rule.column
    if rule.check == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=column, meta=meta)
    if rule.check == "allowed_values":
        return gxe.ExpectColumnValuesToBeInSet(
            column=column, value_set=list(rule.allowed or ()), meta=meta
        )
    if rule.check in ("range", "not_in_future", "not_before_2000", "not_before_first_lead"):
        return gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=rule.min_value, max_value=rule.max_value, meta=meta
        )
    if rule.check == "unique_key":
        if len(rule.columns) == 1:
            return gxe.ExpectColumnValuesToBeUnique(column=column, meta=meta)
        return gxe.ExpectCompoundColumnsToBeUnique(
            column_list=list(rule.columns), ignore_row_if="any_value_is_missing", meta=meta
        )
    if rule.check == "lead_exists":
        # The lead's created_at is joined onto the frame beforehand: a value set of every lead
        # id would be copied into each metric configuration (minutes for 100k leads).
        return gxe.ExpectColumnValuesToNotBeNull(column=LEAD_CREATED_AT, meta=meta)
    if rule.check == "after_lead_created":
        return gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=column,
            column_B=LEAD_CREATED_AT,
            or_equal=True,
            ignore_row_if="either_value_is_missing",
            meta=meta,
        )
    raise ValueError(f"unknown check {rule.check!r} of rule {rule.name!r}")


@cache
def _batch_definition() -> BatchDefinition:
    """One ephemeral context (progress bars off) with a whole-dataframe batch definition."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return (
        context.data_sources.add_pandas("leadscore_ingest")
        .add_dataframe_asset("table")
        .add_batch_definition_whole_dataframe("whole_table")
    )


def validate_frame(
    frame: pd.DataFrame, contract: TableContract, *, rules: list[Rule]
) -> dict[str, RowNumbers]:
    """Run the rules of a table on a frame with Great Expectations.

    Args:
        frame: Coerced table, indexed by :data:`ROW_NUMBER`; tables that reference leads
            also carry :data:`LEAD_CREATED_AT`.
        contract: The table's contract (names the suite).
        rules: The rules to run, as returned by :func:`derive_rules`.

    Returns:
        Rule name -> sorted row numbers that broke it (every rule is present).

    Raises:
        ValueError: If the frame is not indexed by row number, lacks a helper column, or GE
            could not evaluate a rule.
    """
    import great_expectations as gx
    from great_expectations.validator.v1_validator import Validator as V1Validator

    if frame.index.name != ROW_NUMBER:
        raise ValueError(f"frame must be indexed by {ROW_NUMBER!r}, got {frame.index.name!r}")
    needs_leads = any(r.check in ("lead_exists", "after_lead_created") for r in rules)
    if needs_leads and LEAD_CREATED_AT not in frame.columns:
        raise ValueError(f"table {contract.name!r}: column {LEAD_CREATED_AT!r} is missing")

    failed: dict[str, RowNumbers] = {r.name: np.empty(0, dtype=np.int64) for r in rules}
    if frame.empty or not rules:
        return failed
    suite = gx.ExpectationSuite(
        name=f"{contract.name}_contract", expectations=[_expectation(r) for r in rules]
    )
    # The validator ValidationDefinition.run uses, minus the results store; Batch.validate
    # would load (and fingerprint) the whole frame twice.
    validator = V1Validator(
        batch_definition=_batch_definition(),
        batch_parameters={"dataframe": _numpy_ints(frame)},
        result_format={
            "result_format": "COMPLETE",
            "unexpected_index_column_names": [ROW_NUMBER],
            "exclude_unexpected_values": True,
            "return_unexpected_index_query": False,
            "partial_unexpected_count": 0,
        },
    )
    result = validator.validate_expectation_suite(suite)
    for res in result.results:
        config = res.expectation_config
        rule_name = str(config.meta["rule"]) if config is not None and config.meta else "?"
        info = res.exception_info or {}
        if info.get("raised_exception"):
            raise ValueError(
                f"table {contract.name!r}: rule {rule_name!r} could not be evaluated: "
                f"{info.get('exception_message')}"
            )
        if res.success:
            continue
        failed[rule_name] = _row_numbers(res.result.get("unexpected_index_list") or [])
    logger.info(
        "validated %s: %d rows, %d rules, %d broken",
        contract.name,
        len(frame),
        len(rules),
        sum(1 for rows in failed.values() if rows.size),
    )
    return failed


def _numpy_ints(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with nullable ``Int64`` columns as numpy ``int64`` or ``float64``.

    GE compares only numpy numbers vectorised; on ``Int64`` its range check calls a Python
    function per row. A column with missing values becomes ``float64``, which is exact as
    long as every value is within 2**53 (larger ones keep ``Int64``: slower, still right).
    """
    out = frame.copy(deep=False)
    for name in frame.columns:
        column = frame[name]
        if not isinstance(column.dtype, pd.Int64Dtype):
            continue
        if not column.hasnans:
            out[name] = column.astype("int64")
        elif bool((column.abs() <= 2**53).all()):
            out[name] = column.astype("float64")
    return out


def _row_numbers(index_list: list[Any]) -> RowNumbers:
    """Row numbers from GE's ``unexpected_index_list``.

    With ``exclude_unexpected_values`` and a named index GE returns ``[{"_row": [..]}]``;
    the per-row form ``[{"_row": 3, ...}, ...]`` is accepted too.
    """
    rows: list[Any] = []
    for item in index_list:
        value = item[ROW_NUMBER] if isinstance(item, dict) else item
        if isinstance(value, list | tuple | np.ndarray):
            rows.extend(value)
        else:
            rows.append(value)
    return np.unique(np.asarray(rows, dtype=np.int64))


def leads_reference(leads: pd.DataFrame) -> pd.Series:
    """Lead id -> ``created_at`` of the accepted leads, to join onto referencing tables."""
    key = LEADS.key[0]
    ref = leads.drop_duplicates(key, keep="last")
    created = ref[LEADS.time_column].set_axis(pd.Index(ref[key].to_numpy(dtype=np.int64)))
    return created.rename(LEAD_CREATED_AT)
