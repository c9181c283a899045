"""Behaviour features from hand-built event histories."""

import math

import numpy as np
import pandas as pd
import pytest

from leadscore.behaviour import BEHAVIOUR_COLUMNS, compute_behaviour_features


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def events(*rows: tuple[int, str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "lead_id": [r[0] for r in rows],
            "occurred_at": pd.to_datetime([r[1] for r in rows], utc=True, format="ISO8601"),
            "event_type": [r[2] for r in rows],
        }
    )


def snapshots(*rows: tuple[int, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "lead_id": [r[0] for r in rows],
            "as_of": pd.to_datetime([r[1] for r in rows], utc=True, format="ISO8601"),
        }
    )


def test_window_edges_are_half_open():
    # given: demo requests exactly 7 days, just under 7 days and exactly 30 days before
    history = events(
        (1, "2024-03-01 12:00", "demo_request"),
        (1, "2024-03-01 12:00:01", "demo_request"),
        (1, "2024-02-07 12:00", "demo_request"),
    )
    # when
    out = compute_behaviour_features(
        events=history, snapshots=snapshots((1, "2024-03-08 12:00")), half_life_days=14
    )
    # then: (as_of - 7d, as_of] holds one, (as_of - 30d, as_of] two (the 30-day-old one is out)
    assert out.loc[0, "demo_request_7d"] == 1
    assert out.loc[0, "demo_request_30d"] == 2
    assert out.loc[0, "demo_request_90d"] == 3


def test_events_after_the_snapshot_are_never_seen():
    # given: one event before and one a microsecond after the snapshot moment
    history = events(
        (1, "2024-03-01 00:00:00", "pricing_page_view"),
        (1, "2024-03-05 00:00:00.000001", "pricing_page_view"),
    )
    # when
    out = compute_behaviour_features(
        events=history, snapshots=snapshots((1, "2024-03-05 00:00:00")), half_life_days=14
    )
    # then
    assert out.loc[0, "pricing_page_view_7d"] == 1
    assert out.loc[0, "last_activity_at"] == ts("2024-03-01").timestamp()


def test_engagement_score_halves_every_half_life():
    # given: one webinar attendance (weight 6)
    history = events((1, "2024-01-01", "webinar_attended"))
    # when: scored at the event, one half-life and two half-lives later
    out = compute_behaviour_features(
        events=history,
        snapshots=snapshots((1, "2024-01-01"), (1, "2024-01-11"), (1, "2024-01-21")),
        half_life_days=10,
    )
    # then
    assert out["engagement_at_as_of"].tolist() == pytest.approx([6.0, 3.0, 1.5])
    assert out["engagement_half_life_days"].tolist() == [10.0] * 3


def test_lead_without_events_has_zero_counts_and_unknown_recency():
    # given: events of another lead only
    history = events((2, "2024-01-01", "page_view"))
    # when
    out = compute_behaviour_features(
        events=history, snapshots=snapshots((1, "2024-02-01")), half_life_days=14
    )
    # then
    counts = out[[c for c in BEHAVIOUR_COLUMNS if c.endswith("d")]]
    assert (counts.to_numpy() == 0).all()
    assert math.isnan(out.loc[0, "last_activity_at"])
    assert math.isnan(out.loc[0, "first_activity_at"])
    assert out.loc[0, "engagement_at_as_of"] == 0
    assert out.loc[0, "momentum"] == 1.0  # no activity in either period: steady


def test_rows_follow_the_snapshot_order_and_types_outside_the_contract_are_ignored():
    # given: snapshots out of order, an unknown event type
    history = events(
        (1, "2024-01-01", "page_view"),
        (1, "2024-01-02", "teleport"),
        (2, "2024-01-03", "email_open"),
        (2, "2024-01-04", "email_open"),
    )
    snaps = snapshots((2, "2024-01-10"), (1, "2024-01-10"), (2, "2024-01-03 12:00"))
    # when
    out = compute_behaviour_features(events=history, snapshots=snaps, half_life_days=14)
    # then
    assert out["lead_id"].tolist() == [2, 1, 2]
    assert out["email_open_30d"].tolist() == [2, 0, 1]
    assert out["email_open_7d"].tolist() == [1, 0, 1]  # 2024-01-03 is exactly 7 days back
    assert out["page_view_30d"].tolist() == [0, 1, 0]
    assert out.loc[1, "as_of_ts"] - out.loc[1, "last_activity_at"] == 9 * 86_400
    assert str(out["event_timestamp"].dtype) == "datetime64[us, UTC]"


def test_matches_a_brute_force_count_on_random_histories():
    # given
    rng = np.random.default_rng(3)
    n = 4000
    history = pd.DataFrame(
        {
            "lead_id": rng.integers(0, 50, n),
            "occurred_at": ts("2024-01-01") + pd.to_timedelta(rng.integers(0, 200 * 86400, n), "s"),
            "event_type": rng.choice(["page_view", "demo_request", "email_open"], n),
        }
    )
    snaps = pd.DataFrame(
        {
            "lead_id": rng.integers(0, 60, 300),
            "as_of": ts("2024-01-01") + pd.to_timedelta(rng.integers(0, 220 * 86400, 300), "s"),
        }
    )
    # when
    out = compute_behaviour_features(events=history, snapshots=snaps, half_life_days=7)
    # then
    for i, snap in snaps.iterrows():
        seen = history[(history.lead_id == snap.lead_id) & (history.occurred_at <= snap.as_of)]
        recent = seen[seen.occurred_at > snap.as_of - pd.Timedelta(days=30)]
        assert out.loc[i, "page_view_30d"] == (recent.event_type == "page_view").sum()
        assert (
            out.loc[i, "demo_request_90d"]
            == (
                (seen.event_type == "demo_request")
                & (seen.occurred_at > snap.as_of - pd.Timedelta(days=90))
            ).sum()
        )


def test_one_day_window_and_intent_scores():
    # given: a demo request and a pricing view today, a trial sign-up 3 days ago, two opens
    # yesterday morning
    history = events(
        (1, "2024-05-10 08:00", "demo_request"),
        (1, "2024-05-10 09:00", "pricing_page_view"),
        (1, "2024-05-07 09:00", "trial_signup"),
        (1, "2024-05-09 09:00", "email_open"),
        (1, "2024-05-09 10:00", "email_open"),
    )
    # when
    out = compute_behaviour_features(
        events=history, snapshots=snapshots((1, "2024-05-10 12:00")), half_life_days=14
    )
    # then: weights pricing 1, demo 3, trial 3; opens 1 each, kept apart
    assert out.loc[0, "demo_request_1d"] == 1 and out.loc[0, "trial_signup_1d"] == 0
    assert out.loc[0, "high_intent_1d"] == 4.0
    assert out.loc[0, "high_intent_7d"] == 7.0
    assert out.loc[0, "low_intent_1d"] == 0.0  # the opens were 26 and 27 hours ago
    assert out.loc[0, "low_intent_7d"] == 2.0


def test_momentum_compares_last_week_with_the_three_before():
    # given: lead 1 busy this week, lead 2 busy three weeks ago, lead 3 steady
    rows = [(1, f"2024-05-0{d} 10:00", "page_view") for d in range(5, 10)]
    rows += [(2, f"2024-04-{d} 10:00", "page_view") for d in range(20, 25)]
    rows += [(3, "2024-05-08 10:00", "page_view")]
    rows += [(3, f"2024-04-{d} 10:00", "page_view") for d in (20, 25, 30)]
    # when
    out = compute_behaviour_features(
        events=events(*rows),
        snapshots=snapshots((1, "2024-05-10"), (2, "2024-05-10"), (3, "2024-05-10")),
        half_life_days=14,
    )
    # then: (n7 + 0.25) / 7 against (n21 + 0.75) / 21
    expected = [(5.25 / 7) / (0.75 / 21), (0.25 / 7) / (5.75 / 21), (1.25 / 7) / (3.75 / 21)]
    assert out["momentum"].tolist() == pytest.approx(expected)


def test_distinct_topics_channels_missed_webinars_and_unsubscribe():
    # given
    history = pd.DataFrame(
        {
            "lead_id": [1] * 6,
            "occurred_at": pd.to_datetime(
                [
                    "2024-05-01",
                    "2024-05-02",
                    "2024-05-03",
                    "2024-05-04",
                    "2024-05-05",
                    "2023-01-01",
                ],
                utc=True,
            ),
            "event_type": [
                "webinar_registered",
                "webinar_registered",
                "webinar_attended",
                "content_download",
                "unsubscribe",
                "content_download",
            ],
            "topic": ["ai", "ai", "ai", "pricing", None, "old-topic"],
            "channel": ["webinar", "webinar", "webinar", "web", "email", "web"],
        }
    )
    # when
    out = compute_behaviour_features(
        events=history, snapshots=snapshots((1, "2024-05-10")), half_life_days=14
    )
    # then: the 2023 event is outside the 90 days
    assert out.loc[0, "distinct_topics_90d"] == 2
    assert out.loc[0, "distinct_channels_90d"] == 3
    assert out.loc[0, "webinars_missed_90d"] == 1
    assert out.loc[0, "unsubscribed"] == 1.0
