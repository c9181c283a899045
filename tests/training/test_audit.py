"""Leakage audit of candidate features and the minimum-data gate, on small synthetic frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leadscore.feature_catalog import FeatureSpec
from training.audit import LeakageError, UnknownFeatureError, audit_features
from training.dataset import TrainingDataError, check_minimum_outcomes

N = 2000


def _spec(name: str, kind: str = "numeric") -> FeatureSpec:
    return FeatureSpec(name, kind, "test_view", f"{name}.", f"{name}: {{value}}")  # type: ignore[arg-type]


@pytest.fixture
def frame() -> pd.DataFrame:
    """An honest signal, noise, a leaky numeric and a leaky categorical column."""
    rng = np.random.default_rng(3)
    label = (rng.random(N) < 0.3).astype(int)
    engagement = rng.normal(0, 1, N) + 0.8 * label
    engagement[rng.random(N) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "engagement": engagement,
            "noise": rng.normal(0, 1, N),
            "industry": rng.choice(np.array(["retail", "software", None], dtype=object), N),
            # filled in when the deal closed: days to close for won deals, missing otherwise
            "days_to_close": np.where(label == 1, rng.integers(5, 90, N), np.nan),
            # the CRM stage after the outcome, with a few stale records
            "deal_status": np.where(
                (label == 1) ^ (rng.random(N) < 0.02), "closed_won", "closed_lost"
            ),
            "record_id": [f"crm-{i:06d}" for i in range(N)],
            "label": label,
        }
    )


HONEST = [_spec("engagement"), _spec("noise"), _spec("industry", "categorical")]
LEAKY_NUMERIC = _spec("days_to_close")
LEAKY_CATEGORY = _spec("deal_status", "categorical")


def test_honest_features_pass_with_their_auc(frame):
    # when
    report = audit_features(frame, HONEST)
    # then
    assert report.kept == tuple(HONEST)
    assert 0.6 < report.auc["engagement"] < 0.95
    assert 0.5 <= report.auc["noise"] < 0.6
    assert report.as_dict()["kept"] == ["engagement", "noise", "industry"]


def test_a_leaky_numeric_column_is_refused_and_named_with_how_to_proceed(frame):
    # when
    with pytest.raises(LeakageError) as caught:
        audit_features(frame, [*HONEST, LEAKY_NUMERIC])
    # then: missing-for-lost is as telling as the value itself
    message = str(caught.value)
    assert "days_to_close (ROC AUC 1.000)" in message
    assert "--exclude" in message and "--confirm" in message
    assert "training.exclude_features" in message and "training.confirmed_features" in message
    assert "engagement" not in message
    assert caught.value.columns == ("days_to_close",)


def test_a_leaky_categorical_column_is_refused(frame):
    with pytest.raises(LeakageError, match=r"deal_status \(ROC AUC 0\.9[6-9]"):
        audit_features(frame, [*HONEST, LEAKY_CATEGORY])


def test_an_id_like_column_with_unique_values_is_not_predictive(frame):
    # when
    report = audit_features(frame, [*HONEST, _spec("record_id", "categorical")])
    # then: out-of-fold, every id is unseen, so it tells nothing
    assert report.auc["record_id"] == pytest.approx(0.5)
    assert "record_id" in report.kept_names


def test_a_confirmed_leaky_column_is_kept_and_reported(frame):
    # when
    report = audit_features(frame, [*HONEST, LEAKY_NUMERIC], confirmed=["days_to_close"])
    # then
    assert "days_to_close" in report.kept_names
    assert report.confirmed == ("days_to_close",)
    assert report.as_dict()["confirmed_above_max_auc"] == ["days_to_close"]


def test_an_excluded_column_is_left_out_and_reported(frame):
    # when
    report = audit_features(frame, [*HONEST, LEAKY_NUMERIC], exclude=["days_to_close"])
    # then
    assert report.kept == tuple(HONEST)
    assert report.excluded == ("days_to_close",)
    assert "days_to_close" not in report.auc


def test_constant_columns_are_dropped_and_the_rest_keeps_its_order(frame):
    # given: behaviour counts that are 0 everywhere (no events) and an all-missing profile column
    frame = frame.assign(demo_request_7d=0.0, budget=None, job_role="unknown")
    specs = [
        _spec("demo_request_7d"),
        HONEST[0],
        _spec("budget", "categorical"),
        HONEST[1],
        _spec("job_role", "categorical"),
        HONEST[2],
    ]
    # when
    report = audit_features(frame, specs)
    # then
    assert report.kept == tuple(HONEST)
    assert report.dropped_constant == ("demo_request_7d", "budget", "job_role")
    assert "dropped as constant" in report.summary()


def test_one_value_and_missing_is_not_constant(frame):
    # given: a flag that is either 1 or unknown
    frame = frame.assign(opted_in=np.where(frame["label"] == 1, 1.0, np.nan))
    # when
    report = audit_features(frame, [*HONEST, _spec("opted_in", "flag")], max_auc=1.0)
    # then
    assert "opted_in" in report.kept_names and report.auc["opted_in"] == pytest.approx(1.0)


def test_a_post_outcome_column_is_refused_even_if_confirmed(frame):
    # given: a column the data set's mapping declares known only after the outcome
    specs = [*HONEST, _spec("noise_after", "numeric")]
    frame = frame.assign(noise_after=frame["noise"])
    # when
    with pytest.raises(LeakageError) as caught:
        audit_features(frame, specs, post_outcome=["noise_after"], confirmed=["noise_after"])
    # then
    assert "noise_after: declared post-outcome in the mapping" in str(caught.value)
    assert "it can never be a feature" in str(caught.value)


def test_an_excluded_post_outcome_column_is_no_problem(frame):
    report = audit_features(
        frame, [*HONEST, LEAKY_NUMERIC], post_outcome=["days_to_close"], exclude=["days_to_close"]
    )
    assert report.kept == tuple(HONEST)


def test_unknown_names_to_exclude_or_confirm_list_the_features(frame):
    with pytest.raises(UnknownFeatureError, match=r"training\.exclude_features") as caught:
        audit_features(frame, HONEST, exclude=["engagment"])
    assert "engagment" in str(caught.value)
    assert "the features are: engagement, noise, industry" in str(caught.value)
    with pytest.raises(UnknownFeatureError, match=r"training\.confirmed_features \(--confirm\)"):
        audit_features(frame, HONEST, confirmed=["nope"])


def test_noise_features_all_pass_at_a_realistic_size():
    # given: 50,000 examples and 100 features, a quarter of them categorical
    rng = np.random.default_rng(0)
    n = 50_000
    columns: dict[str, object] = {"label": (rng.random(n) < 0.1).astype(int)}
    specs = []
    for j in range(100):
        if j % 4 == 0:
            columns[f"c{j}"] = rng.choice(np.array(["a", "b", "c", None], dtype=object), n)
            specs.append(_spec(f"c{j}", "categorical"))
        else:
            columns[f"n{j}"] = rng.poisson(1.0, n).astype(float)
            specs.append(_spec(f"n{j}"))
    # when
    report = audit_features(pd.DataFrame(columns), specs)
    # then: everything is kept and near chance
    assert len(report.kept) == 100
    assert max(report.auc.values()) < 0.53


def test_too_few_won_leads_are_refused_with_the_counts():
    # given: 12 won leads (two snapshots each) and 300 lost ones
    won = pd.DataFrame({"lead_id": np.repeat(np.arange(12), 2), "label": [0, 1] * 12})
    lost = pd.DataFrame({"lead_id": np.arange(100, 400), "label": 0})
    examples = pd.concat([won, lost], ignore_index=True)
    # when
    with pytest.raises(TrainingDataError) as caught:
        check_minimum_outcomes(examples, min_won=40, min_lost=40)
    # then
    message = str(caught.value)
    assert "12 won and 300 lost leads" in message
    assert "at least 40 of each" in message
    assert "training.min_won / training.min_lost" in message
    check_minimum_outcomes(examples, min_won=12, min_lost=300)  # enough: no error
