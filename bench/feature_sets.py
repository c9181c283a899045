"""Compare the foundation feature set with the current one on the same examples.

Usage: .venv/bin/python bench/feature_sets.py

Uses the stores of the current settings (run `make run` or `leadscore run-all --no-serve`
first): the same labelled snapshots, the same forward-in-time split and the same LightGBM
settings; only the features differ. Prints test ROC AUC, PR AUC, Brier score and log loss.
"""

from __future__ import annotations

import json

from leadscore.contracts import EVENT_TYPES
from leadscore.feature_catalog import FEATURES_BY_NAME, MODEL_FEATURES, PROFILE_FEATURES
from leadscore.settings import get_settings
from pipelines.train_flow import build_training_frame, model_params
from training.dataset import split_by_time
from training.evaluate import evaluate_probabilities
from training.model import fit_scorer

# What the foundation model used: profile (without the derived fit features), counts per
# event type over 7/30/90 days, recency and decayed engagement.
FOUNDATION = [
    *(f for f in PROFILE_FEATURES if f.name not in ("bant_completeness", "email_domain_type")),
    *(FEATURES_BY_NAME[f"{t}_{d}d"] for d in (7, 30, 90) for t in EVENT_TYPES),
    FEATURES_BY_NAME["days_since_last_activity"],
    FEATURES_BY_NAME["days_since_first_activity"],
    FEATURES_BY_NAME["engagement_score"],
]


def main() -> None:
    settings = get_settings()
    cfg = settings.training
    frame, _, _ = build_training_frame(settings)
    train, calibration, test = split_by_time(
        frame, calibration_share=cfg.calibration_share, test_share=cfg.test_share
    )
    params = model_params(cfg)
    results = {}
    for name, specs in (("foundation", FOUNDATION), ("current", list(MODEL_FEATURES))):
        scorer = fit_scorer(
            train=train,
            calibration=calibration,
            specs=specs,
            params=params,
            bands={"hot_min": settings.bands.hot_min, "warm_min": settings.bands.warm_min},
            feature_service=settings.feast.feature_service,
            seed=cfg.seed,
        )
        p = scorer.predict_proba_frame(test)
        m = evaluate_probabilities(
            labels=test["label"].to_numpy(), probabilities=p, bands=scorer.band_of(p)
        )
        results[name] = {
            "features": len(specs),
            **{k: round(m[k], 4) for k in ("roc_auc", "pr_auc", "brier", "log_loss")},
        }
    print(json.dumps({"test_examples": len(test), **results}, indent=2))


if __name__ == "__main__":
    main()
