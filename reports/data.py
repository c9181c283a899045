"""What the reports read: the warehouse, the champion's honest scores, the served-score log.

Scores of the calibration and band reports (``ReportSettings.scores``), one row per lead:

- ``holdout`` (default): the champion's probability for the leads after its training window,
  from point-in-time features. The window is the ``test_start`` the training recorded on the
  model version: every snapshot from then on was neither trained nor calibrated on. Snapshots
  are labelled as training labels them (won within ``horizon_days`` of the snapshot, immature
  ones left out) with the data as it is now, and each lead counts once, with its **first**
  snapshot in the window (the score it had when it came in: no selection by outcome).
- ``served``: the first score the API served each lead (the ``served_scores`` audit log),
  labelled the same way from the moment it was served; scores served after the lead's outcome
  are left out.

Never in-sample scores. Loading the holdout scores runs Feast's point-in-time join: the web
pages keep the loaded data until the champion, the warehouse or the logs change.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.settings import Settings
from reports.settings import ReportSettings, ScoreSource

if TYPE_CHECKING:
    from leadscore.scorer import LeadScorer

logger = logging.getLogger(__name__)

LEAD_COLUMNS: tuple[str, ...] = (
    "lead_id",
    "created_at",
    "source_channel",
    "utm_campaign",
    "industry",
    "company_size",
    "region",
)
SCORE_COLUMNS: tuple[str, ...] = ("lead_id", "scored_at", "probability", "band", "label")


@dataclass(frozen=True)
class Champion:
    """The model version behind the serving alias and what its training recorded."""

    name: str
    version: str
    run_id: str
    test_start: pd.Timestamp | None
    split: str
    target: str
    horizon_days: int
    snapshot_days: list[int]
    metrics: dict[str, float] = field(default_factory=dict)


def find_champion(settings: Settings) -> Champion:
    """The champion's version, window and training metrics.

    Raises:
        LookupError: No version carries the serving alias (run ``leadscore train`` first).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from leadscore.tracking import connect_tracking

    connect_tracking(settings.tracking_uri)
    client = MlflowClient()
    name, alias = settings.mlflow.model_name, settings.serving.model_alias
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        raise LookupError(
            f"no version of model {name!r} has alias {alias!r}: run `leadscore train` first"
        ) from e
    run = client.get_run(str(version.run_id))
    params = run.data.params
    tags = {**run.data.tags, **(version.tags or {})}
    start = tags.get("test_start")
    cfg = settings.training
    return Champion(
        name=name,
        version=str(version.version),
        run_id=str(version.run_id),
        test_start=pd.Timestamp(start) if start and start != "NaT" else None,
        split=tags.get("split", cfg.split),
        target=params.get("target", cfg.target),
        horizon_days=int(params.get("horizon_days", cfg.horizon_days)),
        snapshot_days=[int(d) for d in params["snapshot_days"].split(",")]
        if params.get("snapshot_days")
        else list(cfg.snapshot_days),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
    )


def _utc(values: pd.Series) -> pd.Series:
    return pd.Series(pd.to_datetime(values, utc=True), index=values.index)


def label_served(
    served: pd.DataFrame,
    *,
    stage_changes: pd.DataFrame,
    outcomes: pd.DataFrame,
    target: str,
    horizon_days: int,
    present: datetime,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Label each served score the way training labels snapshots.

    A score served at ``t`` is positive if the target (won; SQL or later for ``lead_to_sql``)
    happened in ``(t, t + horizon]``; it is left out if the lead's outcome was known at ``t``
    (``after_outcome``) or if neither the outcome nor the end of the horizon has come yet
    (``immature``).

    Returns:
        The labelled scores (with a ``label`` column) and the counts left out.
    """
    # As training.dataset's target times: the won close is the hit (for lead_to_sql the first
    # SQL-or-later stage, or a won close without stages); a close makes the answer final.
    closed = outcomes.drop_duplicates("lead_id").set_index("lead_id")
    closed_at = _utc(closed["closed_at"])
    won_at = closed_at[closed["result"] == "won"]
    hit: pd.Series
    final: pd.Series
    if target == "lead_to_sql":
        sql = stage_changes[stage_changes["stage"].isin(("SQL", "opportunity", "won"))]
        reached = _utc(sql.groupby("lead_id")["changed_at"].min())
        hit = pd.concat([reached, won_at], axis=1).min(axis=1)
        lost_at = closed_at[closed["result"] == "lost"]
        both = pd.concat([hit.rename("hit"), lost_at.rename("lost")], axis=1)
        final = both["hit"].fillna(both["lost"])
    else:
        hit, final = won_at, closed_at
    t = _utc(served["scored_at"])
    hit_at = _utc(served["lead_id"].map(dict(hit.items())))
    final_at = _utc(served["lead_id"].map(dict(final.items())))
    horizon = pd.Timedelta(days=horizon_days)
    now = pd.Timestamp(present)
    now = now.tz_convert("UTC") if now.tzinfo else now.tz_localize("UTC")
    after_outcome = (final_at.notna() & (final_at <= t)).to_numpy()
    positive = hit_at.notna() & (hit_at > t) & (hit_at <= t + horizon) & (hit_at <= now)
    mature = (positive | (final_at.notna() & (final_at <= now)) | (t + horizon <= now)).to_numpy()
    keep = ~after_outcome & mature
    labelled = served[keep].assign(label=positive[keep].astype(np.int64).to_numpy())
    counts = {
        "after_outcome": int(after_outcome.sum()),
        "immature": int((~after_outcome & ~mature).sum()),
    }
    return labelled.reset_index(drop=True), counts


def first_per_lead(frame: pd.DataFrame, time_column: str) -> pd.DataFrame:
    """Each lead's earliest row (ties: the first in the frame)."""
    ordered = frame.sort_values([time_column, "lead_id"], kind="stable")
    return ordered.drop_duplicates("lead_id", keep="first").reset_index(drop=True)


def read_served_scores(url: str, *, with_features: bool = False) -> pd.DataFrame:
    """Every row of the ``served_scores`` audit log (``features`` only when asked)."""
    import sqlalchemy as sa

    from leadscore.score_log import SERVED_SCORES, ScoreLog

    engine = ScoreLog(url).engine
    t = SERVED_SCORES.c
    columns = [t.lead_id, t.scored_at, t.model_version, t.probability, t.band]
    if with_features:
        columns.append(t.features)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*columns)).mappings().all()
    names = [c.name for c in columns]
    frame = pd.DataFrame([dict(r) for r in rows], columns=names)
    frame["lead_id"] = frame["lead_id"].astype("int64")
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)
    frame["probability"] = frame["probability"].astype("float64")
    return frame


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


def fingerprint(settings: Settings) -> tuple[Any, ...]:
    """What the loaded report data depends on: champion version, warehouse files, logs.

    Cheap enough to ask on every page view; data is reloaded when it changes.
    """
    import sqlalchemy as sa

    from leadscore.event_log import open_database
    from leadscore.outcome_log import API_OUTCOMES
    from leadscore.score_log import SERVED_SCORES

    try:
        version = find_champion(settings).version
    except LookupError:
        version = None
    files = tuple(
        _mtime(settings.paths.warehouse / f"{t}.parquet")
        for t in ("leads", "events", "stage_changes", "outcomes")
    )
    # The newest served score (its id only grows: an index lookup) and the API outcomes.
    logs = (
        (SERVED_SCORES, sa.select(sa.func.max(SERVED_SCORES.c.id))),
        (API_OUTCOMES, sa.select(sa.func.count(), sa.func.max(API_OUTCOMES.c.received_at))),
    )
    marks: list[Any] = []
    for table, query in logs:
        with open_database(settings.event_log_url, table).connect() as conn:
            marks.append(tuple(conn.execute(query).one()))
    return (version, files, tuple(marks))


@dataclass
class Scored:
    """Scored leads with their outcome, and what they are, in words."""

    frame: pd.DataFrame
    description: str


class ReportData:
    """The inputs of the reports, loaded once on first use.

    Args:
        settings: Paths, registry, event log.
        cfg: Report settings.
    """

    def __init__(self, settings: Settings, cfg: ReportSettings | None = None) -> None:
        self.settings = settings
        self.cfg = cfg or ReportSettings()
        self._lock = threading.RLock()

    # -- warehouse ---------------------------------------------------------------------------
    @cached_property
    def leads(self) -> pd.DataFrame:
        from pipelines.ingest import load_table

        return load_table(self.settings.paths.warehouse, "leads")

    @cached_property
    def stage_changes(self) -> pd.DataFrame:
        from pipelines.ingest import load_table

        return load_table(self.settings.paths.warehouse, "stage_changes")

    @cached_property
    def outcomes(self) -> pd.DataFrame:
        from pipelines.ingest import load_outcomes

        return load_outcomes(self.settings.paths.warehouse, self.settings.event_log_url)

    @cached_property
    def events(self) -> pd.DataFrame:
        from pipelines.ingest import load_table

        events = load_table(self.settings.paths.warehouse, "events")
        return events[["lead_id", "occurred_at", "event_type", "channel"]]

    @cached_property
    def present(self) -> datetime:
        from pipelines.feature_store import data_as_of

        return data_as_of(
            {
                "leads": self.leads,
                "events": self.events,
                "stage_changes": self.stage_changes,
                "outcomes": self.outcomes,
            }
        )

    @property
    def channels(self) -> list[str]:
        """The source channels the leads have (for the filter form)."""
        return sorted(self.leads["source_channel"].dropna().unique().tolist())

    # -- model -------------------------------------------------------------------------------
    @cached_property
    def champion(self) -> Champion:
        return find_champion(self.settings)

    @cached_property
    def scorer(self) -> LeadScorer:
        from pipelines.examples import load_champion

        return load_champion(self.settings)

    def _examples(self) -> pd.DataFrame:
        """Labelled snapshots of the data as it is now, as the champion's training made them."""
        from training.dataset import label_snapshots

        champion = self.champion
        examples, _ = label_snapshots(
            leads=self.leads,
            stage_changes=self.stage_changes,
            outcomes=self.outcomes,
            snapshot_days=champion.snapshot_days,
            horizon_days=champion.horizon_days,
            as_of=self.present,
            target=champion.target,  # type: ignore[arg-type]
        )
        return examples

    def _features(self, examples: pd.DataFrame) -> pd.DataFrame:
        from pipelines.feature_store import open_store
        from training.dataset import fetch_training_features

        if examples.empty:
            return examples
        return fetch_training_features(
            store=open_store(self.settings),
            examples=examples,
            feature_service=self.scorer.feature_service,
        )

    @cached_property
    def holdout(self) -> Scored:
        """The champion's scores of the leads after its training window (first snapshot)."""
        champion = self.champion
        if champion.split == "time" and champion.test_start is not None:
            examples = self._examples()
            window = examples[examples["event_timestamp"] >= champion.test_start]
            examples = first_per_lead(window, "event_timestamp")
            frame = self._features(examples)
            since = f"from {champion.test_start:%Y-%m-%d}"
        else:
            from pipelines.train_flow import newest_period

            frame = first_per_lead(newest_period(self.settings), "event_timestamp")
            since = "of the test part of its random split"
        if frame.empty:
            scored = pd.DataFrame(columns=list(SCORE_COLUMNS))
        else:
            probability = self.scorer.predict_proba_frame(frame)
            scored = pd.DataFrame(
                {
                    "lead_id": frame["lead_id"].astype("int64"),
                    "scored_at": pd.to_datetime(frame["event_timestamp"], utc=True),
                    "probability": probability,
                    "band": self.scorer.band_of(probability),
                    "label": frame["label"].astype("int64"),
                }
            )
        description = (
            f"{champion.name} version {champion.version} (champion) on the leads {since}, after "
            f"its training window: each lead's first snapshot there, labelled won within "
            f"{champion.horizon_days} days"
        )
        return Scored(self._with_leads(scored), description)

    @cached_property
    def served_log(self) -> pd.DataFrame:
        return read_served_scores(self.settings.event_log_url)

    @cached_property
    def served(self) -> Scored:
        """The first score served to each lead, labelled from the moment it was served."""
        try:
            champion = self.champion
            target, horizon = champion.target, champion.horizon_days
        except LookupError:
            target, horizon = self.settings.training.target, self.settings.training.horizon_days
        first = first_per_lead(self.served_log, "scored_at")
        labelled, counts = label_served(
            first,
            stage_changes=self.stage_changes,
            outcomes=self.outcomes,
            target=target,
            horizon_days=horizon,
            present=datetime.now(UTC),
        )
        description = (
            f"the first score the API served each lead (audit log), labelled won within "
            f"{horizon} days; {counts['immature']} still open and {counts['after_outcome']} "
            "served after the outcome left out"
        )
        return Scored(self._with_leads(labelled[list(SCORE_COLUMNS)]), description)

    def scores(self, source: ScoreSource | None = None) -> Scored:
        """The scores ``source`` names (default: the settings' ``scores``)."""
        with self._lock:
            chosen = source or self.cfg.scores
            return self.holdout if chosen == "holdout" else self.served

    def _with_leads(self, scored: pd.DataFrame) -> pd.DataFrame:
        leads = self.leads[list(LEAD_COLUMNS)]
        return scored.merge(leads, on="lead_id", how="inner")

    # -- drift -------------------------------------------------------------------------------
    @cached_property
    def drift_inputs(self) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str], str, str]:
        """Training-period rows, recent rows, feature kinds and both described in words."""
        cfg = self.cfg
        scorer = self.scorer
        champion = self.champion
        kinds: dict[str, str] = {name: str(scorer.specs[name].kind) for name in scorer.features}
        examples = self._examples()
        if champion.test_start is not None:
            examples = examples[examples["event_timestamp"] < champion.test_start]
        if len(examples) > cfg.training_sample:
            examples = examples.sample(cfg.training_sample, random_state=cfg.seed)
        train = self._features(examples.sort_values("event_timestamp", kind="stable"))
        if not train.empty:
            train = train.assign(score=scorer.predict_proba_frame(train))
        end = f"{champion.test_start:%Y-%m-%d}" if champion.test_start is not None else "its test"
        describe_train = (
            f"a sample of {len(train)} labelled snapshots before {end} (what version "
            f"{champion.version} was trained and calibrated on)"
        )
        recent, describe_recent = self._recent(kinds)
        return train, recent, kinds, describe_train, describe_recent

    def _recent(self, kinds: dict[str, str]) -> tuple[pd.DataFrame, str]:
        cfg = self.cfg
        served = self.served_log
        if not served.empty:
            since = served["scored_at"].max() - timedelta(days=cfg.recent_days)
            recent_ids = served["scored_at"] >= since
            if int(recent_ids.sum()) >= cfg.min_leads:
                log = read_served_scores(self.settings.event_log_url, with_features=True)
                log = log[log["scored_at"] >= since]
                features = pd.DataFrame(list(log["features"]), index=log.index)
                frame = features.reindex(columns=list(kinds)).assign(
                    score=log["probability"].to_numpy(), lead_id=log["lead_id"].to_numpy()
                )
                for name, kind in kinds.items():
                    if kind != "categorical":
                        frame[name] = pd.to_numeric(frame[name], errors="coerce")
                return frame, (
                    f"{len(frame)} scores the API served in the {cfg.recent_days} days to "
                    f"{served['scored_at'].max():%Y-%m-%d} (audit log)"
                )
        from pipelines.examples import current_features

        current = current_features(self.settings)
        open_leads = current[~current["lead_id"].isin(self.outcomes["lead_id"])]
        created = open_leads["lead_id"].map(self.leads.set_index("lead_id")["created_at"])
        since = pd.Timestamp(self.present) - pd.Timedelta(days=cfg.recent_days)
        recent = open_leads[pd.to_datetime(created, utc=True) >= since]
        recent = recent.assign(score=self.scorer.predict_proba_frame(recent))
        return recent, (
            f"the current features of the {len(recent)} open leads created in the "
            f"{cfg.recent_days} days to {self.present:%Y-%m-%d} (the API has served too few "
            "scores to use its log)"
        )

    @cached_property
    def live(self) -> pd.DataFrame:
        """Served scores (first per lead) whose outcome has matured: probability and label."""
        return self.served.frame[["lead_id", "probability", "label"]]
