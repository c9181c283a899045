"""Profile and fit features."""

from __future__ import annotations

import pandas as pd

from leadscore.profile import compute_profile_features, email_domain_type
from tests.conftest import make_leads


def test_bant_completeness_and_email_domain_type():
    # given
    leads = make_leads(
        [
            {
                "lead_id": 1,
                "created_at": "2024-01-01",
                "source_channel": "website",
                "bant_budget": "10k_50k",
                "bant_authority": True,
                "bant_need": False,
                "bant_timeline": "now",
                "email_domain": "acme.com",
                "is_decision_maker": True,
            },
            {
                "lead_id": 2,
                "created_at": "2024-01-02",
                "source_channel": "bought_list",
                "bant_need": True,
                "email_domain": " Gmail.com ",
            },
            {"lead_id": 3, "created_at": "2024-01-03", "source_channel": "event"},
        ]
    )
    # when
    out = compute_profile_features(leads)
    # then: an answered "no" counts as an answer; webmail is recognised whatever its case
    assert out["bant_completeness"].tolist() == [1.0, 0.25, 0.0]
    assert out["email_domain_type"].tolist() == ["corporate", "free", None]
    assert out["bant_need"].tolist()[:2] == [0.0, 1.0]
    assert out["is_decision_maker"].isna().tolist() == [False, True, True]
    assert str(out["event_timestamp"].dtype) == "datetime64[us, UTC]"


def test_email_domain_type_ignores_a_leading_at_sign_and_blank_values():
    domains = pd.Series(["@outlook.com", "", None, "firm42.com"])
    assert email_domain_type(domains).tolist() == ["free", None, None, "corporate"]
