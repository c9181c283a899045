"""Exact path-dependent TreeSHAP for LightGBM boosters, compiled with numba.

The values are the ones LightGBM's ``predict(X, pred_contrib=True)`` returns (and
``shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")``): the Shapley values
of the game whose value for a set of known features is the tree's expected output when the
unknown ones are sent down both branches in proportion to the training data counts
(``internal_count`` / ``leaf_count``), plus the bias column (the expected output) last.

Algorithm: path decomposition with per-path tables
-----------------------------------------------------
The value of a tree is the sum over its leaves of one game per root-to-leaf path, and Shapley
values are linear, so each path is explained on its own. On a path, the features met are
merged into ``d`` unique elements (a feature split on twice is one element): element ``j``
has a zero fraction ``z_j`` (the product of the data-count ratios child/parent at that
feature's nodes on the path) and a one fraction ``o_j`` in ``{0, 1}`` (1 when the row takes the
path's direction at every one of that feature's nodes). Let ``U`` be the set of elements with
``o_j = 1`` (the *satisfied* ones) and ``v`` the leaf value. The path's game is
``f(S) = v * prod_{j in S} o_j * prod_{j not in S} z_j`` and its Shapley value for element ``i``
works out as (``w(k, d) = k! (d-k-1)! / d!``)::

    P(A)  = sum_{S subset of A} w(|S|, d) * prod_{j in A \\ S} z_j
          = sum_k w(k, d) * e_{|A|-k}(z_A)              (e: elementary symmetric polynomials)
    Z     = v * prod_{j not in U} z_j
    phi_i = -Z * P(U)                      if i is not satisfied
    phi_i = Z * (1 - z_i) * P(U \\ {i})     if i is satisfied

``P`` depends only on the path (its ``z``) and on the subset, not on the row. So it is
precomputed once per path for all ``2^d`` subsets (a *table*, ``2^d`` float64) when the model is
prepared, and per row the work is: evaluate each internal node's decision once per tree, build
each leaf's satisfied mask ``U`` from the decisions on its path, multiply the unsatisfied
``z``, and read ``d + 1`` table entries. That is ``O(T * L * D)`` per row against the classic
algorithm's ``O(T * L * D^2)`` with its recursion, path copies and divisions (LightGBM's own
``Tree::TreeSHAP``) -- the "Fast TreeSHAP v2" trade of memory for time, with GPUTreeShap's path
decomposition. The bias is ``sum over leaves of v * leaf_count / root_count``, as in
``Tree::ExpectedValue``.

Tables double with every element, so they are capped: a path gets one only if ``d <=
max_table_elements`` (default 16) and the tables so far stay within ``max_table_bytes``
(default 256 MiB, smallest paths first). Other paths (deep trees) are evaluated per row from
the same formula without a table: the polynomial ``e(z_U)`` is built in ``O(d^2)`` and divided
by ``(1 + z_i t)`` for each satisfied ``i`` (a stable recurrence since ``0 <= z_i <= 1``), which is
``O(d^2)`` per path like the classic algorithm but without its recursion.

Exactness: the same decisions as LightGBM's ``Tree::NumericalDecision`` and
``Tree::CategoricalDecision`` (missing types None/Zero/NaN, ``default_left``, ``kZeroThreshold``,
inputs within ``kZeroThreshold`` of zero read as zero as LightGBM's dense-row reader does,
categorical bitsets, negative or NaN categories going right), the same counts, the same leaf
values (``dump_model`` prints them in full precision). Only floating-point summation order
differs: agreement with ``pred_contrib`` is to ~1e-12, tested to 1e-6.

The prepared form (:class:`TreeShapEngine`) is plain numpy arrays: it is built once (when a
:class:`leadscore.scorer.LeadScorer` is constructed or unpickled from an older version), is
pickled with the model, and warms the compiled kernels up when built or unpickled, so no
request pays numba's compile (the kernels are also cached on disk with ``cache=True``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numba
import numpy as np
from numba import njit, prange

K_ZERO_THRESHOLD = float(np.float32(1e-35))
"""LightGBM's ``kZeroThreshold`` (``1e-35f`` as a double)."""

_CATEGORICAL = 1
_DEFAULT_LEFT = 2
_MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}
_MASK_BITS = 62  # paths with more unique features are read node by node
_BLOCK_ROWS = 16  # rows explained together, tree by tree (keeps a tree's arrays in cache)
_PARALLEL_LOCK = threading.Lock()  # numba's workqueue layer takes one parallel call at a time


# -- compiled kernels ----------------------------------------------------------------------
@njit(cache=True, inline="always")
def _goes_left(
    fval: float, threshold: float, kind: int, cat_start: int, cat_len: int, cat_bits: np.ndarray
) -> bool:
    """LightGBM's ``Tree::Decision`` for one node: True for the left child."""
    if kind & _CATEGORICAL:
        # static_cast<int> of NaN or of a value beyond int range is INT_MIN on x86: right.
        if np.isnan(fval) or fval >= 2147483648.0 or fval <= -2147483649.0:
            return False
        category = int(fval)  # truncates towards zero, as static_cast<int> does
        if category < 0:
            return False
        word = category >> 5
        if word >= cat_len:
            return False
        return ((cat_bits[cat_start + word] >> np.uint32(category & 31)) & np.uint32(1)) != 0
    missing = (kind >> 2) & 3
    if np.isnan(fval):
        if missing == 2:
            return (kind & _DEFAULT_LEFT) != 0
        fval = 0.0
    elif -K_ZERO_THRESHOLD <= fval <= K_ZERO_THRESHOLD:
        fval = 0.0  # the dense-row reader drops such values: they are read as 0
    if missing == 1 and fval == 0.0:
        return (kind & _DEFAULT_LEFT) != 0
    return fval <= threshold


@njit(cache=True)
def _explain_range(
    X: np.ndarray,
    out: np.ndarray,
    r0: int,
    r1: int,
    bias: float,
    node_feature: np.ndarray,
    node_threshold: np.ndarray,
    node_kind: np.ndarray,
    node_cat_start: np.ndarray,
    node_cat_len: np.ndarray,
    cat_bits: np.ndarray,
    tree_node_start: np.ndarray,
    tree_path_start: np.ndarray,
    path_value: np.ndarray,
    path_elem_start: np.ndarray,
    path_prefix: np.ndarray,
    path_node_start: np.ndarray,
    path_table_start: np.ndarray,
    path_full_start: np.ndarray,
    elem_feature: np.ndarray,
    elem_z: np.ndarray,
    pnode_node: np.ndarray,
    pnode_left: np.ndarray,
    pnode_elem: np.ndarray,
    full_node: np.ndarray,
    full_left: np.ndarray,
    full_elem: np.ndarray,
    tables: np.ndarray,
    weights: np.ndarray,
    max_nodes: int,
    max_elems: int,
) -> None:
    """Add the contributions of rows ``r0:r1`` of ``X`` to ``out`` (zeroed by the caller).

    Rows are taken tree by tree (a tree's arrays and tables stay in cache for the block). A
    leaf's satisfied mask is built from the masks of the path prefix it shares with the
    previous leaf (``path_prefix``): about two new nodes per leaf instead of its whole path.
    """
    n_trees = tree_node_start.shape[0] - 1
    n_features = out.shape[1] - 1
    left = np.empty(max(max_nodes, 1), dtype=np.int64)
    masks = np.empty(max_nodes + 2, dtype=np.int64)  # masks[k]: after the first k path nodes
    masks[0] = -1
    satisfied = np.empty(max(max_elems, 1), dtype=np.uint8)
    poly = np.empty(max_elems + 1)
    deflated = np.empty(max_elems + 1)
    for t in range(n_trees):
        n0 = tree_node_start[t]
        n1 = tree_node_start[t + 1]
        for r in range(r0, r1):
            x = X[r]
            phi = out[r]
            for k in range(n0, n1):
                left[k - n0] = _goes_left(
                    x[node_feature[k]],
                    node_threshold[k],
                    node_kind[k],
                    node_cat_start[k],
                    node_cat_len[k],
                    cat_bits,
                )
            for p in range(tree_path_start[t], tree_path_start[t + 1]):
                depth = path_prefix[p]
                mask = masks[depth]
                for q in range(path_node_start[p], path_node_start[p + 1]):
                    # clears the element's bit when the row leaves the path at this node
                    element = pnode_elem[q]
                    if element < 62:
                        mask &= ~((left[pnode_node[q]] ^ pnode_left[q]) << element)
                    depth += 1
                    masks[depth] = mask
                e0 = path_elem_start[p]
                d = path_elem_start[p + 1] - e0
                v = path_value[p]
                table = path_table_start[p]
                if table >= 0:
                    mask &= (1 << d) - 1
                    zv = v
                    for e in range(d):
                        z = elem_z[e0 + e]
                        zv *= 1.0 if (mask >> e) & 1 else z
                    unsatisfied = -zv * tables[table + mask]
                    for e in range(d):
                        z = elem_z[e0 + e]
                        without = zv * (1.0 - z) * tables[table + (mask ^ (1 << e))]
                        phi[elem_feature[e0 + e]] += without if (mask >> e) & 1 else unsatisfied
                    continue
                # No table: the same formula, its polynomial built for this row.
                if d <= 62:
                    for e in range(d):
                        satisfied[e] = (mask >> e) & 1
                else:  # more elements than mask bits: read the whole path
                    for e in range(d):
                        satisfied[e] = 1
                    for q in range(path_full_start[p], path_full_start[p + 1]):
                        if left[full_node[q]] != full_left[q]:
                            satisfied[full_elem[q]] = 0
                zv = v
                u = 0
                unsatisfied = 0.0
                poly[0] = 1.0
                for e in range(d):
                    z = elem_z[e0 + e]
                    if satisfied[e]:
                        u += 1
                        poly[u] = 0.0
                        for m in range(u, 0, -1):
                            poly[m] += z * poly[m - 1]
                    else:
                        zv *= z
                w = weights[d]
                if u < d:
                    total = 0.0
                    for k in range(u + 1):
                        total += w[k] * poly[u - k]
                    unsatisfied = zv * total
                for e in range(d):
                    f = elem_feature[e0 + e]
                    if satisfied[e]:
                        z = elem_z[e0 + e]
                        deflated[0] = 1.0
                        for m in range(1, u):
                            deflated[m] = poly[m] - z * deflated[m - 1]
                        total = 0.0
                        for k in range(u):
                            total += w[k] * deflated[u - 1 - k]
                        phi[f] += zv * (1.0 - z) * total
                    else:
                        phi[f] -= unsatisfied
    for r in range(r0, r1):
        out[r, n_features] += bias


@njit(cache=True)
def _explain_serial(X: np.ndarray, out: np.ndarray, *model: Any) -> None:
    _explain_range(X, out, 0, X.shape[0], *model)


@njit(cache=True, parallel=True)
def _explain_parallel(X: np.ndarray, out: np.ndarray, *model: Any) -> None:
    n_blocks = (X.shape[0] + _BLOCK_ROWS - 1) // _BLOCK_ROWS
    for b in prange(n_blocks):
        r0 = b * _BLOCK_ROWS
        _explain_range(X, out, r0, min(r0 + _BLOCK_ROWS, X.shape[0]), *model)


@njit(cache=True)
def _fill_tables(
    elem_z: np.ndarray,
    path_elem_start: np.ndarray,
    path_table_start: np.ndarray,
    weights: np.ndarray,
    tables: np.ndarray,
) -> None:
    """``P(A)`` of every subset ``A`` of every tabled path's elements."""
    for p in range(path_table_start.shape[0]):
        start = path_table_start[p]
        if start < 0:
            continue
        e0 = path_elem_start[p]
        d = path_elem_start[p + 1] - e0
        n = 1 << d
        # poly[A, m]: m-th elementary symmetric polynomial of the z of subset A
        poly = np.zeros((n, d + 1))
        poly[0, 0] = 1.0
        for a in range(1, n):
            low = 0
            while not (a >> low) & 1:
                low += 1
            prev = a ^ (1 << low)
            z = elem_z[e0 + low]
            poly[a, 0] = 1.0
            for m in range(1, d + 1):
                poly[a, m] = poly[prev, m] + z * poly[prev, m - 1]
        w = weights[d]
        for a in range(n):
            u = 0
            for e in range(d):
                u += (a >> e) & 1
            total = 0.0
            for k in range(min(u, d - 1) + 1):
                total += w[k] * poly[a, u - k]
            tables[start + a] = total


# -- preparing a booster -------------------------------------------------------------------
@dataclass
class _Builder:
    """Flat arrays of a model's trees and paths while they are read from ``dump_model``."""

    node_feature: list[int] = field(default_factory=list)
    node_threshold: list[float] = field(default_factory=list)
    node_kind: list[int] = field(default_factory=list)
    node_cat_start: list[int] = field(default_factory=list)
    node_cat_len: list[int] = field(default_factory=list)
    cat_bits: list[int] = field(default_factory=list)
    tree_node_start: list[int] = field(default_factory=lambda: [0])
    tree_path_start: list[int] = field(default_factory=lambda: [0])
    path_value: list[float] = field(default_factory=list)
    path_elem_start: list[int] = field(default_factory=lambda: [0])
    path_node_start: list[int] = field(default_factory=lambda: [0])
    elem_feature: list[int] = field(default_factory=list)
    elem_z: list[float] = field(default_factory=list)
    pnode_node: list[int] = field(default_factory=list)
    pnode_left: list[int] = field(default_factory=list)
    pnode_elem: list[int] = field(default_factory=list)
    path_prefix: list[int] = field(default_factory=list)
    path_full_start: list[int] = field(default_factory=lambda: [0])
    full_node: list[int] = field(default_factory=list)
    full_left: list[int] = field(default_factory=list)
    full_elem: list[int] = field(default_factory=list)
    bias: float = 0.0
    _previous_steps: list[tuple[int, int, int]] = field(default_factory=list)

    def add_tree(self, index: int, root: Mapping[str, Any]) -> None:
        if "leaf_value" in root:  # a tree without a split: a constant
            self.bias += float(root["leaf_value"])
            self._close_tree()
            return
        first = len(self.node_feature)
        total = float(root["internal_count"])
        if total <= 0:
            raise ValueError(f"tree {index}: root internal_count must be positive, not {total}")
        # Depth-first walk; a path is the list of (node, went_left, count ratio) down to a leaf.
        stack: list[tuple[Mapping[str, Any], list[tuple[int, bool, float]]]] = [(root, [])]
        while stack:
            node, path = stack.pop()
            if "leaf_value" in node:
                if "leaf_coeff" in node:
                    raise ValueError(f"tree {index}: linear trees are not supported")
                value = float(node["leaf_value"])
                self.bias += value * float(node["leaf_count"]) / total
                self._add_path(first, value, path)
                continue
            local = len(self.node_feature) - first
            self._add_node(index, node)
            count = float(node["internal_count"])
            for child, went_left in ((node["right_child"], False), (node["left_child"], True)):
                child_count = float(child.get("internal_count", child.get("leaf_count", 0.0)))
                ratio = child_count / count if count > 0 else 0.0
                stack.append((child, [*path, (local, went_left, ratio)]))
        self._close_tree()

    def _add_node(self, index: int, node: Mapping[str, Any]) -> None:
        missing = _MISSING_TYPES.get(str(node.get("missing_type", "None")))
        if missing is None:
            raise ValueError(f"tree {index}: unknown missing_type {node.get('missing_type')!r}")
        kind = (missing << 2) | (_DEFAULT_LEFT if node.get("default_left") else 0)
        self.node_feature.append(int(node["split_feature"]))
        if node["decision_type"] == "==":
            categories = [int(c) for c in str(node["threshold"]).split("||") if c != ""]
            words = (max(categories, default=-1) >> 5) + 1
            bits = [0] * words
            for c in categories:
                if c >= 0:
                    bits[c >> 5] |= 1 << (c & 31)
            self.node_kind.append(kind | _CATEGORICAL)
            self.node_threshold.append(0.0)
            self.node_cat_start.append(len(self.cat_bits))
            self.node_cat_len.append(words)
            self.cat_bits.extend(bits)
        elif node["decision_type"] == "<=":
            self.node_kind.append(kind)
            self.node_threshold.append(float(node["threshold"]))
            self.node_cat_start.append(0)
            self.node_cat_len.append(0)
        else:
            raise ValueError(f"tree {index}: unknown decision_type {node['decision_type']!r}")

    def _add_path(self, first: int, value: float, path: list[tuple[int, bool, float]]) -> None:
        elements: dict[int, int] = {}  # feature -> element index, in order of first appearance
        z: list[float] = []
        steps: list[tuple[int, int, int]] = []  # (node, went left, element)
        for local, went_left, ratio in path:
            feature = self.node_feature[first + local]
            if feature not in elements:
                elements[feature] = len(z)
                z.append(1.0)
            element = elements[feature]
            z[element] *= ratio
            steps.append((local, int(went_left), element))
        # Nodes shared with the previous leaf of the tree need not be read again.
        shared = 0
        previous = self._previous_steps
        while shared < min(len(steps), len(previous)) and steps[shared] == previous[shared]:
            shared += 1
        self._previous_steps = steps
        self.path_prefix.append(shared)
        for local, went_left, element in steps[shared:]:
            self.pnode_node.append(local)
            self.pnode_left.append(went_left)
            self.pnode_elem.append(element)
        if len(z) > _MASK_BITS:  # too many elements for a bit mask: keep the whole path
            for local, went_left, element in steps:
                self.full_node.append(local)
                self.full_left.append(went_left)
                self.full_elem.append(element)
        self.path_full_start.append(len(self.full_node))
        self.elem_feature.extend(elements)
        self.elem_z.extend(z)
        self.path_value.append(value)
        self.path_elem_start.append(len(self.elem_feature))
        self.path_node_start.append(len(self.pnode_node))

    def _close_tree(self) -> None:
        self._previous_steps = []
        self.tree_node_start.append(len(self.node_feature))
        self.tree_path_start.append(len(self.path_value))


def _shapley_weights(max_elems: int) -> np.ndarray:
    """``weights[d, k] = k! (d-k-1)! / d! = 1 / (d * C(d-1, k))`` for ``0 <= k < d``."""
    weights = np.zeros((max_elems + 1, max_elems + 1))
    for d in range(1, max_elems + 1):
        for k in range(d):
            weights[d, k] = 1.0 / (d * math.comb(d - 1, k))
    return weights


class TreeShapEngine:
    """A LightGBM booster prepared for fast exact TreeSHAP (see the module docstring).

    Build it with :meth:`from_booster`; it holds numpy arrays only, so it pickles with the model.

    Attributes:
        n_features: Columns the input must have (the booster's ``max_feature_idx + 1``).
        n_trees: Trees explained.
        n_paths: Root-to-leaf paths over all trees.
        n_tabled_paths: Paths explained from a precomputed table (the others per row).
        table_bytes: Memory of the tables.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], bias: float, n_features: int) -> None:
        self._arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
        self.bias = float(bias)
        self.n_features = int(n_features)
        self.warm_up()

    # -- building ------------------------------------------------------------------------
    @classmethod
    def from_booster(
        cls,
        booster: lgb.Booster,
        *,
        max_table_elements: int = 16,
        max_table_bytes: int = 256 * 2**20,
    ) -> TreeShapEngine:
        """Prepare ``booster`` (the iterations its ``predict`` uses by default).

        Args:
            booster: A single-output LightGBM booster (binary, regression, ...).
            max_table_elements: Longest path (in unique features) given a table.
            max_table_bytes: Most memory for all tables together.

        Raises:
            ValueError: A multiclass, random-forest or linear-tree booster, or a tree that
                cannot be read.
        """
        if max_table_elements < 0 or max_table_elements > 24:
            raise ValueError(
                f"max_table_elements must be within [0, 24], not {max_table_elements}"
            )
        dump = booster.dump_model()
        if int(dump.get("num_tree_per_iteration", 1)) != 1:
            raise ValueError(
                "booster: only single-output models are supported, not "
                f"num_tree_per_iteration={dump['num_tree_per_iteration']}"
            )
        if dump.get("average_output"):
            raise ValueError("booster: random forest mode (average_output) is not supported")
        builder = _Builder()
        for tree in dump["tree_info"]:
            builder.add_tree(int(tree["tree_index"]), tree["tree_structure"])
        elem_start = np.asarray(builder.path_elem_start, dtype=np.int64)
        lengths = np.diff(elem_start)
        max_elems = int(lengths.max()) if len(lengths) else 0
        # Tables for the shortest paths first, within both caps.
        table_start = np.full(len(lengths), -1, dtype=np.int64)
        used = 0
        for p in np.argsort(lengths, kind="stable"):
            size = 1 << int(lengths[p])
            if lengths[p] > max_table_elements or (used + size) * 8 > max_table_bytes:
                break
            table_start[p] = used
            used += size
        weights = _shapley_weights(max_elems)
        elem_z = np.asarray(builder.elem_z, dtype=np.float64)
        tables = np.zeros(used, dtype=np.float64)
        _fill_tables(elem_z, elem_start, table_start, weights, tables)
        node_start = np.asarray(builder.tree_node_start, dtype=np.int64)
        arrays = {
            "node_feature": np.asarray(builder.node_feature, dtype=np.int64),
            "node_threshold": np.asarray(builder.node_threshold, dtype=np.float64),
            "node_kind": np.asarray(builder.node_kind, dtype=np.int64),
            "node_cat_start": np.asarray(builder.node_cat_start, dtype=np.int64),
            "node_cat_len": np.asarray(builder.node_cat_len, dtype=np.int64),
            "cat_bits": np.asarray(builder.cat_bits, dtype=np.uint32),
            "tree_node_start": node_start,
            "tree_path_start": np.asarray(builder.tree_path_start, dtype=np.int64),
            "path_value": np.asarray(builder.path_value, dtype=np.float64),
            "path_elem_start": elem_start,
            "path_prefix": np.asarray(builder.path_prefix, dtype=np.int64),
            "path_node_start": np.asarray(builder.path_node_start, dtype=np.int64),
            "path_table_start": table_start,
            "path_full_start": np.asarray(builder.path_full_start, dtype=np.int64),
            "elem_feature": np.asarray(builder.elem_feature, dtype=np.int64),
            "elem_z": elem_z,
            "pnode_node": np.asarray(builder.pnode_node, dtype=np.int64),
            "pnode_left": np.asarray(builder.pnode_left, dtype=np.int64),
            "pnode_elem": np.asarray(builder.pnode_elem, dtype=np.int64),
            "full_node": np.asarray(builder.full_node, dtype=np.int64),
            "full_left": np.asarray(builder.full_left, dtype=np.int64),
            "full_elem": np.asarray(builder.full_elem, dtype=np.int64),
            "tables": tables,
            "weights": weights,
        }
        return cls(arrays, builder.bias, int(dump["max_feature_idx"]) + 1)

    # -- state -----------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"arrays": self._arrays, "bias": self.bias, "n_features": self.n_features}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Load and warm up, so the first explanation after loading pays no compile."""
        self.__init__(state["arrays"], state["bias"], state["n_features"])  # type: ignore[misc]

    def warm_up(self) -> None:
        """Run both kernels once (compiles them, or loads them from numba's cache)."""
        X = np.zeros((1, self.n_features))
        _explain_serial(X, np.zeros((1, self.n_features + 1)), *self._model())
        with _PARALLEL_LOCK:
            _explain_parallel(X, np.zeros((1, self.n_features + 1)), *self._model())

    @property
    def n_trees(self) -> int:
        return len(self._arrays["tree_node_start"]) - 1

    @property
    def n_paths(self) -> int:
        return len(self._arrays["path_value"])

    @property
    def n_tabled_paths(self) -> int:
        return int(np.count_nonzero(self._arrays["path_table_start"] >= 0))

    @property
    def table_bytes(self) -> int:
        return int(self._arrays["tables"].nbytes)

    def _model(self) -> tuple[Any, ...]:
        a = self._arrays
        node_start = a["tree_node_start"]
        elem_start = a["path_elem_start"]
        return (
            self.bias,
            a["node_feature"],
            a["node_threshold"],
            a["node_kind"],
            a["node_cat_start"],
            a["node_cat_len"],
            a["cat_bits"],
            node_start,
            a["tree_path_start"],
            a["path_value"],
            elem_start,
            a["path_prefix"],
            a["path_node_start"],
            a["path_table_start"],
            a["path_full_start"],
            a["elem_feature"],
            a["elem_z"],
            a["pnode_node"],
            a["pnode_left"],
            a["pnode_elem"],
            a["full_node"],
            a["full_left"],
            a["full_elem"],
            a["tables"],
            a["weights"],
            int(np.diff(node_start).max()) if len(node_start) > 1 else 0,
            int(np.diff(elem_start).max()) if len(elem_start) > 1 else 0,
        )

    # -- explaining ------------------------------------------------------------------------
    def contributions(self, X: np.ndarray, *, num_threads: int = 1) -> np.ndarray:
        """SHAP values of rows: ``(n_rows, n_features + 1)``, the bias column last.

        The same values as ``booster.predict(X, pred_contrib=True)``; each row sums to the raw
        margin.

        Args:
            X: Encoded rows, ``(n_rows, n_features)`` (any float dtype; NaN is missing).
            num_threads: 1 explains in the calling thread (the serving path); 0 or less uses
                every core numba has, more uses that many (at most every core).

        Raises:
            ValueError: ``X`` is not a 2-d matrix with ``n_features`` columns.
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"X must be a matrix of {self.n_features} feature columns, not shape {X.shape}"
            )
        X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.zeros((X.shape[0], self.n_features + 1))
        if X.shape[0] == 0:
            return out
        if num_threads == 1 or X.shape[0] <= _BLOCK_ROWS:
            _explain_serial(X, out, *self._model())
            return out
        threads = numba.config.NUMBA_NUM_THREADS
        threads = threads if num_threads <= 0 else min(num_threads, threads)
        with _PARALLEL_LOCK:
            previous = numba.get_num_threads()
            numba.set_num_threads(threads)
            try:
                _explain_parallel(X, out, *self._model())
            finally:
                numba.set_num_threads(previous)
        return out
