"""Truth check: are the champion's probabilities honest against the demo data's ground truth?

The demo generator records each lead's true probability of being won within 120 days of its
creation (``truth.parquet``, never a model input). For the test period's day-1 snapshots,
whose label (won within the horizon after day 1) is that same event up to a day, a calibrated
model's probability is the truth's conditional mean given what the model sees: in every bin of
predicted probability the mean truth should equal the mean prediction. The check reports the
expected calibration error against the truth (10 equal-mass bins) next to the one against the
observed outcomes, which also carries the sampling noise of 0/1 labels.

    .venv/bin/python -m pipelines.truth_check        # after `make run`
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from leadscore.settings import Settings, get_settings

N_BINS = 10


@dataclass(frozen=True)
class TruthCheck:
    """Calibration of the champion's test-period probabilities against the truth.

    Attributes:
        n: Test-period day-1 snapshots checked.
        mean_probability: Their mean predicted probability.
        mean_truth: Their mean true probability.
        ece_truth: Expected calibration error against the true probabilities.
        ece_observed: Expected calibration error against the observed outcomes.
        bins: Per bin: n, mean prediction, mean truth, observed rate.
    """

    n: int
    mean_probability: float
    mean_truth: float
    ece_truth: float
    ece_observed: float
    bins: pd.DataFrame

    def summary(self) -> str:
        return (
            f"{self.n:,} test-period day-1 snapshots: mean probability "
            f"{self.mean_probability:.4f}, mean truth {self.mean_truth:.4f}; ECE against the "
            f"truth {self.ece_truth:.4f}, against observed outcomes {self.ece_observed:.4f}\n"
            + self.bins.round(4).to_string()
        )


def _ece(bin_ids: np.ndarray, predicted: np.ndarray, target: np.ndarray) -> float:
    total = 0.0
    for b in np.unique(bin_ids):
        mask = bin_ids == b
        total += mask.mean() * abs(predicted[mask].mean() - target[mask].mean())
    return float(total)


def truth_calibration(
    probabilities: np.ndarray, truth: np.ndarray, labels: np.ndarray
) -> TruthCheck:
    """Compare predictions with true probabilities and outcomes in equal-mass bins."""
    p = np.asarray(probabilities, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    bin_ids = np.empty(len(p), dtype=np.int64)
    bin_ids[order] = np.arange(len(p)) * N_BINS // max(len(p), 1)
    bins = (
        pd.DataFrame({"bin": bin_ids, "predicted": p, "truth": t, "observed": y})
        .groupby("bin")
        .agg(
            n=("predicted", "size"),
            predicted=("predicted", "mean"),
            truth=("truth", "mean"),
            observed=("observed", "mean"),
        )
    )
    return TruthCheck(
        n=len(p),
        mean_probability=float(p.mean()),
        mean_truth=float(t.mean()),
        ece_truth=_ece(bin_ids, p, t),
        ece_observed=_ece(bin_ids, p, y),
        bins=bins,
    )


def check_champion_against_truth(settings: Settings, truth_path: Path) -> TruthCheck:
    """Rebuild the champion's test period and check its day-1 snapshots against the truth."""
    from pipelines.examples import load_champion
    from pipelines.train_flow import newest_period

    test = newest_period(settings)
    test = test[test["snapshot_kind"] == "day_1"]
    truth = pd.read_parquet(truth_path).set_index("lead_id")["p_convert"]
    test = test[test["lead_id"].isin(truth.index)]
    if test.empty:
        raise ValueError("no test-period day-1 snapshot has a truth row: is this demo data?")
    probabilities = load_champion(settings).predict_proba_frame(test)
    return truth_calibration(
        probabilities, truth.loc[test["lead_id"]].to_numpy(), test["label"].to_numpy()
    )


def main() -> int:
    settings = get_settings()
    truth_path = settings.paths.raw / "truth.parquet"
    if not truth_path.exists():
        print(f"no {truth_path}: the truth check needs the demo data (`make run`)")
        return 1
    print(check_champion_against_truth(settings, truth_path).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
