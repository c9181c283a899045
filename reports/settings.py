"""Settings of the marketing reports (defaults; the CLI and the routes take them as they are)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ScoreSource = Literal["holdout", "served"]


class ReportSettings(BaseModel):
    """What the reports compute and when they refuse to draw.

    Attributes mirror the README's "Reports" section.
    """

    scores: ScoreSource = Field(
        default="holdout",
        description="Scores of the calibration and band reports: 'holdout' (the champion on "
        "the leads after its training window) or 'served' (the first score the API served "
        "each lead, from the audit log).",
    )
    n_bins: int = Field(default=10, ge=2, le=50, description="Equal-mass reliability bins.")
    min_leads: int = Field(
        default=100, ge=1, description="Fewest scored leads with an outcome a chart needs."
    )
    min_conversions: int = Field(
        default=10, ge=1, description="Fewest conversions (and non-conversions) a chart needs."
    )
    min_group_leads: int = Field(
        default=200, ge=1, description="Fewest leads a channel or segment needs to be judged."
    )
    flag_ece: float = Field(
        default=0.05, gt=0, lt=1, description="A group whose ECE is above this is flagged."
    )
    max_interval_width: float = Field(
        default=0.4,
        gt=0,
        le=1,
        description="A rate whose 95% interval is wider than this is shown as 'too few leads'.",
    )
    psi_bins: int = Field(default=10, ge=2, le=50, description="Quantile bins of the PSI.")
    psi_alert: float = Field(
        default=0.25, gt=0, description="PSI from which a feature counts as moved a lot."
    )
    psi_watch: float = Field(default=0.1, gt=0, description="PSI from which a feature is watched.")
    recent_days: int = Field(
        default=30, ge=1, description="The drift report's recent period: the last N days."
    )
    training_sample: int = Field(
        default=5000, ge=100, description="Training-period snapshots the drift report samples."
    )
    seed: int = 0
