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
