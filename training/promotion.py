"""Model governance: the champion judged on the challenger's test period, the promotion rule,
rollback, and the history of every decision, kept in the model registry itself.

Every training run registers a *challenger*. Before it is registered, the current champion
scores the challenger's test examples (:func:`evaluate_champion_on`), so both models are judged
on the same, newest period; both sets of metrics are stored on the challenger's version.
:func:`promote` applies the rule: the challenger replaces the champion only if it is not worse
by more than ``promotion.tolerance`` on any of ``promotion.metrics``. Each decision
(``bootstrap``, ``promoted``, ``forced``, ``refused``, ``rollback``) is written as version tags
and as one JSON registered-model tag ``history_<time>_<id>``, so the history lives wherever the
registry lives (SQLite, PostgreSQL, a tracking server) and :func:`read_history` rebuilds it.
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from leadscore.scorer import LeadScorer
from leadscore.settings import Settings
from leadscore.tracking import connect_tracking
from training.evaluate import evaluate_probabilities

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

Direction = Literal["higher", "lower"]
Action = Literal["bootstrap", "promoted", "forced", "refused", "rollback"]

# Which way is better, for every metric the promotion rule may use.
METRIC_DIRECTIONS: dict[str, Direction] = {
    "roc_auc": "higher",
    "pr_auc": "higher",
    "brier": "lower",
    "log_loss": "lower",
    "ece": "lower",
}

# Version tags written at registration.
REGISTERED_AT_TAG = "registered_at"
TEST_START_TAG = "test_start"
TEST_PREFIX = "test_"  # the version's own test metrics: test_roc_auc, ...
CHAMPION_PREFIX = "champion_test_"  # the champion's on the same examples: champion_test_roc_auc
COMPARED_TAG = "champion_version_compared"
COMPARISON_ERROR_TAG = "champion_comparison_error"
# Registered-model tags holding the decisions, one JSON document each.
HISTORY_PREFIX = "history_"
# Registry tag values may be 5,000 characters (the SQL stores' column).
_MAX_TEXT = 1000


class PromotionError(ValueError):
    """A promotion or rollback cannot be carried out as asked (the message says why)."""


def current_user() -> str:
    """The OS user running the command (``unknown`` when the system cannot tell)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _format_float(value: float) -> str:
    return repr(float(value))


def _parse_float(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# The champion on the challenger's test period
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChampionEvaluation:
    """The champion's metrics on a challenger's test examples.

    Attributes:
        version: The champion's version at the time of the comparison.
        metrics: Its metrics (:func:`training.evaluate.evaluate_probabilities`), empty when it
            could not score the examples.
        error: Why it could not (e.g. a feature it needs is missing), else None.
    """

    version: str
    metrics: dict[str, float]
    error: str | None = None

    def version_tags(self) -> dict[str, str]:
        """Tags of the challenger's version: the version compared and its comparable metrics."""
        tags = {COMPARED_TAG: self.version}
        if self.error is not None:
            tags[COMPARISON_ERROR_TAG] = self.error[:_MAX_TEXT]
        for name in METRIC_DIRECTIONS:
            if name in self.metrics:
                tags[f"{CHAMPION_PREFIX}{name}"] = _format_float(self.metrics[name])
        return tags

    def run_metrics(self) -> dict[str, float]:
        """Every metric, prefixed ``champion_test_``, for the challenger's run (NaN left out)."""
        return {
            f"{CHAMPION_PREFIX}{k}": float(v) for k, v in self.metrics.items() if not math.isnan(v)
        }


def evaluate_champion_on(
    test_frame: pd.DataFrame, *, tracking_uri: str, model_name: str, champion_alias: str
) -> ChampionEvaluation | None:
    """Score a challenger's test examples with the current champion.

    Args:
        test_frame: The challenger's test examples: their features and a 0/1 ``label``.
        tracking_uri: MLflow tracking and registry URI.
        model_name: Registered model name.
        champion_alias: Alias of the champion.

    Returns:
        The champion's version and metrics on these examples; None when there is no champion
        yet. A champion that cannot score them (a feature it needs is missing, its artifacts
        cannot be read) gives an evaluation with ``error`` set instead of failing the training
        run: the promotion rule then refuses the challenger with that message.

    Raises:
        ValueError: ``test_frame`` has no ``label`` column.
    """
    if "label" not in test_frame.columns:
        raise ValueError("the test examples have no 'label' column: cannot evaluate the champion")
    import mlflow

    connect_tracking(tracking_uri)
    client = MlflowClient()
    try:
        champion = client.get_model_version_by_alias(model_name, champion_alias)
    except MlflowException:
        return None
    version = str(champion.version)
    try:
        # By number, not by alias: the alias may move while the model loads.
        model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
        scorer = model.unwrap_python_model()
        if not isinstance(scorer, LeadScorer):
            raise TypeError(f"it is not a LeadScorer but a {type(scorer).__name__}")
        missing = [f for f in scorer.features if f not in test_frame.columns]
        if missing:
            raise KeyError(
                f"the test examples lack feature(s) it needs: {', '.join(sorted(missing))}"
            )
        probability = scorer.predict_proba_frame(test_frame)
        metrics = evaluate_probabilities(
            labels=test_frame["label"].to_numpy(),
            probabilities=probability,
            bands=scorer.band_of(probability),
        )
    except (MlflowException, OSError, KeyError, TypeError, ValueError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        logger.warning("champion version %s could not be evaluated: %s", version, message)
        return ChampionEvaluation(version, {}, f"champion version {version}: {message}")
    logger.info("champion version %s on the challenger's test period: %s", version, metrics)
    return ChampionEvaluation(version, metrics)


def registration_tags(
    *, metrics: Mapping[str, float], champion: ChampionEvaluation | None, now: datetime
) -> dict[str, str]:
    """Version tags of a new version: when, its comparable test metrics and the comparison.

    Args:
        metrics: The version's test metrics, named with or without the ``test_`` prefix.
        champion: The champion's evaluation on the same examples (None: there was none).
        now: The registration time.
    """
    own = {k.removeprefix(TEST_PREFIX): float(v) for k, v in metrics.items()}
    tags = {REGISTERED_AT_TAG: now.astimezone(UTC).isoformat()}
    for name in METRIC_DIRECTIONS:
        if name in own:
            tags[f"{TEST_PREFIX}{name}"] = _format_float(own[name])
    if champion is not None:
        tags.update(champion.version_tags())
    return tags


# ---------------------------------------------------------------------------------------------
# Decisions and their history
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricVerdict:
    """One metric of the promotion rule: challenger against champion, same test period."""

    metric: str
    challenger: float
    champion: float
    tolerance: float

    @property
    def direction(self) -> Direction:
        return METRIC_DIRECTIONS[self.metric]

    @property
    def passed(self) -> bool:
        """Not worse than the champion by more than the tolerance (NaN never passes)."""
        if self.direction == "higher":
            return bool(self.challenger >= self.champion - self.tolerance)
        return bool(self.challenger <= self.champion + self.tolerance)

    @property
    def verdict(self) -> str:
        return "not worse" if self.passed else "worse"

    def describe(self) -> str:
        """E.g. ``roc_auc: challenger 0.8012, champion 0.9050, tolerance 0.0050: worse``."""
        return (
            f"{self.metric}: challenger {self.challenger:.4f}, champion {self.champion:.4f}, "
            f"tolerance {self.tolerance:.4f} ({self.direction} is better): {self.verdict}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "challenger": self.challenger,
            "champion": self.champion,
            "tolerance": self.tolerance,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class Decision:
    """One decision about the champion, as recorded in the history.

    Attributes:
        at: When (UTC).
        action: ``bootstrap`` (first version, champion without comparison), ``promoted``
            (passed the rule), ``forced`` (promoted despite or without the rule), ``refused``
            or ``rollback`` (the previous champion restored).
        version: The version decided about (promoted, refused or restored).
        previous_champion: The champion before the decision (None: there was none).
        champion: The champion after the decision.
        verdicts: The rule's metric by metric comparison (empty when there was none).
        detail: What the rule found, in words.
        reason: The reason a person gave (required to force).
        user: The OS user who ran the command.
    """

    at: datetime
    action: Action
    version: str
    previous_champion: str | None
    champion: str | None
    verdicts: tuple[MetricVerdict, ...] = ()
    detail: str = ""
    reason: str | None = None
    user: str = field(default_factory=current_user)

    @property
    def changed_champion(self) -> bool:
        return self.action in ("bootstrap", "promoted", "forced", "rollback")

    def summary(self) -> str:
        """The decision in one line, then one line per metric."""
        if self.action == "refused":
            head = (
                f"refused: version {self.version} stays a challenger; the champion is still "
                f"version {self.champion}"
            )
        elif self.action == "rollback":
            head = (
                f"rolled back: version {self.version} is the champion again "
                f"(was version {self.previous_champion})"
            )
        else:
            was = (
                f" (was version {self.previous_champion})"
                if self.previous_champion
                else " (there was none)"
            )
            head = f"{self.action}: version {self.version} is the champion{was}"
        lines = [head, *(f"  {v.describe()}" for v in self.verdicts)]
        if self.detail:
            lines.append(self.detail)
        if self.reason:
            lines.append(f"reason: {self.reason}")
        return "\n".join(lines)

    def metrics_text(self) -> str:
        """The verdicts in short, for a history table."""
        return "; ".join(
            f"{v.metric} {v.challenger:.4f} vs {v.champion:.4f} ({v.verdict})"
            for v in self.verdicts
        )

    def as_json(self) -> str:
        document = {
            "at": self.at.astimezone(UTC).isoformat(),
            "action": self.action,
            "version": self.version,
            "previous_champion": self.previous_champion,
            "champion": self.champion,
            "verdicts": [v.as_dict() for v in self.verdicts],
            "detail": self.detail[:_MAX_TEXT],
            "reason": None if self.reason is None else self.reason[:_MAX_TEXT],
            "user": self.user,
        }
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Decision:
        document = json.loads(text)
        return cls(
            at=datetime.fromisoformat(document["at"]),
            action=document["action"],
            version=str(document["version"]),
            previous_champion=document.get("previous_champion"),
            champion=document.get("champion"),
            verdicts=tuple(
                MetricVerdict(
                    metric=v["metric"],
                    challenger=float(v["challenger"]),
                    champion=float(v["champion"]),
                    tolerance=float(v["tolerance"]),
                )
                for v in document.get("verdicts", [])
            ),
            detail=document.get("detail") or "",
            reason=document.get("reason"),
            user=document.get("user") or "unknown",
        )


def record_decision(client: MlflowClient, model_name: str, decision: Decision) -> None:
    """Append a decision to the registry's history (one registered-model tag)."""
    key = f"{HISTORY_PREFIX}{decision.at.astimezone(UTC):%Y%m%dT%H%M%S%fZ}_{uuid.uuid4().hex[:8]}"
    client.set_registered_model_tag(model_name, key, decision.as_json())
    logger.info("%s", decision.summary().splitlines()[0])


def read_history(settings: Settings, *, limit: int | None = None) -> list[Decision]:
    """The recorded decisions, newest first.

    Args:
        settings: Registry and model name.
        limit: At most this many (the newest); None: all.

    Raises:
        LookupError: The model was never registered.
        ValueError: ``limit`` is negative.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, not {limit}")
    connect_tracking(settings.tracking_uri)
    decisions = _history(MlflowClient(), settings.mlflow.model_name)
    newest_first = decisions[::-1]
    return newest_first if limit is None else newest_first[:limit]


def _history(client: MlflowClient, model_name: str) -> list[Decision]:
    """Every decision, oldest first."""
    try:
        model = client.get_registered_model(model_name)
    except MlflowException as e:
        raise LookupError(
            f"model {model_name!r} is not registered: run `leadscore train` first"
        ) from e
    decisions = []
    for key in sorted(k for k in model.tags if k.startswith(HISTORY_PREFIX)):
        try:
            decisions.append(Decision.from_json(model.tags[key]))
        except (ValueError, KeyError, TypeError) as e:
            logger.warning("history entry %s of %s is unreadable: %s", key, model_name, e)
    return sorted(decisions, key=lambda d: d.at)


def _champion_chain(decisions: Iterable[Decision]) -> list[str]:
    """The champions in the order they took over, with each rolled-back one taken off."""
    chain: list[str] = []
    for d in decisions:
        if d.action in ("bootstrap", "promoted", "forced"):
            if d.previous_champion and (not chain or chain[-1] != d.previous_champion):
                chain.append(d.previous_champion)  # a champion set outside leadscore
            chain.append(d.version)
        elif d.action == "rollback":
            if chain and chain[-1] == d.previous_champion:
                chain.pop()
            if not chain or chain[-1] != d.version:
                chain.append(d.version)
    return chain


# ---------------------------------------------------------------------------------------------
# Promotion and rollback
# ---------------------------------------------------------------------------------------------


def _alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def _model_version(client: MlflowClient, model_name: str, version: str) -> ModelVersion:
    try:
        return client.get_model_version(model_name, version)
    except MlflowException as e:
        raise LookupError(f"model {model_name!r} has no version {version!r}") from e


def _period(test_start: str | None) -> str:
    """`` (test period from 2026-04-24 13:53 UTC)``, or nothing when unknown."""
    if not test_start:
        return ""
    try:
        moment = pd.Timestamp(test_start)
    except ValueError:
        return f" (test period from {test_start})"
    if moment.tzinfo is not None:
        moment = moment.tz_convert("UTC")
    return f" (test period from {moment:%Y-%m-%d %H:%M} UTC)"


def _stored(version: ModelVersion, client: MlflowClient, key: str) -> float | None:
    """A metric stored on a version's tags, else on its run (versions registered earlier)."""
    value = _parse_float(version.tags.get(key))
    if value is None and version.run_id:
        value = client.get_run(version.run_id).data.metrics.get(key)
    return value


def compare_stored(
    client: MlflowClient,
    version: ModelVersion,
    *,
    champion: str,
    metrics: Sequence[str],
    tolerance: Mapping[str, float],
) -> tuple[list[MetricVerdict], str | None]:
    """The promotion rule on the comparison stored when ``version`` was trained.

    Returns:
        The verdict per metric, and why no comparison is possible (None when it is).
    """
    compared = version.tags.get(COMPARED_TAG)
    retrain = (
        "run `leadscore retrain --anyway` (or `leadscore train`) to train a challenger "
        "compared with the current champion"
    )
    if compared is None:
        return [], (
            f"version {version.version} was not compared with a champion when it was trained "
            f"(there was none, or it predates comparisons): {retrain}"
        )
    if compared != champion:
        return [], (
            f"version {version.version} was compared with version {compared} when it was "
            f"trained, but the champion is now version {champion}; the comparison cannot be "
            f"redone without its test examples: {retrain}"
        )
    error = version.tags.get(COMPARISON_ERROR_TAG)
    if error:
        return [], (
            f"the champion could not score version {version.version}'s test examples when it "
            f"was trained ({error}): {retrain}"
        )
    verdicts: list[MetricVerdict] = []
    absent: list[str] = []
    for name in metrics:
        mine = _stored(version, client, f"{TEST_PREFIX}{name}")
        theirs = _stored(version, client, f"{CHAMPION_PREFIX}{name}")
        if mine is None or theirs is None:
            absent.append(name)
            continue
        verdicts.append(MetricVerdict(name, mine, theirs, float(tolerance.get(name, 0.0))))
    if absent:
        return verdicts, (
            f"metric(s) {', '.join(absent)} were not recorded for version {version.version} "
            f"and champion version {champion}: {retrain}, or change promotion.metrics"
        )
    return verdicts, None


def promote(
    settings: Settings,
    *,
    version: str | None = None,
    force: bool = False,
    reason: str | None = None,
    now: datetime | None = None,
) -> Decision:
    """Make a version the champion if it is not worse than the champion; record the decision.

    The comparison is the one stored when the version was trained: the champion of that time
    scored the version's test examples. If the champion changed since, the rule cannot be
    applied and the version is refused (train again, or force).

    Args:
        settings: Registry, model name, aliases and the promotion rule.
        version: The version to promote; default: the one with the challenger alias.
        force: Promote even if the rule refuses (``reason`` required).
        reason: Why; recorded with the decision.
        now: The decision's time (default: now).

    Returns:
        The decision (``promoted``, ``forced`` or ``refused``), already recorded.

    Raises:
        PromotionError: ``force`` without a reason, or the version is the champion already.
        LookupError: No challenger, or no such version.
    """
    reason = reason.strip() if reason else None
    if force and not reason:
        raise PromotionError(
            "--force needs --reason: say why the rule is overridden (it is recorded)"
        )
    moment = now or datetime.now(UTC)
    cfg = settings.mlflow
    name = cfg.model_name
    connect_tracking(settings.tracking_uri)
    client = MlflowClient()
    if version is None:
        version = _alias_version(client, name, cfg.challenger_alias)
        if version is None:
            raise LookupError(
                f"no version of model {name!r} has alias {cfg.challenger_alias!r}: train one "
                "with `leadscore train` or `leadscore retrain`, or name one with --version"
            )
    candidate = _model_version(client, name, version)
    champion = _alias_version(client, name, cfg.champion_alias)
    if champion == version:
        raise PromotionError(f"version {version} is already the {cfg.champion_alias}")
    verdicts: list[MetricVerdict] = []
    problem: str | None = None
    if champion is None:
        detail = "there was no champion: nothing to compare with"
    else:
        verdicts, problem = compare_stored(
            client,
            candidate,
            champion=champion,
            metrics=settings.promotion.metrics,
            tolerance={str(k): v for k, v in settings.promotion.tolerance.items()},
        )
        if problem is None:
            worse = [v.metric for v in verdicts if not v.passed]
            period = _period(candidate.tags.get(TEST_START_TAG))
            detail = (
                f"worse than champion version {champion} on {', '.join(worse)}{period}"
                if worse
                else f"not worse than champion version {champion} on "
                f"{', '.join(v.metric for v in verdicts)}{period}"
            )
            if worse:
                problem = detail
        else:
            detail = problem
    if problem is not None and not force:
        decision = Decision(
            at=moment,
            action="refused",
            version=version,
            previous_champion=champion,
            champion=champion,
            verdicts=tuple(verdicts),
            detail=detail,
            reason=reason,
        )
        client.set_model_version_tag(name, version, "refused_at", moment.isoformat())
        client.set_model_version_tag(name, version, "refusal", detail[:_MAX_TEXT])
        record_decision(client, name, decision)
        return decision
    action: Action = "forced" if force else "promoted"
    if force and problem is not None:
        detail = f"the rule would refuse it: {detail}"
    elif force:
        detail = f"forced; the rule would promote it: {detail}"
    decision = Decision(
        at=moment,
        action=action,
        version=version,
        previous_champion=champion,
        champion=version,
        verdicts=tuple(verdicts),
        detail=detail,
        reason=reason,
    )
    client.set_registered_model_alias(name, cfg.champion_alias, version)
    if cfg.challenger_alias in candidate.aliases:
        client.delete_registered_model_alias(name, cfg.challenger_alias)
    for key, value in {
        "promoted_at": moment.isoformat(),
        "promoted_from_version": champion or "none",
        "promotion_action": action,
        "promotion_reason": (reason or detail)[:_MAX_TEXT],
        "promoted_by": decision.user,
    }.items():
        client.set_model_version_tag(name, version, key, value)
    if champion is not None:
        client.set_model_version_tag(name, champion, "demoted_at", moment.isoformat())
        client.set_model_version_tag(name, champion, "replaced_by_version", version)
    record_decision(client, name, decision)
    return decision


def rollback(
    settings: Settings, *, reason: str | None = None, now: datetime | None = None
) -> Decision:
    """Restore the champion that the current one replaced (undo the last champion change).

    After versions 1 -> 2 -> 3 were promoted, a rollback restores version 2 and a second one
    version 1.

    Raises:
        LookupError: No champion, or the model was never registered.
        PromotionError: The history knows no previous champion, or the current champion was
            set outside leadscore (no decision records it).
    """
    moment = now or datetime.now(UTC)
    reason = reason.strip() if reason else None
    cfg = settings.mlflow
    name = cfg.model_name
    connect_tracking(settings.tracking_uri)
    client = MlflowClient()
    champion = _alias_version(client, name, cfg.champion_alias)
    if champion is None:
        raise LookupError(f"no version of model {name!r} has alias {cfg.champion_alias!r}")
    chain = _champion_chain(_history(client, name))
    if not chain or chain[-1] != champion:
        recorded = f" (the last recorded champion is version {chain[-1]})" if chain else ""
        raise PromotionError(
            f"champion version {champion} was not made champion by leadscore{recorded}: "
            "the history cannot tell which version it replaced; promote the one you want "
            'with `leadscore promote --version V --force --reason "..."`'
        )
    if len(chain) < 2:
        raise PromotionError(
            f"version {champion} is the first champion in the history: there is no previous "
            "champion to restore"
        )
    target = chain[-2]
    _model_version(client, name, target)  # still registered?
    decision = Decision(
        at=moment,
        action="rollback",
        version=target,
        previous_champion=champion,
        champion=target,
        detail=f"version {champion} rolled back to version {target}",
        reason=reason,
    )
    client.set_registered_model_alias(name, cfg.champion_alias, target)
    client.set_model_version_tag(name, target, "restored_at", moment.isoformat())
    client.set_model_version_tag(name, target, "restore_reason", (reason or "")[:_MAX_TEXT])
    client.set_model_version_tag(name, champion, "demoted_at", moment.isoformat())
    client.set_model_version_tag(name, champion, "rolled_back_at", moment.isoformat())
    client.set_model_version_tag(name, champion, "rollback_reason", (reason or "")[:_MAX_TEXT])
    record_decision(client, name, decision)
    return decision


def record_bootstrap(
    client: MlflowClient, model_name: str, version: str, *, now: datetime | None = None
) -> Decision:
    """Record that a first version became champion without comparison."""
    decision = Decision(
        at=now or datetime.now(UTC),
        action="bootstrap",
        version=version,
        previous_champion=None,
        champion=version,
        detail="no champion yet: the first version serves without comparison",
    )
    record_decision(client, model_name, decision)
    return decision


# ---------------------------------------------------------------------------------------------
# Outcomes that arrived since the last training
# ---------------------------------------------------------------------------------------------


def outcome_params(outcomes: pd.DataFrame, *, as_of: datetime) -> dict[str, int | str]:
    """What a training run saw of the outcomes table, to log as run parameters.

    Returns:
        ``n_outcomes`` (closed by ``as_of``) and ``latest_outcome_at`` (ISO time, empty when
        there is none).
    """
    closed = pd.to_datetime(outcomes["closed_at"], utc=True)
    seen = closed[closed <= pd.Timestamp(as_of)]
    latest = seen.max() if len(seen) else None
    return {
        "n_outcomes": len(seen),
        "latest_outcome_at": "" if latest is None else pd.Timestamp(latest).isoformat(),
    }


@dataclass(frozen=True)
class NewOutcomes:
    """Outcomes in the warehouse that the last training run did not see.

    Attributes:
        count: How many.
        total: Outcomes in the warehouse now.
        seen: How many the last training saw (None: unknown, counted by date instead).
        since: The latest outcome the last training saw (or its ``as_of``).
        last_version: The version the last training registered (None: none yet).
        trained_at: When that run started.
    """

    count: int
    total: int
    seen: int | None
    since: datetime | None
    last_version: str | None
    trained_at: datetime | None

    def describe(self) -> str:
        if self.last_version is None:
            return f"no model trained yet: {self.total:,} outcomes in the warehouse"
        trained = f", trained {self.trained_at:%Y-%m-%d %H:%M} UTC" if self.trained_at else ""
        saw = f"; it saw {self.seen:,} outcomes" if self.seen is not None else ""
        since = f", the latest closed {self.since:%Y-%m-%d %H:%M} UTC" if self.since else ""
        return (
            f"{self.count:,} new outcome(s) since the last training (version "
            f"{self.last_version}{trained}{saw}{since}); {self.total:,} in the warehouse"
        )


def _latest_trained_version(client: MlflowClient, model_name: str) -> ModelVersion | None:
    """The newest version that came from a training run (versions registered by hand have no
    run)."""
    versions = [v for v in client.search_model_versions(f"name = '{model_name}'") if v.run_id]
    return max(versions, key=lambda v: int(v.version)) if versions else None


def new_outcomes(settings: Settings, outcomes: pd.DataFrame) -> NewOutcomes:
    """Count the outcomes that arrived since the last training (the newest version's run).

    The run's ``n_outcomes`` parameter is compared with the warehouse's count (late outcomes
    dated before the last training count too); runs that did not log it fall back to the
    outcomes closed after their ``as_of``.

    Args:
        settings: Warehouse and registry.
        outcomes: The warehouse's outcomes table now.
    """
    total = len(outcomes)
    connect_tracking(settings.tracking_uri)
    client = MlflowClient()
    try:
        latest = _latest_trained_version(client, settings.mlflow.model_name)
    except MlflowException:
        latest = None
    if latest is None or latest.run_id is None:
        return NewOutcomes(total, total, None, None, None, None)
    run = client.get_run(latest.run_id)
    params = run.data.params
    started = datetime.fromtimestamp(run.info.start_time / 1000, UTC)
    since_text = params.get("latest_outcome_at") or params.get("as_of") or ""
    since = pd.Timestamp(since_text).to_pydatetime() if since_text else None
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    if "n_outcomes" in params:
        seen = int(params["n_outcomes"])
        count = max(total - seen, 0)
        return NewOutcomes(count, total, seen, since, str(latest.version), started)
    closed = pd.to_datetime(outcomes["closed_at"], utc=True)
    count = int((closed > pd.Timestamp(since)).sum()) if since is not None else total
    return NewOutcomes(count, total, None, since, str(latest.version), started)
