"""Band policies: from sales' capacity to probability cut-offs, and what each band holds.

A band is what sales does with a lead (hot: call now, warm: nurture, cold: leave to
marketing), so its size should follow sales' capacity rather than a probability picked once.
Three policies (``bands.policy``):

- ``cutoffs``: ``hot_min`` / ``warm_min`` as configured;
- ``top_share``: the top ``hot_share`` of leads are hot, the next ``warm_share`` warm;
- ``top_n_per_day``: ``hot_per_day`` leads a day are hot, the next ``warm_per_day`` warm:
  with ``r`` leads arriving a day in the reference period this is ``top_share`` with shares
  ``hot_per_day / r`` and ``warm_per_day / r``.

The shares become probability cut-offs at training, from the calibrated probabilities of a
*reference period*, and are stored with the model version (``LeadScorer.bands``, with the
policy and its inputs in ``LeadScorer.band_policy``); serving only compares probabilities.

Reference period. Training passes the **calibration slice**: it is scored by the final model
yet was not used to fit the booster, it is the latest data before the test period, and it
keeps the test period untouched, so :func:`band_expectations` on the test period shows
honestly whether the shares hold on later leads (with drift they will not exactly). A lead has
several snapshots (1, 7 and 30 days after creation, when it became SQL) and is called once,
when it first turns hot, so **each lead counts once, with its highest probability** among its
snapshots in the period ("ever hot in the period"): the hot share is a share of leads, and
hot leads per day are leads turning hot per day. Leads per day are the distinct leads of the
period over the calendar days they arrived in (UTC, from the first lead's first snapshot in the
period to the last lead's, both days included). A lead created just before
the period whose later snapshots fall in it counts as a lead of the period: over a period of
a few months this overstates arrivals by a few percent.

With tied probabilities (isotonic calibration is a staircase), a cut-off cannot split a tie:
each is placed at the tie boundary whose share is closest to the requested one, halfway to the
next lower probability, and the shares reached are recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from leadscore.settings import BandSettings

BANDS = ("hot", "warm", "cold")


def _ids(lead_ids: ArrayLike | None, n: int) -> np.ndarray | None:
    if lead_ids is None:
        return None
    ids = np.asarray(lead_ids)
    if ids.shape != (n,):
        raise ValueError(f"{len(ids)} lead ids for {n} probabilities: one id per probability")
    return ids


def _per_lead(probabilities: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
    """Each lead's highest probability (every probability when there are no lead ids)."""
    if ids is None:
        return probabilities
    return pd.Series(probabilities).groupby(ids, sort=False).max().to_numpy()


def _calendar_days(event_timestamps: ArrayLike, ids: np.ndarray | None) -> int:
    """Calendar days (UTC) over which the leads arrived (each lead's first moment), inclusive."""
    times = pd.to_datetime(pd.Series(np.asarray(event_timestamps)), utc=True)
    if ids is not None:
        if len(times) != len(ids):
            raise ValueError(f"{len(times)} event timestamps for {len(ids)} lead ids")
        times = times.groupby(ids, sort=False).min()
    times = times.dropna()
    if times.empty:
        raise ValueError("the reference period has no event timestamps")
    days = times.dt.normalize()
    return int((days.max() - days.min()).days) + 1


def _cut(at_or_above: np.ndarray, count: float) -> int:
    """Index of the distinct value (descending) whose "at or above" count is nearest ``count``."""
    return int(np.argmin(np.abs(at_or_above - count)))


def band_policy(
    policy_settings: BandSettings,
    probabilities: ArrayLike,
    event_timestamps: ArrayLike | None = None,
    *,
    lead_ids: ArrayLike | None = None,
) -> dict[str, Any]:
    """The cut-offs a band policy sets on a reference period, with its inputs and outcome.

    Args:
        policy_settings: The policy and its parameters.
        probabilities: Calibrated probabilities of the reference examples.
        event_timestamps: Their snapshot moments (needed by ``top_n_per_day``; they give the
            period's length in days).
        lead_ids: Their leads: each lead counts once, with its highest probability. Without
            them every example counts as a lead.

    Returns:
        ``policy``, ``hot_min`` and ``warm_min``; for ``top_share`` and ``top_n_per_day`` also
        the requested shares (``hot_share``, ``warm_share``), the shares reached on the
        reference leads (``reference_hot_share``, ``reference_warm_share``) and
        ``reference_leads``; for ``top_n_per_day`` also ``hot_per_day``, ``warm_per_day``,
        ``reference_days`` and ``leads_per_day``. Flat and scalar: loggable as MLflow params.

    Raises:
        ValueError: No reference data; ``top_n_per_day`` without timestamps or with more
            leads a day than arrive; shares that leave no lead cold; or probabilities with too
            few distinct values to separate hot from warm from cold.
    """
    policy = policy_settings.policy
    if policy == "cutoffs":
        return {
            "policy": "cutoffs",
            "hot_min": float(policy_settings.hot_min),
            "warm_min": float(policy_settings.warm_min),
        }
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if len(p) == 0:
        raise ValueError(f"band policy {policy} needs reference probabilities: none given")
    if np.isnan(p).any():
        raise ValueError("reference probabilities must not be NaN")
    ids = _ids(lead_ids, len(p))
    scores = _per_lead(p, ids)
    n_leads = len(scores)
    record: dict[str, Any] = {"policy": policy}
    if policy == "top_n_per_day":
        if event_timestamps is None:
            raise ValueError("band policy top_n_per_day needs the reference event timestamps")
        days = _calendar_days(event_timestamps, ids)
        per_day = n_leads / days
        hot_share = policy_settings.hot_per_day / per_day
        warm_share = policy_settings.warm_per_day / per_day
        if hot_share + warm_share >= 1.0:
            raise ValueError(
                f"bands.hot_per_day + bands.warm_per_day ({policy_settings.hot_per_day:g} + "
                f"{policy_settings.warm_per_day:g}) must be below the leads arriving per day "
                f"in the reference period ({per_day:.1f}: {n_leads} leads in {days} days)"
            )
        record |= {
            "hot_per_day": float(policy_settings.hot_per_day),
            "warm_per_day": float(policy_settings.warm_per_day),
            "reference_days": days,
            "leads_per_day": float(per_day),
        }
    else:
        hot_share, warm_share = policy_settings.hot_share, policy_settings.warm_share
        if hot_share + warm_share >= 1.0:
            raise ValueError(
                f"bands.hot_share + bands.warm_share ({hot_share} + {warm_share}) must be "
                "below 1: some leads must stay cold"
            )
    values, counts = np.unique(scores, return_counts=True)
    values, counts = values[::-1], counts[::-1]
    at_or_above = np.cumsum(counts)
    hot_i = _cut(at_or_above, hot_share * n_leads)
    warm_i = _cut(at_or_above, (hot_share + warm_share) * n_leads)
    if warm_i <= hot_i:
        raise ValueError(
            f"cannot separate hot from warm leads: the {n_leads} reference leads have "
            f"{len(values)} distinct probabilities, too few for a hot share of {hot_share:.3f} "
            f"and a warm share of {warm_share:.3f}"
        )

    def cut_off(i: int) -> float:
        return float(values[i] + values[i + 1]) / 2.0 if i + 1 < len(values) else float(values[i])

    hot_min, warm_min = cut_off(hot_i), cut_off(warm_i)
    return record | {
        "hot_min": hot_min,
        "warm_min": warm_min,
        "hot_share": float(hot_share),
        "warm_share": float(warm_share),
        "reference_leads": n_leads,
        "reference_hot_share": float(np.mean(scores >= hot_min)),
        "reference_warm_share": float(np.mean((scores >= warm_min) & (scores < hot_min))),
    }


def band_thresholds(
    policy_settings: BandSettings,
    probabilities: ArrayLike,
    event_timestamps: ArrayLike | None = None,
    *,
    lead_ids: ArrayLike | None = None,
) -> dict[str, float]:
    """``{"hot_min": p, "warm_min": p}`` a band policy sets: see :func:`band_policy`."""
    record = band_policy(policy_settings, probabilities, event_timestamps, lead_ids=lead_ids)
    return {"hot_min": record["hot_min"], "warm_min": record["warm_min"]}


def band_expectations(
    probabilities: ArrayLike,
    labels: ArrayLike,
    thresholds: Mapping[str, float],
    *,
    lead_ids: ArrayLike | None = None,
) -> dict[str, float]:
    """What each band holds in a period (e.g. the test period): share, expected and observed rate.

    Args:
        probabilities: Calibrated probabilities.
        labels: The examples' 0/1 outcomes.
        thresholds: ``hot_min`` and ``warm_min``.
        lead_ids: The examples' leads: each lead then counts once, by its snapshot with the
            highest probability (and that snapshot's outcome), as :func:`band_policy` counts
            them; without them every example counts (a lead's typical snapshot scores lower
            than its best, so snapshot shares of hot are below lead shares).

    Returns:
        Per band (``hot``, ``warm``, ``cold``): ``<band>_n`` examples (or leads),
        ``<band>_share`` of them, ``<band>_expected_conversion`` (mean calibrated probability)
        and ``<band>_observed_conversion`` (rate of won ones); both rates NaN for an empty band.

    Raises:
        ValueError: Probabilities, labels and lead ids differ in length.
    """
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"{len(p)} probabilities for {len(y)} labels")
    ids = _ids(lead_ids, len(p))
    if ids is not None and len(p):
        best = pd.Series(p).groupby(ids, sort=False).idxmax().to_numpy()
        p, y = p[best], y[best]
    hot = p >= thresholds["hot_min"]
    warm = ~hot & (p >= thresholds["warm_min"])
    masks = {"hot": hot, "warm": warm, "cold": ~hot & ~warm}
    out: dict[str, float] = {}
    for band in BANDS:
        mask = masks[band]
        n = int(mask.sum())
        out[f"{band}_n"] = float(n)
        out[f"{band}_share"] = n / len(p) if len(p) else float("nan")
        out[f"{band}_expected_conversion"] = float(p[mask].mean()) if n else float("nan")
        out[f"{band}_observed_conversion"] = float(y[mask].mean()) if n else float("nan")
    return out
