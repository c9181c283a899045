"""Metrics of calibrated probabilities on a held-out period."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score


def evaluate_probabilities(
    *, labels: np.ndarray, probabilities: np.ndarray, bands: np.ndarray
) -> dict[str, float]:
    """Discrimination, calibration and band metrics.

    Returns:
        ``roc_auc``, ``pr_auc``, ``brier``, ``log_loss``, the base rate and mean prediction,
        and per band its share of leads and its observed conversion rate (NaN when empty).
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-6, 1 - 1e-6)
    metrics = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "base_rate": float(y.mean()),
        "mean_probability": float(p.mean()),
        "n": float(len(y)),
    }
    for band in ("hot", "warm", "cold"):
        mask = bands == band
        metrics[f"{band}_share"] = float(mask.mean())
        metrics[f"{band}_conversion"] = float(y[mask].mean()) if mask.any() else float("nan")
    return metrics
