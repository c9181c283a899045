"""Profile and fit features of leads: who they are, as recorded in the leads table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from leadscore.contracts import FREE_EMAIL_DOMAINS, to_utc_us
from leadscore.feature_catalog import PROFILE_FEATURES, FeatureSpec

BANT_COLUMNS = ("bant_budget", "bant_authority", "bant_need", "bant_timeline")
_DERIVED = {"bant_completeness", "email_domain_type"}


def email_domain_type(domains: pd.Series) -> pd.Series:
    """``free`` for webmail domains, ``corporate`` for any other, missing when unknown."""
    cleaned = domains.astype("string").str.strip().str.lower().str.lstrip("@")
    kind = np.where(cleaned.isin(FREE_EMAIL_DOMAINS).fillna(False), "free", "corporate")
    known = (cleaned.notna() & (cleaned != "")).fillna(False).to_numpy(dtype=bool)
    result = kind.astype(object)
    result[~known] = None
    return pd.Series(result, index=domains.index, dtype=object)


def compute_profile_features(leads: pd.DataFrame) -> pd.DataFrame:
    """Profile feature rows: one per lead, stamped at its creation.

    Args:
        leads: Validated leads table.

    Returns:
        ``lead_id``, ``event_timestamp`` and the profile features (flags as 0/1 floats,
        categories as strings or None).
    """
    out = pd.DataFrame({"lead_id": leads["lead_id"].astype("int64").to_numpy()})
    out["event_timestamp"] = to_utc_us(leads["created_at"]).array
    answered = sum(leads[c].notna().to_numpy(dtype=np.float64) for c in BANT_COLUMNS)
    derived = {
        "bant_completeness": np.asarray(answered) / len(BANT_COLUMNS),
        "email_domain_type": email_domain_type(leads["email_domain"]).to_numpy(),
    }
    for spec in PROFILE_FEATURES:
        if spec.name in _DERIVED:
            out[spec.name] = derived[spec.name]
            continue
        column = leads[spec.name]
        if spec.kind == "categorical":
            values = column.astype(object).to_numpy()
            out[spec.name] = [None if pd.isna(v) else str(v) for v in values]
        else:
            numbers = pd.to_numeric(column.astype("Float64"), errors="coerce")
            out[spec.name] = numbers.astype("float64").to_numpy()
    return out


def compute_attribute_features(
    leads: pd.DataFrame, attributes: pd.DataFrame, specs: tuple[FeatureSpec, ...]
) -> pd.DataFrame:
    """Custom attribute rows: one per lead (missing where the lead has none), stamped at its
    creation like the profile.

    Args:
        leads: Validated leads (``lead_id``, ``created_at``).
        attributes: The warehouse's attributes table (``lead_id`` + attribute columns).
        specs: The attributes as features (kinds say how values are stored).

    Returns:
        ``lead_id``, ``event_timestamp`` and one column per attribute (categories as strings
        or None, numbers and flags as floats).
    """
    out = pd.DataFrame({"lead_id": leads["lead_id"].astype("int64").to_numpy()})
    out["event_timestamp"] = to_utc_us(leads["created_at"]).array
    if "lead_id" in attributes.columns:
        by_lead = attributes.drop_duplicates("lead_id", keep="last").set_index("lead_id")
    else:
        by_lead = pd.DataFrame(index=pd.Index([], dtype="int64"))
    for spec in specs:
        if spec.name in by_lead.columns:
            column = out["lead_id"].map(by_lead[spec.name])
        else:
            column = pd.Series([None] * len(out), dtype=object)
        if spec.kind == "categorical":
            values = column.astype(object).to_numpy()
            out[spec.name] = [None if pd.isna(v) else str(v) for v in values]
        else:
            numbers = pd.to_numeric(column.astype(object), errors="coerce")
            out[spec.name] = numbers.astype("float64").to_numpy()
    return out
