"""Channel-conversion report: lead -> MQL -> SQL -> won per channel, campaign and period.

Built on :func:`pipelines.funnel.funnel_table`. First-response time (speed to lead) is the
time from a lead's creation to its first event on the ``sales`` channel (a call or e-mail by
sales logged as an event); data without such events has no first-response times, and the
report says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.funnel import funnel_table, stage_times
from reports.model import ColumnFormat, Report, ReportFilter, Section, Table
from reports.settings import ReportSettings
from training.evaluate import wilson_interval

PERIODS: tuple[str, ...] = ("day", "week", "month", "quarter")
RESPONSE_CHANNEL = "sales"
# (upper bound in minutes, label): first responses are put in the first bucket they fit.
RESPONSE_BUCKETS: tuple[tuple[float, str], ...] = (
    (5, "under 5 minutes"),
    (30, "5-30 minutes"),
    (60, "30-60 minutes"),
    (4 * 60, "1-4 hours"),
    (24 * 60, "4-24 hours"),
    (3 * 24 * 60, "1-3 days"),
    (np.inf, "over 3 days"),
)
NO_RESPONSE = "no response recorded"


def period_of(created_at: pd.Series, period: str) -> pd.Series:
    """The period a timestamp falls in, as text: ``2026-03-02`` (day; a week by its Monday),
    ``2026-03`` (month) or ``2026Q1`` (quarter), in UTC."""
    naive = pd.to_datetime(created_at, utc=True).dt.tz_localize(None)
    if period == "day":
        return naive.dt.strftime("%Y-%m-%d")
    if period == "week":
        return naive.dt.to_period("W-SUN").dt.start_time.dt.strftime("%Y-%m-%d")
    if period == "month":
        return naive.dt.strftime("%Y-%m")
    if period == "quarter":
        return naive.dt.to_period("Q").astype(str)
    raise ValueError(f"period: {period!r} is not one of {', '.join(PERIODS)}")


def first_response_times(leads: pd.DataFrame, events: pd.DataFrame) -> pd.Series:
    """Minutes from each lead's creation to its first ``sales``-channel event (NaN: none).

    Events before the lead's creation are ignored. Indexed like ``leads``.
    """
    sales = events.loc[events["channel"] == RESPONSE_CHANNEL, ["lead_id", "occurred_at"]]
    created = leads.set_index("lead_id")["created_at"]
    sales = sales[sales["lead_id"].isin(created.index)]
    after = sales["occurred_at"] >= sales["lead_id"].map(created)
    first = sales[after].groupby("lead_id")["occurred_at"].min()
    delay = leads["lead_id"].map(first) - leads["created_at"]
    return pd.to_timedelta(delay).dt.total_seconds() / 60


def _rates(table: pd.DataFrame, won: str, total: str) -> pd.DataFrame:
    rate = table[won] / table[total].where(table[total] > 0)
    low, high = wilson_interval(rate.fillna(0).to_numpy(), table[total].clip(lower=1).to_numpy())
    return table.assign(rate=rate, ci_low=low, ci_high=high)


def channel_tables(
    leads: pd.DataFrame,
    stage_changes: pd.DataFrame,
    outcomes: pd.DataFrame,
    *,
    events: pd.DataFrame | None,
    scores: pd.DataFrame | None,
) -> dict[str, pd.DataFrame]:
    """The channel-conversion report's tables.

    Args:
        leads: The leads to report on (already filtered).
        stage_changes: Stage changes.
        outcomes: Outcomes.
        events: Events (``lead_id``, ``occurred_at``, ``channel``) for first-response times;
            None when not loaded.
        scores: ``lead_id`` and ``probability`` of scored leads (average score), or None.

    Returns:
        ``channels`` (funnel per channel with ``avg_score`` and ``scored_leads``),
        ``campaigns`` (per channel and UTM campaign), ``ranking`` (lead-to-won per channel,
        highest first, with Wilson 95% intervals), ``by_day`` ... ``by_quarter`` (funnel per
        period of creation) and ``speed_to_lead`` (lead-to-won per first-response bucket;
        empty when no lead has a first response).
    """
    frame = leads.reset_index(drop=True)
    score_of = (
        scores.drop_duplicates("lead_id").set_index("lead_id")["probability"]
        if scores is not None and not scores.empty
        else pd.Series(dtype=float)
    )
    frame = frame.assign(score=frame["lead_id"].map(score_of))
    times = stage_times(frame, stage_changes, outcomes)
    out: dict[str, pd.DataFrame] = {}
    channels = funnel_table(frame, stage_changes, outcomes, by=["source_channel"], times=times)
    by_channel = frame.groupby("source_channel")["score"]
    channels["avg_score"] = channels["source_channel"].map(by_channel.mean())
    channels["scored_leads"] = channels["source_channel"].map(by_channel.count()).fillna(0)
    channels["scored_leads"] = channels["scored_leads"].astype(np.int64)
    out["channels"] = channels.sort_values("lead_to_won", ascending=False, ignore_index=True)
    out["campaigns"] = funnel_table(
        frame, stage_changes, outcomes, by=["source_channel", "utm_campaign"], times=times
    )
    ranking = _rates(channels[["source_channel", "leads", "won"]], "won", "leads")
    out["ranking"] = ranking.sort_values(["rate", "leads"], ascending=False, ignore_index=True)
    for period in PERIODS:
        keyed = frame.assign(**{period: period_of(frame["created_at"], period)})
        out[f"by_{period}"] = funnel_table(keyed, stage_changes, outcomes, by=[period], times=times)
    out["speed_to_lead"] = pd.DataFrame()
    if events is not None and not frame.empty:
        minutes = first_response_times(frame, events)
        if minutes.notna().any():
            bucket = pd.Series(NO_RESPONSE, index=frame.index, dtype=object)
            for upper, label in reversed(RESPONSE_BUCKETS):
                bucket[minutes < upper] = label
            keyed = frame.assign(first_response=bucket)
            table = funnel_table(keyed, stage_changes, outcomes, by=["first_response"], times=times)
            order = [label for _, label in RESPONSE_BUCKETS] + [NO_RESPONSE]
            table["order"] = table["first_response"].map(order.index)
            table = table.sort_values("order").drop(columns="order").reset_index(drop=True)
            out["speed_to_lead"] = _rates(table[["first_response", "leads", "won"]], "won", "leads")
    return out


_FUNNEL_FORMATS: dict[str, ColumnFormat] = {
    "leads": "int",
    "mql": "int",
    "sql": "int",
    "won": "int",
    "lead_to_mql": "pct",
    "mql_to_sql": "pct",
    "sql_to_won": "pct",
    "lead_to_won": "pct",
    "days_to_mql": "days",
    "days_to_sql": "days",
    "days_to_won": "days",
    "avg_score": "pct",
    "scored_leads": "int",
    "rate": "pct",
    "ci_low": "pct",
    "ci_high": "pct",
}


def channel_report(
    leads: pd.DataFrame,
    stage_changes: pd.DataFrame,
    outcomes: pd.DataFrame,
    cfg: ReportSettings,
    *,
    events: pd.DataFrame | None,
    scores: pd.DataFrame | None,
    score_source: str,
    filters: ReportFilter | None = None,
) -> Report:
    """The channel-conversion report (see :func:`channel_tables`)."""
    from reports import charts

    filters = filters or ReportFilter()
    intro = [
        "Which channels and campaigns bring customers: how many leads reach MQL, SQL and "
        "won, how fast, and what they were scored.",
        f"Leads: {filters.describe()}, grouped by the day they were created. Average score: "
        f"{score_source}. Recent cohorts have had less time to convert: their rates are still "
        "rising.",
    ]
    tables = channel_tables(leads, stage_changes, outcomes, events=events, scores=scores)
    funnel = Section("Funnel per channel")
    channels = tables["channels"]
    if channels.empty:
        funnel.notices.append("No lead matches the filters: nothing to show.")
        return Report("channels", "Channel conversion", intro, [funnel], filters=filters)
    total = int(channels["leads"].sum())
    if total < cfg.min_leads:
        funnel.notices.append(
            f"Only {total} leads match: the rates below rest on very few leads (at least "
            f"{cfg.min_leads} are needed for charts)."
        )
    else:
        funnel.charts.append(charts.funnel_chart(channels))
    funnel.tables.append(Table("channels", "Per channel", channels, dict(_FUNNEL_FORMATS)))
    ranking = Section("Lead-to-won rate per channel, ranked")
    ranked = tables["ranking"]
    readable = ranked[(ranked["ci_high"] - ranked["ci_low"]) <= cfg.max_interval_width]
    if len(readable) < len(ranked):
        ranking.notices.append(
            f"{len(ranked) - len(readable)} channel(s) with too few leads to rank (interval "
            f"wider than {cfg.max_interval_width:.0%}) are in the table but not drawn."
        )
    if total >= cfg.min_leads and not readable.empty:
        ranking.charts.append(
            charts.ranked_rate_chart(
                readable,
                label="source_channel",
                name="ranking",
                title="Lead-to-won rate per channel",
            )
        )
    ranking.tables.append(Table("ranking", "Ranking", ranked, dict(_FUNNEL_FORMATS)))
    campaigns = Section("Per UTM campaign")
    if leads["utm_campaign"].isna().all():
        campaigns.notices.append(
            "The leads carry no UTM campaign: the data has no campaign to report on."
        )
    else:
        campaigns.tables.append(
            Table(
                "campaigns",
                "Per channel and campaign",
                tables["campaigns"],
                dict(_FUNNEL_FORMATS),
                max_rows=80,
            )
        )
    periods = Section("Over time")
    for period in PERIODS:
        table = tables[f"by_{period}"]
        if period == "month" and len(table) >= 2 and total >= cfg.min_leads:
            periods.charts.append(charts.period_chart(table, period="month"))
        shown = table.sort_values(period, ascending=False, ignore_index=True)
        periods.tables.append(
            Table(f"by_{period}", f"Per {period}", shown, dict(_FUNNEL_FORMATS), max_rows=24)
        )
    speed = Section("Speed to lead")
    response = tables["speed_to_lead"]
    if response.empty:
        speed.notices.append(
            "The data has no first-response times: no event on the 'sales' channel follows a "
            "lead's creation, so conversion by speed to lead cannot be shown."
        )
    else:
        speed.paragraphs.append(
            "First response: the lead's first event on the 'sales' channel after it was created."
        )
        drawable = response[(response["ci_high"] - response["ci_low"]) <= cfg.max_interval_width]
        if len(drawable) >= 2:
            speed.charts.append(
                charts.ranked_rate_chart(
                    drawable,
                    label="first_response",
                    name="speed_to_lead",
                    title="Lead-to-won rate by first-response time",
                )
            )
        speed.tables.append(
            Table("speed_to_lead", "By first-response time", response, dict(_FUNNEL_FORMATS))
        )
    return Report(
        "channels",
        "Channel conversion",
        intro,
        [funnel, ranking, campaigns, periods, speed],
        filters=filters,
    )
