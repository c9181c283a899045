"""The scoring service: online features -> calibrated probability, band and reasons.

No FastAPI here: the app builds one :class:`ScoringService` at start-up and routes call it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from leadscore.contracts import EVENTS, to_utc_us
from leadscore.event_log import EventLog
from leadscore.live import LiveFeatures
from leadscore.scorer import LeadScorer, Reason
from leadscore.settings import Settings
from leadscore.tracking import connect_tracking
from serving.errors import InvalidInputError, LeadNotFoundError, NotReadyError

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


class OnlineFeatures:
    """Reads one lead's features of a feature service from the Feast online store."""

    def __init__(self, store: FeatureStore, feature_service: str) -> None:
        self._store = store
        self._service = store.get_feature_service(feature_service)

    def __call__(self, lead_id: int) -> dict[str, Any] | None:
        values = self._store.get_online_features(
            features=self._service,
            entity_rows=[{"lead_id": lead_id, "request_ts": time.time()}],
        ).to_dict()
        row = {
            name: column[0]
            for name, column in values.items()
            if name not in ("lead_id", "request_ts")
        }
        if all(value is None for value in row.values()):
            return None
        return row


class ScoringService:
    """Scores leads with one model version.

    Args:
        scorer: The loaded model.
        lookup: Returns a lead's features, or None for an unknown lead.
        model_name: Registered model name.
        model_version: Registered model version.
        top_reasons: Number of reasons per score.
        live: Refreshes online features when events arrive (None: scoring only).
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
    ) -> None:
        self.live = live
        self.scorer = scorer
        self.lookup = lookup
        self.model_name = model_name
        self.model_version = model_version
        self.top_reasons = top_reasons

    def record_events(
        self, events: Sequence[Mapping[str, Any]], *, max_events: int
    ) -> tuple[list[str], list[ScoreResult]]:
        """Store live events, refresh their leads' features online and rescore them.

        Nothing is stored unless every event is valid: known lead, not in the future.

        Returns:
            The ids of the events that were new, and the fresh score of every lead.

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
        problems: dict[str, str] = {}
        known: dict[int, bool] = {}
        for i, event in enumerate(events):
            lead_id = int(event["lead_id"])
            if lead_id not in known:
                known[lead_id] = self.lookup(lead_id) is not None
            if not known[lead_id]:
                problems[f"events.{i}.lead_id"] = f"lead {lead_id} is unknown"
            if event["occurred_at"] > now + _CLOCK_SKEW:
                problems[f"events.{i}.occurred_at"] = (
                    f"{event['occurred_at'].isoformat()} is in the future"
                )
        if problems:
            raise InvalidInputError(problems)
        frame = pd.DataFrame(list(events), columns=list(EVENTS.column_names))
        frame["occurred_at"] = to_utc_us(frame["occurred_at"]).array
        fresh = self.live.record(frame, now=now)
        scores = [
            self.score(lead_id) for lead_id in dict.fromkeys(int(e["lead_id"]) for e in events)
        ]
        return fresh, scores

    def score(self, lead_id: int) -> ScoreResult:
        """Score one lead from its online features.

        Raises:
            LeadNotFoundError: The online store has no features for the lead.
        """
        features = self.lookup(lead_id)
        if features is None:
            raise LeadNotFoundError(
                f"lead_id {lead_id} has no features in the online store: it is unknown, or "
                "features were not materialized since it was ingested"
            )
        (scored,) = self.scorer.score_rows([features], top_k=self.top_reasons)
        return ScoreResult(
            lead_id=lead_id,
            probability=scored.probability,
            band=scored.band,
            reasons=scored.reasons,
            model_name=self.model_name,
            model_version=self.model_version,
            scored_at=datetime.now(UTC),
        )


def load_service(settings: Settings) -> ScoringService:
    """Load the aliased model version from MLflow and open its feature service.

    Raises:
        LookupError: No model version carries the configured alias.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    import mlflow
    from leadscore.store import open_store

    connect_tracking(settings.tracking_uri)
    name, alias = settings.mlflow.model_name, settings.serving.model_alias
    try:
        version = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as e:
        raise LookupError(
            f"no version of model {name!r} has alias {alias!r}: run `leadscore train` first"
        ) from e
    model = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
    scorer = model.unwrap_python_model()
    if not isinstance(scorer, LeadScorer):
        raise TypeError(f"models:/{name}@{alias} is not a LeadScorer: {type(scorer).__name__}")
    store = open_store(settings, serving=True)
    logger.info("serving %s version %s (%s)", name, version.version, scorer.feature_service)
    live = LiveFeatures(
        store=store,
        log=EventLog(settings.event_log_url),
        warehouse_events=settings.paths.warehouse / "events.parquet",
        half_life_days=settings.feast.half_life_days,
    )
    return ScoringService(
        scorer=scorer,
        lookup=OnlineFeatures(store, scorer.feature_service),
        model_name=name,
        model_version=str(version.version),
        top_reasons=settings.serving.top_reasons,
        live=live,
    )
