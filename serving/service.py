"""The scoring service: online features -> calibrated probability, band and reasons.

No FastAPI here: the app builds one :class:`ScoringService` at start-up and routes call it.
The service can swap in another model version while it serves
(:meth:`ScoringService.reload_if_changed`): the new version is loaded completely first, then
replaces the old one in a single assignment, so a request scores with one version from start
to end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from leadscore.contracts import EVENTS, to_utc_us
from leadscore.dataset import ATTRIBUTES_TABLE
from leadscore.event_log import EventLog
from leadscore.live import LiveFeatures
from leadscore.online_read import ServiceReader, UnsupportedServiceError
from leadscore.scorer import LeadScore, LeadScorer, Reason
from leadscore.settings import Settings
from serving.errors import (
    InvalidInputError,
    LeadNotFoundError,
    NotReadyError,
    StoreUnavailableError,
)
from serving.inline import InlineFeatures

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)

FeatureLookup = Callable[[int], Mapping[str, Any] | None]
# Clocks of the CRM and of this service may disagree a little.
_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class ScoreResult:
    """A served score."""

    lead_id: int
    probability: float
    band: str
    reasons: list[Reason]
    model_name: str
    model_version: str
    scored_at: datetime
    features: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # The lead's band just before this score, where the service knows it (rescoring by events).
    previous_band: str | None = None


class OnlineFeatures:
    """Reads one lead's features of a feature service from the Feast online store (directly,
    through :class:`~leadscore.online_read.ServiceReader`, when the service allows it).

    When the store fails (Redis down: each attempt costs seconds of client retries), lookups
    fail fast for ``retry_seconds`` instead of waiting on it again; the first lookup after
    that window tries the store again, so scoring recovers by itself once the store is back.
    """

    def __init__(
        self, store: FeatureStore, feature_service: str, *, retry_seconds: float = 1.0
    ) -> None:
        self._store = store
        self._service = store.get_feature_service(feature_service)
        self._reader: ServiceReader | None = None
        try:
            self._reader = ServiceReader(store, feature_service)
        except UnsupportedServiceError as e:
            logger.info("online lookups go through Feast's get_online_features: %s", e)
        self.retry_seconds = retry_seconds
        self._down_until = 0.0
        self._down_reason = ""

    @property
    def local(self) -> bool:
        """Whether a lookup reads a local file directly (never waits on a network)."""
        return self._reader is not None and self._reader.local

    def __call__(self, lead_id: int) -> dict[str, Any] | None:
        """The lead's features, or None for a lead the store does not know.

        Raises:
            StoreUnavailableError: The store cannot be reached (Redis down, database locked
                or gone), or failed less than ``retry_seconds`` ago.
        """
        if time.monotonic() < self._down_until:
            raise StoreUnavailableError(self._down_reason)
        try:
            if self._reader is not None:
                return self._reader(lead_id, {"request_ts": time.time()})
            values = self._store.get_online_features(
                features=self._service,
                entity_rows=[{"lead_id": lead_id, "request_ts": time.time()}],
            ).to_dict()
        except (ValueError, TypeError, KeyError):
            raise  # a bad request or a bug, not an outage: the store stays trusted
        except Exception as e:  # Redis, SQLite and Feast errors share no base class
            self._down_reason = (
                f"the online feature store cannot be reached ({type(e).__name__}): scoring "
                "by lead_id resumes by itself when it is back"
            )
            self._down_until = time.monotonic() + self.retry_seconds
            logger.warning("online store lookup failed: %s: %s", type(e).__name__, e)
            raise StoreUnavailableError(self._down_reason) from e
        row = {
            name: column[0]
            for name, column in values.items()
            if name not in ("lead_id", "request_ts")
        }
        if all(value is None for value in row.values()):
            return None
        return row


@dataclass(frozen=True)
class ServedModel:
    """A loaded model version with the feature lookup of its feature service."""

    scorer: LeadScorer
    lookup: FeatureLookup
    name: str
    version: str


# What MLflow answers when the model or the alias does not exist (anything else, e.g.
# TEMPORARILY_UNAVAILABLE for a database that cannot be reached, is not a missing model).
_NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


def aliased_version(tracking_uri: str, model_name: str, alias: str) -> str:
    """The version of a registered model an alias points to.

    Raises:
        LookupError: No version carries the alias.
        ConnectionError: The registry cannot be reached (or failed): not a missing model.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as e:
        if e.error_code in _NOT_FOUND_CODES:
            raise LookupError(
                f"no version of model {model_name!r} has alias {alias!r}: run `leadscore train` "
                "first"
            ) from e
        detail = str(e.message).strip().splitlines()[0] if str(e.message).strip() else ""
        raise ConnectionError(
            f"the model registry cannot be reached ({e.error_code}), so the version of model "
            f"{model_name!r} with alias {alias!r} is unknown for now: {detail}"
        ) from e
    return str(version.version)


class ModelSource:
    """The registry alias a service serves: the version it points to, and loading a version.

    Reads the alias with its own MLflow client. Loading a model resolves ``models:/`` URIs
    through MLflow's process-wide tracking and registry URIs (MLflow 3 ignores the URIs passed
    to ``download_artifacts`` for them), so the source points MLflow at its store: a serving
    process talks to one tracking store only.

    Args:
        tracking_uri: MLflow tracking and registry URI.
        model_name: Registered model name.
        alias: The alias served (``serving.model_alias``).
        store: The Feast store the lookups read from.
    """

    def __init__(
        self, *, tracking_uri: str, model_name: str, alias: str, store: FeatureStore
    ) -> None:
        from leadscore.tracking import connect_tracking

        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.alias = alias
        self._store = store
        connect_tracking(tracking_uri)

    def current_version(self) -> str:
        """The version the alias points to now.

        Raises:
            LookupError: No version carries the alias.
        """
        return aliased_version(self.tracking_uri, self.model_name, self.alias)

    def load(self, version: str) -> ServedModel:
        """Load a version completely: the model and the lookup of its feature service.

        Raises:
            LookupError: Its artifacts cannot be read, or its feature service is not in the
                Feast registry.
            TypeError: The version is not a LeadScorer.
        """
        from mlflow.exceptions import MlflowException

        import mlflow

        uri = f"models:/{self.model_name}/{version}"
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
            scorer = mlflow.pyfunc.load_model(local).unwrap_python_model()
        except (MlflowException, OSError) as e:
            raise LookupError(f"{uri} could not be loaded: {e}") from e
        if not isinstance(scorer, LeadScorer):
            raise TypeError(f"{uri} is not a LeadScorer: {type(scorer).__name__}")
        try:
            lookup = OnlineFeatures(self._store, scorer.feature_service)
        except Exception as e:  # Feast's not-found errors share no base class with ours
            raise LookupError(
                f"{uri} reads feature service {scorer.feature_service!r}, which the feature "
                f"store cannot give: {e}"
            ) from e
        return ServedModel(scorer=scorer, lookup=lookup, name=self.model_name, version=version)

    def details(self, version: str) -> dict[str, Any]:
        """Registry facts of a version: aliases, registration and training time, run id and
        the test metrics its training run logged (``test_`` prefix removed).
        """
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        registered = client.get_model_version(self.model_name, version)
        out: dict[str, Any] = {
            "aliases": sorted(registered.aliases or []),
            "registered_at": _from_millis(registered.creation_timestamp),
            "run_id": registered.run_id,
            "trained_at": None,
            "test_metrics": {},
        }
        if registered.run_id:
            run = client.get_run(registered.run_id)
            out["trained_at"] = _from_millis(run.info.start_time)
            out["test_metrics"] = {
                k.removeprefix("test_"): float(v)
                for k, v in sorted(run.data.metrics.items())
                if k.startswith("test_")
            }
        return out


def _from_millis(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, tz=UTC)


class ScoringService:
    """Scores leads with one model version at a time.

    Args:
        scorer: The loaded model.
        lookup: Returns a lead's features, or None for an unknown lead.
        model_name: Registered model name.
        model_version: Registered model version.
        top_reasons: Number of reasons per score.
        live: Refreshes online features when events arrive (None: scoring only).
        source: Where newer versions come from (None: the model never changes).
    """

    def __init__(
        self,
        *,
        scorer: LeadScorer,
        lookup: FeatureLookup,
        model_name: str,
        model_version: str,
        top_reasons: int,
        live: LiveFeatures | None = None,
        source: ModelSource | None = None,
        inline: InlineFeatures | None = None,
    ) -> None:
        self.live = live
        self.inline = inline
        self._served = ServedModel(
            scorer=scorer, lookup=lookup, name=model_name, version=model_version
        )
        self.top_reasons = top_reasons
        self.source = source
        self._reload_lock = threading.Lock()
        self._details: dict[str, dict[str, Any]] = {}

    @property
    def served(self) -> ServedModel:
        """The model version serving now (read it once per request)."""
        return self._served

    @property
    def scorer(self) -> LeadScorer:
        return self._served.scorer

    @property
    def lookup(self) -> FeatureLookup:
        return self._served.lookup

    @property
    def model_name(self) -> str:
        return self._served.name

    @property
    def model_version(self) -> str:
        return self._served.version

    def reload_if_changed(self) -> str | None:
        """Serve the version the alias points to now, if it is another one.

        The new version is loaded completely before it replaces the current one in one
        assignment: requests already running finish with the old model, later ones use the
        new one. If the load fails, the current model keeps serving.

        Returns:
            The version now served if it changed, else None (also without a source).

        Raises:
            LookupError: The alias points to no version.
            Exception: Whatever loading the new version raised (the old model stays).
        """
        if self.source is None:
            return None
        with self._reload_lock:
            version = self.source.current_version()
            if version == self._served.version:
                return None
            fresh = self.source.load(version)
            previous = self._served.version
            self._served = fresh
        logger.info(
            "now serving %s version %s (was version %s)", fresh.name, fresh.version, previous
        )
        return fresh.version

    def describe(self) -> dict[str, Any]:
        """The served version: name, version, registry facts, test metrics, bands, calibration,
        feature service and features (registry facts are read once per version).
        """
        served = self._served
        facts = self._details.get(served.version)
        if facts is None:
            facts = {"aliases": [], "test_metrics": {}}
            if self.source is not None:
                try:
                    facts = self.source.details(served.version)
                except Exception as e:  # the registry is down: answer what the model knows
                    logger.warning(
                        "registry facts of version %s unavailable: %s", served.version, e
                    )
                    facts = {**facts, "detail": str(e)}
                else:
                    self._details[served.version] = facts
        scorer = served.scorer
        return {
            **{k: v for k, v in facts.items() if k != "detail"},
            "name": served.name,
            "version": served.version,
            "bands": dict(scorer.bands),
            "band_policy": dict(scorer.band_policy),
            "calibration": scorer.calibration_method,
            "feature_service": scorer.feature_service,
            "features": scorer.features,
        }

    def record_events(
        self, events: Sequence[Mapping[str, Any]], *, max_events: int
    ) -> tuple[list[str], list[ScoreResult]]:
        """Store live events, refresh their leads' features online and rescore them.

        Nothing is stored unless every event is valid: known lead, not in the future.

        Returns:
            The ids of the events that were new, and the fresh score of every lead (with
            ``previous_band``, its band before the events).

        Raises:
            InvalidInputError: An event breaks a rule (the field and the problem are named).
            NotReadyError: The service was started without a live path.
        """
        if self.live is None:
            raise NotReadyError("live events are not enabled on this service")
        if len(events) > max_events:
            raise InvalidInputError(
                {"events": f"{len(events)} events in one request; at most {max_events}"}
            )
        now = datetime.now(UTC)
        served = self._served
        problems: dict[str, str] = {}
        before: dict[int, Mapping[str, Any] | None] = {}
        for i, event in enumerate(events):
            lead_id = int(event["lead_id"])
            if lead_id not in before:
                before[lead_id] = served.lookup(lead_id)
            if before[lead_id] is None:
                problems[f"events.{i}.lead_id"] = f"lead {lead_id} is unknown"
            if event["occurred_at"] > now + _CLOCK_SKEW:
                problems[f"events.{i}.occurred_at"] = (
                    f"{event['occurred_at'].isoformat()} is in the future"
                )
        if problems:
            raise InvalidInputError(problems)
        frame = pd.DataFrame(list(events), columns=list(EVENTS.column_names))
        frame["occurred_at"] = to_utc_us(frame["occurred_at"]).array
        try:
            fresh = self.live.record(frame, now=now)
        except (ValueError, TypeError, KeyError):
            raise  # a bad request or a bug, not an outage
        except Exception as e:  # Redis, SQLite and Feast errors share no base class
            logger.warning("live push failed: %s: %s", type(e).__name__, e)
            raise StoreUnavailableError(
                f"the online feature store did not take the leads' new features "
                f"({type(e).__name__}); events already logged are kept: send the request "
                "again (same event ids) to refresh the scores"
            ) from e
        # The bands the leads had before these events (by the same model version).
        rows = [row for row in before.values() if row is not None]
        scorer = served.scorer
        previous = scorer.band_of(scorer.predict_rows(rows))
        previous_band = dict(zip(before, (str(b) for b in previous), strict=True))
        scores = [
            replace(self.score(lead_id), previous_band=previous_band[lead_id]) for lead_id in before
        ]
        return fresh, scores

    @property
    def quick_lookups(self) -> bool:
        """Whether scoring by lead_id never waits on a network (the online store is a local
        SQLite file read directly): the API then scores in its event loop, without a thread."""
        return bool(getattr(self._served.lookup, "local", False))

    def score(self, lead_id: int) -> ScoreResult:
        """Score one lead from its online features.

        Raises:
            LeadNotFoundError: The online store has no features for the lead.
        """
        served = self._served  # one version for the whole request, even during a reload
        features = self._features(served, lead_id)
        (scored,) = served.scorer.score_rows([features], top_k=self.top_reasons)
        return self._result(served, lead_id, scored, features)

    def score_inline(
        self, lead_id: int, lead: Mapping[str, Any], attributes: Mapping[str, Any]
    ) -> ScoreResult:
        """Score a lead from its attributes (not from the feature store): a new lead.

        Raises:
            InvalidInputError: An attribute is not one of the model's, or has the wrong type.
            NotReadyError: The service was started without inline scoring.
        """
        if self.inline is None:
            raise NotReadyError("scoring from attributes is not enabled on this service")
        served = self._served
        scorer = served.scorer
        custom = {s.name: s for s in scorer.specs.values() if s.view == ATTRIBUTES_TABLE}
        problems: dict[str, str] = {}
        for name, value in attributes.items():
            spec = custom.get(name)
            if spec is None:
                known = ", ".join(sorted(custom)) or "none"
                problems[f"attributes.{name}"] = f"not an attribute of the model (known: {known})"
            elif spec.kind != "categorical" and isinstance(value, str):
                problems[f"attributes.{name}"] = f"{spec.kind} attribute: a number, not {value!r}"
        if problems:
            raise InvalidInputError(problems)
        features = self.inline.row(lead, attributes, features=scorer.features)
        (scored,) = scorer.score_rows([features], top_k=self.top_reasons)
        return self._result(served, lead_id, scored, features)

    @staticmethod
    def _features(served: ServedModel, lead_id: int) -> Mapping[str, Any]:
        features = served.lookup(lead_id)
        if features is None:
            raise LeadNotFoundError(
                f"lead_id {lead_id} has no features in the online store: it is unknown, or "
                "features were not materialized since it was ingested"
            )
        return features

    def _result(
        self, served: ServedModel, lead_id: int, scored: LeadScore, features: Mapping[str, Any]
    ) -> ScoreResult:
        return ScoreResult(
            lead_id=lead_id,
            probability=scored.probability,
            band=scored.band,
            reasons=scored.reasons[: self.top_reasons],
            model_name=served.name,
            model_version=served.version,
            scored_at=datetime.now(UTC),
            features=features,
        )

    def explain_change(
        self, lead_id: int, earlier: Mapping[str, Any], *, top_k: int = 10
    ) -> tuple[ScoreResult, float, list[dict[str, Any]]]:
        """Score the lead now and say which factors moved it since ``earlier`` features.

        Both feature rows are explained by the model serving now, so every factor's change is
        on one scale, whatever version served the earlier score.

        Returns:
            The current score, the probability the current model gives the earlier features,
            and up to ``top_k`` factors whose contribution changed most (``feature``,
            ``before`` and ``now`` values, the current ``label`` and ``contribution_change``).
        """
        served = self._served
        scorer = served.scorer
        features = self._features(served, lead_id)
        # One explanation of both rows: every factor, the current score's reasons among them.
        then, current = scorer.score_rows([earlier, features], top_k=len(scorer.features))
        now = self._result(served, lead_id, current, features)
        effect_then = {r.feature: r.contribution for r in then.reasons}
        effect_now = {r.feature: r.contribution for r in current.reasons}
        labels = {r.feature: r.label for r in current.reasons}
        changes: list[dict[str, Any]] = []
        for feature in scorer.features:
            delta = effect_now.get(feature, 0.0) - effect_then.get(feature, 0.0)
            before, after = earlier.get(feature), now.features.get(feature)
            if abs(delta) < 1e-4 and before == after:
                continue
            spec = scorer.specs[feature]
            changes.append(
                {
                    "feature": feature,
                    "label": labels.get(feature) or spec.describe(after),
                    "before": before,
                    "now": after,
                    "contribution_change": round(delta, 4),
                }
            )
        changes.sort(key=lambda c: -abs(float(c["contribution_change"])))
        return now, then.probability, changes[:top_k]

    def score_many(self, lead_ids: Sequence[int]) -> dict[int, ScoreResult | None]:
        """Score several leads with one model version and one ``pred_contrib`` call.

        Returns:
            Each distinct lead id (in the order given) -> its score, or None when the online
            store has no features for it.
        """
        served = self._served  # one version for the whole batch, even during a reload
        found: dict[int, ScoreResult | None] = {}
        rows: dict[int, Mapping[str, Any]] = {}
        for lead_id in dict.fromkeys(int(i) for i in lead_ids):
            features = served.lookup(lead_id)
            found[lead_id] = None
            if features is not None:
                rows[lead_id] = features
        if not rows:
            return found
        scored = served.scorer.score_rows(list(rows.values()), top_k=self.top_reasons)
        for (lead_id, features), one in zip(rows.items(), scored, strict=True):
            found[lead_id] = self._result(served, lead_id, one, features)
        return found


def load_service(settings: Settings) -> ScoringService:
    """Load the aliased model version from MLflow and open its feature service.

    The service keeps a :class:`ModelSource` on the same alias, so that
    :meth:`ScoringService.reload_if_changed` can swap in the version the alias moves to.

    Raises:
        LookupError: No model version carries the configured alias.
    """
    from leadscore.store import open_store

    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        # Not connect_tracking: the reload thread may call this, and must not repoint the
        # process-wide MLflow URI under other code.
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    name, alias = settings.mlflow.model_name, settings.serving.model_alias
    version = aliased_version(uri, name, alias)  # before the slow Feast open
    store = open_store(settings, serving=True)
    source = ModelSource(tracking_uri=uri, model_name=name, alias=alias, store=store)
    # By number, not by alias: the alias may move while the model loads.
    served = source.load(version)
    logger.info(
        "serving %s version %s (%s)", served.name, served.version, served.scorer.feature_service
    )
    live = LiveFeatures(
        store=store,
        log=EventLog(settings.event_log_url),
        warehouse_events=settings.paths.warehouse / "events.parquet",
        half_life_days=settings.feast.half_life_days,
    )
    return ScoringService(
        scorer=served.scorer,
        lookup=served.lookup,
        model_name=served.name,
        model_version=served.version,
        top_reasons=settings.serving.top_reasons,
        live=live,
        source=source,
        inline=InlineFeatures(
            warehouse=settings.paths.warehouse,
            outcome_log_url=settings.event_log_url,
            horizon_days=settings.training.horizon_days,
            half_life_days=settings.feast.half_life_days,
        ),
    )
