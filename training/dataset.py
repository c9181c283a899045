"""Point-in-time training set: labelled lead snapshots joined with their features.

A snapshot of a lead at moment ``t`` is labelled 1 when the lead closed won within
``horizon_days`` after ``t`` and 0 when it did not (closed lost, won only later, or never
progressed). Snapshots taken after the lead's outcome was known are dropped, and so are those
whose horizon has not ended by the data's present: their outcome could still change, and
counting them as lost would bias every probability downwards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from leadscore.snapshots import CURRENT, snapshot_times

if TYPE_CHECKING:
    from feast import FeatureStore


@dataclass(frozen=True)
class LabelReport:
    """How many snapshots became examples, and why the others were left out."""

    snapshots: int
    after_outcome: int
    immature: int
    examples: int
    positives: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def label_snapshots(
    *,
    leads: pd.DataFrame,
    stage_changes: pd.DataFrame,
    outcomes: pd.DataFrame,
    snapshot_days: list[int],
    horizon_days: int,
    as_of: datetime,
) -> tuple[pd.DataFrame, LabelReport]:
    """Build labelled training snapshots.

    Args:
        leads: Validated leads.
        stage_changes: Validated stage changes (for the SQL snapshot).
        outcomes: Validated outcomes (won/lost with ``closed_at``).
        snapshot_days: Days after creation at which snapshots are taken.
        horizon_days: A snapshot is positive if the lead is won within this many days.
        as_of: The data's present; horizons ending later are immature.

    Returns:
        Examples (``lead_id``, ``event_timestamp``, ``snapshot_kind``, ``label``) sorted by
        time, and the counts of what was left out.
    """
    snaps = snapshot_times(
        leads=leads,
        stage_changes=stage_changes,
        snapshot_days=snapshot_days,
        as_of=as_of,
        include_current=False,
    )
    snaps = snaps[snaps["snapshot_kind"] != CURRENT]
    closed = outcomes[["lead_id", "closed_at", "result"]].drop_duplicates("lead_id")
    frame = snaps.merge(closed, on="lead_id", how="left")
    horizon = pd.Timedelta(days=horizon_days)
    after_outcome = frame["closed_at"].notna() & (frame["closed_at"] <= frame["as_of"])
    won_in_horizon = (
        (frame["result"] == "won")
        & (frame["closed_at"] > frame["as_of"])
        & (frame["closed_at"] <= frame["as_of"] + horizon)
    )
    mature = frame["as_of"] + horizon <= pd.Timestamp(as_of)
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


def split_by_time(
    frame: pd.DataFrame, *, calibration_share: float, test_share: float
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Forward-in-time split: oldest for training, then calibration, newest for test.

    Cut points fall on snapshot moments, so no moment is on both sides of a boundary.
    """
    ordered = frame.sort_values("event_timestamp", kind="stable", ignore_index=True)
    times = ordered["event_timestamp"]
    test_start = times.iloc[int(len(ordered) * (1 - test_share))]
    calib_start = times.iloc[int(len(ordered) * (1 - test_share - calibration_share))]
    train = ordered[times < calib_start]
    calib = ordered[(times >= calib_start) & (times < test_start)]
    test = ordered[times >= test_start]
    for name, part in (("training", train), ("calibration", calib), ("test", test)):
        if part.empty or part["label"].nunique() < 2:
            raise ValueError(
                f"the {name} period has {len(part)} examples and needs both outcomes; "
                "more data or a longer history is needed to train"
            )
    return train, calib, test
