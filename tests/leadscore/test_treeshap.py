"""The TreeSHAP engine gives LightGBM's pred_contrib values, on every kind of tree and input."""

from __future__ import annotations

import base64
import itertools
import math
import pickle
import subprocess
import sys
import zlib
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


def test_every_kernel_and_block_size_gives_the_same_values(booster: lgb.Booster) -> None:
    # given: rows explained alone (the one-row kernel, as serving does), in batches too small
    # for a block (one by one), in blocks with a partial last one, and on every core
    engine = TreeShapEngine.from_booster(booster)
    X = _probe(3)[:150]
    reference = _reference(booster, X)
    # when
    alone = np.vstack([engine.contributions(X[i : i + 1]) for i in range(len(X))])
    small = np.vstack([engine.contributions(X[i : i + n]) for i, n in ((0, 2), (2, 3), (5, 4))])
    blocks = engine.contributions(X, num_threads=1)  # 64 + 64 + 22 rows
    parallel = engine.contributions(np.vstack([X] * 2), num_threads=2)
    # then
    np.testing.assert_allclose(alone, reference, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(small, reference[:9], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(blocks, reference, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(parallel, np.vstack([reference] * 2), rtol=0, atol=TOLERANCE)


def test_the_deep_model_has_long_paths_and_big_trees() -> None:
    # the "deep" parameters really exercise trees of more than 64 nodes and long paths
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
    engine = TreeShapEngine.from_booster(booster)
    assert engine.max_points == 35  # the quadrature grows with the path: ceil(70 / 2)
    for threads in (1, 0):
        np.testing.assert_allclose(
            engine.contributions(X, num_threads=threads), reference, rtol=0, atol=TOLERANCE
        )
    alone = np.vstack([engine.contributions(X[i : i + 1]) for i in range(40)])
    np.testing.assert_allclose(alone, reference[:40], rtol=0, atol=TOLERANCE)


def test_trees_of_every_point_count_in_one_model() -> None:
    # given: one booster whose trees need from 3 to 9 quadrature points (small, then big, then
    # huge trees on 40 features), so the one-row kernel pads some to 4 points, some to 8 and
    # leaves the widest to its general loop
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 40))
    X[:, :5] = rng.integers(0, 40, (3000, 5))
    X[rng.random(X.shape) < 0.05] = np.nan
    X[rng.random(X.shape) < 0.05] = 0.0
    logit = np.nan_to_num(X[:, 5:15]).sum(axis=1) / 3 + np.isin(X[:, 0], [1, 7, 33])
    y = (rng.random(3000) < 1 / (1 + np.exp(-logit))).astype(int)
    train = lgb.Dataset(X, y, categorical_feature=[0, 1, 2], free_raw_data=False)
    base = {"objective": "binary", "verbose": -1, "seed": 0, "num_threads": 1, "max_depth": -1}
    booster = None
    for leaves, min_data, rounds in ((6, 20, 3), (40, 3, 3), (600, 1, 2)):
        params = {**base, "num_leaves": leaves, "min_data_in_leaf": min_data}
        booster = lgb.train(params, train, rounds, init_model=booster, keep_training_booster=True)
    assert booster is not None
    engine = TreeShapEngine.from_booster(booster)
    points = engine._arrays["tree_int"][:-1, 2]
    assert points.min() <= 4 and np.any((points > 4) & (points <= 8)) and points.max() > 8
    # when: rows explained alone, in pairs and in blocks
    X_probe = X[:200].copy()
    X_probe[:10] = np.nan
    X_probe[10:20, :5] = -0.5  # categories truncated to 0
    X_probe[20:30, :5] = 1e12
    reference = _reference(booster, X_probe)
    alone = np.vstack([engine.contributions(X_probe[i : i + 1]) for i in range(len(X_probe))])
    pairs = np.vstack([engine.contributions(X_probe[i : i + 2]) for i in range(0, 20, 2)])
    # then
    np.testing.assert_allclose(alone, reference, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(pairs, reference[:20], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(engine.contributions(X_probe), reference, rtol=0, atol=TOLERANCE)


def _zero_count_chain() -> lgb.Booster:
    """A chain of 6 features whose third leaf had no training data (a zero fraction of 0)."""
    lines = _chain_model(6).splitlines()
    leaf_count = [10, 10, 0, 10, 10, 450, 500]
    internal = [sum(leaf_count[i:]) for i in range(6)]
    for i, text in enumerate(lines):
        key = text.partition("=")[0]
        if key in ("leaf_count", "leaf_weight"):
            lines[i] = f"{key}=" + " ".join(map(str, leaf_count))
        elif key in ("internal_count", "internal_weight"):
            lines[i] = f"{key}=" + " ".join(map(str, internal))
    return lgb.Booster(model_str="\n".join(lines))


def _brute_force_shap(booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
    """Shapley values of the path-dependent game by enumerating coalitions (numeric splits)."""
    trees = [tree["tree_structure"] for tree in booster.dump_model()["tree_info"]]

    def value(node: dict, known: set[int]) -> float:
        if "leaf_value" in node:
            return float(node["leaf_value"])
        feature = node["split_feature"]
        if feature in known:
            side = "left_child" if x[feature] <= node["threshold"] else "right_child"
            return value(node[side], known)
        total = 0.0
        for side in ("left_child", "right_child"):
            child = node[side]
            count = child.get("internal_count", child.get("leaf_count"))
            if count:
                total += count / node["internal_count"] * value(child, known)
        return total

    m = len(x)
    phi = np.zeros(m + 1)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for size in range(m):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for coalition in itertools.combinations(others, size):
                known = set(coalition)
                phi[i] += weight * sum(
                    value(tree, known | {i}) - value(tree, known) for tree in trees
                )
    phi[m] = sum(value(tree, set()) for tree in trees)
    return phi


def test_a_child_without_training_data_is_explained_by_the_definition() -> None:
    # given: a tree with an empty leaf; LightGBM's TreeSHAP divides by its zero fraction
    booster = _zero_count_chain()
    rng = np.random.default_rng(5)
    X = (rng.random((64, 6)) < 0.8).astype(float)
    reference = _reference(booster, X)
    undefined = np.isnan(reference).any(axis=1)
    assert undefined.any() and not undefined.all()
    engine = TreeShapEngine.from_booster(booster)
    # when
    batch = engine.contributions(X)
    alone = np.vstack([engine.contributions(X[i : i + 1]) for i in range(len(X))])
    # then: pred_contrib where it is defined, the Shapley values by enumeration everywhere
    for ours in (batch, alone):
        np.testing.assert_allclose(ours[~undefined], reference[~undefined], rtol=0, atol=TOLERANCE)
        for i in range(0, len(X), 4):
            np.testing.assert_allclose(
                ours[i], _brute_force_shap(booster, X[i]), rtol=0, atol=TOLERANCE
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


def test_engine_pickles_with_its_prepared_arrays(booster: lgb.Booster) -> None:
    engine = TreeShapEngine.from_booster(booster)
    loaded = pickle.loads(pickle.dumps(engine))
    X = _probe(6)
    np.testing.assert_array_equal(loaded.contributions(X), engine.contributions(X))
    assert loaded.nbytes == engine.nbytes and loaded.n_paths == engine.n_paths


# A LightGBM model (2 trees, a categorical split, a feature split on thrice on a path) and the
# engine the previous, table-based version (commit 15ba1c2) prepared for it, pickled together:
# zlib + base64 of pickle.dumps({"model": model_to_string(), "engine": engine}).
TABLE_ENGINE_PICKLE = """
eNrNWAt4FMUdv5AH4QwEEQki5dtPUbGSY2Z2Z3Y39pgoWB+pqPgEa49NbsOtXu7CPfKwWhMUBDk/ohwq4CNFoB8+ECkG
bZWlomIR21KrKGobRbHYig9atYi1/929TeKRS6Li93VzudmZ+c/8X7/f/CdpKVhaNMZjP9enJ6QK66JBPZy+4r7BHk8i
puveBj0WN6IRf4PkjSTrAjVhLR73Y/vdmg/U67GAkdBjWsKSwt6wVq2HA0YkqDf5kbdOawrU6loiGdMDRrDJL3qj1Vfr
NQmjQfdXGxEt1izEjdl1USNYgb2uYESr0+P+KdFwsi4SQELmBbsvxH0Ru1YYkdpo3H9luejDWFUlRWJYJqoiI7FC9BEF
K4gpqqiKlBFKrxIsQSJLkkwRoYRhkYpiBfEpkopliqEvKapCJEcQUUlCqqxQRaayyjDsiCXGKKwmhMgMiewqoRxXwEQF
qUAVkteOS9y4FpyQZSzIsur1XgJjEA8rbGFda4Ap5sRTS0DQ4vVhI+EGyi8KGH6I4I7P1gyIrEx8iKkClhSfojCBiD5V
lamAiY9hKgsyjGIsexOhmB4PRcNBPxKQjxIZMQmJVKIyOAl2+sAbSkXMqIoYUkVsjVGEiQTxkJEMcwqBlaAHU0lkSCIU
KwQr3qBeY1hQCCSa63W/ZaD94w3rtYlATcgAlUSQYDuhHL6JN2bMDrkTMCYKoJ4K5QwWaLWBBi2chIj4MEGiJIoiYhBO
hlVYinwII4QpgahLkCdGsGWRiJAiySpSiEwlLCLFspIShWFEIDcUqYRJlhxldhZVQlQiqozCGJLBaRVBIFQF0ivLomNF
o24Z6ac+An4yJhOmQsBkLAuS7EMKszMsK4AllQpE8lERwgfqJKIiEUsC4IhgpiigmgDyAGICJT6YBARJAESEKFMEzCyj
YH+FglmQDOJor4kmIwk/gWyrSFAht6JAMBYY8xoRoFREC3eHSZGdKGCEAY52OJjTSgBb6wWCBghVutdmnLMQw8AwRfap
MiCIIZ+MIVKU+igmRGAiYILQ7nWOWQwhQaSW1/BLJIFQ5gW0BqphNqjFDIAwAohaQ92YA8vjgbAR0bUYoD0eihmRa7TZ
gBZvhgL4u1BAQj4gHkAenCVgFTRUAUEYlpAEFBBFmWUzQIaAYVmUFaZKFBD9f8cBC+8ASwAwA/2WQQRhiwVwGCmQXJWo
4DliIrXTr0oABKIAirCsAmis5UAGoBGDk04E6GPJZgYD/sD5g6ClKhXtHRGA1wImIhJDIJzNAhEjUZYQnCRAEsVmgaQq
ClIAxxg4BVEmFuaRFRMMxgDoqcUCWKgoomxTFA5fgWJQxqgMrJIhjKoMuYS9qAxQF1VwE1PaGwmoSwIZHU4CsB6OOCLZ
0UGAZSdLoBlMtdJFsexEDhLN1F6YIPtkgLOiQGwZE6jqA3qCsZKFHFlgkk+lrF8iMPTtiQC2ARX0SFCI1gpWoYh7u6tY
XX00ltAiNXq8wutWPdjJrXt+4r6K8OpNp4r0yGxQkU6NgEgG4zXRmO6z9wxp9enUMItwF8PrWY7UkvSprWmrxhdpsZjW
HLffSyJQ713apVOjgJD1zb6AvVVdMpwwbNl0qiQQ02uikXgilqxJwFapQlsynRpsxcASWZKu8sxLT8mrTt+cnp6eUJVX
5Z2XDpWmCoMWV6wlgwwlvXCBM5ufyvtRetq0aed9BY/9VeVJpKsXTrkw37mMePIy7aCsvtsOVC4N26aG2G5eA9eSdGhY
6GjL0tAxPe08HjS7K7Kfoqx2oHK25mG2Zgsc8YQWS/Sh3jPAJ2+Acrb6ki71YT3yLXz/TspL7ZuQbUEu5/Md/aPddYWZ
1nv4PvVaIjTgfdwclHwNBfY+jdFYbygY5OwwvFf8lNrK9bBel9OCoc76kCcLj65HxVmeuZYNy7TDM+0xmXZUpnVdylzS
PWN72lVs2xU0Yr0YVOIYNCs/y5C8rI2Ls1L3TeVtQ46yDamP6bVGUx+2eHKQ1pODxN9Uvkey+oRdrmQV5EjakH6SV5pp
R2QlceThdtUmw+EB2/V9P84ZYeParQGHGzXWMaozf4An8EDHv2v/SOuzg+G1g2GBJ95HKHIVnWwc9Tc+up9+cT9F7vvS
54Si3uaQ9dVLKEY6oWj35Ki7g3JQNj/LtIKs8SO9X09XrGt6H67k9XP6ePoxcaDz33a/nq5YMD2CWcnrpz3S+zn12D4L
c+DL43jSUzJH+hzJ0NJuwRzB6Sno3Mu6Luw5rkajU4Nqe1xaQ2N7vbK6TicTXzS3lnxmvlX/7AejCz83J+XX6o+92clP
Wh7c/finT/Nccv7rtr29bPLbXXJOabf/xjAS8Rx3FTAtKfVnWnFR5i6UgY5VgOy/pnLU6AegRkuJOUP//IfN/IL8B/mB
tq186z1XbC54+RWO3r913t65N5kj699ZdcrwDfyv6ralZWe8xNMNi9ZPX73OPOfg5QsDi+8zv7xryW/b8p7hG297s2PU
3OfMWcua6haseMKc9K+pSwfnP+l4N9w2JaFVh3MX6exLg5BpJ2QxvTirKLs3KZRplaxiPLq3m1SRfe5fm+PMh7h0nmA/
u/mowMfHBj5+jLv9H/zlDPh8wCOvd9S93vHwYePn3j4ePvv5h/ut521eOn6mFhfe6urvCwzBI3ds6+p/OHjb+NLXdvIj
pW9Ylr61p+zZVOX/fdb8Tt6j/Nn/ze0jFDtObVILJ33GL7WfkyrdvnMKPM4fPeZ0+KDDxne9cM5D8xc9wjc+vbdy5bF7
efuT8z8Zs/0fXf2bSid/3nnj0ZVuf6Y5vf2VRwoqj5S++7P0LbEide7wLn3Tfzaleei7hZUOImx09ka/SjsMZ1qH3guB
PXfcW6nxecfOOP/qLdfzvIdvP+6LC1dwOqXog5aftPOjFrf898QvZphlo/95kdA8x5zferDmtl/GzNeSP+74+4rrzTOf
Xc9u3B7ld8/asC6qzePn3FNWcvqMZbxx5vmTLypu53fe8Mkfa69exg9MOmHL82WP8qMuKMv/6YlP8UXRe28+66OtfP62
pa3aqReZc05WT7v8rjpz8s5dmyZNXGR+ul5dm2JtZviOwdNWz73b3PXyjPvvmvhrc6Tw3oZ352w0JywItL4/eYu5Uz3+
0hv2NpqquW/teyPazGllnStbTlxpProY3zoe/cpcs3z5h2ueauVzF22fv+uNO/n4TQceOWvQan76ZbFNZ7c+xE/brhXe
MGo6X3ll5b7J44L8yakXX7fj4JVcaFj4w4OrmngiuXtoy1PzeLjltaM7Dj7Mx8T2bFuut3P0n9WdUyse497NW8suMVbz
F31LatJ/2sQPBTVv4+L1fNW5BzzqxBf5u1fRNeGa9Xz21O1DZzywg2945qQHz7jsd7xj1d9mdozYzQ8d8rfun1hufnXr
uEP3q5XmQx//u3FLGzP3//yC+pM7LzanHmeGblmgma/P2iysKF9gPnhm2xvrYteascINYzeOu82cuW/Mnj1P387z/YHG
L99cxT9rP//GpsJ7+M3mcb94Y/ETPFLbuea8x+/m5S/U/KZ03BP8pcVrh7yqrePTPt2/q+3V5xzSDHb+v9QbVAqqCubb
nGkZ2IX8I973fCf/etv9ONx4OcORZ7nb73l5SKYKqg0tnj6bP+/fXPrMO2NS3oh78Y+nqwqS1Unf/wDbqXA7
"""


def test_an_engine_pickled_by_the_table_based_version_is_converted_on_load() -> None:
    # when: the old pickle is loaded
    saved = pickle.loads(zlib.decompress(base64.b64decode("".join(TABLE_ENGINE_PICKLE.split()))))
    engine, booster = saved["engine"], lgb.Booster(model_str=saved["model"])
    # then: it is an engine of this version, with the values of pred_contrib
    assert isinstance(engine, TreeShapEngine) and engine.n_paths == 12
    rng = np.random.default_rng(12)
    X = rng.normal(size=(300, 4))
    X[:, 3] = rng.integers(-1, 7, 300)
    X[rng.random(300) < 0.1, 0] = np.nan
    reference = _reference(booster, X)
    np.testing.assert_allclose(engine.contributions(X), reference, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(engine.contributions(X[:1]), reference[:1], rtol=0, atol=TOLERANCE)
    assert engine.bias == pytest.approx(TreeShapEngine.from_booster(booster).bias, abs=1e-12)
    # and it pickles in the new format
    again = pickle.loads(pickle.dumps(engine))
    np.testing.assert_array_equal(again.contributions(X), engine.contributions(X))


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
        "print(len(treeshap._explain_row.signatures), len(treeshap._explain_serial.signatures), "
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
    # then: every kernel is ready
    assert done.stdout.split() == ["1", "1", "1"]


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
