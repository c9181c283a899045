"""Exact path-dependent TreeSHAP for LightGBM boosters, compiled with numba.

The values are the ones LightGBM's ``predict(X, pred_contrib=True)`` returns (and
``shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")``): the Shapley values
of the game whose value for a set of known features is the tree's expected output when the
unknown ones are sent down both branches in proportion to the training data counts
(``internal_count`` / ``leaf_count``), plus the bias column (the expected output) last.

Algorithm: one pass over each tree, polynomials kept as values at quadrature points
--------------------------------------------------------------------------------------
A tree's value is the sum over its leaves of one game per root-to-leaf path, and Shapley values
are linear, so each path can be explained on its own (GPUTreeShap's decomposition). On a path
the features met are merged into unique elements (a feature split on twice is one element):
element ``j`` has a zero fraction ``z_j`` (the product of the data-count ratios child/parent at
that feature's nodes on the path) and a one fraction ``o_j`` in ``{0, 1}`` (1 when the row takes
the path's direction at every one of that feature's nodes). With ``q_j(t) = z_j + t (o_j -
z_j)``, ``v`` the leaf value and ``P(t) = v * prod_j q_j(t)``, the Shapley value of element
``i`` in the path's game is the integral of the multilinear extension's derivative along the
diagonal::

    phi_i = (o_i - z_i) * integral_0^1 P(t) / q_i(t) dt

``P / q_i`` is a polynomial of degree ``d - 1`` (``d`` elements), so Gauss-Legendre quadrature
with ``n = ceil(d / 2)`` points integrates it exactly: every polynomial is held as its values at
the ``n`` points of its tree (``n`` from the tree's longest path), and every operation on it is
point-wise (no division of polynomials, no binomial weights).

The paths of a tree share prefixes, so the tree is walked once, depth first (the idea of Linear
TreeShap, Yu et al., NeurIPS 2022, arXiv 2209.08192, there with polynomial coefficients):

* going down an edge ``e`` into a node, the path's product ``P`` is multiplied by the edge's
  ``Q_e`` (the ``q`` of the edge's feature with the ratios and directions of that feature's
  edges so far) and divided by the ``Q`` of the same feature's previous edge on the path, if any;
* coming back up, ``H(c)``, the sum of ``P`` over the leaves below the child ``c``, is known,
  and the edge contributes ``(O_e - Z_e - O_prev + Z_prev) * integral S_e(t) dt`` to its feature,
  where ``S_e = (H(c) - sum of H below the feature's next edges) / Q_e + sum of their S``: the sum
  of ``P_L / q_{f,L}`` over the leaves ``L`` below ``e``. Summed over a feature's edges on a path
  the factors telescope to ``o_i - z_i`` of the leaf's element, which gives ``phi_i`` above.

That is ``O(edges * n)`` point-wise operations per row and tree, with only the tree's structure
read (the same for every row), against the ``O(leaves * depth^2)`` recursion with path copies and
divisions of LightGBM's ``Tree::TreeSHAP``. ``1 / Q_e`` is prepared for both directions of each
edge (``1 / (z (1 - t))`` and ``1 / (z + t (1 - z))``), so no division is left per row. An edge
with ``z = 0`` (a child without training data) that the row leaves has ``Q_e = 0``: its inverse
is taken as 0, which removes the leaves below it, as their games are 0 for every coalition
(LightGBM's ``pred_contrib`` divides by that zero fraction and returns NaN there). The bias is
``sum over leaves of v * leaf_count / root_count`` (``Tree::ExpectedValue``).

The previous version tabled ``T(A)`` over the ``2^d`` subsets of every path (~18 MB for 300
trees of 31 leaves): one row was bound by scattered reads of the tables. The prepared form here
is ~2.3 MB for that model, read in order (plus the one-row kernel's ~1 MB).

Two kernels compute the same sums:

* batches (from 3 rows): rows go in blocks of up to 64, tree by tree; the block's rows are the
  inner, contiguous dimension of every polynomial (``point * rows + row``), so the walk's control
  flow is shared by the block and the point-wise loops run over ``n * rows`` values (SIMD). The
  block's decisions are taken node by node from a transposed copy of its rows. A batch spreads
  its blocks over the cores (numba ``prange``);
* one row (and batches of 2 rows), in the calling thread, without the GIL (concurrent requests
  explain side by side), on a layout of its own derived from the prepared arrays when the engine
  is built or loaded (:func:`_row_arrays`, ~1 MB for 300 trees of 31 leaves, not pickled):

  - a polynomial is a tuple of 4 or 8 float64 (a tree of ``n <= 4`` points is padded to 4, of
    ``n <= 8`` to 8: Gauss-Legendre with more points than needed is still exact), and every
    operation on it is one AVX2 vector instruction (numba intrinsics: numba's loops over a few
    points stay scalar, as its arrays may alias). Trees of more than 8 points (paths of more
    than 16 unique features) take the general loop over their ``n`` points;
  - no branch depends on the row: the decisions are taken once per row for every node, the
    nodes sorted by feature so that each input is tested once and its nodes' thresholds (or, for
    a categorical feature, one row of a matrix of bitset words by nodes) are compared in a
    straight loop; the walk is three straight passes per tree, over its internal edges in
    pre-order (``P`` and ``1 / Q``), its leaves (their ``S`` and ``H``), its internal edges in
    reverse (each edge's ``S`` added to its feature, its ``H`` to its parent's, the sums of its
    feature's previous edge), state kept per edge rather than per depth, a direction's ``O``
    read as a 0/1 factor;
  - it takes ~0.095 ms for 300 trees of 31 leaves on 87 features (``bench.explain_speed``: p50
    0.094 ms, p99 0.16 ms on a busy 2-core machine; ~0.32 us per tree, of which ~7 us per row
    for the decisions), against ~0.65 ms for the depth-first walk with loops over the ``n``
    points. Measured and not kept: the depth-first walk with these vectors (~0.37 ms, then
    ~0.15 ms once its decisions were taken apart: its branches on leaf or pop follow the tree
    and mispredict), the trees' edges interleaved two or four at a time (no gain: the passes are
    bound by instruction throughput, not latency), the decisions as two separate streams.

Exactness: the same decisions as LightGBM's ``Tree::NumericalDecision`` and
``Tree::CategoricalDecision`` (missing types None/Zero/NaN, ``default_left``, ``kZeroThreshold``,
inputs within ``kZeroThreshold`` of zero read as zero as LightGBM's dense-row reader does,
categorical bitsets, negative or NaN categories going right), the same counts and leaf values
(``dump_model`` prints them to full precision), float64 throughout. Only the floating-point
summation order differs: the values agree with ``pred_contrib`` to ~1e-14 (tested to 1e-6), on
paths of any length (the quadrature grows with them) and trees of any size.

The prepared form (:class:`TreeShapEngine`) is plain numpy arrays: it is built once (when a
:class:`leadscore.scorer.LeadScorer` is constructed or unpickled from an older version), is
pickled with the model, and runs its compiled kernels once when built or unpickled, so no
request pays numba's compilation (the kernels are also cached on disk, ``cache=True``). An
engine pickled by the previous, table-based version is converted when it is loaded (its path
arrays hold the trees, its zero fractions the data counts).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

K_ZERO_THRESHOLD = float(np.float32(1e-35))
"""LightGBM's ``kZeroThreshold`` (``1e-35f`` as a double)."""

_CATEGORICAL = 1  # node kind bits: categorical split; a NaN goes left; a zero goes left
_NAN_LEFT = 2
_ZERO_LEFT = 4
_MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}
_INTERNAL = 1  # edge kind bits: the child is an internal node; a deeper edge splits on its feature
_HAS_NEXT = 2
_BLOCK_ROWS = 64  # rows explained together, tree by tree (the rows are the SIMD dimension)
_MIN_BLOCK_ROWS = 3  # fewer rows are explained one by one (measured crossover)
_FORMAT = 2  # of the pickled state; the table-based engine's state had no format
_PARALLEL_LOCK = threading.Lock()  # numba's workqueue layer takes one parallel call at a time

# Columns of the packed integer arrays.
_N_FEATURE, _N_KIND, _N_CAT_START, _N_CAT_LEN = range(4)
_T_NODE, _T_EDGE, _T_POINTS = range(3)
_E_NODE, _E_LEFT, _E_DEPTH, _E_PREV, _E_FEATURE, _E_KIND, _E_INV = range(7)


# -- vector intrinsics (one row's kernel) ------------------------------------------------------
# A polynomial of the one-row kernel is a tuple of NP float64 (its values at NP points, NP a
# compile-time constant: 4 or 8). Loads, stores and arithmetic on such tuples are emitted as
# single LLVM vector operations (AVX2 ymm), which numba's scalar loops over a handful of points
# do not become: its arrays may alias, so the SLP vectoriser leaves them scalar.
def _to_vector(builder: Any, values: Any, n: int) -> Any:
    vector = ir.Constant(ir.VectorType(ir.DoubleType(), n), ir.Undefined)
    for k in range(n):
        lane = ir.Constant(ir.IntType(32), k)
        vector = builder.insert_element(vector, builder.extract_value(values, k), lane)
    return vector


def _to_tuple(builder: Any, vector: Any, n: int) -> Any:
    lanes = [builder.extract_element(vector, ir.Constant(ir.IntType(32), k)) for k in range(n)]
    return cgutils.pack_array(builder, lanes)


def _vload_typer(typingctx: Any, arr: Any, i: Any, like: Any) -> Any:
    """``arr[i : i + n]`` as a tuple shaped like ``like`` (no wraparound, no bounds check)."""
    n = like.count
    sig = types.UniTuple(types.float64, n)(arr, i, like)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        pointer = builder.bitcast(
            builder.gep(data, [args[1]]), ir.VectorType(ir.DoubleType(), n).as_pointer()
        )
        return _to_tuple(builder, builder.load(pointer, align=8), n)

    return sig, codegen


_vload: Any = intrinsic(_vload_typer)


def _vstore_typer(typingctx: Any, arr: Any, i: Any, values: Any) -> Any:
    """``arr[i : i + n] = values``."""
    n = values.count
    sig = types.void(arr, i, values)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        pointer = builder.bitcast(
            builder.gep(data, [args[1]]), ir.VectorType(ir.DoubleType(), n).as_pointer()
        )
        builder.store(_to_vector(builder, args[2], n), pointer, align=8)
        return context.get_dummy_value()

    return sig, codegen


_vstore: Any = intrinsic(_vstore_typer)


def _vsplat_typer(typingctx: Any, value: Any, like: Any) -> Any:
    """``value`` in every lane of a tuple shaped like ``like``."""
    n = like.count
    sig = types.UniTuple(types.float64, n)(types.float64, like)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return cgutils.pack_array(builder, [args[0]] * n)

    return sig, codegen


_vsplat: Any = intrinsic(_vsplat_typer)


def _lanewise(operation: str) -> Any:
    @intrinsic
    def lanewise(typingctx: Any, a: Any, b: Any) -> Any:
        sig = a(a, b)

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            n = sig.args[0].count
            va, vb = (_to_vector(builder, v, n) for v in args)
            return _to_tuple(builder, getattr(builder, operation)(va, vb), n)

        return sig, codegen

    return lanewise


_vadd = _lanewise("fadd")
_vsub = _lanewise("fsub")
_vmul = _lanewise("fmul")


def _vfma_typer(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """``a * b + c``, fused."""
    sig = a(a, b, c)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        n = sig.args[0].count
        va, vb, vc = (_to_vector(builder, v, n) for v in args)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(va.type, [va.type] * 3), f"llvm.fma.v{n}f64"
        )
        return _to_tuple(builder, builder.call(fma, [va, vb, vc]), n)

    return sig, codegen


_vfma: Any = intrinsic(_vfma_typer)


def _ld_typer(typingctx: Any, arr: Any, i: Any) -> Any:
    """``arr[i]`` for ``0 <= i < len(arr)``, without the negative-index wraparound."""
    sig = arr.dtype(arr, i)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return context.unpack_value(builder, sig.return_type, builder.gep(data, [args[1]]))

    return sig, codegen


_ld: Any = intrinsic(_ld_typer)


def _st_typer(typingctx: Any, arr: Any, i: Any, value: Any) -> Any:
    """``arr[i] = value`` for ``0 <= i < len(arr)``."""
    sig = types.void(arr, i, arr.dtype)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        context.pack_value(builder, sig.args[0].dtype, args[2], builder.gep(data, [args[1]]))
        return context.get_dummy_value()

    return sig, codegen


_st: Any = intrinsic(_st_typer)


# -- compiled kernels ----------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _goes_left(
    fval: float, threshold: float, kind: int, cat_start: int, cat_len: int, cat_bits: np.ndarray
) -> float:
    """LightGBM's ``Tree::Decision`` for one node: 1.0 for the left child, 0.0 for the right."""
    if kind & _CATEGORICAL:
        # static_cast<int> of NaN or of a value beyond int range is INT_MIN on x86: right.
        if np.isnan(fval) or fval >= 2147483648.0 or fval <= -2147483649.0:
            return 0.0
        category = int(fval)  # truncates towards zero, as static_cast<int> does
        if category < 0:
            return 0.0
        word = category >> 5
        if word >= cat_len:
            return 0.0
        return float((cat_bits[cat_start + word] >> (category & 31)) & 1)
    # Numerical: a NaN or a zero (within kZeroThreshold) takes the way prepared for it
    # (default_left for its missing type, else 0 <= threshold); any other value compares.
    # Written as selects, not branches: zeros are common in counts and would be mispredicted.
    res = 1.0 if fval <= threshold else 0.0
    res = float((kind >> 2) & 1) if abs(fval) <= K_ZERO_THRESHOLD else res
    return float((kind >> 1) & 1) if fval != fval else res


@njit(cache=True, nogil=True)
def _explain_trees(
    x: np.ndarray,
    phi: np.ndarray,
    trees: np.ndarray,
    bias: float,
    node_int: np.ndarray,
    node_threshold: np.ndarray,
    cat_bits: np.ndarray,
    tree_int: np.ndarray,
    edge_int: np.ndarray,
    edge_float: np.ndarray,
    edge_inv: np.ndarray,
    points: np.ndarray,
    weights: np.ndarray,
    max_depth: int,
    max_nodes: int,
    max_points: int,
) -> None:
    """Add the contributions of the trees ``trees`` for one row ``x`` to ``phi``.

    The walk of the module docstring with loops over each tree's own ``n`` points, for the
    trees too wide for :func:`_walk`. Frames are indexed by depth; frame ``dummy`` stands for
    "no previous edge of the feature" (``Q = 1``, ``O - Z = 0``), so that an edge's previous
    frame needs no test when read.
    """
    depth_frames = max_depth + 2
    dummy = depth_frames - 1
    left = np.empty(max(max_nodes, 1))
    P = np.empty((depth_frames, max_points))  # product over the path's elements
    H = np.empty((depth_frames, max_points))  # sum of P over the leaves below
    acc_h = np.empty((depth_frames, max_points))  # sum of H below the feature's next edges
    inv_q = np.empty((depth_frames, max_points))
    acc_s = np.empty(depth_frames)  # sum of the integrals of S of the feature's next edges
    ones = np.empty(depth_frames)  # O of the frame's edge
    zeros = np.empty(depth_frames)  # Z of the frame's edge
    feature = np.empty(depth_frames, dtype=np.int64)
    previous = np.empty(depth_frames, dtype=np.int64)
    has_next = np.empty(depth_frames, dtype=np.int64)
    ones[dummy] = 1.0
    zeros[dummy] = 1.0
    for tree in trees:
        n0 = tree_int[tree, _T_NODE]
        n1 = tree_int[tree + 1, _T_NODE]
        e0 = tree_int[tree, _T_EDGE]
        e1 = tree_int[tree + 1, _T_EDGE]
        n = tree_int[tree, _T_POINTS]
        t = points[n]
        w = weights[n]
        for k in range(n0, n1):
            left[k - n0] = _goes_left(
                x[node_int[k, _N_FEATURE]],
                node_threshold[k],
                node_int[k, _N_KIND],
                node_int[k, _N_CAT_START],
                node_int[k, _N_CAT_LEN],
                cat_bits,
            )
        for j in range(n):
            P[0, j] = 1.0
            H[0, j] = 0.0
        cur = 0
        for e in range(e0, e1 + 1):
            depth = edge_int[e, _E_DEPTH] if e < e1 else 1
            while cur >= depth:  # the subtrees of the frames this deep are complete
                p = previous[cur]
                s = acc_s[cur]
                if has_next[cur]:
                    for j in range(n):
                        s += w[j] * inv_q[cur, j] * (H[cur, j] - acc_h[cur, j])
                else:
                    for j in range(n):
                        s += w[j] * inv_q[cur, j] * H[cur, j]
                phi[feature[cur]] += (ones[cur] - zeros[cur] - ones[p] + zeros[p]) * s
                acc_s[p] += s
                if p != dummy:
                    for j in range(n):
                        h = H[cur, j]
                        H[cur - 1, j] += h
                        acc_h[p, j] += h
                else:
                    for j in range(n):
                        H[cur - 1, j] += H[cur, j]
                cur -= 1
            if e == e1:
                break
            p = edge_int[e, _E_PREV]
            if p == 0:
                p = dummy
            o = ones[p] if left[edge_int[e, _E_NODE]] == edge_int[e, _E_LEFT] else 0.0
            z = edge_float[e, 0]
            oz = o - z
            kind = edge_int[e, _E_KIND]
            if kind & _INTERNAL:
                inv = edge_int[e, _E_INV]
                column = 1 if o != 0.0 else 0
                if p != dummy:
                    for j in range(n):
                        P[depth, j] = P[depth - 1, j] * (z + t[j] * oz) * inv_q[p, j]
                        inv_q[depth, j] = edge_inv[inv + j, column]
                        H[depth, j] = 0.0
                else:
                    for j in range(n):
                        P[depth, j] = P[depth - 1, j] * (z + t[j] * oz)
                        inv_q[depth, j] = edge_inv[inv + j, column]
                        H[depth, j] = 0.0
                if kind & _HAS_NEXT:
                    for j in range(n):
                        acc_h[depth, j] = 0.0
                acc_s[depth] = 0.0
                ones[depth] = o
                zeros[depth] = z
                feature[depth] = edge_int[e, _E_FEATURE]
                previous[depth] = p
                has_next[depth] = kind & _HAS_NEXT
                cur = depth
                continue
            # A leaf: its S is v * P of the parent without the feature's previous factor.
            v = edge_float[e, 1]
            s = 0.0
            if p != dummy:
                for j in range(n):
                    pv = v * P[depth - 1, j] * inv_q[p, j]
                    s += w[j] * pv
                    h = pv * (z + t[j] * oz)
                    H[depth - 1, j] += h
                    acc_h[p, j] += h
            else:
                for j in range(n):
                    pv = v * P[depth - 1, j]
                    s += w[j] * pv
                    H[depth - 1, j] += pv * (z + t[j] * oz)
            phi[edge_int[e, _E_FEATURE]] += (oz - ones[p] + zeros[p]) * s
            acc_s[p] += s


@njit(cache=True, nogil=True, inline="always")
def _put_decision(decisions: np.ndarray, k: int, went_left: float) -> None:
    _st(decisions, 2 * k, went_left)
    _st(decisions, 2 * k + 1, 1.0 - went_left)


@njit(cache=True, nogil=True)
def _decide(
    x: np.ndarray,
    segments: np.ndarray,
    thresholds: np.ndarray,
    zero_nan_left: np.ndarray,
    words: np.ndarray,
    word_segments: np.ndarray,
    decisions: np.ndarray,
) -> None:
    """Every node's decision for ``x`` (:func:`_goes_left`), nodes sorted by feature.

    ``decisions[2 k]`` is 1.0 when sorted node ``k`` sends ``x`` left, ``decisions[2 k + 1]``
    when it sends it right. Feature ``f``'s numerical nodes are ``segments[3 f] : [3 f + 1]``,
    its categorical ones ``[3 f + 1] : [3 f + 2]``; their bitsets are a matrix of
    ``word_segments[2 f + 1]`` rows (bitset words) by nodes in ``words`` from
    ``word_segments[2 f]``. The value is tested once per feature, the nodes in straight loops.
    """
    for f in range(x.shape[0]):
        value = x[f]
        a = _ld(segments, 3 * f)
        b = _ld(segments, 3 * f + 1)
        c = _ld(segments, 3 * f + 2)
        if a < b:
            if value != value:
                for k in range(a, b):
                    _put_decision(decisions, k, float((_ld(zero_nan_left, k) >> 1) & 1))
            elif abs(value) <= K_ZERO_THRESHOLD:
                for k in range(a, b):
                    _put_decision(decisions, k, float(_ld(zero_nan_left, k) & 1))
            else:
                for k in range(a, b):
                    _put_decision(decisions, k, 1.0 if value <= _ld(thresholds, k) else 0.0)
        if b < c:
            # static_cast<int> truncates towards zero; NaN, negative or huge categories go right.
            valid = (value > -1.0) & (value < 2147483648.0)
            category = int(value) if valid else 0
            word = category >> 5
            if valid and word < _ld(word_segments, 2 * f + 1):
                row = _ld(word_segments, 2 * f) + word * (c - b) - b
                shift = category & 31
                for k in range(b, c):
                    _put_decision(decisions, k, float((_ld(words, row + k) >> shift) & 1))
            else:
                for k in range(b, c):
                    _put_decision(decisions, k, 0.0)


@njit(cache=True, nogil=True)
def _walk(
    like: tuple[float, ...],
    phi_points: np.ndarray,
    row_trees: np.ndarray,
    t0: int,
    t1: int,
    decisions: np.ndarray,
    internal_int: np.ndarray,
    internal_float: np.ndarray,
    leaf_int: np.ndarray,
    leaf_float: np.ndarray,
    rule: np.ndarray,
    state: np.ndarray,
    n_slots: int,
) -> None:
    """Trees ``t0:t1`` of the one-row layout, ``NP = len(like)`` points (see :func:`_row_arrays`).

    A slot per internal edge holds ``P`` (the product without the previous factor of the edge's
    feature, times its own ``Q``), ``H`` (the sum of ``P`` over the leaves below), ``G`` (the sum
    of the ``S`` of the feature's next edges minus ``1 / Q`` times the sum of their ``H``),
    ``1 / Q`` and the scalars ``O``, ``O - Z`` and the edge's factor ``O - Z - O_prev + Z_prev``.
    Slot 0 is the root, the last slots stand for "no previous edge" (``Q = O = 1``, ``Z = 1``).
    Straight loops per tree, without a branch on the row: the internal edges in pre-order (a
    parent before its children); the leaves with a previous edge of their feature, then those
    without (``O_prev = Z_prev = 1/Q_prev = 1``) alone, then in pairs (a node's two leaves: one
    read of ``P``, one update of the feature, ``H`` of the node written once); the internal edges
    in reverse (children first).
    """
    NP = len(like)
    FR = 4 * NP + 4  # slot size
    P_, H_, G_, IQ = 0, NP, 2 * NP, 3 * NP
    ONES, OZ, FACTOR = 4 * NP, 4 * NP + 1, 4 * NP + 2
    RF = 2 + NP  # an internal edge's floats: Z, 1 / Z (0 when Z = 0), 1 / (Z + t (1 - Z))
    t = _vload(rule, 0, like)
    c = _vload(rule, NP, like)  # 1 / (1 - t): 1 / (Z (1 - t)) = c / Z
    one = _vsplat(1.0, like)
    zero = _vsplat(0.0, like)
    for slot in range(n_slots):
        _vstore(state, slot * FR + P_, one)
        _vstore(state, slot * FR + IQ, one)
        _vstore(state, slot * FR + G_, zero)
        _vstore(state, slot * FR + H_, zero)
        _st(state, slot * FR + ONES, 1.0)
        _st(state, slot * FR + OZ, 0.0)
    for tree in range(t0, t1):
        i0 = _ld(row_trees, 5 * tree)
        i1 = _ld(row_trees, 5 * tree + 5)
        l0 = _ld(row_trees, 5 * tree + 1)
        lp = _ld(row_trees, 5 * tree + 2)
        l2 = _ld(row_trees, 5 * tree + 3)
        l1 = _ld(row_trees, 5 * tree + 6)
        fb = _ld(row_trees, 5 * tree + 4) - RF * i0
        s = 0
        for e in range(i0, i1):
            s += FR
            way = _ld(internal_int, 4 * e)
            pa = _ld(internal_int, 4 * e + 1)
            pr = _ld(internal_int, 4 * e + 2)
            o_prev = _ld(state, pr + ONES)
            o = o_prev * _ld(decisions, way)
            z = _ld(internal_float, fb + RF * e)
            oz = o - z
            _st(state, s + ONES, o)
            _st(state, s + OZ, oz)
            _st(state, s + FACTOR, oz - _ld(state, pr + OZ))
            q = _vfma(t, _vsplat(oz, like), _vsplat(z, like))
            pq = _vmul(_vload(state, pa + P_, like), _vload(state, pr + IQ, like))
            _vstore(state, s + P_, _vmul(pq, q))
            inv0 = _vmul(c, _vsplat(_ld(internal_float, fb + RF * e + 1), like))
            inv1 = _vload(internal_float, fb + RF * e + 2, like)
            _vstore(state, s + IQ, _vfma(_vsplat(o, like), _vsub(inv1, inv0), inv0))
            _vstore(state, s + G_, zero)
            _vstore(state, s + H_, zero)
        for e in range(l0, lp):  # leaves whose feature has a previous edge
            way = _ld(leaf_int, 4 * e)
            pa = _ld(leaf_int, 4 * e + 1)
            pr = _ld(leaf_int, 4 * e + 2)
            bf = _ld(leaf_int, 4 * e + 3)
            o_prev = _ld(state, pr + ONES)
            o = o_prev * _ld(decisions, way)
            z = _ld(leaf_float, 2 * e)
            oz = o - z
            factor = oz - _ld(state, pr + OZ)
            q = _vfma(t, _vsplat(oz, like), _vsplat(z, like))
            iq = _vload(state, pr + IQ, like)
            pv = _vmul(
                _vmul(_vload(state, pa + P_, like), iq), _vsplat(_ld(leaf_float, 2 * e + 1), like)
            )
            _vstore(phi_points, bf, _vfma(_vsplat(factor, like), pv, _vload(phi_points, bf, like)))
            h = _vmul(pv, q)
            _vstore(state, pr + G_, _vadd(_vload(state, pr + G_, like), _vsub(pv, _vmul(iq, h))))
            _vstore(state, pa + H_, _vadd(_vload(state, pa + H_, like), h))
        for e in range(lp, l2):  # leaves whose feature has none
            way = _ld(leaf_int, 4 * e)
            pa = _ld(leaf_int, 4 * e + 1)
            bf = _ld(leaf_int, 4 * e + 3)
            o = _ld(decisions, way)
            z = _ld(leaf_float, 2 * e)
            oz = o - z
            q = _vfma(t, _vsplat(oz, like), _vsplat(z, like))
            pv = _vmul(_vload(state, pa + P_, like), _vsplat(_ld(leaf_float, 2 * e + 1), like))
            _vstore(phi_points, bf, _vfma(_vsplat(oz, like), pv, _vload(phi_points, bf, like)))
            _vstore(state, pa + H_, _vfma(pv, q, _vload(state, pa + H_, like)))
        for e in range(l2, l1, 2):  # pairs of such leaves, a node's two children
            way = _ld(leaf_int, 4 * e)
            pa = _ld(leaf_int, 4 * e + 1)
            bf = _ld(leaf_int, 4 * e + 3)
            z1 = _ld(leaf_float, 2 * e)
            z2 = _ld(leaf_float, 2 * e + 2)
            oz1 = _ld(decisions, way) - z1
            oz2 = _ld(decisions, way + 1) - z2
            p = _vload(state, pa + P_, like)
            pv1 = _vmul(p, _vsplat(_ld(leaf_float, 2 * e + 1), like))
            pv2 = _vmul(p, _vsplat(_ld(leaf_float, 2 * e + 3), like))
            phi_e = _vfma(_vsplat(oz2, like), pv2, _vload(phi_points, bf, like))
            _vstore(phi_points, bf, _vfma(_vsplat(oz1, like), pv1, phi_e))
            h2 = _vmul(pv2, _vfma(t, _vsplat(oz2, like), _vsplat(z2, like)))
            _vstore(state, pa + H_, _vfma(pv1, _vfma(t, _vsplat(oz1, like), _vsplat(z1, like)), h2))
        for e in range(i1 - 1, i0 - 1, -1):
            pa = _ld(internal_int, 4 * e + 1)
            pr = _ld(internal_int, 4 * e + 2)
            bf = _ld(internal_int, 4 * e + 3)
            h = _vload(state, s + H_, like)
            sv = _vfma(_vload(state, s + IQ, like), h, _vload(state, s + G_, like))
            factor = _vsplat(_ld(state, s + FACTOR), like)
            _vstore(phi_points, bf, _vfma(factor, sv, _vload(phi_points, bf, like)))
            g = _vsub(sv, _vmul(_vload(state, pr + IQ, like), h))
            _vstore(state, pr + G_, _vadd(_vload(state, pr + G_, like), g))
            _vstore(state, pa + H_, _vadd(_vload(state, pa + H_, like), h))
            s -= FR


@njit(cache=True, nogil=True)
def _add_integrals(phi: np.ndarray, phi_points: np.ndarray, weights: np.ndarray, n: int) -> None:
    for f in range(phi.shape[0] - 1):
        total = 0.0
        for j in range(n):
            total += weights[j] * phi_points[f * n + j]
        phi[f] += total


@njit(cache=True, nogil=True)
def _explain_row(
    x: np.ndarray,
    phi: np.ndarray,
    bias: float,
    groups: np.ndarray,
    row_trees: np.ndarray,
    segments: np.ndarray,
    thresholds: np.ndarray,
    zero_nan_left: np.ndarray,
    words: np.ndarray,
    word_segments: np.ndarray,
    internal_int: np.ndarray,
    internal_float: np.ndarray,
    leaf_int: np.ndarray,
    leaf_float: np.ndarray,
    rules: np.ndarray,
    n_slots: int,
) -> None:
    """Add the contributions of one row ``x`` to ``phi`` (and the bias), but for the trees of
    more than 8 points: the trees of at most 4 and of 5 to 8 points with :func:`_walk` (4 and 8
    points). The wider trees are :func:`_explain_trees`' (called apart: a call's cost grows with
    its arguments, ~0.1 us each)."""
    n_features = phi.shape[0] - 1
    decisions = np.empty(2 * max(thresholds.shape[0], 1))
    _decide(x, segments, thresholds, zero_nan_left, words, word_segments, decisions)
    state = np.empty(n_slots * (4 * 8 + 4))
    phi_points = np.zeros(n_features * 4)
    like4 = (0.0, 0.0, 0.0, 0.0)
    _walk(
        like4,
        phi_points,
        row_trees,
        groups[0],
        groups[1],
        decisions,
        internal_int,
        internal_float,
        leaf_int,
        leaf_float,
        rules[0],
        state,
        n_slots,
    )
    _add_integrals(phi, phi_points, rules[0, 8:], 4)
    phi_points = np.zeros(n_features * 8)
    like8 = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    _walk(
        like8,
        phi_points,
        row_trees,
        groups[1],
        groups[2],
        decisions,
        internal_int,
        internal_float,
        leaf_int,
        leaf_float,
        rules[1],
        state,
        n_slots,
    )
    _add_integrals(phi, phi_points, rules[1, 16:], 8)
    phi[n_features] += bias


@njit(cache=True, nogil=True)
def _explain_block(
    X: np.ndarray,
    out: np.ndarray,
    r0: int,
    rows: int,
    bias: float,
    node_int: np.ndarray,
    node_threshold: np.ndarray,
    cat_bits: np.ndarray,
    tree_int: np.ndarray,
    edge_int: np.ndarray,
    edge_float: np.ndarray,
    edge_inv: np.ndarray,
    points: np.ndarray,
    weights: np.ndarray,
    max_depth: int,
    max_nodes: int,
    max_points: int,
) -> None:
    """Add the contributions of rows ``r0:r0 + rows`` of ``X`` to ``out``, tree by tree.

    :func:`_explain_row` for a block of rows at once: a frame holds ``n * rows`` values, point
    major, row minor, and the per-row quantities (``O``, the integrals) are vectors of rows.
    """
    R = rows
    n_trees = tree_int.shape[0] - 1
    depth_frames = max_depth + 2
    dummy = depth_frames - 1
    lanes = max_points * R
    left = np.empty((max(max_nodes, 1), R))
    P = np.empty((depth_frames, lanes))
    H = np.empty((depth_frames, lanes))
    acc_h = np.empty((depth_frames, lanes))
    inv_q = np.empty((depth_frames, lanes))
    acc_s = np.empty((depth_frames, R))
    ones = np.empty((depth_frames, R))
    zeros = np.empty(depth_frames)
    feature = np.empty(depth_frames, dtype=np.int64)
    previous = np.empty(depth_frames, dtype=np.int64)
    has_next = np.empty(depth_frames, dtype=np.int64)
    o = np.empty(R)
    s = np.empty(R)
    ones[dummy, :] = 1.0
    zeros[dummy] = 1.0
    Xt = np.empty((X.shape[1], R))  # the block by feature: a node reads one contiguous row
    for r in range(R):
        for c in range(X.shape[1]):
            Xt[c, r] = X[r0 + r, c]
    for tree in range(n_trees):
        n0 = tree_int[tree, _T_NODE]
        n1 = tree_int[tree + 1, _T_NODE]
        e0 = tree_int[tree, _T_EDGE]
        e1 = tree_int[tree + 1, _T_EDGE]
        n = tree_int[tree, _T_POINTS]
        nl = n * R
        t = points[n]
        w = weights[n]
        for k in range(n0, n1):
            xf = Xt[node_int[k, _N_FEATURE]]
            threshold = node_threshold[k]
            kind = node_int[k, _N_KIND]
            cat_start = node_int[k, _N_CAT_START]
            cat_len = node_int[k, _N_CAT_LEN]
            for r in range(R):
                left[k - n0, r] = _goes_left(xf[r], threshold, kind, cat_start, cat_len, cat_bits)
        for j in range(nl):
            P[0, j] = 1.0
            H[0, j] = 0.0
        cur = 0
        for e in range(e0, e1 + 1):
            depth = edge_int[e, _E_DEPTH] if e < e1 else 1
            while cur >= depth:
                p = previous[cur]
                for r in range(R):
                    s[r] = acc_s[cur, r]
                if has_next[cur]:
                    for k in range(n):
                        wk = w[k]
                        for r in range(R):
                            j = k * R + r
                            s[r] += wk * inv_q[cur, j] * (H[cur, j] - acc_h[cur, j])
                else:
                    for k in range(n):
                        wk = w[k]
                        for r in range(R):
                            j = k * R + r
                            s[r] += wk * inv_q[cur, j] * H[cur, j]
                f = feature[cur]
                dz = zeros[p] - zeros[cur]
                for r in range(R):
                    out[r0 + r, f] += (ones[cur, r] - ones[p, r] + dz) * s[r]
                    acc_s[p, r] += s[r]
                if p != dummy:
                    for j in range(nl):
                        h = H[cur, j]
                        H[cur - 1, j] += h
                        acc_h[p, j] += h
                else:
                    for j in range(nl):
                        H[cur - 1, j] += H[cur, j]
                cur -= 1
            if e == e1:
                break
            p = edge_int[e, _E_PREV]
            if p == 0:
                p = dummy
            node = edge_int[e, _E_NODE]
            way = float(edge_int[e, _E_LEFT])
            for r in range(R):
                o[r] = ones[p, r] if left[node, r] == way else 0.0
            z = edge_float[e, 0]
            kind = edge_int[e, _E_KIND]
            if kind & _INTERNAL:
                inv = edge_int[e, _E_INV]
                for k in range(n):
                    tk = t[k]
                    inv0 = edge_inv[inv + k, 0]
                    inv1 = edge_inv[inv + k, 1]
                    if p != dummy:
                        for r in range(R):
                            j = k * R + r
                            P[depth, j] = P[depth - 1, j] * (z + tk * (o[r] - z)) * inv_q[p, j]
                            inv_q[depth, j] = inv1 if o[r] != 0.0 else inv0
                    else:
                        for r in range(R):
                            j = k * R + r
                            P[depth, j] = P[depth - 1, j] * (z + tk * (o[r] - z))
                            inv_q[depth, j] = inv1 if o[r] != 0.0 else inv0
                for j in range(nl):
                    H[depth, j] = 0.0
                if kind & _HAS_NEXT:
                    for j in range(nl):
                        acc_h[depth, j] = 0.0
                for r in range(R):
                    acc_s[depth, r] = 0.0
                    ones[depth, r] = o[r]
                zeros[depth] = z
                feature[depth] = edge_int[e, _E_FEATURE]
                previous[depth] = p
                has_next[depth] = kind & _HAS_NEXT
                cur = depth
                continue
            v = edge_float[e, 1]
            for r in range(R):
                s[r] = 0.0
            for k in range(n):
                tk = t[k]
                wk = w[k]
                if p != dummy:
                    for r in range(R):
                        j = k * R + r
                        pv = v * P[depth - 1, j] * inv_q[p, j]
                        s[r] += wk * pv
                        h = pv * (z + tk * (o[r] - z))
                        H[depth - 1, j] += h
                        acc_h[p, j] += h
                else:
                    for r in range(R):
                        j = k * R + r
                        pv = v * P[depth - 1, j]
                        s[r] += wk * pv
                        H[depth - 1, j] += pv * (z + tk * (o[r] - z))
            f = edge_int[e, _E_FEATURE]
            for r in range(R):
                out[r0 + r, f] += (o[r] - ones[p, r] + zeros[p] - z) * s[r]
                acc_s[p, r] += s[r]
    nf = out.shape[1] - 1
    for r in range(R):
        out[r0 + r, nf] += bias


@njit(cache=True, nogil=True)
def _explain_range(X: np.ndarray, out: np.ndarray, r0: int, r1: int, *model: Any) -> None:
    """Rows ``r0:r1``, in blocks."""
    for b0 in range(r0, r1, _BLOCK_ROWS):
        _explain_block(X, out, b0, min(_BLOCK_ROWS, r1 - b0), *model)


@njit(cache=True, nogil=True)
def _explain_serial(X: np.ndarray, out: np.ndarray, *model: Any) -> None:
    _explain_range(X, out, 0, X.shape[0], *model)


@njit(cache=True, parallel=True)
def _explain_parallel(X: np.ndarray, out: np.ndarray, block: int, *model: Any) -> None:
    n_blocks = (X.shape[0] + block - 1) // block
    for b in prange(n_blocks):
        r0 = b * block
        _explain_range(X, out, r0, min(r0 + block, X.shape[0]), *model)


# -- preparing a booster -------------------------------------------------------------------
@dataclass
class _Tree:
    """One tree's shape: internal nodes ``0..k-1`` (0 the root), children as node indices or
    ``~leaf``, and the data reaching each node and leaf (counts, or shares of the root's)."""

    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    node_count: list[float] = field(default_factory=list)
    leaf_value: list[float] = field(default_factory=list)
    leaf_count: list[float] = field(default_factory=list)


@dataclass
class _Builder:
    """Flat arrays of a model's nodes and edges while its trees are read."""

    node_int: list[tuple[int, int, int, int]] = field(default_factory=list)
    node_threshold: list[float] = field(default_factory=list)
    cat_bits: list[int] = field(default_factory=list)
    tree_int: list[tuple[int, int, int]] = field(default_factory=list)
    edge_int: list[list[int]] = field(default_factory=list)
    edge_float: list[tuple[float, float]] = field(default_factory=list)
    edge_points: list[int] = field(default_factory=list)  # per edge: its tree's point count
    bias: float = 0.0

    def add_dump_tree(self, index: int, root: Mapping[str, Any]) -> None:
        """Read one tree of ``dump_model``."""
        if "leaf_value" in root:  # a tree without a split: a constant
            self.bias += float(root["leaf_value"])
            self.add_tree(_Tree(), len(self.node_int))
            return
        total = float(root["internal_count"])
        if total <= 0:
            raise ValueError(f"tree {index}: root internal_count must be positive, not {total}")
        first = len(self.node_int)
        tree = _Tree()
        order: list[Mapping[str, Any]] = []  # internal nodes, local index = position
        stack = [root]
        while stack:
            node = stack.pop()
            order.append(node)
            for side in ("right_child", "left_child"):
                if "leaf_value" not in node[side]:
                    stack.append(node[side])
        local = {id(node): i for i, node in enumerate(order)}
        for node in order:
            self._add_node(index, node)
            tree.node_count.append(float(node["internal_count"]))
            for side, children in (("left_child", tree.left), ("right_child", tree.right)):
                child = node[side]
                if "leaf_value" in child:
                    if "leaf_coeff" in child:
                        raise ValueError(f"tree {index}: linear trees are not supported")
                    children.append(~len(tree.leaf_value))
                    tree.leaf_value.append(float(child["leaf_value"]))
                    tree.leaf_count.append(float(child["leaf_count"]))
                else:
                    children.append(local[id(child)])
        self.bias += (
            sum(v * c for v, c in zip(tree.leaf_value, tree.leaf_count, strict=True)) / total
        )
        self.add_tree(tree, first)

    def _add_node(self, index: int, node: Mapping[str, Any]) -> None:
        missing = _MISSING_TYPES.get(str(node.get("missing_type", "None")))
        if missing is None:
            raise ValueError(f"tree {index}: unknown missing_type {node.get('missing_type')!r}")
        default_left = bool(node.get("default_left"))
        feature = int(node["split_feature"])
        if node["decision_type"] == "==":
            categories = [int(c) for c in str(node["threshold"]).split("||") if c != ""]
            words = (max(categories, default=-1) >> 5) + 1
            bits = [0] * words
            for c in categories:
                if c >= 0:
                    bits[c >> 5] |= 1 << (c & 31)
            self.node_int.append((feature, _CATEGORICAL, len(self.cat_bits), words))
            self.node_threshold.append(0.0)
            self.cat_bits.extend(bits)
        elif node["decision_type"] == "<=":
            threshold = float(node["threshold"])
            # Tree::NumericalDecision: NaN is read as 0 unless the missing type is NaN; a zero
            # (or a NaN read as one) goes the default way when the missing type is Zero.
            zero_left = default_left if missing == 1 else threshold >= 0.0
            nan_left = default_left if missing == 2 else zero_left
            self.node_int.append((feature, _NAN_LEFT * nan_left | _ZERO_LEFT * zero_left, 0, 0))
            self.node_threshold.append(threshold)
        else:
            raise ValueError(f"tree {index}: unknown decision_type {node['decision_type']!r}")

    def add_tree(self, tree: _Tree, first: int) -> None:
        """The edges of ``tree`` (its nodes are ``node_int[first:]``), depth first, left first.

        An edge records its depth, the depth of the previous edge of its feature on the path
        (0: none), its ``Z`` (the product of that feature's ratios on the path so far) and, for a
        leaf, the leaf's value.
        """
        e_first = len(self.edge_int)
        longest = 0  # most unique features on a path
        if tree.left:
            # (child, parent, went left, depth, {feature: (depth, Z)} of the path above)
            stack: list[tuple[int, int, int, int, dict[int, tuple[int, float]]]] = [
                (tree.right[0], 0, 0, 1, {}),
                (tree.left[0], 0, 1, 1, {}),
            ]
            while stack:
                child, parent, went_left, depth, above = stack.pop()
                feature = self.node_int[first + parent][_N_FEATURE]
                previous, z = above.get(feature, (0, 1.0))
                count = tree.node_count[parent]
                child_count = tree.leaf_count[~child] if child < 0 else tree.node_count[child]
                z *= child_count / count if count > 0 else 0.0
                path = {**above, feature: (depth, z)}
                kind = 0 if child < 0 else _INTERNAL
                value = tree.leaf_value[~child] if child < 0 else 0.0
                self.edge_int.append([parent, went_left, depth, previous, feature, kind, -1])
                self.edge_float.append((z, value))
                if child < 0:
                    longest = max(longest, len(path))
                    continue
                stack.append((tree.right[child], child, 0, depth + 1, path))
                stack.append((tree.left[child], child, 1, depth + 1, path))
        # An edge has a next edge of its feature when one below names its depth as previous.
        open_edges: list[int] = []  # the edges on the path to the current one
        for e in range(e_first, len(self.edge_int)):
            row = self.edge_int[e]
            while open_edges and self.edge_int[open_edges[-1]][_E_DEPTH] >= row[_E_DEPTH]:
                open_edges.pop()
            if row[_E_PREV]:
                self.edge_int[open_edges[row[_E_PREV] - 1]][_E_KIND] |= _HAS_NEXT
            open_edges.append(e)
        points = max((longest + 1) // 2, 1)
        self.edge_points.extend([points] * (len(self.edge_int) - e_first))
        self.tree_int.append((first, e_first, points))


def _gauss_legendre(max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """``points[n, :n]``, ``weights[n, :n]``: the ``n``-point Gauss-Legendre rule on [0, 1]."""
    points = np.zeros((max_points + 1, max_points))
    weights = np.zeros((max_points + 1, max_points))
    for n in range(1, max_points + 1):
        x, w = np.polynomial.legendre.leggauss(n)
        points[n, :n] = (x + 1.0) / 2.0
        weights[n, :n] = w / 2.0
    return points, weights


def _arrays(builder: _Builder, n_nodes_total: int) -> dict[str, np.ndarray]:
    """The engine's arrays from a builder that has read every tree."""
    tree_int = np.asarray(
        [*builder.tree_int, (n_nodes_total, len(builder.edge_int), 0)], dtype=np.int64
    ).reshape(-1, 3)
    edge_int = np.asarray(builder.edge_int, dtype=np.int64).reshape(-1, 7)
    edge_float = np.asarray(builder.edge_float, dtype=np.float64).reshape(-1, 2)
    max_points = int(tree_int[:-1, _T_POINTS].max(initial=1))
    points, weights = _gauss_legendre(max_points)
    # 1 / Q of every internal edge at its tree's points, for a row that leaves the edge's
    # direction (column 0: 1 / (z (1 - t)), 0 when z = 0) and one that keeps it (column 1).
    internal = np.flatnonzero(edge_int[:, _E_KIND] & _INTERNAL)
    n_points = np.asarray(builder.edge_points, dtype=np.int64)[internal]
    starts = np.concatenate([[0], np.cumsum(n_points)])
    edge_int[internal, _E_INV] = starts[:-1]
    edge_inv = np.zeros((int(starts[-1]), 2))
    for n in np.unique(n_points):
        chosen = n_points == n
        z = edge_float[internal[chosen], 0][:, None]
        t = points[n, :n][None, :]
        rows = (starts[:-1][chosen][:, None] + np.arange(n)[None, :]).ravel()
        with np.errstate(divide="ignore"):
            edge_inv[rows, 0] = np.where(z > 0, 1.0 / (z * (1.0 - t)), 0.0).ravel()
            edge_inv[rows, 1] = (1.0 / (z + t * (1.0 - z))).ravel()
    return {
        "node_int": np.asarray(builder.node_int, dtype=np.int64).reshape(-1, 4),
        "node_threshold": np.asarray(builder.node_threshold, dtype=np.float64),
        "cat_bits": np.asarray(builder.cat_bits, dtype=np.uint32),
        "tree_int": tree_int,
        "edge_int": edge_int,
        "edge_float": edge_float,
        "edge_inv": edge_inv,
        "points": points,
        "weights": weights,
    }


def _arrays_from_table_engine(old: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Convert the arrays of the previous, table-based engine (its pickles).

    Its nodes are encoded as here; each path lists its nodes (the prefix shared with the
    previous path of the tree, then its own) and the product of its elements' zero fractions,
    which is the share of the root's data reaching the leaf. A node's share is the sum of its
    children's, so the count ratios, hence everything else, follow.
    """
    builder = _Builder()
    builder.node_int = [
        (int(f), int(k), int(s), int(n))
        for f, k, s, n in zip(
            old["node_feature"],
            old["node_kind"],
            old["node_cat_start"],
            old["node_cat_len"],
            strict=True,
        )
    ]
    builder.node_threshold = [float(v) for v in old["node_threshold"]]
    builder.cat_bits = [int(b) for b in old["cat_bits"]]
    node_start, path_start = old["tree_node_start"], old["tree_path_start"]
    elem_start, elem_z = old["path_elem_start"], old["elem_z"]
    for i in range(len(node_start) - 1):
        first, n_nodes = int(node_start[i]), int(node_start[i + 1] - node_start[i])
        tree = _Tree(left=[0] * n_nodes, right=[0] * n_nodes, node_count=[0.0] * n_nodes)
        steps: list[tuple[int, int]] = []
        for p in range(int(path_start[i]), int(path_start[i + 1])):
            own = range(int(old["path_node_start"][p]), int(old["path_node_start"][p + 1]))
            steps = steps[: int(old["path_prefix"][p])] + [
                (int(old["pnode_node"][q]), int(old["pnode_left"][q])) for q in own
            ]
            leaf = len(tree.leaf_value)
            tree.leaf_value.append(float(old["path_value"][p]))
            tree.leaf_count.append(float(np.prod(elem_z[elem_start[p] : elem_start[p + 1]])))
            for k, (node, went_left) in enumerate(steps):
                child = steps[k + 1][0] if k + 1 < len(steps) else ~leaf
                (tree.left if went_left else tree.right)[node] = child
        for node in range(n_nodes - 1, -1, -1):  # children have larger local indices
            tree.node_count[node] = sum(
                tree.leaf_count[~c] if c < 0 else tree.node_count[c]
                for c in (tree.left[node], tree.right[node])
            )
        builder.add_tree(tree, first)
    return _arrays(builder, len(builder.node_int))


_ROW_ARRAY_ORDER = (  # the arrays of _explain_row, in its order
    "groups",
    "row_trees",
    "segments",
    "thresholds",
    "zero_nan_left",
    "words",
    "word_segments",
    "internal_int",
    "internal_float",
    "leaf_int",
    "leaf_float",
    "rules",
)
_ROW_POINTS = (4, 8)  # the one-row kernel's point counts (wider trees: _explain_trees)
_NO_PREVIOUS_SLOTS = 4  # "no previous edge" slots, used in turn (no chain through one slot)


def _row_arrays(arrays: Mapping[str, np.ndarray], n_features: int) -> dict[str, np.ndarray]:
    """The one-row kernel's layout of the engine's arrays (derived, not pickled).

    * decisions: the nodes sorted by feature, numerical before categorical, with their
      thresholds and zero/NaN ways, and per categorical feature a matrix of bitset words by
      nodes (``words``), so that :func:`_decide` tests each input once;
    * trees in groups of ``4`` and ``8`` points (a tree of ``n <= 8`` points is padded: Gauss-
      Legendre with more points than needed is still exact), wider trees listed apart
      (``wide_trees``);
    * per tree, its internal edges in pre-order (``internal_int``: the decision read, the slots
      of the parent and of the previous edge of the feature, times the slot size; the feature
      times the points; ``internal_float``: ``Z``, ``1 / Z`` or 0, ``1 / (Z + t (1 - Z))`` at the
      group's points), then its leaves (``leaf_int`` as above, ``leaf_float``: ``Z``, value),
      those with a previous edge of their feature first, then those without, then the pairs of
      such leaves (a node's left leaf, then its right one). ``row_trees`` holds per tree the
      first internal edge, leaf, leaf without previous edge, pair and internal float.
    """
    tree_int, edge_int, edge_float = arrays["tree_int"], arrays["edge_int"], arrays["edge_float"]
    node_int, cat_bits = arrays["node_int"], arrays["cat_bits"]
    n_trees = len(tree_int) - 1
    # Decisions.
    feature, kind = node_int[:, _N_FEATURE], node_int[:, _N_KIND]
    categorical = (kind & _CATEGORICAL) != 0
    order = np.lexsort((categorical, feature))
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    sorted_feature, sorted_categorical = feature[order], categorical[order]
    features = np.arange(n_features)
    starts = np.searchsorted(sorted_feature, features, "left")
    ends = np.searchsorted(sorted_feature, features, "right")
    numerical = np.bincount(sorted_feature[~sorted_categorical], minlength=n_features)
    segments = np.stack([starts, starts + numerical[:n_features], ends], axis=1)
    zero_nan_left = (((kind >> 2) & 1) | (((kind >> 1) & 1) << 1))[order].astype(np.uint8)
    word_segments = np.zeros((n_features, 2), dtype=np.int64)
    words: list[np.ndarray] = []
    n_words = 0
    for f in np.flatnonzero(segments[:, 2] > segments[:, 1]):
        nodes = order[segments[f, 1] : segments[f, 2]]
        matrix = np.zeros((int(node_int[nodes, _N_CAT_LEN].max()), len(nodes)), dtype=np.uint32)
        for i, k in enumerate(nodes):
            start, length = node_int[k, _N_CAT_START], node_int[k, _N_CAT_LEN]
            matrix[:length, i] = cat_bits[start : start + length]
        word_segments[f] = (n_words, matrix.shape[0])
        words.append(matrix.ravel())
        n_words += matrix.size
    # Edges.
    points = tree_int[:-1, _T_POINTS]
    tree_of_edge = np.repeat(np.arange(n_trees), np.diff(tree_int[:, _T_EDGE]))
    internal = (edge_int[:, _E_KIND] & _INTERNAL) != 0
    max_internal = int(np.bincount(tree_of_edge[internal], minlength=1).max())
    n_slots = max_internal + 1 + _NO_PREVIOUS_SLOTS
    row_trees: list[tuple[int, int, int, int, int]] = []
    internal_int: list[int] = []
    internal_float: list[float] = []
    leaf_int: list[int] = []
    leaf_float: list[float] = []
    groups = [0]
    low = 0
    rules = np.zeros((len(_ROW_POINTS), 3 * _ROW_POINTS[-1]))
    edges, edge_values, node_position = edge_int.tolist(), edge_float.tolist(), position.tolist()
    for g, n in enumerate(_ROW_POINTS):
        x, w = np.polynomial.legendre.leggauss(n)
        t = (x + 1.0) / 2.0
        rules[g, : 3 * n] = np.concatenate([t, 1.0 / (1.0 - t), w / 2.0])
        size = 4 * n + 4
        for tree in np.flatnonzero((points > low) & (points <= n)):
            first = tree_int[tree, _T_NODE]
            n_leaves = len(leaf_int) // 4
            row_trees.append((len(internal_int) // 4, n_leaves, 0, 0, len(internal_float)))
            later: dict[int, list[tuple[tuple[int, ...], tuple[float, float]]]] = {}
            path = [0]  # slots of the internal edges on the path, by depth (0: the root)
            n_int = 0
            for e in range(tree_int[tree, _T_EDGE], tree_int[tree + 1, _T_EDGE]):
                node, went_left, depth, previous, feat, kind_e, _ = edges[e]
                del path[depth:]
                way = 2 * node_position[first + node] + 1 - went_left
                z, value = edge_values[e]
                if kind_e & _INTERNAL:
                    n_int += 1
                    prev = (
                        path[previous]
                        if previous
                        else max_internal + 1 + n_int % _NO_PREVIOUS_SLOTS
                    )
                    internal_int += (way, path[-1] * size, prev * size, feat * n)
                    inverse = 1.0 / (z + t * (1.0 - z))
                    internal_float += (z, 1.0 / z if z > 0 else 0.0, *inverse)
                    path.append(n_int)
                elif previous:
                    leaf_int += (way, path[-1] * size, path[previous] * size, feat * n)
                    leaf_float += (z, value)
                else:  # by node: a node's two leaves make a pair (left first, in pre-order)
                    record = ((way, path[-1] * size, 0, feat * n), (z, value))
                    later.setdefault(node, []).append(record)
            single_start = len(leaf_int) // 4
            for records in later.values():
                if len(records) == 1:
                    leaf_int += records[0][0]
                    leaf_float += records[0][1]
            pair_start = len(leaf_int) // 4
            for records in later.values():
                if len(records) == 2:
                    for ints, floats in records:
                        leaf_int += ints
                        leaf_float += floats
            row_trees[-1] = (*row_trees[-1][:2], single_start, pair_start, row_trees[-1][4])
        groups.append(len(row_trees))
        low = n
    row_trees.append((len(internal_int) // 4, len(leaf_int) // 4, 0, 0, len(internal_float)))
    pad = _ROW_POINTS[-1]  # a vector load at the last record stays in the array
    return {
        "groups": np.asarray(groups, dtype=np.int64),
        "row_trees": np.asarray(row_trees, dtype=np.int64).ravel(),
        "segments": segments.astype(np.int64).ravel(),
        "thresholds": np.ascontiguousarray(arrays["node_threshold"][order], dtype=np.float64),
        "zero_nan_left": zero_nan_left,
        "words": np.concatenate([*words, np.zeros(1, dtype=np.uint32)]),
        "word_segments": word_segments.ravel(),
        "internal_int": np.asarray(internal_int + [0] * 4, dtype=np.int32),
        "internal_float": np.asarray(internal_float + [0.0] * pad, dtype=np.float64),
        "leaf_int": np.asarray(leaf_int + [0] * 4, dtype=np.int32),
        "leaf_float": np.asarray(leaf_float + [0.0] * 2, dtype=np.float64),
        "rules": rules,
        "wide_trees": np.flatnonzero(points > _ROW_POINTS[-1]).astype(np.int64),
        "n_slots": np.asarray(n_slots, dtype=np.int64),
    }


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
        tree_int = self._arrays["tree_int"]
        depths = self._arrays["edge_int"][:, _E_DEPTH]
        self._max_depth = int(depths.max(initial=0))
        self._max_nodes = int(np.diff(tree_int[:, _T_NODE]).max(initial=0))
        self._max_points = int(self._arrays["points"].shape[1])
        self._model: tuple[Any, ...] = (
            self.bias,
            *(
                self._arrays[name]
                for name in (
                    "node_int",
                    "node_threshold",
                    "cat_bits",
                    "tree_int",
                    "edge_int",
                    "edge_float",
                    "edge_inv",
                    "points",
                    "weights",
                )
            ),
            self._max_depth,
            self._max_nodes,
            self._max_points,
        )
        # The one-row kernel's layout: derived from the arrays (not pickled), ~1 MB.
        self._row = _row_arrays(self._arrays, self.n_features)
        self._row_model: tuple[Any, ...] = (
            self.bias,
            *(self._row[name] for name in _ROW_ARRAY_ORDER),
            int(self._row["n_slots"]),
        )
        self._wide_trees = self._row["wide_trees"]
        self.warm_up()

    # -- building ------------------------------------------------------------------------
    @classmethod
    def from_booster(cls, booster: lgb.Booster) -> TreeShapEngine:
        """Prepare ``booster`` (the iterations its ``predict`` uses by default).

        Args:
            booster: A single-output LightGBM booster (binary, regression, ...).

        Raises:
            ValueError: A multiclass, random-forest or linear-tree booster, or a tree that
                cannot be read.
        """
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
            builder.add_dump_tree(int(tree["tree_index"]), tree["tree_structure"])
        arrays = _arrays(builder, len(builder.node_int))
        return cls(arrays, builder.bias, int(dump["max_feature_idx"]) + 1)

    # -- state -----------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "arrays": self._arrays,
            "bias": self.bias,
            "n_features": self.n_features,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Load (converting a table-based engine) and warm up: no compile on first use."""
        arrays = state["arrays"]
        if state.get("format") != _FORMAT:
            arrays = _arrays_from_table_engine(arrays)
        self.__init__(arrays, state["bias"], state["n_features"])  # type: ignore[misc]

    def warm_up(self) -> None:
        """Run the kernels once (compiles them, or loads them from numba's disk cache)."""
        X = np.zeros((_MIN_BLOCK_ROWS, self.n_features))
        out = np.zeros((_MIN_BLOCK_ROWS, self.n_features + 1))
        self._explain_one(X[0], out[0])
        _explain_trees(X[0], out[0], self._wide_trees, *self._model)  # compiled, wide or not
        _explain_serial(X, out, *self._model)
        with _PARALLEL_LOCK:
            _explain_parallel(X, out, _MIN_BLOCK_ROWS, *self._model)

    def _explain_one(self, x: np.ndarray, phi: np.ndarray) -> None:
        _explain_row(x, phi, *self._row_model)
        if self._wide_trees.shape[0]:
            _explain_trees(x, phi, self._wide_trees, *self._model)

    @property
    def n_trees(self) -> int:
        """Trees explained (those of the booster's default iterations)."""
        return len(self._arrays["tree_int"]) - 1

    @property
    def n_paths(self) -> int:
        """Root-to-leaf paths (leaves of trees with a split) over all trees."""
        return int(np.count_nonzero(self._arrays["edge_int"][:, _E_KIND] & _INTERNAL == 0))

    @property
    def max_points(self) -> int:
        """Quadrature points of the tree with the longest path (``ceil(unique features / 2)``)."""
        return self._max_points

    @property
    def nbytes(self) -> int:
        """Memory of the whole prepared form (with the one-row kernel's layout)."""
        return int(sum(a.nbytes for a in (*self._arrays.values(), *self._row.values())))

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
        if X.dtype != np.float64 or not X.flags.c_contiguous:
            X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.zeros((X.shape[0], self.n_features + 1))
        if X.shape[0] == 0:
            return out
        if X.shape[0] < _MIN_BLOCK_ROWS:  # the serving path: straight to the one-row kernel
            for r in range(X.shape[0]):
                self._explain_one(X[r], out[r])
            return out
        cores = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        threads = cores if num_threads <= 0 else min(num_threads, cores)
        if threads == 1 or X.shape[0] < 2 * _BLOCK_ROWS:
            _explain_serial(X, out, *self._model)
            return out
        # Blocks of whole SIMD blocks, at least four per thread when there are enough rows.
        per_block = -(-X.shape[0] // (4 * threads))
        block = max(_BLOCK_ROWS, -(-per_block // _BLOCK_ROWS) * _BLOCK_ROWS)
        with _PARALLEL_LOCK:
            previous = numba.get_num_threads()
            numba.set_num_threads(threads)
            try:
                _explain_parallel(X, out, block, *self._model)
            finally:
                numba.set_num_threads(previous)
        return out
