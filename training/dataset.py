"""Point-in-time training set: labelled lead snapshots joined with their features.

A snapshot of a lead at moment ``t`` is labelled 1 when the lead closed won within
``horizon_days`` after ``t`` and 0 when it did not (closed lost, won only later, or never
progressed). Snapshots taken after the lead's outcome was known are dropped. A snapshot's label
is final (*mature*) once its horizon has ended: a snapshot of a lead still open whose horizon has
not ended could still be won, and counting it as lost would bias every probability downwards,
so it is left out. When every lead of the running horizons has closed already (an export that
carries each lead's outcome), their labels are final too and they are kept.

Training needs enough of both outcomes (:func:`check_minimum_outcomes`), and the examples are
split forward in time (:func:`split_by_time`), or at random when they all share one moment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from leadscore.snapshots import CURRENT, snapshot_times

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)

SplitKind = Literal["time", "random"]


class TrainingDataError(ValueError):
    """The data cannot train a model (e.g. too few won or lost leads)."""


@dataclass(frozen=True)
class LabelReport:
    """How many snapshots became examples, and why the others were left out.

    Attributes:
        snapshots: Snapshot moments of every lead up to the data's present.
        after_outcome: Left out: taken when the lead's outcome was already known.
        immature: Left out: the lead has no closed outcome yet and the snapshot's horizon has
            not ended, so its label could still change.
        examples: Labelled snapshots (``snapshots - after_outcome - immature``).
        positives: Examples labelled 1 (won within the horizon).
    """

    snapshots: int
    after_outcome: int
    immature: int
    examples: int
    positives: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


Target = Literal["lead_to_won", "sql_to_won", "lead_to_sql"]
TARGETS: dict[str, str] = {
    "lead_to_won": "every lead: won within the horizon (closed SQL outcomes)",
    "sql_to_won": "sales-qualified leads only, from the moment they became SQL: won within the "
    "horizon (scores the sales pipeline)",
    "lead_to_sql": "every lead: becomes sales-qualified (SQL or a later stage) within the horizon",
}
_SQL_OR_LATER = ("SQL", "opportunity", "won")


def _first_stage(stage_changes: pd.DataFrame, stages: tuple[str, ...]) -> pd.Series:
    """Lead id -> the first time it entered one of ``stages``."""
    rows = stage_changes[stage_changes["stage"].isin(stages)]
    return rows.groupby("lead_id")["changed_at"].min()


def _target_times(
    target: Target, *, stage_changes: pd.DataFrame, outcomes: pd.DataFrame
) -> pd.DataFrame:
    """Per lead: ``hit_at`` (when the target happened) and ``final_at`` (when the lead's
    answer became final: the hit, or a closed loss that rules it out)."""
    closed = outcomes[["lead_id", "closed_at", "result"]].drop_duplicates("lead_id")
    closed = closed.set_index("lead_id")
    if target == "lead_to_sql":
        # A won deal without recorded stages still passed through SQL.
        won_at = closed.loc[closed["result"] == "won", "closed_at"]
        reached = _first_stage(stage_changes, _SQL_OR_LATER)
        hit = pd.concat([reached, won_at], axis=1).min(axis=1)
        lost_at = closed.loc[closed["result"] == "lost", "closed_at"]
        both = pd.concat([hit.rename("hit"), lost_at.rename("lost")], axis=1)
        final = both["hit"].fillna(both["lost"])
    else:
        hit = closed.loc[closed["result"] == "won", "closed_at"]
        final = closed["closed_at"]
    out = pd.DataFrame({"hit_at": hit, "final_at": final})
    out.index.name = "lead_id"
    for column in ("hit_at", "final_at"):
        out[column] = pd.to_datetime(out[column], utc=True).astype("datetime64[us, UTC]")
    return out.reset_index()


def label_snapshots(
    *,
    leads: pd.DataFrame,
    stage_changes: pd.DataFrame,
    outcomes: pd.DataFrame,
    snapshot_days: list[int],
    horizon_days: int,
    as_of: datetime,
    target: Target = "lead_to_won",
) -> tuple[pd.DataFrame, LabelReport]:
    """Build labelled training snapshots.

    Args:
        leads: Validated leads.
        stage_changes: Validated stage changes (for the SQL snapshot and SQL targets).
        outcomes: Validated outcomes (won/lost with ``closed_at``).
        snapshot_days: Days after creation at which snapshots are taken.
        horizon_days: A snapshot is positive if the target happens within this many days.
        as_of: The data's present. Outcomes closed later are not known yet; a snapshot of a
            lead without a known outcome whose horizon ends later is immature.
        target: What converting means (see :data:`TARGETS`): ``lead_to_won`` (default),
            ``sql_to_won`` (only snapshots of leads at or after their SQL moment) or
            ``lead_to_sql`` (positive when the lead reaches SQL or a later stage; a closed loss
            without it is a final negative).

    Returns:
        Examples (``lead_id``, ``event_timestamp``, ``snapshot_kind``, ``label``) sorted by
        time, and the counts of what was left out.
    """
    if target not in TARGETS:
        raise ValueError(f"training.target: {target!r} is not one of {', '.join(TARGETS)}")
    snaps = snapshot_times(
        leads=leads,
        stage_changes=stage_changes,
        snapshot_days=snapshot_days,
        as_of=as_of,
        include_current=False,
    )
    snaps = snaps[snaps["snapshot_kind"] != CURRENT]
    if target == "sql_to_won":
        sql_at = _first_stage(stage_changes, _SQL_OR_LATER)
        entered = snaps["lead_id"].map(sql_at)
        snaps = snaps[entered.notna() & (snaps["as_of"] >= entered)]
    times = _target_times(target, stage_changes=stage_changes, outcomes=outcomes)
    frame = snaps.merge(times, on="lead_id", how="left")
    horizon = pd.Timedelta(days=horizon_days)
    present = pd.Timestamp(as_of)
    present = present.tz_convert("UTC") if present.tzinfo else present.tz_localize("UTC")
    known = frame["final_at"].notna() & (frame["final_at"] <= present)
    after_outcome = known & (frame["final_at"] <= frame["as_of"])
    won_in_horizon = (
        frame["hit_at"].notna()
        & (frame["hit_at"] <= present)
        & (frame["hit_at"] > frame["as_of"])
        & (frame["hit_at"] <= frame["as_of"] + horizon)
    )
    # A snapshot whose horizon has ended has its final label. One whose horizon is still running
    # does too if its lead has closed, but keeping those while dropping the still-open ones
    # would pick recent examples by their outcome (won deals close faster than lost ones are
    # recorded) and bias the newest, test period. So they count only when every running
    # snapshot has closed: an export whose every lead carries its outcome.
    ended = frame["as_of"] + horizon <= present
    running = ~ended & ~after_outcome
    all_closed = bool(known[running].all())
    mature = ended | (known & all_closed)
    keep = ~after_outcome & mature
    examples = pd.DataFrame(
        {
            "lead_id": frame.loc[keep, "lead_id"].to_numpy(),
            "event_timestamp": frame.loc[keep, "as_of"].array,
            "snapshot_kind": frame.loc[keep, "snapshot_kind"].to_numpy(),
            "label": won_in_horizon[keep].astype(np.int64).to_numpy(),
        }
    ).sort_values(["event_timestamp", "lead_id"], kind="stable", ignore_index=True)
    report = LabelReport(
        snapshots=len(frame),
        after_outcome=int(after_outcome.sum()),
        immature=int((~after_outcome & ~mature).sum()),
        examples=len(examples),
        positives=int(examples["label"].sum()),
    )
    return examples, report


def fetch_training_features(
    *, store: FeatureStore, examples: pd.DataFrame, feature_service: str
) -> pd.DataFrame:
    """Join each example with its features as they were at its snapshot moment (Feast).

    Returns:
        The examples with every feature of the service, in the examples' order.
    """
    service = store.get_feature_service(feature_service)
    entity_df = examples[["lead_id", "event_timestamp"]].copy()
    # On-demand features measure recency against the request time: the snapshot moment.
    entity_df["request_ts"] = (
        entity_df["event_timestamp"].astype("datetime64[us, UTC]").astype("int64") / 1e6
    )
    joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    joined["event_timestamp"] = pd.to_datetime(joined["event_timestamp"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    keyed = examples.copy()
    keyed["event_timestamp"] = keyed["event_timestamp"].astype("datetime64[us, UTC]")
    joined = joined.drop(columns=["request_ts"], errors="ignore")
    out = keyed.merge(joined, on=["lead_id", "event_timestamp"], how="left", validate="1:1")
    if len(out) != len(examples):
        raise RuntimeError("point-in-time join changed the number of examples")
    return out


def check_minimum_outcomes(examples: pd.DataFrame, *, min_won: int, min_lost: int) -> None:
    """Refuse to train on too few won or lost leads.

    Several snapshots of one lead count once: a lead is *won* when any of its examples is
    labelled 1, and *lost* when all of them are labelled 0.

    Args:
        examples: Labelled examples (``lead_id``, ``label``).
        min_won: Fewest distinct won leads needed (setting ``training.min_won``).
        min_lost: Fewest distinct lost leads needed (setting ``training.min_lost``).

    Raises:
        TrainingDataError: When either count is below its minimum; the message gives both.
    """
    per_lead = examples.groupby("lead_id")["label"].max()
    won = int((per_lead > 0).sum())
    lost = len(per_lead) - won
    if won >= min_won and lost >= min_lost:
        return
    needed = (
        f"at least {min_won} of each are needed"
        if min_won == min_lost
        else f"at least {min_won} won and {min_lost} lost are needed"
    )
    raise TrainingDataError(
        f"not enough outcomes to train: {won} won and {lost} lost leads among the matured "
        f"examples; {needed} (training.min_won / training.min_lost). Ingest more closed "
        "outcomes (a longer history), or lower the minimums (LEADSCORE_TRAINING__MIN_WON, "
        "LEADSCORE_TRAINING__MIN_LOST) accepting a less reliable model"
    )


@dataclass(frozen=True)
class ExampleSplit:
    """Training, calibration and test examples, and how they were split.

    Unpacks like a tuple: ``train, calibration, test = split_by_time(...)``.

    Attributes:
        train: Examples the model learns from.
        calibration: Examples the probabilities are calibrated on.
        test: Examples the model is evaluated on.
        kind: ``time`` (forward in time: oldest train, newest test) or ``random`` (seeded,
            stratified by label; only when every example has the same moment).
    """

    train: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame
    kind: SplitKind

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return iter((self.train, self.calibration, self.test))


def split_by_time(
    frame: pd.DataFrame,
    *,
    calibration_share: float,
    test_share: float,
    seed: int = 0,
    kind: SplitKind = "time",
) -> ExampleSplit:
    """Forward-in-time split: oldest for training, then calibration, newest for test.

    Cut points fall on snapshot moments, so no moment is on both sides of a boundary. When
    every example has the same ``event_timestamp`` (data without any time), there is no
    forward in time: the examples are then split at random with the same shares, stratified
    by label and seeded, with a warning, and the split's ``kind`` is ``random``.

    Args:
        frame: Examples with ``event_timestamp`` and ``label``.
        calibration_share: Share of the examples for calibration.
        test_share: Share of the examples for test.
        seed: Seed of the random split (used only when it is needed).
        kind: ``time`` (the default and the honest test) or ``random``: a random split by
            lead, to compare with figures published from random cross-validation.

    Raises:
        ValueError: When a part is empty or lacks one of the two outcomes.
    """
    times = frame["event_timestamp"]
    if kind == "random":
        train, calib, test = _random_split(
            frame, calibration_share=calibration_share, test_share=test_share, seed=seed
        )
    elif len(frame) and times.nunique(dropna=False) == 1:
        logger.warning(
            "every example has the same moment (%s): no forward-in-time split is possible, "
            "splitting at random by label instead; the test metrics then say nothing about "
            "how the model holds up on later leads",
            times.iloc[0],
        )
        train, calib, test = _random_split(
            frame, calibration_share=calibration_share, test_share=test_share, seed=seed
        )
        kind = "random"
    else:
        ordered = frame.sort_values("event_timestamp", kind="stable", ignore_index=True)
        times = ordered["event_timestamp"]
        test_start = times.iloc[int(len(ordered) * (1 - test_share))]
        calib_start = times.iloc[int(len(ordered) * (1 - test_share - calibration_share))]
        train = ordered[times < calib_start]
        calib = ordered[(times >= calib_start) & (times < test_start)]
        test = ordered[times >= test_start]
        kind = "time"
    for name, part in (("training", train), ("calibration", calib), ("test", test)):
        if part.empty or part["label"].nunique() < 2:
            raise ValueError(
                f"the {name} period has {len(part)} examples and needs both outcomes; "
                "more data or a longer history is needed to train"
            )
    return ExampleSplit(train, calib, test, kind)


def _random_split(
    frame: pd.DataFrame, *, calibration_share: float, test_share: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Seeded split by lead, stratified by label: each part gets its share of each outcome,
    and every snapshot of a lead falls in the same part."""
    rng = np.random.default_rng(seed)
    if "lead_id" in frame.columns:
        leads = frame.groupby("lead_id", sort=True)["label"].max()
        ids, labels = leads.index.to_numpy(), leads.to_numpy()
    else:
        ids, labels = np.arange(len(frame)), frame["label"].to_numpy()
    lead_part = np.zeros(len(ids), dtype=np.int8)  # 0 train, 1 calibration, 2 test
    for value in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == value))
        n_test = round(len(rows) * test_share)
        n_calib = round(len(rows) * calibration_share)
        lead_part[rows[:n_test]] = 2
        lead_part[rows[n_test : n_test + n_calib]] = 1
    if "lead_id" in frame.columns:
        part = pd.Series(lead_part, index=ids).reindex(frame["lead_id"]).to_numpy()
    else:
        part = lead_part
    parts = tuple(frame[part == k].reset_index(drop=True) for k in range(3))
    return parts[0], parts[1], parts[2]
