"""The report routes, their login cookie, CSV downloads, filters and the static export, on
the session stack (a trained champion on demo data)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import leadscore.settings as settings_module
from leadscore.auth import REPORTS_READ, SCORE_READ
from leadscore.score_log import ScoreLog, ServedScore
from leadscore.settings import EventsSettings
from pipelines.cli import app as cli
from reports.build import build_report
from reports.data import ReportData
from reports.settings import ReportSettings
from reports.web import COOKIE
from serving.app import create_app
from tests.api_keys import key_headers

REPORT_NAMES = ("calibration", "bands", "channels", "drift")


@pytest.fixture(scope="module")
def client(stack) -> Iterator[TestClient]:
    with TestClient(create_app(stack.settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def reader(stack) -> dict[str, str]:
    return key_headers(stack.settings, REPORTS_READ, name="marketing")


def _csv(response: Any) -> pd.DataFrame:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return pd.read_csv(io.StringIO(response.text))


def test_pages_need_a_reports_key(client, stack):
    # no key: an API client gets 401, a browser is sent to the login page
    assert client.get("/reports/bands").status_code == 401
    page = client.get("/reports/bands", headers={"accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/reports/login?next=/reports/bands"
    # a key without the scope
    scorer_key = key_headers(stack.settings, SCORE_READ, name="crm")
    denied = client.get("/reports/bands/bands.csv", headers=scorer_key)
    assert denied.status_code == 403
    assert denied.json()["detail"] == "needs scope reports:read"


def test_login_sets_a_strict_httponly_cookie_for_the_report_routes_only(client, stack):
    key = key_headers(stack.settings, REPORTS_READ, name="browser")["authorization"].split()[1]
    crm_key = key_headers(stack.settings, SCORE_READ, name="crm")["authorization"].split()[1]
    # wrong keys are refused on the form, saying why
    wrong = client.post("/reports/login", content="key=ls_nope", follow_redirects=False)
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text
    lacking = client.post("/reports/login", content=f"key={crm_key}", follow_redirects=False)
    assert lacking.status_code == 401 and "lacks the reports:read scope" in lacking.text
    # the right key: a cookie, and the page asked for
    form = f"key={key}&next=/reports/channels"
    ok = client.post(
        "/reports/login",
        content=form,
        headers={"content-type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/reports/channels"
    cookie = ok.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/reports"):
        assert attribute.lower() in cookie.lower()
    # an open redirect is not followed
    away = client.post(
        "/reports/login", content=f"key={key}&next=//evil.example", follow_redirects=False
    )
    assert away.headers["location"] == "/reports/"
    # the cookie opens the report pages and nothing else
    browser = {"cookie": f"{COOKIE}={key}"}
    assert client.get("/reports/", headers=browser).status_code == 200
    assert client.get("/v1/model", headers=browser).status_code == 401


@pytest.mark.parametrize("name", REPORT_NAMES)
def test_each_page_renders_its_charts_and_tables(client, reader, name):
    page = client.get(f"/reports/{name}", headers=reader)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert 'data-chart="' in page.text and "data:image/png;base64," in page.text
    assert 'data-table="' in page.text and "download CSV" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from outside


def test_csv_downloads_hold_the_report_tables(client, reader):
    bands = _csv(client.get("/reports/bands/bands.csv", headers=reader))
    groups = _csv(client.get("/reports/calibration/groups.csv", headers=reader))
    # the band report and the calibration report score the same leads
    overall = groups[groups["by"] == "all"].iloc[0]
    assert bands["leads"].sum() == overall["leads"]
    assert bands["conversions"].sum() == overall["conversions"]
    assert set(bands["band"]) <= {"hot", "warm", "cold"}
    assert bands["capture"].sum() == pytest.approx(1.0)
    psi = _csv(client.get("/reports/drift/psi.csv", headers=reader))
    assert "score" in set(psi["feature"])
    assert psi["psi"].is_monotonic_decreasing
    missing = client.get("/reports/bands/nope.csv", headers=reader)
    assert missing.status_code == 404 and "bands" in missing.json()["detail"]
    assert client.get("/reports/nope", headers=reader).status_code == 404


def test_filters_select_leads_and_bad_values_name_the_field(client, reader, stack):
    channels = _csv(client.get("/reports/channels/channels.csv?channel=webinar", headers=reader))
    assert channels["source_channel"].tolist() == ["webinar"]
    leads = stack.demo.leads
    assert 0 < channels["leads"].iloc[0] <= (leads["source_channel"] == "webinar").sum()
    months = _csv(
        client.get("/reports/channels/by_month.csv?start=2026-01-01&end=2026-03-31", headers=reader)
    )
    assert sorted(months["month"]) == ["2026-01", "2026-02", "2026-03"]
    for query, field in (
        ("start=2026-13-01", "start"),
        ("channel=carrier_pigeon", "channel"),
        ("start=2026-03-01&end=2026-01-01", "end"),
        ("scores=mine", "scores"),
    ):
        bad = client.get(f"/reports/channels?{query}", headers=reader)
        assert bad.status_code == 422, query
        assert bad.json()["detail"][0]["field"] == field


def test_served_scores_are_labelled_as_the_holdout_and_feed_live_performance(stack, tmp_path):
    # given: an audit log in which each holdout lead was served its score at its snapshot
    settings = stack.settings.model_copy(
        update={"events": EventsSettings(log_url=f"sqlite:///{tmp_path}/events.db")}
    )
    holdout = ReportData(settings).holdout.frame
    ScoreLog(settings.event_log_url).append(
        [
            ServedScore(
                lead_id=int(row.lead_id),
                scored_at=row.scored_at.to_pydatetime(),
                model_name="leadscore",
                model_version="1",
                probability=float(row.probability),
                band=str(row.band),
                reasons=[],
                features={},
            )
            for row in holdout.itertuples()
        ]
    )
    # when
    data = ReportData(settings, ReportSettings(scores="served", training_sample=500))
    served = data.served.frame
    # then: the same leads and the same labels as the training-style holdout labels
    merged = holdout.merge(served, on="lead_id", suffixes=("_holdout", "_served"))
    assert len(merged) == len(holdout) == len(served)
    assert (merged["label_holdout"] == merged["label_served"]).all()
    report = build_report("drift", data)
    live = report.tables()["live"].frame.set_index("metric")
    assert live.loc["roc_auc", "live"] > 0.8
    assert live.loc["brier", "live"] == pytest.approx(
        ((holdout["probability"] - holdout["label"]) ** 2).mean()
    )
    assert live["verdict"].iloc[:3].str.len().gt(0).all()


def test_the_cli_writes_static_pages_with_png_charts_and_csv(stack, tmp_path, monkeypatch):
    # given: the CLI's settings rooted at the stack
    monkeypatch.setenv("LEADSCORE_PATHS__ROOT", str(stack.settings.paths.root))
    settings_module.get_settings.cache_clear()
    out = tmp_path / "out"
    try:
        # when
        # the served scores (none have matured) keep this quick: no point-in-time join
        result = CliRunner().invoke(
            cli, ["report", "channels", "calibration", "--scores", "served", "--out", str(out)]
        )
        refused = CliRunner().invoke(cli, ["report", "funnel", "--out", str(out)])
        bad_date = CliRunner().invoke(cli, ["report", "bands", "--out", str(out), "--start", "x"])
    finally:
        settings_module.get_settings.cache_clear()
    # then
    assert result.exit_code == 0, result.output
    for name in ("channels",):
        page = (out / f"{name}.html").read_text()
        images = [p.name for p in out.glob(f"{name}-*.png")]
        assert images and all(f'src="{image}"' in page for image in images)
        assert all(Path(out / image).read_bytes()[:4] == b"\x89PNG" for image in images)
        assert f'href="{name}-' in page
    assert (out / "channels-ranking.csv").exists() and (out / "channels-by_quarter.csv").exists()
    # too little data: the page says so and has no chart
    assert "nothing to show" in (out / "calibration.html").read_text()
    assert not list(out.glob("calibration-*.png"))
    assert (out / "calibration-groups.csv").exists()
    assert not (out / "drift.html").exists()
    assert refused.exit_code == 1 and "'funnel' is not one of" in refused.output
    assert bad_date.exit_code == 1 and "start" in bad_date.output


def test_run_all_prints_the_report_urls_with_a_key_that_opens_them(client, stack):
    from pipelines.cli import _report_lines

    first = _report_lines(stack.settings)
    lines = _report_lines(stack.settings)  # a second run replaces the first key
    base = f"http://{stack.settings.serving.host}:{stack.settings.serving.port}/reports"
    assert [f"#   {base}/{name}" for name in REPORT_NAMES] == lines[2:]
    key = lines[1].rsplit(" ", 1)[1]
    old = first[1].rsplit(" ", 1)[1]
    assert client.get("/reports/", headers={"x-api-key": key}).status_code == 200
    assert client.get("/reports/", headers={"x-api-key": old}).status_code == 401  # revoked


def test_the_report_routes_import_no_report_computation_at_start_up():
    # serving imports reports.web: its module-level imports must stay light (the computation,
    # pandas, matplotlib, Feast, MLflow and training are imported when a page is built)
    import ast

    import reports.web

    tree = ast.parse(Path(reports.web.__file__).read_text())
    imported = set()
    for node in tree.body:  # module level only; `if TYPE_CHECKING:` blocks are not run
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    roots = {name.split(".")[0] for name in imported}
    assert roots <= {
        "__future__",
        "threading",
        "collections",
        "datetime",
        "typing",
        "urllib",
        "fastapi",
        "starlette",
        "leadscore",
        "serving",
    }
    assert {name for name in imported if name.startswith("leadscore")} <= {
        "leadscore.auth",
        "leadscore.contracts",
    }


def test_too_few_served_scores_say_so_instead_of_drawing(client, reader):
    # the API served no score whose outcome has matured yet (the stack's leads closed before)
    for name in ("calibration", "bands"):
        page = client.get(f"/reports/{name}?scores=served", headers=reader)
        assert page.status_code == 200, page.text
        assert "nothing to show" in page.text or "Too little data" in page.text
        assert "data-chart=" not in page.text
        assert "the first score the API served each lead" in page.text
    bands = _csv(client.get("/reports/bands/bands.csv?scores=served", headers=reader))
    assert bands.empty and {"band", "leads", "conversion", "lift", "capture"} <= set(bands)


def test_without_data_or_model_the_pages_say_what_is_missing(tmp_path, make_settings):
    # given: an API on an empty project (no warehouse, no model)
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as empty:
        headers = key_headers(settings, REPORTS_READ)
        # when / then: the channel report has no lead to show, the others no model to score with
        channels = empty.get("/reports/channels", headers=headers)
        assert channels.status_code == 200
        assert "No lead matches the filters: nothing to show." in channels.text
        assert "data-chart=" not in channels.text
        calibration = empty.get("/reports/calibration", headers=headers)
        assert calibration.status_code == 503
        assert calibration.json()["error"] == "report_unavailable"
        assert "leadscore train" in calibration.json()["detail"]
