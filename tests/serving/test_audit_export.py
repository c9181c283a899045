"""The audit log of served scores: on SQLite and PostgreSQL, exported by the CLI and the API."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from leadscore import settings as settings_module
from leadscore.audit_export import format_of, write_export
from leadscore.auth import SCORE_READ
from leadscore.score_log import ScoreLog, ServedScore
from leadscore.settings import EventsSettings
from pipelines.cli import app
from tests.api_keys import api_client, key_headers
from tests.services import require_postgres

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _served(lead_id: int, minutes: int) -> ServedScore:
    return ServedScore(
        lead_id=lead_id,
        scored_at=T0 + timedelta(minutes=minutes),
        model_name="leadscore",
        model_version="3",
        probability=0.25 + minutes / 1000,
        band="hot",
        reasons=[{"feature": "demo_request_7d", "label": "1 demo request", "contribution": 0.2}],
        features={"demo_request_7d": 1.0, "industry": "software", "page_view_30d": None},
        request_id=f"req-{lead_id}-{minutes}",
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of the test's own on the machine's PostgreSQL, dropped afterwards."""
    import psycopg

    params = require_postgres()
    name = f"leadscore_test_{secrets.token_hex(4)}"
    admin = dict(host=params.host, port=params.port, user=params.user, dbname=params.database)
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://{params.user}@{params.host}:{params.port}/{name}"
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def log(request, tmp_path) -> ScoreLog:
    if request.param == "postgres":
        return ScoreLog(request.getfixturevalue("postgres_url"))
    return ScoreLog(f"sqlite:///{tmp_path / 'audit.db'}")


def test_values_json_cannot_hold_are_stored_as_json_can(log):
    # given: numpy scalars, a NaN and an infinity among the values of a score
    import numpy as np

    score = _served(7, 0)
    odd = ServedScore(
        **{
            **_served(7, 1).__dict__,
            "reasons": [{"feature": "f", "value": np.int64(3), "contribution": np.float64(0.5)}],
            "features": {"f": np.int64(3), "g": float("nan"), "h": float("inf"), "s": "web"},
        }
    )
    # when
    log.append([score, odd])
    # then: the plain score as it was, the odd one as plain JSON (NaN and infinity as null)
    second, first = log.history(7)  # newest first
    assert first.features == score.features and first.reasons == score.reasons
    assert second.features == {"f": 3, "g": None, "h": None, "s": "web"}
    assert second.reasons == [{"feature": "f", "value": 3, "contribution": 0.5}]


def test_scores_are_read_back_in_order_with_filters_in_small_batches(log):
    log.append([_served(lead, minutes) for minutes in range(0, 50, 10) for lead in (1, 2)])
    every = list(log.iter_scores(batch_size=3))
    assert [(s.lead_id, s.scored_at) for s in every] == [
        (lead, T0 + timedelta(minutes=m)) for m in range(0, 50, 10) for lead in (1, 2)
    ]
    assert every[0].features == {
        "demo_request_7d": 1.0,
        "industry": "software",
        "page_view_30d": None,
    }
    window = log.iter_scores(since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=30))
    assert [(s.lead_id, s.request_id) for s in window] == [
        (1, "req-1-10"),
        (2, "req-2-10"),
        (1, "req-1-20"),
        (2, "req-2-20"),
    ]
    assert [s.request_id for s in log.iter_scores(lead_id=2, batch_size=2)] == [
        f"req-2-{m}" for m in range(0, 50, 10)
    ]


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_an_export_holds_every_field_of_every_score(tmp_path, suffix):
    log = ScoreLog(f"sqlite:///{tmp_path / 'audit.db'}")
    log.append([_served(7, m) for m in range(3)])
    out = tmp_path / f"export.{suffix}"
    # when
    rows = write_export(log.iter_scores(), out, format_of(out))
    # then
    assert rows == 3
    if suffix == "jsonl":
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        reasons = [line["reasons"] for line in lines]
        features = [line["features"] for line in lines]
        frame = pd.DataFrame(lines)
    else:
        frame = pd.read_csv(out) if suffix == "csv" else pd.read_parquet(out)
        reasons = [json.loads(r) for r in frame["reasons"]]
        features = [json.loads(f) for f in frame["features"]]
    assert frame["lead_id"].tolist() == [7, 7, 7]
    assert frame["request_id"].tolist() == ["req-7-0", "req-7-1", "req-7-2"]
    assert frame["probability"].tolist() == pytest.approx([0.25, 0.251, 0.252])
    assert pd.to_datetime(frame["scored_at"]).tolist() == [
        pd.Timestamp(T0 + timedelta(minutes=m)) for m in range(3)
    ]
    assert set(frame["model_version"].astype(str)) == {"3"} and set(frame["band"]) == {"hot"}
    assert reasons[0][0]["feature"] == "demo_request_7d"
    assert features[2] == {"demo_request_7d": 1.0, "industry": "software", "page_view_30d": None}
    assert not out.with_name(out.name + ".partial").exists()


def test_an_unknown_export_format_is_named():
    with pytest.raises(ValueError, match=r"'\.xlsx' unknown: use csv, jsonl or parquet"):
        format_of(Path("scores.xlsx"))


def test_the_cli_exports_a_window_of_the_log(tmp_path):
    os.environ["LEADSCORE_PATHS__ROOT"] = str(tmp_path)
    settings_module.get_settings.cache_clear()
    try:
        ScoreLog(settings_module.get_settings().event_log_url).append(
            [_served(1, m) for m in range(0, 40, 10)]
        )
        runner = CliRunner()
        out = tmp_path / "nov.csv"
        ok = runner.invoke(
            app,
            ["audit", "export", "--out", str(out), "--since", "2026-11-01T09:10:00"],
        )
        backwards = runner.invoke(
            app,
            [
                "audit",
                "export",
                "--out",
                str(out),
                "--since",
                "2026-11-02",
                "--until",
                "2026-11-01",
            ],
        )
        bad = runner.invoke(app, ["audit", "export", "--out", str(out), "--since", "yesterday"])
    finally:
        del os.environ["LEADSCORE_PATHS__ROOT"]
        settings_module.get_settings.cache_clear()
    assert ok.exit_code == 0, ok.output
    assert "wrote 3 served score(s)" in ok.output
    assert pd.read_csv(out)["request_id"].tolist() == ["req-1-10", "req-1-20", "req-1-30"]
    assert backwards.exit_code == 1 and "--until" in backwards.output
    assert bad.exit_code == 1 and "'yesterday' is not an ISO 8601" in bad.output


def test_the_api_streams_the_log_it_wrote_to_postgresql(stack, postgres_url):
    # given: the API with its event log (keys, served scores) on PostgreSQL
    settings = stack.settings.model_copy(update={"events": EventsSettings(log_url=postgres_url)})
    lead = int(stack.demo.leads["lead_id"].iloc[3])
    with api_client(settings) as client:
        served = client.post("/v1/score", json={"lead_id": lead}, headers={"x-request-id": "pg-1"})
        assert served.status_code == 200
        client.app.state.score_recorder.flush()
        # when
        jsonl = client.get("/v1/admin/scores/export", params={"lead_id": lead})
        csv_ = client.get("/v1/admin/scores/export", params={"format": "csv"})
        reader = key_headers(settings, SCORE_READ)
        forbidden = client.get("/v1/admin/scores/export", headers=reader)
        backwards = client.get(
            "/v1/admin/scores/export",
            params={"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"},
        )
        latest = client.get(f"/v1/leads/{lead}/score").json()
    # then
    assert jsonl.status_code == 200 and jsonl.headers["content-type"] == "application/x-ndjson"
    (row,) = [json.loads(line) for line in jsonl.text.splitlines()]
    assert row["lead_id"] == lead and row["request_id"] == "pg-1"
    assert row["probability"] == pytest.approx(served.json()["probability"])
    assert row["features"] == latest["features"] and row["reasons"] == latest["reasons"]
    assert csv_.text.splitlines()[0] == (
        "lead_id,scored_at,model_name,model_version,probability,band,request_id,reasons,features"
    )
    assert "attachment" in csv_.headers["content-disposition"]
    assert forbidden.status_code == 403
    assert backwards.status_code == 422 and backwards.json()["detail"][0]["field"] == "query.until"
