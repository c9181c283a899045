"""Data contracts: the four input tables every source is mapped onto.

Each table is described once, here, as a :class:`TableContract`; the demo generator writes
these columns, ingest derives its Great Expectations suites from them, and the README's
schema tables document them. All timestamps are UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

Kind = Literal["int", "float", "str", "bool", "timestamp"]

SOURCE_CHANNELS: tuple[str, ...] = (
    "website",
    "referral",
    "webinar",
    "social_media",
    "paid_search",
    "trade_show",
    "partner",
    "linkedin",
    "event",
    "bought_list",
    "email_campaign",
)
LEAD_CHANNELS: tuple[str, ...] = (*SOURCE_CHANNELS, "outbound_call", "direct_mail", "other")
"""Every channel the leads contract accepts: the demo's channels and those of other exports
(telemarketing lists, mailings)."""
REGIONS: tuple[str, ...] = ("north_america", "europe", "apac", "latam", "mea")
INDUSTRIES: tuple[str, ...] = (
    "software",
    "financial_services",
    "healthcare",
    "manufacturing",
    "retail",
    "education",
    "government",
    "professional_services",
    "media",
    "other",
)
COMPANY_SIZES: tuple[str, ...] = ("1-10", "11-50", "51-200", "201-1000", "1001-5000", "5000+")
REVENUE_BANDS: tuple[str, ...] = ("<1M", "1M-10M", "10M-50M", "50M-250M", "250M-1B", "1B+")
JOB_ROLES: tuple[str, ...] = (
    "marketing",
    "sales",
    "it",
    "engineering",
    "finance",
    "operations",
    "hr",
    "executive",
    "other",
)
SENIORITIES: tuple[str, ...] = ("entry", "senior", "manager", "director", "vp", "c_level")
BANT_BUDGET: tuple[str, ...] = ("none", "under_10k", "10k_50k", "50k_250k", "over_250k")
BANT_TIMELINE: tuple[str, ...] = ("now", "within_3m", "within_6m", "within_12m", "no_plan")
GENDERS: tuple[str, ...] = ("female", "male", "other")
# Webmail domains: an address there says nothing about an employer.
FREE_EMAIL_DOMAINS: frozenset[str] = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "hotmail.com",
        "outlook.com",
        "live.com",
        "icloud.com",
        "aol.com",
        "proton.me",
        "protonmail.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "mail.ru",
        "yandex.ru",
        "qq.com",
        "163.com",
    }
)

EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "pricing_page_view",
    "content_download",
    "webinar_registered",
    "webinar_attended",
    "event_attended",
    "email_open",
    "email_click",
    "form_submit",
    "demo_request",
    "trial_signup",
    "social_interaction",
    "unsubscribe",
)
EVENT_CHANNELS: tuple[str, ...] = ("web", "email", "social", "event", "webinar", "sales")
STAGES: tuple[str, ...] = ("lead", "MQL", "SQL", "opportunity", "won", "lost", "recycled")
RESULTS: tuple[str, ...] = ("won", "lost")


@dataclass(frozen=True)
class Column:
    """One column of a contract.

    Attributes:
        name: Column name.
        kind: Logical type.
        description: What the column holds.
        nullable: Whether a missing value is allowed.
        allowed: The closed set of allowed values for categorical columns.
        min_value: Smallest plausible value for numeric columns.
        max_value: Largest plausible value for numeric columns.
    """

    name: str
    kind: Kind
    description: str
    nullable: bool = True
    allowed: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class TableContract:
    """Schema of one input table.

    Attributes:
        name: Table name (also the file stem in raw and warehouse folders).
        key: Columns that identify a row uniquely.
        columns: Every column, in order.
        time_column: The UTC timestamp that places the row in time.
        description: What one row means.
    """

    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    time_column: str
    description: str
    references_leads: bool = field(default=True)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        """Return the column called ``name``."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")


def _cat(name: str, values: tuple[str, ...], description: str, nullable: bool = True) -> Column:
    return Column(name, "str", description, nullable=nullable, allowed=values)


LEADS = TableContract(
    name="leads",
    key=("lead_id",),
    time_column="created_at",
    description="One row per lead: who they are (explicit data) and where they came from.",
    references_leads=False,
    columns=(
        Column("lead_id", "int", "Unique lead identifier.", nullable=False, min_value=0),
        Column("created_at", "timestamp", "When the lead was created (UTC).", nullable=False),
        _cat("source_channel", LEAD_CHANNELS, "Channel the lead came from.", nullable=False),
        Column("utm_source", "str", "UTM source of the first touch."),
        Column("utm_medium", "str", "UTM medium of the first touch."),
        Column("utm_campaign", "str", "UTM campaign of the first touch."),
        _cat("region", REGIONS, "Sales region."),
        Column("country", "str", "ISO 3166-1 alpha-2 country code."),
        _cat("industry", INDUSTRIES, "Industry of the lead's company."),
        _cat("company_size", COMPANY_SIZES, "Employee count band."),
        _cat("annual_revenue", REVENUE_BANDS, "Annual revenue band (USD)."),
        _cat("job_role", JOB_ROLES, "Job function."),
        _cat("seniority", SENIORITIES, "Seniority level."),
        Column("is_decision_maker", "bool", "Whether the contact signs off purchases."),
        _cat("bant_budget", BANT_BUDGET, "BANT: stated budget."),
        Column("bant_authority", "bool", "BANT: has buying authority."),
        Column("bant_need", "bool", "BANT: confirmed need."),
        _cat("bant_timeline", BANT_TIMELINE, "BANT: purchase timeline."),
        Column("age", "int", "Consumer leads: age in years.", min_value=16, max_value=100),
        _cat("gender", GENDERS, "Consumer leads: gender (never used as a model feature)."),
        Column("email_domain", "str", "Domain of the lead's e-mail address (e.g. acme.com)."),
    ),
)

EVENTS = TableContract(
    name="events",
    key=("event_id",),
    time_column="occurred_at",
    description="One row per behaviour event of a lead (implicit data).",
    columns=(
        Column("event_id", "str", "Unique event identifier (idempotency key).", nullable=False),
        Column("lead_id", "int", "Lead the event belongs to.", nullable=False, min_value=0),
        Column("occurred_at", "timestamp", "When it happened (UTC).", nullable=False),
        _cat("event_type", EVENT_TYPES, "What the lead did.", nullable=False),
        Column("topic", "str", "Content topic or page."),
        _cat("channel", EVENT_CHANNELS, "Channel of the interaction."),
    ),
)

STAGE_CHANGES = TableContract(
    name="stage_changes",
    key=("lead_id", "changed_at", "stage"),
    time_column="changed_at",
    description="One row per lifecycle stage a lead entered.",
    columns=(
        Column("lead_id", "int", "Lead whose stage changed.", nullable=False, min_value=0),
        Column("changed_at", "timestamp", "When the lead entered the stage (UTC).", nullable=False),
        _cat("stage", STAGES, "Stage entered.", nullable=False),
    ),
)

OUTCOMES = TableContract(
    name="outcomes",
    key=("lead_id",),
    time_column="closed_at",
    description="One row per closed deal: the label source, fed back by sales.",
    columns=(
        Column("lead_id", "int", "Lead whose deal closed.", nullable=False, min_value=0),
        Column("closed_at", "timestamp", "When the deal closed (UTC).", nullable=False),
        _cat("result", RESULTS, "won or lost.", nullable=False),
        Column("amount", "float", "Deal value (USD); 0 for lost deals.", min_value=0),
    ),
)

TABLES: dict[str, TableContract] = {t.name: t for t in (LEADS, EVENTS, STAGE_CHANGES, OUTCOMES)}


def to_utc_us(values: object) -> pd.Series:
    """Timestamps as ``datetime64[us, UTC]`` (naive input is taken as UTC).

    Feast's DuckDB offline store fails on nanosecond tz-aware timestamps, so every table that
    reaches it is stored at microsecond precision.
    """
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    return pd.to_datetime(series, utc=True).astype("datetime64[us, UTC]")


_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def epoch_seconds(values: object) -> np.ndarray:
    """UTC timestamps as float seconds since the epoch (NaN where missing)."""
    seconds: np.ndarray = (
        (to_utc_us(values) - _EPOCH).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
    )
    return seconds
