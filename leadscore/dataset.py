"""What the stored data set holds beyond the four contracts: its custom lead attributes.

A foreign CRM export has columns the contracts do not know (a bank's ``balance``, a
software vendor's ``plan_tier``). A mapping file (:mod:`pipelines.mapping`) declares which of
them are lead attributes and which are known only after the outcome. Ingest keeps the
declaration next to the validated tables, in ``<warehouse>/dataset.json``; the feature build,
the Feast definitions and training read it from there, so that every later step sees the same
attributes without the mapping file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from leadscore.contracts import Column, Kind
from leadscore.feature_catalog import FeatureSpec

MANIFEST_FILE = "dataset.json"
ATTRIBUTES_TABLE = "lead_attributes"
"""Warehouse table (``lead_id`` + one column per attribute) and Feast view name."""

AttributeKind = Literal["categorical", "numeric", "flag"]
_CONTRACT_KIND: dict[str, Kind] = {"categorical": "str", "numeric": "float", "flag": "bool"}


@dataclass(frozen=True)
class Attribute:
    """One custom lead attribute: a profile feature taken from the user's export.

    Attributes:
        name: Column name in the warehouse, the feature tables and the model.
        kind: ``categorical`` (text), ``numeric`` or ``flag`` (true/false).
        description: What it holds.
        label: Phrase used in score reasons; ``{value}`` is the lead's value.
        allowed: For categorical attributes, the closed set of values (None: any).
        min_value: Smallest plausible value of a numeric attribute.
        max_value: Largest plausible value of a numeric attribute.
    """

    name: str
    kind: AttributeKind
    description: str = ""
    label: str = ""
    allowed: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None

    def column(self) -> Column:
        """The attribute as a contract column (how ingest validates it)."""
        return Column(
            self.name,
            _CONTRACT_KIND[self.kind],
            self.description or f"Custom attribute {self.name}.",
            allowed=self.allowed,
            min_value=self.min_value,
            max_value=self.max_value,
        )

    def spec(self) -> FeatureSpec:
        """The attribute as a model feature of the ``lead_attributes`` view."""
        readable = self.name.replace("_", " ")
        return FeatureSpec(
            self.name,
            self.kind,
            ATTRIBUTES_TABLE,
            self.description or f"Custom attribute {self.name} from the CRM export.",
            self.label or f"{readable}: {{value}}",
        )


@dataclass(frozen=True)
class DatasetManifest:
    """The data set's custom attributes and the columns that must never become features.

    Attributes:
        attributes: Custom lead attributes, in declaration order.
        post_outcome: Source columns known only after the outcome (refused as features).
        mappings: Mapping files ingested so far (for the record).
    """

    attributes: tuple[Attribute, ...] = ()
    post_outcome: tuple[str, ...] = ()
    mappings: tuple[str, ...] = field(default=())

    def attribute_specs(self) -> tuple[FeatureSpec, ...]:
        """The attributes as model features."""
        return tuple(a.spec() for a in self.attributes)

    def merged(self, other: DatasetManifest) -> DatasetManifest:
        """This manifest extended by ``other`` (a later ingest).

        Raises:
            ValueError: If an attribute is declared again with another kind.
        """
        by_name = {a.name: a for a in self.attributes}
        for attr in other.attributes:
            known = by_name.get(attr.name)
            if known is not None and known.kind != attr.kind:
                raise ValueError(
                    f"attribute {attr.name!r}: declared {attr.kind} but the stored data set "
                    f"holds it as {known.kind}; rename it or start a new warehouse"
                )
            by_name[attr.name] = attr
        return DatasetManifest(
            attributes=tuple(by_name.values()),
            post_outcome=tuple(dict.fromkeys((*self.post_outcome, *other.post_outcome))),
            mappings=tuple(dict.fromkeys((*self.mappings, *other.mappings))),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "attributes": [
                {**asdict(a), "allowed": list(a.allowed) if a.allowed is not None else None}
                for a in self.attributes
            ],
            "post_outcome": list(self.post_outcome),
            "mappings": list(self.mappings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetManifest:
        attributes = []
        for item in data.get("attributes", []) or []:
            raw = dict(item)
            allowed = raw.get("allowed")
            raw["allowed"] = tuple(allowed) if allowed is not None else None
            attributes.append(Attribute(**raw))
        return cls(
            attributes=tuple(attributes),
            post_outcome=tuple(data.get("post_outcome", []) or []),
            mappings=tuple(data.get("mappings", []) or []),
        )


def load_manifest(warehouse_dir: Path) -> DatasetManifest:
    """The stored data set's manifest (empty for data ingested without a mapping)."""
    path = Path(warehouse_dir) / MANIFEST_FILE
    if not path.exists():
        return DatasetManifest()
    return DatasetManifest.from_dict(json.loads(path.read_text(encoding="utf-8")))


def save_manifest(warehouse_dir: Path, manifest: DatasetManifest) -> Path:
    """Write the manifest atomically."""
    path = Path(warehouse_dir) / MANIFEST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path
