"""Scoring a lead from the attributes sent with the request: a lead not in the store yet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from leadscore.profile import compute_profile_features
from pipelines.ingest import load_table

NEW_LEAD = 10**9 + 7  # no lead of the stack has this id


def _profile_of(leads: pd.DataFrame, lead_id: int) -> dict:
    row = leads[leads["lead_id"] == lead_id].iloc[0]
    out = {}
    for name, value in row.items():
        if name == "lead_id" or value is None or (not isinstance(value, str) and pd.isna(value)):
            continue
        if name == "created_at":
            value = pd.Timestamp(value).isoformat()
        elif isinstance(value, (np.bool_, bool)):
            value = bool(value)
        elif isinstance(value, (np.integer, np.floating)):
            value = value.item()
        out[name] = value
    return out


@pytest.fixture(scope="module")
def leads(stack) -> pd.DataFrame:
    return load_table(stack.settings.paths.warehouse, "leads")


def test_a_new_lead_is_scored_from_its_attributes_and_recorded(client, stack):
    lead = {
        "source_channel": "referral",
        "industry": "software",
        "company_size": "201-1000",
        "job_role": "it",
        "seniority": "director",
        "is_decision_maker": True,
        "bant_budget": "50k_250k",
        "bant_need": True,
        "bant_timeline": "now",
        "email_domain": "acme.com",
        "created_at": (datetime.now(UTC) - timedelta(hours=2)).isoformat(),
    }
    # the store does not know the lead
    assert client.post("/v1/score", json={"lead_id": NEW_LEAD}).status_code == 404
    # when
    answer = client.post("/v1/score", json={"lead_id": NEW_LEAD, "lead": lead})
    # then
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["lead_id"] == NEW_LEAD and 0.0 < body["probability"] < 1.0
    assert body["reasons"] and body["model_version"]
    # a decision maker with budget and need from a referral beats the same lead without them
    weaker = {**lead, "is_decision_maker": False, "bant_budget": None, "bant_need": False}
    worse = client.post("/v1/score", json={"lead_id": NEW_LEAD, "lead": weaker}).json()
    assert worse["probability"] < body["probability"]
    # the audit log has it, with the features built for it
    client.app.state.score_recorder.flush()
    latest = client.get(f"/v1/leads/{NEW_LEAD}/score").json()
    assert latest["features"]["lifecycle_stage"] == "lead"
    assert latest["features"]["email_domain_type"] == "corporate"
    assert latest["features"]["days_in_stage"] == pytest.approx(2 / 24, abs=0.01)
    assert latest["features"]["engagement_score"] == 0.0
    assert latest["features"]["days_since_last_activity"] is None
    assert 0.0 < latest["features"]["channel_conversion_rate"] < 1.0


def test_the_profile_built_inline_is_the_one_the_store_holds(client, stack, leads):
    # given: a stored lead (its profile features come from the same function)
    lead_id = int(leads["lead_id"].iloc[10])
    sent = _profile_of(leads, lead_id)
    service = client.app.state.service
    stored = service.lookup(lead_id)
    # when
    row = service.inline.row(
        {**sent, "created_at": datetime.fromisoformat(sent["created_at"])},
        {},
        features=service.scorer.features,
    )
    # then: every profile feature of the model matches the store
    profile = compute_profile_features(leads.head(1)).columns.drop(["lead_id", "event_timestamp"])
    shared = [name for name in profile if name in service.scorer.features]
    assert shared
    assert {n: row[n] for n in shared} == {n: stored[n] for n in shared}


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({"lead_id": 1, "lead": {"source_channel": "carrier_pigeon"}}, "lead.source_channel", ""),
        ({"lead_id": 1, "lead": {"industry": "software"}}, "lead.source_channel", "required"),
        (
            {"lead_id": 1, "lead": {"source_channel": "website", "shoe_size": 44}},
            "lead.shoe_size",
            "Extra inputs",
        ),
        (
            {"lead_id": 1, "lead": {"source_channel": "website", "created_at": "2026-11-01T10:00"}},
            "lead.created_at",
            "timezone",
        ),
        ({"lead_id": 1, "lead": {"source_channel": "website", "age": 7}}, "lead.age", "16"),
        ({"lead_id": 1, "attributes": {"tier": "gold"}}, "", "attributes go with lead"),
    ],
)
def test_bad_attributes_are_refused_with_the_field_and_the_problem(client, body, field, problem):
    answer = client.post("/v1/score", json=body)
    assert answer.status_code == 422, answer.text
    (error,) = answer.json()["detail"]
    assert error["field"] == field
    assert problem.lower() in error["problem"].lower()


def test_an_attribute_the_model_does_not_know_is_named(client):
    answer = client.post(
        "/v1/score",
        json={"lead_id": 1, "lead": {"source_channel": "website"}, "attributes": {"tier": 3}},
    )
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["field"] == "attributes.tier"
    assert "not an attribute of the model" in error["problem"]
