"""Leakage audit of the candidate features before a model is fitted.

A feature recorded after (or because of) the outcome, e.g. a CRM field filled in when a deal
is closed, predicts the label almost perfectly on historical data and is useless, or harmful,
when a new lead is scored. The audit measures on the training examples how well each feature
*alone* separates won from not-won examples (ROC AUC, read both ways, so 0.5 is no signal and
1.0 perfect separation):

- numeric and flag features: the raw value, missing values tried as the lowest and as the
  highest value, the better of both kept;
- categorical features: an out-of-fold target-mean encoding (5 folds; each category's won
  share on the other folds, smoothed toward the overall rate; missing is a category of its
  own), so that an id-like column whose every value is unique scores no better than chance.

Features above ``max_auc`` are refused (:class:`LeakageError`) unless confirmed to be known
before the outcome, features declared post-outcome are always refused, excluded features are
left out, and features constant on the training period are dropped: they carry no information
and would only clutter the reasons.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadscore.feature_catalog import FeatureSpec

N_FOLDS = 5
# Weight (in examples) of the overall rate in a category's smoothed won share.
SMOOTHING = 10.0


class LeakageError(ValueError):
    """Features that would leak the outcome into the model; the message says how to proceed.

    Attributes:
        columns: The refused feature names.
    """

    def __init__(self, message: str, columns: Sequence[str]) -> None:
        super().__init__(message)
        self.columns = tuple(columns)


class UnknownFeatureError(ValueError):
    """A name given to exclude or confirm is not a candidate feature (or is given to both)."""


@dataclass(frozen=True)
class AuditReport:
    """What the leakage audit kept, dropped and measured.

    Attributes:
        kept: Features the model is fitted on, in the order given.
        dropped_constant: Features with one value (or only missing) on the training period.
        excluded: Features left out on request.
        auc: Single-feature ROC AUC (``max(auc, 1 - auc)``) of every feature that varies.
        max_auc: The threshold above which a feature is refused unless confirmed.
        confirmed: Confirmed features above the threshold (kept on the user's word).
    """

    kept: tuple[FeatureSpec, ...]
    dropped_constant: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    auc: dict[str, float] = field(default_factory=dict)
    max_auc: float = 0.95
    confirmed: tuple[str, ...] = ()

    @property
    def kept_names(self) -> list[str]:
        return [s.name for s in self.kept]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (logged as the ``leakage_audit.json`` artifact)."""
        return {
            "max_auc": self.max_auc,
            "kept": self.kept_names,
            "dropped_constant": list(self.dropped_constant),
            "excluded": list(self.excluded),
            "confirmed_above_max_auc": list(self.confirmed),
            "auc": {k: round(v, 6) for k, v in sorted(self.auc.items(), key=lambda kv: -kv[1])},
        }

    def summary(self, top: int = 5) -> str:
        """A few lines for the console: counts, the strongest single features, what was dropped."""
        strongest = sorted(self.auc.items(), key=lambda kv: -kv[1])[:top]
        lines = [
            f"features: {len(self.kept)} kept, {len(self.dropped_constant)} dropped as constant, "
            f"{len(self.excluded)} excluded",
            "strongest single features (ROC AUC): "
            + ", ".join(f"{name} {value:.3f}" for name, value in strongest),
        ]
        if self.dropped_constant:
            shown = list(self.dropped_constant[:12])
            more = len(self.dropped_constant) - len(shown)
            lines.append(
                "constant on the training period: "
                + ", ".join(shown)
                + (
                    f" and {more} more (leakage_audit.json in the MLflow run lists all)"
                    if more
                    else ""
                )
            )
        if self.excluded:
            lines.append("excluded: " + ", ".join(self.excluded))
        if self.confirmed:
            lines.append(
                f"confirmed despite ROC AUC > {self.max_auc}: " + ", ".join(self.confirmed)
            )
        return "\n".join(lines)


def check_feature_names(
    specs: Sequence[FeatureSpec], *, exclude: Collection[str] = (), confirmed: Collection[str] = ()
) -> None:
    """Make sure every name to exclude or confirm is a candidate feature.

    Raises:
        UnknownFeatureError: Naming the unknown names and listing the available features, or
            naming a feature that is both excluded and confirmed.
    """
    available = [s.name for s in specs]
    known = set(available)
    for setting, option, names in (
        ("training.exclude_features", "--exclude", exclude),
        ("training.confirmed_features", "--confirm", confirmed),
    ):
        unknown = sorted(set(names) - known)
        if unknown:
            raise UnknownFeatureError(
                f"{setting} ({option}) names unknown feature(s): {', '.join(unknown)}; "
                f"the features are: {', '.join(available)}"
            )
    both = sorted(set(exclude) & set(confirmed))
    if both:
        raise UnknownFeatureError(
            f"feature(s) both excluded and confirmed: {', '.join(both)}; "
            "keep each in only one of training.exclude_features and training.confirmed_features"
        )


def audit_features(
    frame: pd.DataFrame,
    specs: Sequence[FeatureSpec],
    *,
    label: str = "label",
    max_auc: float = 0.95,
    exclude: Collection[str] = (),
    confirmed: Collection[str] = (),
    post_outcome: Collection[str] = (),
    seed: int = 0,
) -> AuditReport:
    """Audit the candidate features on the training examples (only those: never the test).

    Args:
        frame: Training examples with every feature column and the label.
        specs: Candidate model features.
        label: The 0/1 label column.
        max_auc: A feature whose single-feature ROC AUC exceeds this is refused unless
            confirmed.
        exclude: Features to leave out (reported, not audited).
        confirmed: Features known before the outcome whatever their AUC.
        post_outcome: Columns known only after the outcome (from the data set's mapping);
            any of them among the features is refused.
        seed: Seed of the folds of the categorical encoding.

    Returns:
        The kept features (in the given order) and what was dropped and measured.

    Raises:
        UnknownFeatureError: An excluded or confirmed name is not a candidate feature.
        LeakageError: A post-outcome feature, or a feature above ``max_auc`` not confirmed.
        ValueError: A feature or the label column is missing, the label lacks an outcome, or
            no feature varies on the training period.
    """
    check_feature_names(specs, exclude=exclude, confirmed=confirmed)
    if label not in frame.columns:
        raise ValueError(f"the training examples have no {label!r} column")
    y = frame[label].to_numpy(dtype=np.float64)
    if not np.isin(y, (0.0, 1.0)).all() or len(np.unique(y)) < 2:
        raise ValueError(f"column {label!r} must hold both outcomes as 0/1 to audit the features")
    excluded = [s.name for s in specs if s.name in exclude]
    candidates = [s for s in specs if s.name not in exclude]
    missing = [s.name for s in candidates if s.name not in frame.columns]
    if missing:
        raise ValueError(f"the training examples lack feature column(s): {', '.join(missing)}")

    constant = {s.name for s in candidates if _is_constant(frame[s.name])}
    varying = [s for s in candidates if s.name not in constant]
    auc = _single_feature_auc(frame, varying, y > 0.5, seed=seed)

    refused_post = [s.name for s in candidates if s.name in post_outcome]
    above = [s.name for s in varying if auc[s.name] > max_auc]
    leaky = [name for name in above if name not in confirmed and name not in refused_post]
    if refused_post or leaky:
        raise LeakageError(
            _leakage_message(refused_post, leaky, auc, max_auc), [*refused_post, *leaky]
        )
    kept = tuple(varying)
    if not kept:
        raise ValueError(
            f"no feature varies on the training period ({len(constant)} constant, "
            f"{len(excluded)} excluded): nothing to learn from"
        )
    return AuditReport(
        kept=kept,
        dropped_constant=tuple(s.name for s in candidates if s.name in constant),
        excluded=tuple(excluded),
        auc=auc,
        max_auc=max_auc,
        confirmed=tuple(name for name in above if name in confirmed),
    )


def _leakage_message(
    post_outcome: Sequence[str], leaky: Sequence[str], auc: dict[str, float], max_auc: float
) -> str:
    parts: list[str] = []
    if post_outcome:
        parts.append(
            f"{', '.join(post_outcome)}: declared post-outcome in the mapping; it can never be a "
            "feature: exclude it (`leadscore train --exclude COLUMN` or setting "
            "training.exclude_features) or leave it out of the data set's features"
        )
    if leaky:
        listed = ", ".join(f"{name} (ROC AUC {auc[name]:.3f})" for name in leaky)
        parts.append(
            "likely leakage: on its own, each of these features predicts the outcome on the "
            f"training period better than ROC AUC {max_auc} (training.leakage_auc_max): "
            f"{listed}. That usually means it is recorded after (or because of) the outcome. "
            "Exclude each such column (`leadscore train --exclude COLUMN` or setting "
            "training.exclude_features) or, if it is really known before the outcome, confirm "
            "it (`leadscore train --confirm COLUMN` or setting training.confirmed_features)"
        )
    return "refusing to train: " + "; ".join(parts)


def _is_constant(column: pd.Series) -> bool:
    """One value everywhere, or missing everywhere (a mix of one value and missing varies)."""
    present = column.dropna()
    if present.empty:
        return True
    return len(present) == len(column) and present.nunique() == 1


def _single_feature_auc(
    frame: pd.DataFrame, specs: Sequence[FeatureSpec], positive: np.ndarray, *, seed: int
) -> dict[str, float]:
    """``max(auc, 1 - auc)`` of each feature alone (see the module docstring)."""
    result: dict[str, float] = {}
    for spec in specs:
        column = frame[spec.name]
        if spec.kind == "categorical":
            values = _out_of_fold_encoding(column, positive, seed=seed)
        else:
            values = pd.to_numeric(column, errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
        result[spec.name] = _folded_auc(values, positive)
    return result


def _folded_auc(values: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``values`` as a score, ``max(auc, 1 - auc)``, missing tried low and high.

    Counted per distinct value (ties count half), so it costs one sort of the column.
    """
    missing = np.isnan(values)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    pos_missing = int(positive[missing].sum())
    neg_missing = int(missing.sum()) - pos_missing
    _, group = np.unique(values[~missing], return_inverse=True)
    pos = np.bincount(group, weights=positive[~missing].astype(np.float64))
    neg = np.bincount(group).astype(np.float64) - pos
    # Positives of each value beat the negatives of every lower value and tie with their own.
    present = float(np.sum(pos * (np.cumsum(neg) - neg + 0.5 * neg)))
    ties = 0.5 * pos_missing * neg_missing
    as_lowest = present + (n_pos - pos_missing) * neg_missing + ties
    as_highest = present + pos_missing * (n_neg - neg_missing) + ties
    pairs = float(n_pos) * float(n_neg)
    return max(max(a, pairs - a) for a in (as_lowest, as_highest)) / pairs


def _out_of_fold_encoding(column: pd.Series, positive: np.ndarray, *, seed: int) -> np.ndarray:
    """Each row's category's smoothed won share, learned without the row's own fold."""
    codes, _ = pd.factorize(column.astype(object), use_na_sentinel=False)
    n_codes = int(codes.max()) + 1 if len(codes) else 0
    y = positive.astype(np.float64)
    prior = float(y.mean())
    fold = np.empty(len(codes), dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(len(codes))] = np.arange(len(codes)) % N_FOLDS
    total_won = np.bincount(codes, weights=y, minlength=n_codes)
    total_seen = np.bincount(codes, minlength=n_codes).astype(np.float64)
    encoded = np.empty(len(codes), dtype=np.float64)
    for k in range(N_FOLDS):
        rows = fold == k
        won = total_won - np.bincount(codes[rows], weights=y[rows], minlength=n_codes)
        seen = total_seen - np.bincount(codes[rows], minlength=n_codes)
        encoded[rows] = ((won + SMOOTHING * prior) / (seen + SMOOTHING))[codes[rows]]
    return encoded
