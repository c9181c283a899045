"""The TreeSHAP engine gives LightGBM's pred_contrib values, on every kind of tree and input."""

from __future__ import annotations

import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from leadscore.feature_catalog import FEATURES_BY_NAME
from leadscore.treeshap import TreeShapEngine
from training.model import fit_scorer

TOLERANCE = 1e-6
N_FEATURES = 8
CATEGORICAL = [5, 6, 7]


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Numbers, counts with many zeros, missing values and three categorical columns."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, N_FEATURES))
    X[:, 0] = rng.normal(size=n)
    X[:, 1] = rng.poisson(0.7, n)  # counts: zeros matter for missing type Zero
    X[:, 2] = rng.normal(size=n)
    X[:, 3] = rng.exponential(2.0, n)
    X[:, 4] = rng.integers(0, 2, n)
    X[:, 5] = rng.integers(0, 40, n)  # categorical with many levels: bitset splits
    X[:, 6] = rng.integers(0, 6, n)
    X[:, 7] = rng.integers(0, 3, n)
    for j, share in ((0, 0.15), (1, 0.1), (3, 0.2), (5, 0.08), (6, 0.05)):
        X[rng.random(n) < share, j] = np.nan
    logit = (
        np.nan_to_num(X[:, 0])
        + 0.8 * np.nan_to_num(X[:, 1])
        - 0.5 * X[:, 2] * X[:, 4]
        + np.where(np.isin(X[:, 5], [1, 4, 9, 16, 25, 36]), 1.5, -0.3)
        + np.where(X[:, 6] == 2, 1.0, 0.0)
        + np.where(np.isnan(X[:, 3]), 0.7, 0.0)
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def _probe(seed: int) -> np.ndarray:
    """Fresh rows plus every awkward input: NaN, zeros, values within kZeroThreshold of zero,
    negative, fractional, unseen and huge categories, infinities."""
    X, _ = _data(400, seed)
    X[:20, :] = np.nan
    X[20:40, :] = 0.0
    X[40:50, 0:5] = 1e-36
    X[50:60, 0:5] = -0.0
    X[60:70, 5:8] = -1.0
    X[70:80, 5:8] = 2.7
    X[80:90, 5] = 1e12
    X[90:95, 5] = 77.0  # a category never seen in training
    X[95:100, 0] = np.inf
    X[100:105, 0] = -np.inf
    return X


MODELS = {
    "shallow": {"num_leaves": 7, "num_boost_round": 40},
    "deep": {"num_leaves": 255, "max_depth": -1, "min_data_in_leaf": 3, "num_boost_round": 8},
    "categorical_heavy": {
        "num_leaves": 31,
        "max_cat_to_onehot": 4,
        "min_data_per_group": 5,
        "cat_smooth": 1.0,
        "cat_l2": 1.0,
        "num_boost_round": 30,
    },
    "missing_zero": {"num_leaves": 15, "zero_as_missing": True, "num_boost_round": 30},
    "missing_none": {"num_leaves": 15, "use_missing": False, "num_boost_round": 30},
    "regression": {"num_leaves": 31, "objective": "regression", "num_boost_round": 20},
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def booster(request: pytest.FixtureRequest) -> lgb.Booster:
    params = dict(MODELS[request.param])
    rounds = params.pop("num_boost_round")
    X, y = _data(4000, 1)
    train = lgb.Dataset(X, y, categorical_feature=CATEGORICAL)
    base = {"objective": "binary", "verbose": -1, "seed": 0, "num_threads": 1}
    return lgb.train({**base, **params}, train, num_boost_round=rounds)


def _reference(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    return np.asarray(booster.predict(X, pred_contrib=True, num_threads=1))


@pytest.mark.parametrize("num_threads", [1, 2, 0])
def test_contributions_equal_pred_contrib(booster: lgb.Booster, num_threads: int) -> None:
    engine = TreeShapEngine.from_booster(booster)
    X = _probe(2)
    ours = engine.contributions(X, num_threads=num_threads)
    assert ours.shape == (len(X), N_FEATURES + 1)
    np.testing.assert_allclose(ours, _reference(booster, X), rtol=0, atol=TOLERANCE)
    # each row adds up to the raw margin, the bias column is the expected value
    raw = booster.predict(X, raw_score=True, num_threads=1)
    np.testing.assert_allclose(ours.sum(axis=1), raw, rtol=0, atol=TOLERANCE)
    assert np.all(ours[:, -1] == engine.bias)


def test_paths_without_tables_give_the_same_values(booster: lgb.Booster) -> None:
    # given: no tables at all, and tables for only the shortest paths (a memory cap)
    untabled = TreeShapEngine.from_booster(booster, max_table_elements=0)
    capped = TreeShapEngine.from_booster(booster, max_table_bytes=2_000)
    assert untabled.n_tabled_paths == 0 and untabled.table_bytes == 0
    assert 0 < capped.n_tabled_paths < capped.n_paths and capped.table_bytes <= 2_000
    X = _probe(3)
    reference = _reference(booster, X)
    for engine in (untabled, capped):
        np.testing.assert_allclose(engine.contributions(X), reference, rtol=0, atol=TOLERANCE)


def test_the_deep_model_has_long_paths_and_big_trees() -> None:
    # the "deep" parameters really exercise trees beyond one decision word and long paths
    params = dict(MODELS["deep"])
    rounds = params.pop("num_boost_round")
    X, y = _data(4000, 1)
    deep = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, **params},
        lgb.Dataset(X, y, categorical_feature=CATEGORICAL),
        num_boost_round=rounds,
    )
    dump = deep.dump_model()
    assert max(tree["num_leaves"] for tree in dump["tree_info"]) > 65
    engine = TreeShapEngine.from_booster(deep)
    assert engine.n_paths == sum(tree["num_leaves"] for tree in dump["tree_info"])


def _chain_model(n: int) -> str:
    """One tree splitting on features 0, 1, ..., n-1 down its left side (LightGBM text format):
    a path with ``n`` unique features, more than a 64-bit mask holds."""
    internal = [1000 - 10 * i for i in range(n)]
    leaf_count = [internal[i] - (internal[i + 1] if i + 1 < n else 500) for i in range(n)] + [500]
    leaf_value = [0.01 * ((i * 7) % 11 - 5) for i in range(n + 1)]

    def line(key: str, values: list[object]) -> str:
        return f"{key}=" + " ".join(str(v) for v in values)

    return "\n".join(
        [
            "tree",
            "version=v4",
            "num_class=1",
            "num_tree_per_iteration=1",
            "label_index=0",
            f"max_feature_idx={n - 1}",
            "objective=regression",
            line("feature_names", [f"f{i}" for i in range(n)]),
            line("feature_infos", ["[0:1]"] * n),
            "",
            "Tree=0",
            f"num_leaves={n + 1}",
            "num_cat=0",
            line("split_feature", list(range(n))),
            line("split_gain", [1] * n),
            line("threshold", [0.5] * n),
            line("decision_type", [2] * n),
            line("left_child", [*range(1, n), ~n]),
            line("right_child", [~i for i in range(n)]),
            line("leaf_value", leaf_value),
            line("leaf_weight", leaf_count),
            line("leaf_count", leaf_count),
            line("internal_value", [0] * n),
            line("internal_weight", internal),
            line("internal_count", internal),
            "is_linear=0",
            "shrinkage=1",
            "",
            "",
            "end of trees",
            "",
        ]
    )


def test_a_path_of_seventy_unique_features() -> None:
    booster = lgb.Booster(model_str=_chain_model(70))
    rng = np.random.default_rng(4)
    X = (rng.random((300, 70)) < 0.97).astype(float)
    X[rng.random(X.shape) < 0.02] = np.nan
    reference = _reference(booster, X)
    assert np.count_nonzero(reference[:, 60:70]) > 0  # rows reach deep into the chain
    for cap in (16, 0):
        engine = TreeShapEngine.from_booster(booster, max_table_elements=cap)
        for threads in (1, 0):
            np.testing.assert_allclose(
                engine.contributions(X, num_threads=threads), reference, rtol=0, atol=TOLERANCE
            )


def test_an_early_stopped_booster_is_explained_at_its_best_iteration() -> None:
    X, y = _data(3000, 11)
    valid = lgb.Dataset(X[2000:], y[2000:])
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "learning_rate": 0.5, "num_leaves": 31},
        lgb.Dataset(X[:2000], y[:2000]),
        num_boost_round=200,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(3, verbose=False)],
        keep_training_booster=True,  # keeps the trees past the best iteration
    )
    assert 0 < booster.best_iteration < booster.num_trees()
    engine = TreeShapEngine.from_booster(booster)
    assert engine.n_trees == booster.best_iteration
    X_probe = _probe(12)
    np.testing.assert_allclose(
        engine.contributions(X_probe), _reference(booster, X_probe), rtol=0, atol=TOLERANCE
    )


def test_a_constant_tree_is_bias_only() -> None:
    X, _ = _data(200, 5)
    booster = lgb.train(
        {"objective": "regression", "verbose": -1, "min_data_in_leaf": 1000},
        lgb.Dataset(X, np.full(len(X), 3.5)),
        num_boost_round=2,
    )
    engine = TreeShapEngine.from_booster(booster)
    ours = engine.contributions(X[:10])
    np.testing.assert_allclose(ours, _reference(booster, X[:10]), rtol=0, atol=TOLERANCE)
    assert np.all(ours[:, :-1] == 0.0) and engine.n_paths == 0


def test_concurrent_callers_get_their_own_values(booster: lgb.Booster) -> None:
    # given: serving threads (one lead each, no GIL) and batch callers (every core) at once
    engine = TreeShapEngine.from_booster(booster)
    X = _probe(9)
    reference = _reference(booster, X)
    results: dict[int, np.ndarray] = {}

    def explain(worker: int) -> None:
        if worker % 2:
            results[worker] = np.vstack(
                [engine.contributions(X[i : i + 1], num_threads=1) for i in range(len(X))]
            )
        else:
            results[worker] = engine.contributions(X, num_threads=0)

    # when
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(explain, range(6)))
    # then
    for values in results.values():
        np.testing.assert_allclose(values, reference, rtol=0, atol=TOLERANCE)


def test_engine_pickles_with_its_tables(booster: lgb.Booster) -> None:
    engine = TreeShapEngine.from_booster(booster)
    loaded = pickle.loads(pickle.dumps(engine))
    X = _probe(6)
    np.testing.assert_array_equal(loaded.contributions(X), engine.contributions(X))
    assert loaded.table_bytes == engine.table_bytes and loaded.nbytes == engine.nbytes


def test_loading_compiles_the_kernels_before_any_request(tmp_path: Path) -> None:
    # given: a pickled engine
    X, y = _data(500, 10)
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, y), 5)
    path = tmp_path / "engine.pkl"
    path.write_bytes(pickle.dumps(TreeShapEngine.from_booster(booster)))
    # when: a fresh process loads it and looks at the kernels before explaining anything
    script = (
        "import pickle, sys\n"
        "from leadscore import treeshap\n"
        "assert not treeshap._explain_serial.signatures\n"
        "pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "print(len(treeshap._explain_serial.signatures), "
        "len(treeshap._explain_parallel.signatures))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    # then: both kernels are ready
    assert done.stdout.split() == ["1", "1"]


def test_empty_input_and_float32_input(booster: lgb.Booster) -> None:
    engine = TreeShapEngine.from_booster(booster)
    assert engine.contributions(np.empty((0, N_FEATURES))).shape == (0, N_FEATURES + 1)
    X = _probe(7).astype(np.float32)
    np.testing.assert_allclose(
        engine.contributions(X), _reference(booster, X), rtol=0, atol=TOLERANCE
    )


def test_bad_input_is_named(booster: lgb.Booster) -> None:
    engine = TreeShapEngine.from_booster(booster)
    with pytest.raises(ValueError, match="8 feature columns, not shape \\(3, 7\\)"):
        engine.contributions(np.zeros((3, 7)))
    with pytest.raises(ValueError, match="feature columns"):
        engine.contributions(np.zeros(N_FEATURES))
    with pytest.raises(ValueError, match="max_table_elements"):
        TreeShapEngine.from_booster(booster, max_table_elements=30)
    with pytest.raises(ValueError, match="max_table_bytes"):
        TreeShapEngine.from_booster(booster, max_table_bytes=-1)


def test_multiclass_boosters_are_refused() -> None:
    X, _ = _data(600, 8)
    y = np.arange(len(X)) % 3
    booster = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1},
        lgb.Dataset(X, y),
        num_boost_round=2,
    )
    with pytest.raises(ValueError, match="num_tree_per_iteration=3"):
        TreeShapEngine.from_booster(booster)


# -- the project's own model --------------------------------------------------------------
SPECS = [
    FEATURES_BY_NAME[n]
    for n in (
        "source_channel",
        "company_size",
        "demo_request_30d",
        "page_view_30d",
        "pricing_page_view_7d",
        "is_decision_maker",
        "days_since_last_activity",
    )
]


def _leads(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    channel = rng.choice(["website", "bought_list", "referral", None], n, p=[0.4, 0.4, 0.1, 0.1])
    size = rng.choice(["1-10", "11-50", "51-200", "201-1000", None], n)
    demos = rng.poisson(0.5, n).astype(float)
    pages = rng.poisson(3, n).astype(float)
    pages[rng.random(n) < 0.1] = np.nan
    pricing = rng.poisson(0.8, n).astype(float)
    decision = rng.choice([0.0, 1.0, np.nan], n, p=[0.5, 0.3, 0.2])
    recency = rng.exponential(10.0, n)
    recency[rng.random(n) < 0.15] = np.nan
    logit = (
        -2.5
        + 1.2 * demos
        + 0.4 * pricing
        + np.where(channel == "website", 1.0, 0.0)
        + np.nan_to_num(decision)
        - 0.05 * np.nan_to_num(recency)
    )
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "source_channel": channel,
            "company_size": size,
            "demo_request_30d": demos,
            "page_view_30d": pages,
            "pricing_page_view_7d": pricing,
            "is_decision_maker": decision,
            "days_since_last_activity": recency,
            "label": label,
        }
    )


@pytest.fixture(scope="module")
def scorer():
    return fit_scorer(
        train=_leads(5000, 1),
        calibration=_leads(2000, 2),
        specs=SPECS,
        params={
            "n_estimators": 80,
            "num_leaves": 15,
            "learning_rate": 0.1,
            "min_child_samples": 20,
        },
        bands={"hot_min": 0.4, "warm_min": 0.15},
        feature_service="lead_scoring_v2",
        seed=0,
        calibration_method="sigmoid",
    )


def _as_rows(frame: pd.DataFrame) -> list[dict]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def test_fit_scorer_model_is_explained_exactly(scorer) -> None:
    frame = _leads(1500, 3).drop(columns="label")
    frame.loc[frame.index[:5], "source_channel"] = "carrier_pigeon"  # unseen category
    X = scorer.encoder.transform(frame)
    reference = np.asarray(scorer.booster.predict(X, pred_contrib=True))
    for threads in (1, 0):
        np.testing.assert_allclose(
            scorer.contributions(X, num_threads=threads), reference, rtol=0, atol=TOLERANCE
        )
    # the served probabilities are the booster's, through the calibration
    served = scorer.score_rows(_as_rows(frame.iloc[:200]), top_k=3)
    expected = scorer.calibrate(scorer.booster.predict(X[:200], raw_score=True))
    np.testing.assert_allclose([s.probability for s in served], expected, rtol=0, atol=1e-6)
    explained = scorer.explain_frame(frame, chunk_rows=500)
    np.testing.assert_allclose(
        explained["probability"].to_numpy(),
        scorer.calibrate(scorer.booster.predict(X, raw_score=True)),
        rtol=0,
        atol=1e-6,
    )


def test_scorer_pickles_its_engine_and_older_pickles_get_one(scorer) -> None:
    frame = _leads(300, 4).drop(columns="label")
    expected = scorer.explain_frame(frame)
    # a pickle of this version carries the prepared engine
    loaded = pickle.loads(pickle.dumps(scorer))
    assert isinstance(loaded.explainer, TreeShapEngine)
    assert loaded.explainer.nbytes == scorer.explainer.nbytes
    pd.testing.assert_frame_equal(loaded.explain_frame(frame), expected)
    # a pickle of an older version (no engine) gets one when it is loaded
    state = dict(scorer.__dict__)
    del state["explainer"]
    older = type(scorer).__new__(type(scorer))
    older.__setstate__(state)
    assert isinstance(older.explainer, TreeShapEngine)
    pd.testing.assert_frame_equal(older.explain_frame(frame), expected)
