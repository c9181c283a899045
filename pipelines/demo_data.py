"""Synthetic CRM and marketing history: leads, behaviour events, stage changes and outcomes.

The generator draws every lead from one known model, so the rest of the platform has something
learnable to train on and a ground truth to be checked against:

* **Who the lead is** (channel, firmographics, BANT answers) and a latent **intent**
  ``z ~ N(0, 0.8)`` add up to a conversion logit; ``p_convert = sigmoid(logit)`` is the true
  probability that the lead is won within 120 days of its creation, and ``converted`` is one
  Bernoulli draw of it.
* **What the lead does** is drawn from the intent alone (never from the realised outcome): more
  intent means more events, and more pricing views, demo requests, trial sign-ups and webinars;
  less intent means mostly email opens and page views, and more unsubscribes. Activity fades
  with time since creation.
* **The lifecycle** follows the outcome: converters go lead -> MQL -> SQL -> opportunity -> won
  within 120 days; other leads mostly stay leads, some qualify and are recycled or close lost.

Everything is vectorised with numpy (no Python loop per lead or per event) and deterministic
for a given seed. Tables follow :mod:`leadscore.contracts` column for column.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from leadscore.contracts import (
    BANT_BUDGET,
    BANT_TIMELINE,
    COMPANY_SIZES,
    EVENT_CHANNELS,
    EVENT_TYPES,
    EVENTS,
    GENDERS,
    INDUSTRIES,
    JOB_ROLES,
    LEADS,
    OUTCOMES,
    REGIONS,
    RESULTS,
    REVENUE_BANDS,
    SENIORITIES,
    SOURCE_CHANNELS,
    STAGE_CHANGES,
    STAGES,
)

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]

_US_PER_HOUR = 3_600 * 1_000_000
_US_PER_DAY = 24 * _US_PER_HOUR
CONVERSION_HORIZON_DAYS = 120

# --- Arrival of leads -------------------------------------------------------------------------
_GROWTH = float(np.log(2.2))  # the last day of the history gets 2.2x the leads of the first
_WEEKDAY_WEIGHTS = np.array([1.0, 1.05, 1.05, 1.0, 0.9, 0.4, 0.35])  # Monday first
_HOUR_WEIGHTS = np.array(
    [1, 1, 1, 1, 1.5, 2, 3, 5, 7, 9, 10, 10, 10, 10, 10, 9, 8, 7, 5, 4, 3, 2, 1.5, 1], dtype=float
)

# --- Who the lead is ---------------------------------------------------------------------------
_CHANNEL_SHARE = {
    "website": 0.18,
    "referral": 0.06,
    "webinar": 0.08,
    "social_media": 0.12,
    "paid_search": 0.14,
    "trade_show": 0.05,
    "partner": 0.05,
    "linkedin": 0.08,
    "event": 0.05,
    "bought_list": 0.10,
    "email_campaign": 0.09,
}
_CONSUMER_SHARE = {
    "website": 0.15,
    "referral": 0.05,
    "webinar": 0.02,
    "social_media": 0.25,
    "paid_search": 0.15,
    "trade_show": 0.01,
    "partner": 0.01,
    "linkedin": 0.02,
    "event": 0.03,
    "bought_list": 0.05,
    "email_campaign": 0.05,
}
_REGION_SHARE = {"north_america": 0.45, "europe": 0.28, "apac": 0.15, "latam": 0.07, "mea": 0.05}
_COUNTRIES: dict[str, dict[str, float]] = {
    "north_america": {"US": 0.80, "CA": 0.15, "MX": 0.05},
    "europe": {"GB": 0.25, "DE": 0.25, "FR": 0.18, "NL": 0.12, "ES": 0.10, "SE": 0.10},
    "apac": {"AU": 0.25, "IN": 0.25, "JP": 0.20, "SG": 0.15, "CN": 0.15},
    "latam": {"BR": 0.50, "AR": 0.20, "CO": 0.15, "CL": 0.15},
    "mea": {"AE": 0.35, "ZA": 0.35, "SA": 0.15, "IL": 0.15},
}
_INDUSTRY_SHARE = {
    "software": 0.18,
    "financial_services": 0.12,
    "healthcare": 0.10,
    "manufacturing": 0.11,
    "retail": 0.10,
    "education": 0.08,
    "government": 0.05,
    "professional_services": 0.12,
    "media": 0.06,
    "other": 0.08,
}
_SIZE_SHARE = {
    "1-10": 0.22,
    "11-50": 0.25,
    "51-200": 0.20,
    "201-1000": 0.16,
    "1001-5000": 0.10,
    "5000+": 0.07,
}
_ROLE_SHARE = {
    "marketing": 0.20,
    "sales": 0.14,
    "it": 0.14,
    "engineering": 0.12,
    "finance": 0.08,
    "operations": 0.10,
    "hr": 0.06,
    "executive": 0.08,
    "other": 0.08,
}
_SENIORITY_SHARE = {
    "entry": 0.22,
    "senior": 0.28,
    "manager": 0.25,
    "director": 0.13,
    "vp": 0.07,
    "c_level": 0.05,
}
_DECISION_MAKER_PROB = {
    "entry": 0.03,
    "senior": 0.10,
    "manager": 0.30,
    "director": 0.60,
    "vp": 0.80,
    "c_level": 0.90,
}
_TIMELINE_SHARE = {
    "now": 0.10,
    "within_3m": 0.20,
    "within_6m": 0.25,
    "within_12m": 0.25,
    "no_plan": 0.20,
}
_CONSUMER_BUDGET_SHARE = {
    "none": 0.35,
    "under_10k": 0.50,
    "10k_50k": 0.12,
    "50k_250k": 0.03,
    "over_250k": 0.0,
}
_GENDER_SHARE = {"female": 0.48, "male": 0.49, "other": 0.03}

# Share of recorded values that are missing, per optional column (real CRMs have gaps).
_MISSING_SHARE = {
    "utm": 0.04,
    "region": 0.03,
    "country": 0.04,
    "industry": 0.06,
    "company_size": 0.05,
    "annual_revenue": 0.08,
    "job_role": 0.05,
    "seniority": 0.06,
    "is_decision_maker": 0.07,
    "bant_budget": 0.08,
    "bant_authority": 0.08,
    "bant_need": 0.07,
    "bant_timeline": 0.08,
    "age": 0.10,
    "gender": 0.05,
    "topic": 0.04,
    "channel": 0.03,
}
_DIRECT_WEBSITE_SHARE = 0.35  # website leads without any UTM tags

# utm_source options (repeated to weight them), utm_medium and campaigns per channel.
_UTM: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "website": (("google", "google", "bing"), "organic", ("seo_blog", "seo_product", "seo_docs")),
    "referral": (
        ("customer_referral", "customer_referral", "g2"),
        "referral",
        ("refer_a_friend", "review_sites", "refer_a_friend"),
    ),
    "webinar": (
        ("zoom", "on24", "zoom"),
        "webinar",
        ("product_deep_dive", "industry_trends", "customer_panel"),
    ),
    "social_media": (
        ("facebook", "instagram", "wechat"),
        "social",
        ("brand_awareness", "spring_promo", "video_series"),
    ),
    "paid_search": (
        ("google", "google", "bing"),
        "cpc",
        ("brand_terms", "competitor_terms", "generic_terms"),
    ),
    "trade_show": (
        ("saastr", "dreamforce", "web_summit"),
        "event",
        ("booth_scan", "booth_scan", "demo_station"),
    ),
    "partner": (
        ("reseller", "integration_partner", "agency"),
        "partner",
        ("co_marketing", "partner_portal", "co_marketing"),
    ),
    "linkedin": (
        ("linkedin", "linkedin", "linkedin"),
        "paid_social",
        ("lead_gen_form", "sponsored_content", "inmail"),
    ),
    "event": (
        ("meetup", "roadshow", "user_group"),
        "event",
        ("city_tour", "customer_day", "city_tour"),
    ),
    "bought_list": (
        ("list_vendor_a", "list_vendor_b", "list_vendor_a"),
        "outbound",
        ("cold_outreach", "cold_outreach", "abm_list"),
    ),
    "email_campaign": (
        ("newsletter", "newsletter", "nurture"),
        "email",
        ("monthly_newsletter", "product_update", "reengagement"),
    ),
}

# --- Conversion model: effects on the logit --------------------------------------------------
_BASE_LOGIT = -4.3
_INTENT_SD = 0.8
_CHANNEL_EFFECT = {
    "website": 0.8,
    "referral": 1.2,
    "webinar": 0.5,
    "social_media": -0.4,
    "paid_search": 0.2,
    "trade_show": 0.3,
    "partner": 0.6,
    "linkedin": 0.0,
    "event": 0.2,
    "bought_list": -1.5,
    "email_campaign": -1.1,
}
_REGION_EFFECT = {"north_america": 0.1, "europe": 0.0, "apac": -0.1, "latam": -0.2, "mea": -0.2}
_INDUSTRY_EFFECT = {
    "software": 0.3,
    "financial_services": 0.2,
    "healthcare": 0.0,
    "manufacturing": -0.1,
    "retail": -0.2,
    "education": -0.4,
    "government": -0.5,
    "professional_services": 0.1,
    "media": -0.1,
    "other": -0.3,
}
_SIZE_EFFECT = {
    "1-10": -0.7,
    "11-50": -0.2,
    "51-200": 0.2,
    "201-1000": 0.4,
    "1001-5000": 0.3,
    "5000+": 0.1,
}
_REVENUE_EFFECT = {
    "<1M": -0.4,
    "1M-10M": -0.1,
    "10M-50M": 0.1,
    "50M-250M": 0.3,
    "250M-1B": 0.3,
    "1B+": 0.2,
}
_ROLE_EFFECT = {
    "marketing": 0.2,
    "sales": 0.0,
    "it": 0.3,
    "engineering": 0.1,
    "finance": 0.0,
    "operations": -0.1,
    "hr": -0.3,
    "executive": 0.4,
    "other": -0.4,
}
_SENIORITY_EFFECT = {
    "entry": -0.6,
    "senior": -0.2,
    "manager": 0.1,
    "director": 0.4,
    "vp": 0.5,
    "c_level": 0.5,
}
_DECISION_MAKER_EFFECT = 0.4
_BUDGET_EFFECT = {
    "none": -0.9,
    "under_10k": -0.3,
    "10k_50k": 0.2,
    "50k_250k": 0.5,
    "over_250k": 0.6,
}
_AUTHORITY_EFFECT = 0.3
_NEED_EFFECT = (-0.3, 0.6)  # no, yes
_TIMELINE_EFFECT = {
    "now": 0.9,
    "within_3m": 0.5,
    "within_6m": 0.0,
    "within_12m": -0.4,
    "no_plan": -1.0,
}
_CONSUMER_EFFECT = -0.2

# --- Behaviour --------------------------------------------------------------------------------
_EVENTS_BASE = 15.5  # events per lead at intent 0 and average activity, before truncation
_EVENTS_INTENT_SLOPE = 1.0
_ACTIVITY_SHAPE = 2.0  # gamma heterogeneity of activity that is unrelated to intent
_CHANNEL_ACTIVITY = {
    "website": 1.1,
    "referral": 1.0,
    "webinar": 1.2,
    "social_media": 0.9,
    "paid_search": 1.0,
    "trade_show": 0.8,
    "partner": 0.9,
    "linkedin": 0.9,
    "event": 0.9,
    "bought_list": 0.8,
    "email_campaign": 1.1,
}
_FADE_DAYS = (21.0, 75.0)  # exponential scale of event offsets: the burst and the nurture tail
_TAIL_SHARE = 0.15
# Event type logits at intent z: base + slope * z (plus the lead's channel affinity).
_TYPE_LOGIT: dict[str, tuple[float, float]] = {
    "page_view": (2.0, -0.1),
    "pricing_page_view": (0.0, 0.9),
    "content_download": (0.3, 0.4),
    "webinar_registered": (-0.6, 0.5),
    "webinar_attended": (-1.3, 0.8),
    "event_attended": (-1.9, 0.5),
    "email_open": (2.0, -0.5),
    "email_click": (0.6, 0.1),
    "form_submit": (-0.7, 0.6),
    "demo_request": (-2.8, 1.3),
    "trial_signup": (-3.0, 1.3),
    "social_interaction": (0.0, 0.0),
    "unsubscribe": (-2.2, -1.0),
}
_CHANNEL_TYPE_AFFINITY: dict[str, dict[str, float]] = {
    "website": {"page_view": 0.3, "form_submit": 0.3},
    "webinar": {"webinar_registered": 1.0, "webinar_attended": 1.0},
    "social_media": {"social_interaction": 1.0},
    "paid_search": {"page_view": 0.3, "form_submit": 0.3},
    "trade_show": {"event_attended": 1.2},
    "linkedin": {"social_interaction": 0.8},
    "event": {"event_attended": 1.2},
    "bought_list": {"email_open": 0.7, "email_click": 0.3, "unsubscribe": 0.5},
    "email_campaign": {"email_open": 0.7, "email_click": 0.5},
}
_INTENT_BINS = np.linspace(-3.2, 3.2, 65)
_REGISTRATION_BEFORE_ATTENDANCE = 0.9
_EVENT_CHANNEL = {
    "email_open": "email",
    "email_click": "email",
    "webinar_registered": "webinar",
    "webinar_attended": "webinar",
    "event_attended": "event",
    "social_interaction": "social",
}
TOPICS: tuple[str, ...] = (
    "pricing",
    "product_tour",
    "integrations",
    "security",
    "analytics",
    "automation",
    "case_studies",
    "industry_report",
)
_TOPIC_SHARE = {
    "pricing": 0.10,
    "product_tour": 0.16,
    "integrations": 0.14,
    "security": 0.10,
    "analytics": 0.16,
    "automation": 0.14,
    "case_studies": 0.10,
    "industry_report": 0.10,
}
_FAVOURITE_TOPIC_SHARE = 0.6

# --- Lifecycle --------------------------------------------------------------------------------
# Non-converters qualify on an ordered-logit latent `logit + Logistic(0, 1)`: above the first
# threshold they become MQL, above the second SQL, above the third opportunity.
_QUALIFY_THRESHOLDS = (-2.6, -1.3, -0.85)
_MQL_RECYCLE_SHARE = 0.4
_SQL_LOST_SHARE = 0.55


@dataclass(frozen=True)
class DemoData:
    """A synthetic CRM history.

    Attributes:
        leads: The ``leads`` contract table.
        events: The ``events`` contract table.
        stage_changes: The ``stage_changes`` contract table.
        outcomes: The ``outcomes`` contract table (deals closed on or before the end date).
        truth: ``lead_id``, ``p_convert`` (true probability of being won within 120 days of
            creation) and ``converted`` (the realised draw, also when the close falls after the
            end date); valid leads only.
    """

    leads: pd.DataFrame
    events: pd.DataFrame
    stage_changes: pd.DataFrame
    outcomes: pd.DataFrame
    truth: pd.DataFrame


@dataclass(frozen=True)
class _Profile:
    """True attribute codes of every lead (-1 = does not apply), before recording gaps."""

    created_us: IntArray
    channel: IntArray
    consumer: BoolArray
    region: IntArray
    country: ObjectArray
    utm_pick: IntArray
    industry: IntArray
    company_size: IntArray
    annual_revenue: IntArray
    job_role: IntArray
    seniority: IntArray
    decision_maker: BoolArray
    budget: IntArray
    authority: BoolArray
    need: BoolArray
    timeline: IntArray
    age: IntArray
    gender: IntArray


def generate_demo_data(
    *,
    n_leads: int,
    seed: int,
    end_date: date,
    months: int = 18,
    bad_row_share: float = 0.0,
) -> DemoData:
    """Generate a deterministic synthetic CRM and marketing history.

    Leads arrive over ``months`` months ending at the end of ``end_date`` (UTC), more of them
    recently and fewer at weekends. Nothing (events, stage changes, outcomes) is dated after
    the end date, apart from the injected bad rows.

    With ``bad_row_share > 0`` about that share of the rows of ``leads`` and ``events`` (and
    a few ``outcomes``) is corrupted, at least one row of each kind per table:

    * ``leads``: missing ``lead_id``; unknown category values (``source_channel``
      ``"carrier_pigeon"``, ``industry`` ``"astrology"``, ``company_size`` ``"huge"``);
      ``created_at`` more than a year after the end date; exact duplicate rows.
    * ``events``: missing ``lead_id``; unknown ``event_type`` ``"teleport"``; ``occurred_at``
      more than a year after the end date; exact duplicate rows (same ``event_id``); events of
      lead ids that do not exist.
    * ``outcomes``: outcomes of lead ids that do not exist; unknown ``result`` ``"pending"``;
      ``closed_at`` more than a year after the end date; exact duplicate rows.

    A missing ``lead_id`` turns that column into nullable ``Int64``. Leads whose row was
    corrupted (not merely duplicated) are left out of ``truth``; ``stage_changes`` stay clean.

    Args:
        n_leads: Number of leads to generate.
        seed: Seed of the random generator; the same seed gives identical tables.
        end_date: Last day of the history (UTC).
        months: Length of the history in months.
        bad_row_share: Share of rows to corrupt on purpose, in ``[0, 0.5]``.

    Returns:
        The four contract tables and the ground truth.

    Raises:
        ValueError: If an argument is out of range.
    """
    if n_leads < 1:
        raise ValueError(f"n_leads must be at least 1, got {n_leads}")
    if months < 1:
        raise ValueError(f"months must be at least 1, got {months}")
    if not 0.0 <= bad_row_share <= 0.5:
        raise ValueError(f"bad_row_share must be in [0, 0.5], got {bad_row_share}")

    streams = np.random.SeedSequence(seed).spawn(5)
    rng_profile, rng_events, rng_life, rng_gaps, rng_bad = (
        np.random.default_rng(s) for s in streams
    )
    start_us, end_us = _time_window(end_date, months)

    profile = _draw_profile(rng_profile, n_leads, start_us, end_us)
    intent = rng_profile.normal(0.0, _INTENT_SD, n_leads)
    logit = _BASE_LOGIT + _explicit_logit(profile) + intent
    p_convert = 1.0 / (1.0 + np.exp(-logit))
    converted = rng_profile.random(n_leads) < p_convert
    lead_ids = np.arange(1, n_leads + 1, dtype=np.int64)

    events = _draw_events(rng_events, profile, intent, lead_ids, end_us)
    stage_changes, outcomes, reached_opportunity = _draw_lifecycle(
        rng_life, profile, logit, converted, lead_ids, end_us
    )
    leads = _leads_frame(rng_gaps, profile, lead_ids)
    truth = pd.DataFrame(
        {"lead_id": lead_ids, "p_convert": p_convert, "converted": converted.copy()}
    )

    if bad_row_share > 0:
        leads, invalid = _corrupt_leads(rng_bad, leads, bad_row_share, end_us)
        events = _corrupt_events(rng_bad, events, bad_row_share, end_us, n_leads)
        outcomes = _corrupt_outcomes(rng_bad, outcomes, bad_row_share, end_us, n_leads)
        truth = truth[~truth["lead_id"].isin(invalid)].reset_index(drop=True)

    logger.info(
        "generated %d leads, %d events, %d stage changes, %d outcomes; "
        "won %.3f, reached opportunity %.3f, mean p_convert %.3f",
        len(leads),
        len(events),
        len(stage_changes),
        len(outcomes),
        float(converted.mean()),
        float(reached_opportunity.mean()),
        float(p_convert.mean()),
    )
    return DemoData(
        leads=leads, events=events, stage_changes=stage_changes, outcomes=outcomes, truth=truth
    )


def write_demo_data(
    data: DemoData, *, out_dir: Path, file_format: Literal["parquet", "csv"] = "parquet"
) -> dict[str, Path]:
    """Write the four contract tables and the ground truth to a folder.

    Args:
        data: What :func:`generate_demo_data` returned.
        out_dir: Folder to write to (created if missing).
        file_format: Format of the contract tables; ``truth.parquet`` is always Parquet and
            kept apart from the inputs a pipeline reads.

    Returns:
        Table name (``leads``, ``events``, ``stage_changes``, ``outcomes``, ``truth``) to the
        file written.

    Raises:
        ValueError: If ``file_format`` is not ``parquet`` or ``csv``.
    """
    if file_format not in ("parquet", "csv"):
        raise ValueError(f"file_format must be 'parquet' or 'csv', got {file_format!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {
        "leads": data.leads,
        "events": data.events,
        "stage_changes": data.stage_changes,
        "outcomes": data.outcomes,
    }
    paths: dict[str, Path] = {}
    for name, frame in tables.items():
        path = out_dir / f"{name}.{file_format}"
        if file_format == "parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        paths[name] = path
    truth_path = out_dir / "truth.parquet"
    data.truth.to_parquet(truth_path, index=False)
    paths["truth"] = truth_path
    logger.info("wrote demo data (%s) to %s", file_format, out_dir)
    return paths


# --- Helpers ----------------------------------------------------------------------------------


def _ordered(values: Sequence[str], table: Mapping[str, float]) -> FloatArray:
    """Numbers of ``table`` in the order of ``values`` (every value must be present)."""
    missing = set(values) ^ set(table)
    if missing:
        raise ValueError(f"table keys do not match the categories: {sorted(missing)}")
    return np.array([table[v] for v in values], dtype=np.float64)


def _effect(values: Sequence[str], table: Mapping[str, float]) -> FloatArray:
    """Effects in category order with a trailing 0 that code -1 (not applicable) picks."""
    return np.append(_ordered(values, table), 0.0)


def _draw(
    rng: np.random.Generator, n: int, values: Sequence[str], share: Mapping[str, float]
) -> IntArray:
    weights = _ordered(values, share)
    return rng.choice(len(values), size=n, p=weights / weights.sum()).astype(np.int64)


def _labels(codes: npt.NDArray[np.integer[Any]], values: Sequence[str]) -> ObjectArray:
    """Category labels of codes; code -1 becomes ``None``."""
    lookup = np.array([*values, None], dtype=object)
    return lookup[codes]


def _missing(values: ObjectArray, missing: BoolArray) -> ObjectArray:
    """A copy of ``values`` with ``None`` where ``missing``."""
    result = values.copy()
    result[missing] = None
    return result


def _blank(rng: np.random.Generator, codes: IntArray, share: float) -> IntArray:
    """Codes with about ``share`` of them set to -1 (not recorded)."""
    return np.where(rng.random(len(codes)) < share, -1, codes)


def _timestamps(us: IntArray) -> pd.DatetimeIndex:
    """``datetime64[us, UTC]`` values of microseconds since the epoch."""
    return pd.DatetimeIndex(us.astype("datetime64[us]")).tz_localize("UTC")


def _time_window(end_date: date, months: int) -> tuple[int, int]:
    """First and last microsecond (UTC) of the history."""
    after_end = pd.Timestamp(end_date) + pd.Timedelta(days=1)
    start_day = after_end - pd.DateOffset(months=months)
    start_us = int(start_day.tz_localize("UTC").value // 1_000)
    end_us = int(after_end.tz_localize("UTC").value // 1_000) - 1
    return start_us, end_us


def _event_ids(n: int) -> ObjectArray:
    """``e000000001``, ``e000000002``, ...: built as bytes, not formatted one by one."""
    width = max(9, len(str(n)))
    chars = np.empty((n + 1, width + 1), dtype=np.uint8)
    chars[:, 0] = ord("e")
    digits = np.arange(ord("0"), ord("9") + 1, dtype=np.uint8)
    for position in range(width):
        # The digit at 10**position of 0, 1, 2, ... cycles through 0-9, each repeated.
        run = 10**position
        if run > n:
            chars[:, width - position] = ord("0")
            continue
        cycle = np.repeat(digits, run)
        chars[:, width - position] = np.tile(cycle, -(-(n + 1) // len(cycle)))[: n + 1]
    offsets = np.arange(0, (width + 1) * (n + 1), width + 1, dtype=np.int64)
    buffer = pa.py_buffer(chars[1:])
    strings = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), buffer)
    result: ObjectArray = strings.to_numpy(zero_copy_only=False)
    return result


def _frame(names: Sequence[str], **columns: Callable[[], Any]) -> pd.DataFrame:
    """A frame of ``names`` built one column at a time.

    Each column is made only when it is inserted, and inserting keeps one block per column,
    so a large table never holds two copies of its string columns at once.
    """
    if list(columns) != list(names):
        raise ValueError(f"columns {list(columns)} do not match the contract {list(names)}")
    frame = pd.DataFrame()
    for name, make in columns.items():
        frame[name] = make()
    return frame


# --- Who the lead is --------------------------------------------------------------------------


def _draw_created(rng: np.random.Generator, n: int, start_us: int, end_us: int) -> IntArray:
    n_days = (end_us + 1 - start_us) // _US_PER_DAY
    first_weekday = pd.Timestamp(start_us, unit="us").dayofweek
    position = np.arange(n_days) / max(n_days - 1, 1)
    weekday = (first_weekday + np.arange(n_days)) % 7
    day_weights = np.exp(_GROWTH * position) * _WEEKDAY_WEIGHTS[weekday]
    day = rng.choice(n_days, size=n, p=day_weights / day_weights.sum())
    hour = rng.choice(24, size=n, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    created = start_us + day * _US_PER_DAY + hour * _US_PER_HOUR + rng.integers(0, _US_PER_HOUR, n)
    return np.sort(created.astype(np.int64))


def _draw_countries(rng: np.random.Generator, region: IntArray) -> ObjectArray:
    width = max(len(c) for c in _COUNTRIES.values())
    cumulative = np.ones((len(REGIONS), width))
    names = np.empty((len(REGIONS), width), dtype=object)
    for r, name in enumerate(REGIONS):
        codes = list(_COUNTRIES[name])
        weights = np.array(list(_COUNTRIES[name].values()))
        cumulative[r, : len(codes)] = np.cumsum(weights / weights.sum())
        names[r, :] = codes[-1]
        names[r, : len(codes)] = codes
    pick = (rng.random(len(region))[:, None] > cumulative[region]).sum(axis=1)
    result: ObjectArray = names[region, np.minimum(pick, width - 1)]
    return result


def _draw_profile(rng: np.random.Generator, n: int, start_us: int, end_us: int) -> _Profile:
    created_us = _draw_created(rng, n, start_us, end_us)
    channel = _draw(rng, n, SOURCE_CHANNELS, _CHANNEL_SHARE)
    consumer = rng.random(n) < _ordered(SOURCE_CHANNELS, _CONSUMER_SHARE)[channel]
    region = _draw(rng, n, REGIONS, _REGION_SHARE)
    country = _draw_countries(rng, region)
    utm_pick = rng.integers(0, 3, n)

    industry = _draw(rng, n, INDUSTRIES, _INDUSTRY_SHARE)
    company_size = _draw(rng, n, COMPANY_SIZES, _SIZE_SHARE)
    # Revenue follows head count, give or take a band.
    revenue_noise = np.rint(rng.normal(0.0, 0.8, n)).astype(np.int64)
    annual_revenue = np.clip(company_size + revenue_noise, 0, len(REVENUE_BANDS) - 1)
    job_role = _draw(rng, n, JOB_ROLES, _ROLE_SHARE)
    executive_seniority = rng.integers(SENIORITIES.index("director"), len(SENIORITIES), n)
    seniority = np.where(
        job_role == JOB_ROLES.index("executive"),
        executive_seniority,
        _draw(rng, n, SENIORITIES, _SENIORITY_SHARE),
    )
    decision_maker = rng.random(n) < _ordered(SENIORITIES, _DECISION_MAKER_PROB)[seniority]
    # Bigger companies state bigger budgets.
    budget_level = np.rint(0.6 * company_size + rng.normal(0.3, 1.0, n)).astype(np.int64)
    budget = np.clip(budget_level, 0, len(BANT_BUDGET) - 1)
    authority = rng.random(n) < np.where(decision_maker, 0.8, 0.2)
    need = rng.random(n) < 0.55
    timeline = _draw(rng, n, BANT_TIMELINE, _TIMELINE_SHARE)

    consumer_budget = _draw(rng, n, BANT_BUDGET, _CONSUMER_BUDGET_SHARE)
    age_years = np.clip(np.rint(rng.normal(38.0, 12.0, n)), 18, 80).astype(np.int64)
    gender = _draw(rng, n, GENDERS, _GENDER_SHARE)
    not_applicable = np.int64(-1)
    return _Profile(
        created_us=created_us,
        channel=channel,
        consumer=consumer,
        region=region,
        country=country,
        utm_pick=utm_pick,
        industry=np.where(consumer, not_applicable, industry),
        company_size=np.where(consumer, not_applicable, company_size),
        annual_revenue=np.where(consumer, not_applicable, annual_revenue),
        job_role=np.where(consumer, not_applicable, job_role),
        seniority=np.where(consumer, not_applicable, seniority),
        decision_maker=decision_maker | consumer,
        budget=np.where(consumer, consumer_budget, budget),
        authority=authority | consumer,
        need=need,
        timeline=timeline,
        age=np.where(consumer, age_years, not_applicable),
        gender=np.where(consumer, gender, not_applicable),
    )


def _explicit_logit(profile: _Profile) -> FloatArray:
    """What the lead's channel, firmographics and BANT answers add to the conversion logit."""
    need_effect = np.array(_NEED_EFFECT)
    return (
        _effect(SOURCE_CHANNELS, _CHANNEL_EFFECT)[profile.channel]
        + _effect(REGIONS, _REGION_EFFECT)[profile.region]
        + _effect(INDUSTRIES, _INDUSTRY_EFFECT)[profile.industry]
        + _effect(COMPANY_SIZES, _SIZE_EFFECT)[profile.company_size]
        + _effect(REVENUE_BANDS, _REVENUE_EFFECT)[profile.annual_revenue]
        + _effect(JOB_ROLES, _ROLE_EFFECT)[profile.job_role]
        + _effect(SENIORITIES, _SENIORITY_EFFECT)[profile.seniority]
        + _DECISION_MAKER_EFFECT * profile.decision_maker
        + _effect(BANT_BUDGET, _BUDGET_EFFECT)[profile.budget]
        + _AUTHORITY_EFFECT * profile.authority
        + need_effect[profile.need.astype(np.int64)]
        + _effect(BANT_TIMELINE, _TIMELINE_EFFECT)[profile.timeline]
        + _CONSUMER_EFFECT * profile.consumer
    )


def _leads_frame(rng: np.random.Generator, profile: _Profile, lead_ids: IntArray) -> pd.DataFrame:
    """The ``leads`` table: the profile as recorded, with the gaps a real CRM has."""
    n = len(lead_ids)
    gap = _MISSING_SHARE
    utm_sources = np.array([_UTM[c][0] for c in SOURCE_CHANNELS], dtype=object)
    utm_mediums = np.array([_UTM[c][1] for c in SOURCE_CHANNELS], dtype=object)
    utm_campaigns = np.array([_UTM[c][2] for c in SOURCE_CHANNELS], dtype=object)
    direct = (profile.channel == SOURCE_CHANNELS.index("website")) & (
        rng.random(n) < _DIRECT_WEBSITE_SHARE
    )
    no_utm = direct | (rng.random(n) < gap["utm"])
    utm_source = _missing(utm_sources[profile.channel, profile.utm_pick], no_utm)
    utm_medium = _missing(utm_mediums[profile.channel], no_utm)
    utm_campaign = _missing(utm_campaigns[profile.channel, rng.integers(0, 3, n)], no_utm)
    country = _missing(profile.country, rng.random(n) < gap["country"])
    age_missing = (profile.age < 0) | (rng.random(n) < gap["age"])

    def flag(values: BoolArray, applies: BoolArray, share: float) -> pd.arrays.BooleanArray:
        return pd.arrays.BooleanArray(values, ~applies | (rng.random(n) < share))

    b2b = ~profile.consumer
    everyone = np.ones(n, dtype=bool)
    columns: dict[str, Any] = {
        "lead_id": lead_ids,
        "created_at": _timestamps(profile.created_us),
        "source_channel": _labels(profile.channel, SOURCE_CHANNELS),
        "utm_source": utm_source,
        "utm_medium": utm_medium,
        "utm_campaign": utm_campaign,
        "region": _labels(_blank(rng, profile.region, gap["region"]), REGIONS),
        "country": country,
        "industry": _labels(_blank(rng, profile.industry, gap["industry"]), INDUSTRIES),
        "company_size": _labels(
            _blank(rng, profile.company_size, gap["company_size"]), COMPANY_SIZES
        ),
        "annual_revenue": _labels(
            _blank(rng, profile.annual_revenue, gap["annual_revenue"]), REVENUE_BANDS
        ),
        "job_role": _labels(_blank(rng, profile.job_role, gap["job_role"]), JOB_ROLES),
        "seniority": _labels(_blank(rng, profile.seniority, gap["seniority"]), SENIORITIES),
        "is_decision_maker": flag(profile.decision_maker, b2b, gap["is_decision_maker"]),
        "bant_budget": _labels(_blank(rng, profile.budget, gap["bant_budget"]), BANT_BUDGET),
        "bant_authority": flag(profile.authority, everyone, gap["bant_authority"]),
        "bant_need": flag(profile.need, everyone, gap["bant_need"]),
        "bant_timeline": _labels(
            _blank(rng, profile.timeline, gap["bant_timeline"]), BANT_TIMELINE
        ),
        "age": pd.arrays.IntegerArray(np.where(age_missing, 0, profile.age), age_missing),
        "gender": _labels(_blank(rng, profile.gender, gap["gender"]), GENDERS),
        "email_domain": _email_domains(rng, profile, lead_ids),
    }
    return pd.DataFrame(columns, columns=LEADS.column_names)


_FREE_DOMAINS = np.array(["gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com"])


def _email_domains(rng: np.random.Generator, profile: _Profile, lead_ids: IntArray) -> ObjectArray:
    """Consumers and many small-company contacts write from webmail; others from their firm."""
    n = len(lead_ids)
    tiny = profile.company_size == COMPANY_SIZES.index("1-10")
    free_share = np.where(profile.consumer, 0.95, np.where(tiny, 0.45, 0.08))
    free = rng.random(n) < free_share
    corporate = np.char.add(np.char.add("firm", (lead_ids % 50_000).astype(str)), ".com")
    domains: ObjectArray = np.where(
        free, _FREE_DOMAINS[rng.integers(0, len(_FREE_DOMAINS), n)], corporate
    ).astype(object)
    return _missing(domains, rng.random(n) < 0.04)


# --- What the lead does -----------------------------------------------------------------------


def _type_cumulative() -> FloatArray:
    """Cumulative event type probabilities per (source channel, intent bin) group."""
    centres = (_INTENT_BINS[:-1] + _INTENT_BINS[1:]) / 2
    base = np.array([_TYPE_LOGIT[t][0] for t in EVENT_TYPES])
    slope = np.array([_TYPE_LOGIT[t][1] for t in EVENT_TYPES])
    affinity = np.zeros((len(SOURCE_CHANNELS), len(EVENT_TYPES)))
    for c, channel in enumerate(SOURCE_CHANNELS):
        for event_type, bonus in _CHANNEL_TYPE_AFFINITY.get(channel, {}).items():
            affinity[c, EVENT_TYPES.index(event_type)] = bonus
    logits = affinity[:, None, :] + base + slope * centres[:, None]
    weights = np.exp(logits - logits.max(axis=2, keepdims=True))
    cumulative = np.cumsum(weights / weights.sum(axis=2, keepdims=True), axis=2)
    result: FloatArray = cumulative.reshape(-1, len(EVENT_TYPES))
    return result


def _draw_events(
    rng: np.random.Generator,
    profile: _Profile,
    intent: FloatArray,
    lead_ids: IntArray,
    end_us: int,
) -> pd.DataFrame:
    n = len(lead_ids)
    activity = rng.gamma(_ACTIVITY_SHAPE, 1.0 / _ACTIVITY_SHAPE, n)
    mean_events = (
        _EVENTS_BASE
        * _ordered(SOURCE_CHANNELS, _CHANNEL_ACTIVITY)[profile.channel]
        * np.exp(_EVENTS_INTENT_SLOPE * intent)
        * activity
    )
    lead = np.repeat(np.arange(n, dtype=np.int32), rng.poisson(mean_events))
    m = len(lead)

    # Activity fades with time since creation: a burst of a few weeks and a nurture tail.
    offset = rng.exponential(_US_PER_DAY, m)
    burst_days, tail_days = _FADE_DAYS
    offset *= np.where(rng.random(m, dtype=np.float32) < _TAIL_SHARE, tail_days, burst_days)
    occurred = profile.created_us[lead]
    occurred += offset.astype(np.int64)
    del offset

    # Inverse-CDF draw of the type from the lead's (channel, intent bin) distribution; the
    # loop runs over event types, comparing every event at once.
    n_bins = len(_INTENT_BINS) - 1
    intent_bin = np.clip(np.digitize(intent, _INTENT_BINS) - 1, 0, n_bins - 1)
    group = (profile.channel * n_bins + intent_bin).astype(np.int16)[lead]
    cumulative = _type_cumulative().astype(np.float32)
    u = rng.random(m, dtype=np.float32)
    event_type = np.zeros(m, dtype=np.int8)
    for t in range(len(EVENT_TYPES) - 1):
        event_type += u > cumulative[group, t]
    del u, group

    # Most attendances follow a registration a few days earlier (never before creation).
    attended = np.flatnonzero(event_type == EVENT_TYPES.index("webinar_attended"))
    registered = attended[rng.random(len(attended)) < _REGISTRATION_BEFORE_ATTENDANCE]
    reg_lead = lead[registered]
    lead_time = rng.uniform(1.0, 14.0, len(registered)) * _US_PER_DAY
    reg_time = np.maximum(
        occurred[registered] - lead_time.astype(np.int64), profile.created_us[reg_lead]
    )
    reg_type = np.full(len(registered), EVENT_TYPES.index("webinar_registered"), np.int8)

    # Nothing after the end date; the log is in time order (stable, so ties keep lead order).
    seen = np.flatnonzero(occurred <= end_us)
    reg_seen = np.flatnonzero(reg_time <= end_us)
    occurred = np.concatenate([occurred[seen], reg_time[reg_seen]])
    order = np.argsort(occurred, kind="stable")
    occurred = occurred[order]
    lead = np.concatenate([lead[seen], reg_lead[reg_seen]])[order]
    event_type = np.concatenate([event_type[seen], reg_type[reg_seen]])[order]
    del order, seen
    m = len(lead)

    favourite = _draw(rng, n, TOPICS, _TOPIC_SHARE).astype(np.int8)
    topic = np.where(
        rng.random(m, dtype=np.float32) < _FAVOURITE_TOPIC_SHARE,
        favourite[lead],
        rng.integers(0, len(TOPICS), m, dtype=np.int8),
    )
    topic[event_type == EVENT_TYPES.index("pricing_page_view")] = TOPICS.index("pricing")
    topic[event_type == EVENT_TYPES.index("unsubscribe")] = -1
    topic[rng.random(m, dtype=np.float32) < _MISSING_SHARE["topic"]] = -1
    type_channel = np.array(
        [EVENT_CHANNELS.index(_EVENT_CHANNEL.get(t, "web")) for t in EVENT_TYPES], dtype=np.int8
    )
    channel = type_channel[event_type]
    channel[rng.random(m, dtype=np.float32) < _MISSING_SHARE["channel"]] = -1

    return _frame(
        EVENTS.column_names,
        event_id=lambda: _event_ids(m),
        lead_id=lambda: lead_ids[lead],
        occurred_at=lambda: _timestamps(occurred),
        event_type=lambda: _labels(event_type, EVENT_TYPES),
        topic=lambda: _labels(topic, TOPICS),
        channel=lambda: _labels(channel, EVENT_CHANNELS),
    )


# --- Lifecycle --------------------------------------------------------------------------------


def _days(rng: np.random.Generator, low: float, high: float, n: int) -> FloatArray:
    return rng.uniform(low, high, n) * _US_PER_DAY


def _draw_lifecycle(
    rng: np.random.Generator,
    profile: _Profile,
    logit: FloatArray,
    converted: BoolArray,
    lead_ids: IntArray,
    end_us: int,
) -> tuple[pd.DataFrame, pd.DataFrame, BoolArray]:
    """Stage changes and outcomes up to the end date, and who ever reached opportunity."""
    n = len(lead_ids)
    created = profile.created_us
    qualify = logit + rng.logistic(0.0, 1.0, n)
    depth = np.zeros(n, dtype=np.int64)
    for threshold in _QUALIFY_THRESHOLDS:
        depth += qualify > threshold
    depth[converted] = 4  # 1 MQL, 2 SQL, 3 opportunity, 4 won

    # Delays (microseconds) of the whole path; converters are won within the horizon.
    to_mql = rng.exponential(1.0, n) * np.where(converted, 2.0, 4.0) * _US_PER_DAY + _US_PER_HOUR
    to_sql = _days(rng, 7.0, 21.0, n)
    to_opp = (rng.exponential(4.0, n) + 1.0) * _US_PER_DAY
    to_won = _days(rng, 14.0, 45.0, n)
    total = to_mql + to_sql + to_opp + to_won
    limit = (CONVERSION_HORIZON_DAYS - 1) * _US_PER_DAY
    squeeze = np.where(converted, np.minimum(1.0, limit / total), 1.0)
    t_mql = created + (to_mql * squeeze).astype(np.int64)
    t_sql = t_mql + (to_sql * squeeze).astype(np.int64)
    t_opp = t_sql + (to_opp * squeeze).astype(np.int64)
    t_won = t_opp + (to_won * squeeze).astype(np.int64)

    sql_lost = (depth == 2) & (rng.random(n) < _SQL_LOST_SHARE)
    t_lost = np.where(
        depth == 3,
        t_opp + _days(rng, 14.0, 75.0, n).astype(np.int64),
        t_sql + _days(rng, 7.0, 42.0, n).astype(np.int64),
    )
    lost = (depth == 3) | sql_lost
    recycled = ((depth == 1) & (rng.random(n) < _MQL_RECYCLE_SHARE)) | ((depth == 2) & ~sql_lost)
    t_recycled = np.where(depth == 1, t_mql, t_sql) + _days(rng, 14.0, 60.0, n).astype(np.int64)

    stage = {name: np.int8(STAGES.index(name)) for name in STAGES}
    parts = [
        (np.ones(n, dtype=bool), created, stage["lead"]),
        (depth >= 1, t_mql, stage["MQL"]),
        (depth >= 2, t_sql, stage["SQL"]),
        (depth >= 3, t_opp, stage["opportunity"]),
        (converted, t_won, stage["won"]),
        (lost, t_lost, stage["lost"]),
        (recycled, t_recycled, stage["recycled"]),
    ]
    rows = np.concatenate([np.flatnonzero(mask) for mask, _, _ in parts])
    times = np.concatenate([when[mask] for mask, when, _ in parts])
    codes = np.concatenate([np.full(int(mask.sum()), code) for mask, _, code in parts])
    keep = times <= end_us
    rows, times, codes = rows[keep], times[keep], codes[keep]
    order = np.lexsort((codes, times, rows))
    rows, times, codes = rows[order], times[order], codes[order]
    stage_changes = pd.DataFrame(
        {
            "lead_id": lead_ids[rows],
            "changed_at": _timestamps(times),
            "stage": _labels(codes, STAGES),
        },
        columns=STAGE_CHANGES.column_names,
    )

    closed_at = np.where(converted, t_won, t_lost)
    closed = np.flatnonzero((converted | lost) & (closed_at <= end_us))
    outcomes = pd.DataFrame(
        {
            "lead_id": lead_ids[closed],
            "closed_at": _timestamps(closed_at[closed]),
            "result": _labels(np.where(converted[closed], 0, 1), RESULTS),
            "amount": np.where(converted[closed], _deal_amounts(rng, profile)[closed], 0.0),
        },
        columns=OUTCOMES.column_names,
    )
    return stage_changes, outcomes, depth >= 3


def _deal_amounts(rng: np.random.Generator, profile: _Profile) -> FloatArray:
    """Deal value (USD) if the lead were won: grows with company size and stated budget."""
    size_base = np.array([6e3, 15e3, 35e3, 80e3, 160e3, 320e3, 1.5e3])  # last: consumers
    budget_factor = np.array([0.6, 0.8, 1.0, 1.3, 1.8])
    amount = (
        size_base[profile.company_size]
        * budget_factor[profile.budget]
        * rng.lognormal(0.0, 0.45, len(profile.budget))
    )
    return np.round(amount, -1)


# --- Bad rows ---------------------------------------------------------------------------------


def _pick_rows(rng: np.random.Generator, n_rows: int, per_kind: int, kinds: int) -> IntArray:
    """Distinct random rows, ``per_kind`` for each of ``kinds`` corruptions."""
    return rng.choice(n_rows, size=min(per_kind * kinds, n_rows), replace=False).astype(np.int64)


def _future_times(rng: np.random.Generator, end_us: int, n: int) -> pd.DatetimeIndex:
    offset = (366 + rng.uniform(0.0, 365.0, n)) * _US_PER_DAY
    return _timestamps(end_us + offset.astype(np.int64))


def _with_duplicates(rng: np.random.Generator, frame: pd.DataFrame, count: int) -> pd.DataFrame:
    """``frame`` with ``count`` random rows repeated right after themselves."""
    n = len(frame)
    source = rng.choice(n, size=min(count, n), replace=False)
    rows = np.concatenate([np.arange(n), source])
    keys = np.concatenate([np.arange(n) * 2, source * 2 + 1])
    result = frame.take(rows[np.argsort(keys, kind="stable")])
    result.index = pd.RangeIndex(len(result))  # reset_index would copy every column again
    return result


def _nullable_ids(frame: pd.DataFrame, rows: IntArray) -> None:
    frame["lead_id"] = frame["lead_id"].astype("Int64")
    frame.loc[rows, "lead_id"] = pd.NA


def _corrupt_leads(
    rng: np.random.Generator, leads: pd.DataFrame, share: float, end_us: int
) -> tuple[pd.DataFrame, IntArray]:
    """Corrupt about ``share`` of the leads (in place); also returns the corrupted lead ids."""
    per_kind = max(1, round(share * len(leads) / 4))
    rows = _pick_rows(rng, len(leads), per_kind, 3)
    missing_id, unknown, future = np.array_split(rows, 3)
    invalid = leads["lead_id"].to_numpy()[rows]
    unknown_values = [
        ("source_channel", "carrier_pigeon"),
        ("industry", "astrology"),
        ("company_size", "huge"),
    ]
    column_of = rng.integers(0, len(unknown_values), len(unknown))
    for k, (column, value) in enumerate(unknown_values):
        leads.loc[unknown[column_of == k], column] = value
    leads.loc[future, "created_at"] = _future_times(rng, end_us, len(future))
    _nullable_ids(leads, missing_id)
    return _with_duplicates(rng, leads, per_kind), invalid


def _corrupt_events(
    rng: np.random.Generator, events: pd.DataFrame, share: float, end_us: int, n_leads: int
) -> pd.DataFrame:
    """Corrupt about ``share`` of the events (in place); returns them with duplicates added."""
    per_kind = max(1, round(share * len(events) / 5))
    rows = _pick_rows(rng, len(events), per_kind, 4)
    missing_id, unknown, future, orphan = np.array_split(rows, 4)
    events.loc[unknown, "event_type"] = "teleport"
    events.loc[future, "occurred_at"] = _future_times(rng, end_us, len(future))
    events.loc[orphan, "lead_id"] = n_leads + 1 + rng.integers(0, n_leads + 1, len(orphan))
    _nullable_ids(events, missing_id)
    return _with_duplicates(rng, events, per_kind)


def _corrupt_outcomes(
    rng: np.random.Generator, outcomes: pd.DataFrame, share: float, end_us: int, n_leads: int
) -> pd.DataFrame:
    """Corrupt a few outcomes (in place); returns them with duplicates added."""
    if outcomes.empty:
        return outcomes
    per_kind = max(1, round(share * len(outcomes) / 4))
    rows = _pick_rows(rng, len(outcomes), per_kind, 3)
    orphan, unknown, future = np.array_split(rows, 3)
    outcomes.loc[orphan, "lead_id"] = n_leads + 1 + rng.integers(0, n_leads + 1, len(orphan))
    outcomes.loc[unknown, "result"] = "pending"
    outcomes.loc[future, "closed_at"] = _future_times(rng, end_us, len(future))
    return _with_duplicates(rng, outcomes, per_kind)
