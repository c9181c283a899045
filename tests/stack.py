"""Build the whole stack once on small demo data: generator -> ingest -> Feast -> train."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from leadscore.settings import (
    DemoSettings,
    FeastSettings,
    PathsSettings,
    Settings,
    TrainingSettings,
)
from pipelines.demo_data import DemoData, generate_demo_data, write_demo_data
from pipelines.feature_store import (
    FeatureTables,
    apply_definitions,
    build_feature_tables,
    materialize_features,
    open_store,
    publish_offline_tables,
)
from pipelines.ingest import IngestReport, ingest_tables, load_table
from pipelines.train_flow import TrainingResult, run_training

END_DATE = date(2026, 10, 31)


@dataclass
class Stack:
    settings: Settings
    demo: DemoData
    ingest: IngestReport
    tables: FeatureTables
    training: TrainingResult


def build_stack(
    root: Path,
    *,
    n_leads: int = 8000,
    bad_row_share: float = 0.01,
    feast: FeastSettings | None = None,
    end_date: date = END_DATE,
) -> Stack:
    settings = Settings(
        paths=PathsSettings(root=root),
        demo=DemoSettings(n_leads=n_leads, end_date=end_date),
        # Two backtest folds and 50 resamples keep the many trainings of the tests quick; the
        # defaults (4 and 200) are what `make run` uses.
        training=TrainingSettings(n_estimators=200, backtest_folds=2, bootstrap_samples=50),
        feast=feast or FeastSettings(),
    )
    demo = generate_demo_data(
        n_leads=n_leads, seed=11, end_date=end_date, bad_row_share=bad_row_share
    )
    sources = write_demo_data(demo, out_dir=settings.paths.raw, file_format="parquet")
    report = ingest_tables(
        sources={k: v for k, v in sources.items() if k != "truth"},
        warehouse_dir=settings.paths.warehouse,
        quarantine_dir=settings.paths.quarantine,
        now=None,
    )
    tables = build_feature_tables(
        tables={
            name: load_table(settings.paths.warehouse, name)
            for name in ("leads", "events", "stage_changes", "outcomes")
        },
        repo_dir=settings.paths.feature_repo,
        snapshot_days=settings.training.snapshot_days,
        half_life_days=settings.feast.half_life_days,
        horizon_days=settings.training.horizon_days,
    )
    publish_offline_tables(settings, tables)
    store = open_store(settings)
    apply_definitions(store)
    materialize_features(store, end=tables.as_of + timedelta(seconds=1))
    training = run_training(settings)
    # The tests that train again from this stack (promotion, reload, retrain ...) need a
    # challenger, not another backtest and baseline: those ran once, above.
    quick = settings.training.model_copy(
        update={"backtest_folds": 0, "baseline": False, "bootstrap_samples": 20}
    )
    settings = settings.model_copy(update={"training": quick})
    return Stack(settings, demo, report, tables, training)
