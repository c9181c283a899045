"""POST /v1/outcomes: validated like ingest, idempotent, and seen by the next training load."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from leadscore.outcome_log import OutcomeLog
from leadscore.settings import EventsSettings
from pipelines.ingest import load_outcomes, load_table
from tests.api_keys import api_client, key_headers

pytestmark = pytest.mark.slow


def _no_model(settings):
    raise LookupError("outcomes need no model")


@pytest.fixture(scope="module")
def settings(stack, tmp_path_factory):
    """The stack's warehouse with an event log of its own (the stack's trainings stay as
    they were)."""
    live = tmp_path_factory.mktemp("outcomes") / "live.db"
    events = EventsSettings(log_url=f"sqlite:///{live}", max_per_request=4)
    return stack.settings.model_copy(update={"events": events})


@pytest.fixture(scope="module")
def client(settings):
    """The API without a model: outcomes are accepted all the same."""
    with api_client(settings, loader=_no_model) as c:
        yield c


@pytest.fixture(scope="module")
def open_leads(settings) -> pd.DataFrame:
    """Leads without an outcome in the warehouse, with their creation time."""
    leads = load_table(settings.paths.warehouse, "leads")
    closed = load_table(settings.paths.warehouse, "outcomes")["lead_id"]
    return leads[~leads["lead_id"].isin(closed)].sort_values("lead_id").head(10)


def _outcome(lead_id: int, result: str = "won", days_ago: float = 1, **extra) -> dict:
    moment = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days_ago)
    return {"lead_id": int(lead_id), "closed_at": moment.isoformat(), "result": result, **extra}


def test_outcomes_are_stored_once_and_the_next_training_load_sees_them(
    client, settings, open_leads
):
    # given: two open leads closing
    won, lost = (int(i) for i in open_leads["lead_id"].iloc[:2])
    outcomes = [_outcome(won, "won", amount=12000.0), _outcome(lost, "lost", 2)]
    # when
    first = client.post("/v1/outcomes", json={"outcomes": outcomes})
    again = client.post("/v1/outcomes", json={"outcomes": [*outcomes, outcomes[0]]})
    # then
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 2, "duplicates": 0}
    assert again.json() == {"accepted": 0, "duplicates": 3}
    logged = OutcomeLog(settings.event_log_url).read()
    assert sorted(logged["lead_id"]) == sorted([won, lost])
    # and the outcomes training, retraining and batch scoring read include them
    loaded = load_outcomes(settings.paths.warehouse, settings.event_log_url)
    warehouse = load_table(settings.paths.warehouse, "outcomes")
    assert len(loaded) == len(warehouse) + 2
    assert loaded["lead_id"].is_unique
    assert list(loaded.dtypes) == list(warehouse.dtypes)
    rows = loaded.set_index("lead_id")
    assert rows.loc[won, "result"] == "won" and rows.loc[won, "amount"] == 12000.0
    assert rows.loc[lost, "result"] == "lost"


def test_a_later_outcome_of_a_closed_lead_replaces_it_in_the_training_data(client, settings):
    # given: a lead the warehouse has as lost
    warehouse = load_table(settings.paths.warehouse, "outcomes")
    lead = warehouse[warehouse["result"] == "lost"].sort_values("lead_id").iloc[0]
    # when: the CRM reports it won later (re-opened deal)
    response = client.post(
        "/v1/outcomes", json={"outcomes": [_outcome(lead["lead_id"], "won", 0.5)]}
    )
    # then
    assert response.json() == {"accepted": 1, "duplicates": 0}
    loaded = load_outcomes(settings.paths.warehouse, settings.event_log_url)
    assert loaded.set_index("lead_id").loc[int(lead["lead_id"]), "result"] == "won"


def test_invalid_outcomes_are_refused_naming_the_field_and_nothing_is_stored(
    client, settings, open_leads
):
    # given: one good outcome and one broken in each way ingest checks
    lead = open_leads.iloc[5]
    created = pd.Timestamp(lead["created_at"]).to_pydatetime()
    outcomes = [
        _outcome(open_leads["lead_id"].iloc[4]),
        _outcome(987654321),
        _outcome(lead["lead_id"], days_ago=-2),
        {**_outcome(lead["lead_id"]), "closed_at": (created - timedelta(days=1)).isoformat()},
    ]
    before = len(OutcomeLog(settings.event_log_url).read())
    # when
    response = client.post("/v1/outcomes", json={"outcomes": outcomes})
    # then
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    fields = {d["field"]: d["problem"] for d in response.json()["detail"]}
    assert set(fields) == {"outcomes.1.lead_id", "outcomes.2.closed_at", "outcomes.3.closed_at"}
    assert "987654321" in fields["outcomes.1.lead_id"]
    assert "future" in fields["outcomes.2.closed_at"]
    assert "before lead" in fields["outcomes.3.closed_at"]
    assert len(OutcomeLog(settings.event_log_url).read()) == before


def test_a_stored_outcome_cannot_change_its_result(client, open_leads):
    outcome = _outcome(open_leads["lead_id"].iloc[6], "won", 3)
    assert client.post("/v1/outcomes", json={"outcomes": [outcome]}).json()["accepted"] == 1
    changed = client.post("/v1/outcomes", json={"outcomes": [{**outcome, "result": "lost"}]})
    assert changed.status_code == 422
    assert "already recorded as won" in changed.json()["detail"][0]["problem"]
    assert changed.json()["detail"][0]["field"] == "outcomes.0.result"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"result": "maybe"}, "outcomes.0.result"),
        ({"closed_at": "2026-01-01T10:00:00"}, "outcomes.0.closed_at"),
        ({"amount": -5}, "outcomes.0.amount"),
        ({"lead_id": "abc"}, "outcomes.0.lead_id"),
        ({"lead_id": False}, "outcomes.0.lead_id"),
        ({"stage": "won"}, "outcomes.0.stage"),
    ],
)
def test_malformed_outcomes_get_422_naming_the_field(client, open_leads, patch, field):
    outcome = {**_outcome(open_leads["lead_id"].iloc[7]), **patch}
    response = client.post("/v1/outcomes", json={"outcomes": [outcome]})
    assert response.status_code == 422
    assert any(d["field"] == field for d in response.json()["detail"])


def test_at_most_max_per_request_outcomes(client, open_leads):
    outcomes = [_outcome(i) for i in open_leads["lead_id"].iloc[:5]]
    response = client.post("/v1/outcomes", json={"outcomes": outcomes})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "outcomes"
    assert "at most 4" in response.json()["detail"][0]["problem"]


def test_outcomes_need_the_outcomes_write_scope(client, settings, open_leads):
    body = {"outcomes": [_outcome(open_leads["lead_id"].iloc[8])]}
    refused = client.post(
        "/v1/outcomes", json=body, headers=key_headers(settings, "events:write", "score:read")
    )
    assert refused.status_code == 403
    assert refused.json() == {"error": "forbidden", "detail": "needs scope outcomes:write"}
    allowed = client.post(
        "/v1/outcomes", json=body, headers=key_headers(settings, "outcomes:write")
    )
    assert allowed.status_code == 200 and allowed.json()["accepted"] == 1


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_amounts_are_refused(client, amount):
    body = (
        '{"outcomes": [{"lead_id": 1, "closed_at": "2026-01-02T00:00:00Z", '
        f'"result": "won", "amount": {amount}}}]}}'
    )
    answer = client.post("/v1/outcomes", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    (error,) = answer.json()["detail"]
    assert error["field"] == "outcomes.0.amount"
