"""Batch scoring of the end-to-end stack's leads and the `score-batch` command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from leadscore import settings as settings_module
from leadscore.settings import WritebackSettings
from pipelines.cli import app
from pipelines.examples import current_features, load_champion
from pipelines.ingest import load_table
from pipelines.score_batch import DEFAULT_OUTPUT, score_open_leads, write_scores
from pipelines.writeback import SCORE_COLUMNS, WritebackError
from tests.services import drop_postgres_schema, require_postgres, unique_name

pytestmark = pytest.mark.slow

SCORED_AT = pd.Timestamp("2026-11-01 07:30:00", tz="UTC")
runner = CliRunner()


@pytest.fixture(scope="module")
def scored(stack) -> pd.DataFrame:
    return score_open_leads(stack.settings, scored_at=SCORED_AT.to_pydatetime())


@pytest.fixture(scope="module")
def scorer(stack):
    return load_champion(stack.settings)


@pytest.fixture(scope="module")
def closed_ids(stack) -> set[int]:
    return set(load_table(stack.settings.paths.warehouse, "outcomes")["lead_id"].tolist())


def test_only_open_leads_are_scored(stack, scored, closed_ids):
    every_lead = set(current_features(stack.settings)["lead_id"].tolist())
    assert closed_ids and closed_ids < every_lead
    assert set(scored["lead_id"].tolist()) == every_lead - closed_ids
    assert scored["lead_id"].is_unique
    assert scored["lead_id"].is_monotonic_increasing


def test_scores_frame_has_the_writeback_columns_and_types(stack, scored):
    assert scored.columns.tolist() == list(SCORE_COLUMNS)
    assert {c: str(t) for c, t in scored.dtypes.items()} == SCORE_COLUMNS
    assert (scored["scored_at"] == SCORED_AT).all()
    assert (scored["model_version"] == stack.training.model.version).all()


def test_probabilities_are_the_batch_probabilities_of_the_same_features(
    stack, scored, scorer, closed_ids
):
    # given: the same offline features, open leads only
    features = current_features(stack.settings)
    features = features[~features["lead_id"].isin(closed_ids)].sort_values("lead_id")
    # when
    expected = scorer.predict_proba_frame(features)
    # then
    assert features["lead_id"].tolist() == scored["lead_id"].tolist()
    np.testing.assert_allclose(scored["probability"].to_numpy(), expected, rtol=0, atol=1e-12)
    assert scored["probability"].between(0.0, 1.0).all()


def test_bands_follow_the_model_thresholds(scored, scorer):
    p, band = scored["probability"], scored["band"]
    hot_min, warm_min = scorer.bands["hot_min"], scorer.bands["warm_min"]
    assert (band[p >= hot_min] == "hot").all()
    assert (band[(p >= warm_min) & (p < hot_min)] == "warm").all()
    assert (band[p < warm_min] == "cold").all()
    assert set(band) <= {"hot", "warm", "cold"}
    assert (band == "cold").any() and (band != "cold").any()


def test_reasons_are_the_ones_the_api_gives(stack, scored, scorer, closed_ids):
    # given: ten open leads as the serving path sees them (plain values, None when missing)
    features = current_features(stack.settings)
    sample = features[features["lead_id"].isin(scored["lead_id"].iloc[::500].tolist())]
    rows = sample.astype(object).where(sample.notna(), None).to_dict("records")
    # when
    served = scorer.score_rows(rows, top_k=stack.settings.serving.top_reasons)
    # then
    by_lead = scored.set_index("lead_id")["reasons"]
    for row, one in zip(rows, served, strict=True):
        reasons = json.loads(by_lead[row["lead_id"]])
        assert reasons == [
            {"feature": r.feature, "label": r.label, "contribution": r.contribution}
            for r in one.reasons
        ]
        assert 0 < len(reasons) <= stack.settings.serving.top_reasons


def test_writing_twice_upserts_without_duplicates(stack, scored, tmp_path):
    # given
    path = tmp_path / "crm" / "lead_scores.parquet"
    (first,) = write_scores(stack.settings, scored, output=path)
    # when: a later run scores the same leads again
    later = score_open_leads(stack.settings, scored_at=(SCORED_AT + pd.Timedelta(days=1)))
    (second,) = write_scores(stack.settings, later, output=path)
    # then
    assert first.rows_stored == second.rows_stored == len(scored)
    stored = pd.read_parquet(path)
    assert stored["lead_id"].is_unique
    assert len(stored) == len(scored)
    assert (stored["scored_at"] == SCORED_AT + pd.Timedelta(days=1)).all()
    pd.testing.assert_series_equal(stored["probability"], later["probability"])


def test_default_and_configured_destinations(scored, make_settings, tmp_path):
    sample = scored.head(20)
    # nothing configured: the default file under paths.root
    (written,) = write_scores(make_settings(tmp_path / "a"), sample)
    assert written.destination == str(tmp_path / "a" / DEFAULT_OUTPUT)
    assert len(pd.read_parquet(written.destination)) == 20
    # a configured file, relative to paths.root
    configured = make_settings(
        tmp_path / "b", writeback=WritebackSettings(output_path="out/scores.csv")
    )
    (written,) = write_scores(configured, sample)
    assert written.destination == str(tmp_path / "b" / "out" / "scores.csv")
    # an explicit destination replaces the configured one
    (written,) = write_scores(configured, sample, output=tmp_path / "c.parquet")
    assert written.destination == str(tmp_path / "c.parquet")
    with pytest.raises(WritebackError, match="without a PostgreSQL URL"):
        write_scores(configured, sample, table="crm.scores")


@pytest.mark.service
def test_scores_to_postgres(scored, make_settings, tmp_path):
    params = require_postgres()
    schema = unique_name("leadscore_test_")
    url = f"postgresql://{params.user}@{params.host}:{params.port}/{params.database}"
    try:
        (written,) = write_scores(
            make_settings(tmp_path), scored, postgres_url=url, table=f"{schema}.lead_scores"
        )
        assert written.kind == "postgres"
        assert written.rows_written == len(scored)
        assert f"table {schema}.lead_scores" in written.destination
    finally:
        drop_postgres_schema(params, schema)


def test_cli_scores_every_lead_into_a_csv(stack, tmp_path, monkeypatch, closed_ids):
    # given: the CLI's settings rooted at the stack
    monkeypatch.setenv("LEADSCORE_PATHS__ROOT", str(stack.settings.paths.root))
    settings_module.get_settings.cache_clear()
    path = tmp_path / "all_scores.csv"
    try:
        # when
        result = runner.invoke(app, ["score-batch", "--output", str(path), "--include-closed"])
    finally:
        settings_module.get_settings.cache_clear()
    # then
    assert result.exit_code == 0, result.output
    every_lead = current_features(stack.settings)["lead_id"]
    stored = pd.read_csv(path, dtype={"model_version": str})
    assert sorted(stored["lead_id"]) == sorted(every_lead)
    assert closed_ids <= set(stored["lead_id"])
    counts = stored["band"].value_counts()
    assert f"scored {len(every_lead)} leads (open and closed)" in result.output
    assert f"hot {counts.get('hot', 0)}, warm {counts.get('warm', 0)}" in result.output
    assert str(path) in result.output
    assert (stored["model_version"] == stack.training.model.version).all()


def test_cli_help_has_examples():
    result = runner.invoke(app, ["score-batch", "--help"])
    assert result.exit_code == 0
    assert "Examples" in result.output


def test_cli_refuses_an_unsupported_output_before_scoring(tmp_path, monkeypatch):
    # given: settings rooted in an empty folder (scoring would fail: no model)
    monkeypatch.setenv("LEADSCORE_PATHS__ROOT", str(tmp_path))
    settings_module.get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["score-batch", "--output", str(tmp_path / "scores.xlsx")])
    finally:
        settings_module.get_settings.cache_clear()
    assert result.exit_code == 1
    assert "--output must be a .csv or .parquet file" in result.output
