"""The leadscore command line: help, errors and the fast commands."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from leadscore import settings as settings_module
from leadscore.feature_catalog import ALL_FEATURES
from pipelines.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        ["demo-data"],
        ["ingest"],
        ["train"],
        ["serve"],
        ["run-all"],
        ["features", "build"],
        ["features", "apply"],
        ["features", "materialize"],
        ["features", "list"],
        ["score-batch"],
        ["quarantine", "list"],
        ["quarantine", "replay"],
    ],
)
def test_every_command_has_help_with_examples(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Examples" in result.output


def test_features_list_documents_every_feature():
    # when
    result = runner.invoke(app, ["features", "list"])
    # then
    assert result.exit_code == 0
    for spec in ALL_FEATURES:
        assert spec.name in result.output
    assert f"{len(ALL_FEATURES)} features" in result.output


def test_features_list_names_the_views_when_one_is_unknown():
    result = runner.invoke(app, ["features", "list", "--view", "nope"])
    assert result.exit_code == 1
    assert "lead_behaviour" in result.output


def test_ingest_without_input_explains_what_it_expected(tmp_path, monkeypatch):
    # given: settings rooted in an empty folder
    monkeypatch.setenv("LEADSCORE_PATHS__ROOT", str(tmp_path))
    settings_module.get_settings.cache_clear()
    try:
        # when
        result = runner.invoke(app, ["ingest"])
    finally:
        settings_module.get_settings.cache_clear()
    # then
    assert result.exit_code == 1
    assert "no input tables found" in result.output
    assert "leadscore demo-data" in result.output


def _invoke(root, *args):
    import os

    os.environ["LEADSCORE_PATHS__ROOT"] = str(root)
    settings_module.get_settings.cache_clear()
    try:
        return runner.invoke(app, list(args))
    finally:
        del os.environ["LEADSCORE_PATHS__ROOT"]
        settings_module.get_settings.cache_clear()


def test_ingest_by_mapping_then_list_and_replay_the_quarantine(tmp_path):
    # given: a flat export with a lead dated in the future
    (tmp_path / "crm.csv").write_text(
        "id,created,channel,won\n1,2026-01-01,Website,yes\n2,2099-01-01,Website,no\n"
    )
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "name: t\nsources: {crm: {path: crm.csv}}\ntables:\n"
        "  leads: {source: crm, lead_id: id, created_at: created,"
        " columns: {source_channel: channel}}\n"
        "  outcomes: {source: crm, result: {column: won, won: [yes], lost: [no]},"
        " closed_at: {after_created_days: 1}}\n"
    )
    # when
    ingested = _invoke(tmp_path, "ingest", "--mapping", str(mapping))
    listed = _invoke(tmp_path, "quarantine", "list", "--table", "leads")
    (tmp_path / "crm.csv").write_text(
        "id,created,channel,won\n1,2026-01-01,Website,yes\n2,2026-01-02,Website,no\n"
    )
    replayed = _invoke(tmp_path, "quarantine", "replay")
    after = _invoke(tmp_path, "quarantine", "list")
    # then
    assert ingested.exit_code == 0, ingested.output
    assert "not_in_future:created_at" in ingested.output
    assert listed.exit_code == 0 and "2099-01-01" in listed.output
    assert replayed.exit_code == 0, replayed.output
    assert "2 accepted" in replayed.output
    assert "holds no such rows" in after.output


def test_a_wrong_mapping_ends_with_every_mistake(tmp_path):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("name: t\nsources: {}\ntables: {leads: {source: x}}\n")
    result = _invoke(tmp_path, "ingest", "--mapping", str(mapping))
    assert result.exit_code == 1
    assert "sources" in result.output and "tables.leads.lead_id" in result.output
