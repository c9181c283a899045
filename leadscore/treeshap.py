"""Exact path-dependent TreeSHAP for LightGBM boosters, compiled with numba.

The values are the ones LightGBM's ``predict(X, pred_contrib=True)`` returns (and
``shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")``): the Shapley values
of the game whose value for a set of known features is the tree's expected output when the
unknown ones are sent down both branches in proportion to the training data counts
(``internal_count`` / ``leaf_count``), plus the bias column (the expected output) last.

Algorithm: path decomposition with per-path tables
--------------------------------------------------
A tree's value is the sum over its leaves of one game per root-to-leaf path, and Shapley values
are linear, so each path is explained on its own (GPUTreeShap's decomposition). On a path, the
features met are merged into ``d`` unique elements (a feature split on twice is one element):
element ``j`` has a zero fraction ``z_j`` (the product of the data-count ratios child/parent at
that feature's nodes on the path) and a one fraction ``o_j`` in ``{0, 1}`` (1 when the row takes
the path's direction at every one of that feature's nodes). With ``U`` the set of satisfied
elements (``o_j = 1``) and ``v`` the leaf value, the path's game is
``f(S) = v * prod_{j in S} o_j * prod_{j not in S} z_j`` and its Shapley values work out as
(``w(k, d) = k! (d-k-1)! / d!``, ``e_m`` the elementary symmetric polynomials)::

    T(A)  = v * prod_{j not in A} z_j * sum_k w(k, d) * e_{|A|-k}(z_A)
    phi_i = -T(U)                             if i is not satisfied
    phi_i = (1 - z_i) / z_i * T(U \\ {i})      if i is satisfied

``T`` depends on the path and the subset only, not on the row, so it is computed once per path
for all ``2^d`` subsets when the model is prepared (Fast TreeSHAP v2's trade of memory for
time). Per row and tree: every internal node's decision is evaluated once and packed into a bit
word; per leaf, one XOR with the path's directions and one AND per element give ``U``, and
``d + 1`` table reads give the ``d`` contributions. That is ``O(T * L * D)`` simple operations
per row, hardly any branch on the data, against the ``O(T * L * D^2)`` recursion with path copies
and divisions of LightGBM's ``Tree::TreeSHAP``. The bias is ``sum over leaves of v * leaf_count /
root_count`` (``Tree::ExpectedValue``). Rows go in blocks of up to 512, tree by tree, so that a
tree's tables stay in cache for the whole block; a batch spreads its blocks over the cores
(numba ``prange``), one lead runs in the calling thread, without the GIL (concurrent requests
explain side by side).

Tables double with every element, so they are capped: a path gets one only if ``d <=
max_table_elements`` (default 16), all its ``z`` are positive and the tables so far stay within
``max_table_bytes`` (default 256 MiB, shortest paths first). Other paths are computed per row
from the same formula: ``e(z_U)`` is built in ``O(d^2)`` and divided by ``(1 + z_i t)`` for each
satisfied ``i`` (a stable recurrence since ``0 <= z_i <= 1``). Trees with more than 64 internal
nodes (their decisions do not fit one word) build each leaf's mask from the mask of the path
prefix it shares with the previous leaf instead.

Exactness: the same decisions as LightGBM's ``Tree::NumericalDecision`` and
``Tree::CategoricalDecision`` (missing types None/Zero/NaN, ``default_left``, ``kZeroThreshold``,
inputs within ``kZeroThreshold`` of zero read as zero as LightGBM's dense-row reader does,
categorical bitsets, negative or NaN categories going right), the same counts and leaf values
(``dump_model`` prints them to full precision). Only the floating-point summation order differs:
the values agree with ``pred_contrib`` to ~1e-13 (tested to 1e-6).

The prepared form (:class:`TreeShapEngine`) is plain numpy arrays: it is built once (when a
:class:`leadscore.scorer.LeadScorer` is constructed or unpickled from an older version), is
pickled with the model, and runs its compiled kernels once when built or unpickled, so no
request pays numba's compilation (the kernels are also cached on disk, ``cache=True``).
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

_CATEGORICAL = 1  # node_kind bits: categorical split; a NaN goes left; a zero goes left
_NAN_LEFT = 2
_ZERO_LEFT = 4
_MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}
_WORD_NODES = 64  # trees with at most this many internal nodes pack their decisions in a word
_MASK_BITS = 62  # paths with more unique features are read node by node
_BLOCK_ROWS = 512  # rows explained together, tree by tree (a tree's tables stay in cache)
_MIN_BLOCK_ROWS = 16
_PARALLEL_LOCK = threading.Lock()  # numba's workqueue layer takes one parallel call at a time


# -- compiled kernels ----------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _goes_left(
    fval: float, threshold: float, kind: int, cat_start: int, cat_len: int, cat_bits: np.ndarray
) -> np.int64:
    """LightGBM's ``Tree::Decision`` for one node: 1 for the left child, 0 for the right."""
    if kind & _CATEGORICAL:
        # static_cast<int> of NaN or of a value beyond int range is INT_MIN on x86: right.
        if np.isnan(fval) or fval >= 2147483648.0 or fval <= -2147483649.0:
            return np.int64(0)
        category = int(fval)  # truncates towards zero, as static_cast<int> does
        if category < 0:
            return np.int64(0)
        word = category >> 5
        if word >= cat_len:
            return np.int64(0)
        return np.int64((cat_bits[cat_start + word] >> (category & 31)) & 1)
    # Numerical: a NaN or a zero (within kZeroThreshold) takes the way prepared for it
    # (default_left for its missing type, else 0 <= threshold); any other value compares.
    if np.isnan(fval):
        return np.int64((kind >> 1) & 1)
    if -K_ZERO_THRESHOLD <= fval <= K_ZERO_THRESHOLD:
        return np.int64((kind >> 2) & 1)
    return np.int64(fval <= threshold)


@njit(cache=True, nogil=True)
def _add_path(
    phi: np.ndarray,
    mask: int,
    d: int,
    e0: int,
    v: float,
    table: int,
    tables: np.ndarray,
    elem_feature: np.ndarray,
    elem_z: np.ndarray,
    elem_ratio: np.ndarray,
    weights: np.ndarray,
    satisfied: np.ndarray,
    poly: np.ndarray,
    deflated: np.ndarray,
) -> None:
    """Add one path's contributions for a row, given its satisfied elements.

    ``mask`` holds them as bits when ``d <= _MASK_BITS``; otherwise ``satisfied`` does.
    """
    if table >= 0:
        unsatisfied = -tables[table + mask]
        for e in range(d):
            with_e = elem_ratio[e0 + e] * tables[table + (mask ^ (1 << e))]
            phi[elem_feature[e0 + e]] += with_e if (mask >> e) & 1 else unsatisfied
        return
    # No table: the same formula, its polynomial built for this row.
    if d <= _MASK_BITS:
        for e in range(d):
            satisfied[e] = (mask >> e) & 1
    zv = v
    u = 0
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
    unsatisfied = 0.0
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


@njit(cache=True, nogil=True)
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
    tree_word: np.ndarray,
    path_value: np.ndarray,
    path_elem_start: np.ndarray,
    path_table_start: np.ndarray,
    path_dir: np.ndarray,
    path_prefix: np.ndarray,
    path_node_start: np.ndarray,
    path_full_start: np.ndarray,
    elem_feature: np.ndarray,
    elem_z: np.ndarray,
    elem_ratio: np.ndarray,
    elem_nodes: np.ndarray,
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

    Rows are taken tree by tree, so a tree's arrays and tables stay in cache for the block.
    """
    n_trees = tree_node_start.shape[0] - 1
    n_features = out.shape[1] - 1
    left = np.empty(max(max_nodes, 1), dtype=np.int64)
    masks = np.empty(max_nodes + 2, dtype=np.int64)  # masks[k]: after the first k path nodes
    masks[0] = -1
    satisfied = np.empty(max(max_elems, 1), dtype=np.int64)
    poly = np.empty(max_elems + 1)
    deflated = np.empty(max_elems + 1)
    for t in range(n_trees):
        n0 = tree_node_start[t]
        n1 = tree_node_start[t + 1]
        p0 = tree_path_start[t]
        p1 = tree_path_start[t + 1]
        word = tree_word[t]
        for r in range(r0, r1):
            x = X[r]
            phi = out[r]
            if word:
                decisions = 0
                for k in range(n0, n1):
                    decisions |= _goes_left(
                        x[node_feature[k]],
                        node_threshold[k],
                        node_kind[k],
                        node_cat_start[k],
                        node_cat_len[k],
                        cat_bits,
                    ) << (k - n0)
                for p in range(p0, p1):
                    e0 = path_elem_start[p]
                    d = path_elem_start[p + 1] - e0
                    off = decisions ^ path_dir[p]  # nodes where the row leaves the path
                    mask = 0
                    for e in range(d):
                        mask |= int((off & elem_nodes[e0 + e]) == 0) << e
                    table = path_table_start[p]
                    if table >= 0:
                        unsatisfied = -tables[table + mask]
                        for e in range(d):
                            with_e = elem_ratio[e0 + e] * tables[table + (mask ^ (1 << e))]
                            phi[elem_feature[e0 + e]] += with_e if (mask >> e) & 1 else unsatisfied
                        continue
                    _add_path(
                        phi, mask, d, e0, path_value[p], path_table_start[p], tables,
                        elem_feature, elem_z, elem_ratio, weights, satisfied, poly, deflated,
                    )  # fmt: skip
                continue
            for k in range(n0, n1):
                left[k - n0] = _goes_left(
                    x[node_feature[k]],
                    node_threshold[k],
                    node_kind[k],
                    node_cat_start[k],
                    node_cat_len[k],
                    cat_bits,
                )
            for p in range(p0, p1):
                # The mask of the path prefix shared with the previous leaf, then its own nodes.
                depth = path_prefix[p]
                mask = masks[depth]
                for q in range(path_node_start[p], path_node_start[p + 1]):
                    element = pnode_elem[q]
                    if element < _MASK_BITS:
                        mask &= ~((left[pnode_node[q]] ^ pnode_left[q]) << element)
                    depth += 1
                    masks[depth] = mask
                e0 = path_elem_start[p]
                d = path_elem_start[p + 1] - e0
                if d <= _MASK_BITS:
                    mask &= (1 << d) - 1
                else:  # more elements than mask bits: read the whole path
                    satisfied[:d] = 1
                    for q in range(path_full_start[p], path_full_start[p + 1]):
                        if left[full_node[q]] != full_left[q]:
                            satisfied[full_elem[q]] = 0
                _add_path(
                    phi, mask, d, e0, path_value[p], path_table_start[p], tables,
                    elem_feature, elem_z, elem_ratio, weights, satisfied, poly, deflated,
                )  # fmt: skip
    for r in range(r0, r1):
        out[r, n_features] += bias


@njit(cache=True, nogil=True)
def _explain_serial(X: np.ndarray, out: np.ndarray, *model: Any) -> None:
    for r0 in range(0, X.shape[0], _BLOCK_ROWS):
        _explain_range(X, out, r0, min(r0 + _BLOCK_ROWS, X.shape[0]), *model)


@njit(cache=True, parallel=True)
def _explain_parallel(X: np.ndarray, out: np.ndarray, block: int, *model: Any) -> None:
    n_blocks = (X.shape[0] + block - 1) // block
    for b in prange(n_blocks):
        r0 = b * block
        _explain_range(X, out, r0, min(r0 + block, X.shape[0]), *model)


@njit(cache=True, nogil=True)
def _fill_tables(
    path_value: np.ndarray,
    elem_z: np.ndarray,
    path_elem_start: np.ndarray,
    path_table_start: np.ndarray,
    weights: np.ndarray,
    tables: np.ndarray,
) -> None:
    """``T(A)`` of every subset ``A`` of every tabled path's elements."""
    for p in range(path_table_start.shape[0]):
        start = path_table_start[p]
        if start < 0:
            continue
        e0 = path_elem_start[p]
        d = path_elem_start[p + 1] - e0
        n = 1 << d
        # poly[A, m]: the m-th elementary symmetric polynomial of the z of subset A
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
            outside = path_value[p]
            for e in range(d):
                if (a >> e) & 1:
                    u += 1
                else:
                    outside *= elem_z[e0 + e]
            total = 0.0
            for k in range(min(u, d - 1) + 1):
                total += w[k] * poly[a, u - k]
            tables[start + a] = outside * total


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
    tree_word: list[int] = field(default_factory=list)
    path_value: list[float] = field(default_factory=list)
    path_elem_start: list[int] = field(default_factory=lambda: [0])
    path_dir: list[int] = field(default_factory=list)
    path_prefix: list[int] = field(default_factory=list)
    path_node_start: list[int] = field(default_factory=lambda: [0])
    path_full_start: list[int] = field(default_factory=lambda: [0])
    elem_feature: list[int] = field(default_factory=list)
    elem_z: list[float] = field(default_factory=list)
    elem_nodes: list[int] = field(default_factory=list)
    pnode_node: list[int] = field(default_factory=list)
    pnode_left: list[int] = field(default_factory=list)
    pnode_elem: list[int] = field(default_factory=list)
    full_node: list[int] = field(default_factory=list)
    full_left: list[int] = field(default_factory=list)
    full_elem: list[int] = field(default_factory=list)
    bias: float = 0.0
    previous_steps: list[tuple[int, int, int]] = field(default_factory=list)

    def add_tree(self, index: int, root: Mapping[str, Any]) -> None:
        first_path = len(self.path_value)
        if "leaf_value" in root:  # a tree without a split: a constant
            self.bias += float(root["leaf_value"])
            self._close_tree(first_path)
            return
        first = len(self.node_feature)
        total = float(root["internal_count"])
        if total <= 0:
            raise ValueError(f"tree {index}: root internal_count must be positive, not {total}")
        # Depth-first, left first; a path is the list of (node, went left, count ratio).
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
        self._close_tree(first_path)

    def _add_node(self, index: int, node: Mapping[str, Any]) -> None:
        missing = _MISSING_TYPES.get(str(node.get("missing_type", "None")))
        if missing is None:
            raise ValueError(f"tree {index}: unknown missing_type {node.get('missing_type')!r}")
        default_left = bool(node.get("default_left"))
        self.node_feature.append(int(node["split_feature"]))
        if node["decision_type"] == "==":
            categories = [int(c) for c in str(node["threshold"]).split("||") if c != ""]
            words = (max(categories, default=-1) >> 5) + 1
            bits = [0] * words
            for c in categories:
                if c >= 0:
                    bits[c >> 5] |= 1 << (c & 31)
            self.node_kind.append(_CATEGORICAL)
            self.node_threshold.append(0.0)
            self.node_cat_start.append(len(self.cat_bits))
            self.node_cat_len.append(words)
            self.cat_bits.extend(bits)
        elif node["decision_type"] == "<=":
            threshold = float(node["threshold"])
            # Tree::NumericalDecision: NaN is read as 0 unless the missing type is NaN; a zero
            # (or a NaN read as one) goes the default way when the missing type is Zero.
            zero_left = default_left if missing == 1 else threshold >= 0.0
            nan_left = default_left if missing == 2 else zero_left
            self.node_kind.append(_NAN_LEFT * nan_left | _ZERO_LEFT * zero_left)
            self.node_threshold.append(threshold)
            self.node_cat_start.append(0)
            self.node_cat_len.append(0)
        else:
            raise ValueError(f"tree {index}: unknown decision_type {node['decision_type']!r}")

    def _add_path(self, first: int, value: float, path: list[tuple[int, bool, float]]) -> None:
        elements: dict[int, int] = {}  # feature -> element index, in order of first appearance
        z: list[float] = []
        nodes: list[int] = []  # per element: its nodes on the path, as bits
        steps: list[tuple[int, int, int]] = []  # (node, went left, element)
        directions = 0
        for local, went_left, ratio in path:
            feature = self.node_feature[first + local]
            if feature not in elements:
                elements[feature] = len(z)
                z.append(1.0)
                nodes.append(0)
            element = elements[feature]
            z[element] *= ratio
            if local < _WORD_NODES:
                nodes[element] |= 1 << local
                directions |= int(went_left) << local
            steps.append((local, int(went_left), element))
        # Nodes shared with the previous leaf of the tree need not be read again.
        shared = 0
        previous = self.previous_steps
        while shared < min(len(steps), len(previous)) and steps[shared] == previous[shared]:
            shared += 1
        self.previous_steps = steps
        self.path_prefix.append(shared)
        for local, direction, element in steps[shared:]:
            self.pnode_node.append(local)
            self.pnode_left.append(direction)
            self.pnode_elem.append(element)
        if len(z) > _MASK_BITS:  # too many elements for a bit mask: keep the whole path
            for local, direction, element in steps:
                self.full_node.append(local)
                self.full_left.append(direction)
                self.full_elem.append(element)
        self.path_full_start.append(len(self.full_node))
        self.path_dir.append(_signed64(directions))
        self.elem_feature.extend(elements)
        self.elem_z.extend(z)
        self.elem_nodes.extend(_signed64(bits) for bits in nodes)
        self.path_value.append(value)
        self.path_elem_start.append(len(self.elem_feature))
        self.path_node_start.append(len(self.pnode_node))

    def _close_tree(self, first_path: int) -> None:
        self.previous_steps = []
        n_nodes = len(self.node_feature) - self.tree_node_start[-1]
        longest = max(
            (
                self.path_elem_start[p + 1] - self.path_elem_start[p]
                for p in range(first_path, len(self.path_value))
            ),
            default=0,
        )
        self.tree_word.append(int(n_nodes <= _WORD_NODES and longest <= _MASK_BITS))
        self.tree_node_start.append(len(self.node_feature))
        self.tree_path_start.append(len(self.path_value))


def _signed64(bits: int) -> int:
    """A 64-bit pattern as the int64 holding it."""
    return bits - (1 << 64) if bits >= 1 << 63 else bits


def _shapley_weights(max_elems: int) -> np.ndarray:
    """``weights[d, k] = k! (d-k-1)! / d! = 1 / (d * C(d-1, k))`` for ``0 <= k < d``."""
    weights = np.zeros((max_elems + 1, max_elems + 1))
    for d in range(1, max_elems + 1):
        for k in range(d):
            weights[d, k] = 1.0 / (d * math.comb(d - 1, k))
    return weights


_INT_ARRAYS = (
    "node_feature",
    "node_kind",
    "node_cat_start",
    "node_cat_len",
    "tree_node_start",
    "tree_path_start",
    "tree_word",
    "path_elem_start",
    "path_dir",
    "path_prefix",
    "path_node_start",
    "path_full_start",
    "elem_feature",
    "elem_nodes",
    "pnode_node",
    "pnode_left",
    "pnode_elem",
    "full_node",
    "full_left",
    "full_elem",
)


class TreeShapEngine:
    """A LightGBM booster prepared for fast exact TreeSHAP (see the module docstring).

    Build it with :meth:`from_booster`; it holds numpy arrays only, so it pickles with the model.

    Attributes:
        n_features: Columns the input must have (the booster's ``max_feature_idx + 1``).
        bias: The expected value (the bias column of every row).
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], bias: float, n_features: int) -> None:
        self._arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
        self.bias = float(bias)
        self.n_features = int(n_features)
        node_start = self._arrays["tree_node_start"]
        elem_start = self._arrays["path_elem_start"]
        self._max_nodes = int(np.diff(node_start).max()) if len(node_start) > 1 else 0
        self._max_elems = int(np.diff(elem_start).max()) if len(elem_start) > 1 else 0
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
            max_table_elements: Longest path (in unique features) given a table, at most 24.
            max_table_bytes: Most memory for all tables together.

        Raises:
            ValueError: A multiclass, random-forest or linear-tree booster, a tree that cannot
                be read, or a cap out of range.
        """
        if not 0 <= max_table_elements <= 24:
            raise ValueError(f"max_table_elements must be within [0, 24], not {max_table_elements}")
        if max_table_bytes < 0:
            raise ValueError(f"max_table_bytes must not be negative, not {max_table_bytes}")
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
        elem_z = np.asarray(builder.elem_z, dtype=np.float64)
        positive = np.ones(len(lengths), dtype=bool)  # every zero fraction of the path is > 0
        if len(elem_z):  # (every path has at least one element)
            positive = np.logical_and.reduceat(elem_z > 0, elem_start[:-1])
        # Tables for the shortest paths first, within both caps; a path with a zero fraction of
        # 0 has none (its ratio (1 - z) / z is undefined).
        table_start = np.full(len(lengths), -1, dtype=np.int64)
        used = 0
        for p in np.argsort(lengths, kind="stable"):
            size = 1 << int(lengths[p])
            if lengths[p] > max_table_elements or (used + size) * 8 > max_table_bytes:
                break
            if positive[p]:
                table_start[p] = used
                used += size
        weights = _shapley_weights(max(int(lengths.max(initial=0)), 1))
        path_value = np.asarray(builder.path_value, dtype=np.float64)
        tables = np.zeros(used, dtype=np.float64)
        _fill_tables(path_value, elem_z, elem_start, table_start, weights, tables)
        with np.errstate(divide="ignore", invalid="ignore"):
            elem_ratio = np.where(elem_z > 0, (1.0 - elem_z) / elem_z, 0.0)
        arrays: dict[str, np.ndarray] = {
            name: np.asarray(getattr(builder, name), dtype=np.int64) for name in _INT_ARRAYS
        }
        arrays.update(
            node_threshold=np.asarray(builder.node_threshold, dtype=np.float64),
            cat_bits=np.asarray(builder.cat_bits, dtype=np.uint32),
            path_value=path_value,
            path_table_start=table_start,
            elem_z=elem_z,
            elem_ratio=elem_ratio,
            tables=tables,
            weights=weights,
        )
        return cls(arrays, builder.bias, int(dump["max_feature_idx"]) + 1)

    # -- state -----------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"arrays": self._arrays, "bias": self.bias, "n_features": self.n_features}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Load and warm up, so that the first explanation after loading pays no compile."""
        self.__init__(state["arrays"], state["bias"], state["n_features"])  # type: ignore[misc]

    def warm_up(self) -> None:
        """Run both kernels once (compiles them, or loads them from numba's disk cache)."""
        X = np.zeros((1, self.n_features))
        _explain_serial(X, np.zeros((1, self.n_features + 1)), *self._model())
        with _PARALLEL_LOCK:
            _explain_parallel(X, np.zeros((1, self.n_features + 1)), 1, *self._model())

    @property
    def n_trees(self) -> int:
        """Trees explained (those of the booster's default iterations)."""
        return len(self._arrays["tree_node_start"]) - 1

    @property
    def n_paths(self) -> int:
        """Root-to-leaf paths over all trees."""
        return len(self._arrays["path_value"])

    @property
    def n_tabled_paths(self) -> int:
        """Paths explained from a precomputed table (the others are computed per row)."""
        return int(np.count_nonzero(self._arrays["path_table_start"] >= 0))

    @property
    def table_bytes(self) -> int:
        """Memory of the tables."""
        return int(self._arrays["tables"].nbytes)

    @property
    def nbytes(self) -> int:
        """Memory of the whole prepared form."""
        return int(sum(a.nbytes for a in self._arrays.values()))

    def _model(self) -> tuple[Any, ...]:
        a = self._arrays
        return (
            self.bias,
            a["node_feature"],
            a["node_threshold"],
            a["node_kind"],
            a["node_cat_start"],
            a["node_cat_len"],
            a["cat_bits"],
            a["tree_node_start"],
            a["tree_path_start"],
            a["tree_word"],
            a["path_value"],
            a["path_elem_start"],
            a["path_table_start"],
            a["path_dir"],
            a["path_prefix"],
            a["path_node_start"],
            a["path_full_start"],
            a["elem_feature"],
            a["elem_z"],
            a["elem_ratio"],
            a["elem_nodes"],
            a["pnode_node"],
            a["pnode_left"],
            a["pnode_elem"],
            a["full_node"],
            a["full_left"],
            a["full_elem"],
            a["tables"],
            a["weights"],
            self._max_nodes,
            self._max_elems,
        )

    # -- explaining ------------------------------------------------------------------------
    def contributions(self, X: np.ndarray, *, num_threads: int = 1) -> np.ndarray:
        """SHAP values of rows: ``(n_rows, n_features + 1)``, the bias column last.

        The same values as ``booster.predict(X, pred_contrib=True)``; each row sums to the raw
        margin.

        Args:
            X: Encoded rows, ``(n_rows, n_features)`` (any real dtype; NaN is missing).
            num_threads: 1 explains in the calling thread (the serving path); 0 or less uses
                every core numba has; more uses that many (at most every core).

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
        cores = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        threads = cores if num_threads <= 0 else min(num_threads, cores)
        if threads == 1 or X.shape[0] < 2 * _MIN_BLOCK_ROWS:
            _explain_serial(X, out, *self._model())
            return out
        # Blocks of up to _BLOCK_ROWS rows, at least four per thread when there are enough rows.
        block = max(_MIN_BLOCK_ROWS, min(_BLOCK_ROWS, -(-X.shape[0] // (4 * threads))))
        with _PARALLEL_LOCK:
            previous = numba.get_num_threads()
            numba.set_num_threads(threads)
            try:
                _explain_parallel(X, out, block, *self._model())
            finally:
                numba.set_num_threads(previous)
        return out
