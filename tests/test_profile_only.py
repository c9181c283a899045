"""A CRM export without any event stream, through a mapping file, end to end: ingest, features
from the profile and custom attributes alone, training (with its leakage audit), serving."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore.settings import PathsSettings, Settings, TrainingSettings
from pipelines.feature_store import (
    apply_definitions,
    build_feature_tables,
    dataset_attributes,
    materialize_features,
    open_store,
)
from pipelines.ingest import ingest_mapping, load_attributes, load_table
from pipelines.train_flow import run_training
from tests.api_keys import api_client
from training.audit import LeakageError

pytestmark = pytest.mark.slow

NOW = datetime(2026, 1, 15, tzinfo=UTC)
MAPPING = """
name: profile-only
sources:
  crm: {path: crm.csv}
missing_values: ["-"]
post_outcome: [call_notes]
tables:
  leads:
    source: crm
    lead_id: customer
    created_at: {row_order: {start: 2024-01-01, end: 2025-09-30}}
    columns:
      source_channel: {constant: outbound_call}
      country: country
    attributes:
      plan: {kind: categorical, label: "plan: {value}"}
      visits: {kind: numeric, min: 0, label: "store visits: {value}"}
      member: {kind: flag, label: "loyalty member: {value}"}
%(extra)s
  outcomes:
    source: crm
    result: {column: bought, won: ["Y"], lost: ["N"]}
    closed_at: {after_created_days: 2}
"""


def _export(folder: Path, n: int = 2400, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    plan = rng.choice(["Basic", "basic", "Pro", "Enterprise"], n, p=[0.3, 0.2, 0.35, 0.15])
    visits = rng.poisson(3, n)
    member = rng.random(n) < 0.4
    logit = (
        -2.2
        + 0.35 * visits
        + 0.9 * member
        + np.select([plan == "Pro", plan == "Enterprise"], [0.7, 1.4], 0.0)
    )
    bought = rng.random(n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "customer": np.arange(1000, 1000 + n),
            "country": rng.choice(["pt", "ES", "-"], n),
            "plan": plan,
            "visits": visits,
            "member": np.where(member, "yes", "no"),
            # Filled in by sales once the deal is decided: a perfect, leaky copy of it.
            "deal_stage": np.where(bought, "closed-won", "closed-lost"),
            "call_notes": "n/a",
            "bought": np.where(bought, "Y", "N"),
        }
    )
    frame.to_csv(folder / "crm.csv", index=False)


def _stack(root: Path, extra: str = "") -> Settings:
    _export(root)
    mapping = root / "mapping.yaml"
    mapping.write_text(textwrap.dedent(MAPPING) % {"extra": extra}, encoding="utf-8")
    settings = Settings(
        paths=PathsSettings(root=root),
        training=TrainingSettings(snapshot_days=[0], n_estimators=80),
    )
    warehouse = settings.paths.warehouse
    ingest_mapping(
        mapping, warehouse_dir=warehouse, quarantine_dir=settings.paths.quarantine, now=NOW
    )
    tables = build_feature_tables(
        tables={
            name: load_table(warehouse, name)
            for name in ("leads", "events", "stage_changes", "outcomes")
        },
        repo_dir=settings.paths.feature_repo,
        snapshot_days=settings.training.snapshot_days,
        half_life_days=settings.feast.half_life_days,
        horizon_days=settings.training.horizon_days,
        attributes=load_attributes(warehouse),
        attribute_specs=dataset_attributes(settings),
    )
    store = open_store(settings)
    apply_definitions(store, dataset_attributes(settings))
    materialize_features(store, end=tables.as_of + timedelta(seconds=1))
    return settings


@pytest.fixture(scope="module")
def profile_only(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _stack(tmp_path_factory.mktemp("profile_only"))


def test_profile_only_data_trains_and_serves_from_attributes(profile_only: Settings) -> None:
    result = run_training(profile_only)
    assert result.metrics["roc_auc"] > 0.65
    kept = {s.name for s in result.audit.kept}
    # The attributes are features; behaviour counts (no events at all) are constant and
    # dropped instead of cluttering the model and its reasons.
    assert {"plan", "visits", "member"} <= kept
    assert "page_view_7d" not in kept and "page_view_7d" in result.audit.dropped_constant

    with api_client(profile_only) as client:
        response = client.post("/v1/score", json={"lead_id": 1005})
        assert response.status_code == 200, response.text
        body = response.json()
    assert 0.0 < body["probability"] < 1.0
    labels = " ".join(r["label"] for r in body["reasons"])
    assert "store visits" in labels or "plan" in labels or "loyalty member" in labels


def test_a_leaky_attribute_stops_training_and_is_named(tmp_path: Path) -> None:
    extra = "      deal_stage: {kind: categorical}"
    settings = _stack(tmp_path, textwrap.indent(extra, "").rstrip())
    with pytest.raises(LeakageError, match="deal_stage"):
        run_training(settings)
