"""``POST /v1/outcomes``: closed deals from the CRM, validated like ingest, stored for training.

Validated as ingest validates the outcomes table (known lead, allowed result, ``closed_at``
not in the future and not before the lead was created), all or nothing, then appended to the
:class:`~leadscore.outcome_log.OutcomeLog`, which every training data load merges with the
warehouse table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from leadscore.outcome_log import OutcomeLog, epoch_micros, lead_created_at
from serving.errors import InvalidInputError

# Clocks of the CRM and of this service may disagree a little.
_CLOCK_SKEW = timedelta(minutes=5)
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


class OutcomeIntake:
    """Validates and stores posted outcomes.

    Args:
        log: Where accepted outcomes go.
        warehouse_leads: The validated leads table (which leads exist, and since when).
    """

    def __init__(self, *, log: OutcomeLog, warehouse_leads: Path) -> None:
        self.log = log
        self.warehouse_leads = warehouse_leads

    def record(
        self, outcomes: Sequence[Mapping[str, Any]], *, max_outcomes: int
    ) -> tuple[int, int]:
        """Store the outcomes not stored yet; nothing is stored unless every one is valid.

        Returns:
            How many were stored now, and how many were stored before (duplicates).

        Raises:
            InvalidInputError: An outcome breaks a rule (the field and the problem are named).
        """
        if len(outcomes) > max_outcomes:
            raise InvalidInputError(
                {"outcomes": f"{len(outcomes)} outcomes in one request; at most {max_outcomes}"}
            )
        now = datetime.now(UTC)
        lead_ids = {int(o["lead_id"]) for o in outcomes}
        created = lead_created_at(self.warehouse_leads, lead_ids)
        stored = self.log.stored(lead_ids)
        seen: dict[tuple[int, int], tuple[str, float | None]] = {}
        problems: dict[str, str] = {}
        for i, outcome in enumerate(outcomes):
            lead_id = int(outcome["lead_id"])
            closed_at: datetime = outcome["closed_at"]
            amount = None if outcome.get("amount") is None else float(outcome["amount"])
            if lead_id not in created:
                problems[f"outcomes.{i}.lead_id"] = f"lead {lead_id} is unknown"
            if closed_at > now + _CLOCK_SKEW:
                problems[f"outcomes.{i}.closed_at"] = f"{closed_at.isoformat()} is in the future"
            elif closed_at < _EARLIEST:
                problems[f"outcomes.{i}.closed_at"] = f"{closed_at.isoformat()} is before 2000"
            elif lead_id in created and closed_at < created[lead_id]:
                problems[f"outcomes.{i}.closed_at"] = (
                    f"{closed_at.isoformat()} is before lead {lead_id} was created "
                    f"({created[lead_id].isoformat()})"
                )
            key = (lead_id, epoch_micros(closed_at))
            value = (str(outcome["result"]), amount)
            before = stored.get(key, seen.get(key))
            if before is not None and before != value:
                problems[f"outcomes.{i}.result"] = (
                    f"lead {lead_id}'s outcome closed at {closed_at.isoformat()} is already "
                    f"recorded as {before[0]} (amount {before[1]}); it cannot change"
                )
            seen.setdefault(key, value)
        if problems:
            raise InvalidInputError(problems)
        accepted = self.log.append(outcomes)
        return accepted, len(outcomes) - accepted
