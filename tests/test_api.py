"""Public NumPy API: dtype/axis/alpha conventions, row policy (NaN/inf), threshold(), properties
(hypothesis) and bad input. The float64 reference is ``tests/_reference.py``."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _reference import entmax_ref, simplex_projection
from sparsemap_tools import Threshold, entmax, entmax15, sparsemax, threshold

from _backends import BACKENDS, HAS_NUMBA  # noqa: E402
# "auto" resolves to newton
SOLVERS = ["auto", "sort", "bisect", "newton", "halley"]
# HYP_EXAMPLES=400 for a longer local property run
HYP = settings(max_examples=int(os.environ.get("HYP_EXAMPLES", 25)), deadline=None,
               suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------------
# dtypes, shapes, axis, alpha broadcasting
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, out",
    [
        (np.float64, np.float64),
        (np.float32, np.float32),
        (np.float16, np.float16),
        (np.int64, np.float64),
        (np.int32, np.float64),
        (np.uint8, np.float64),
        (np.bool_, np.float64),
    ],
)
@pytest.mark.parametrize("backend", ["auto"] + BACKENDS)
def test_output_dtype(dtype, out, backend):
    x = np.array([[3, 1, 0, 2], [0, 1, 1, 0]]).astype(dtype)
    p = entmax(x, 1.5, backend=backend)
    assert isinstance(p, np.ndarray)
    assert p.dtype == out
    ref = entmax_ref(x.astype(np.float64), 1.5)
    tol = {np.float16: 1e-3, np.float32: 1e-6}.get(dtype, 1e-12)
    np.testing.assert_allclose(p.astype(np.float64), ref, rtol=0, atol=tol)


def test_float16_close_to_float32_answer():
    x = np.random.default_rng(0).standard_normal((8, 33)).astype(np.float16)
    p16 = entmax(x, 1.5)
    p32 = entmax(x.astype(np.float32), 1.5)
    assert p16.dtype == np.float16
    np.testing.assert_allclose(p16.astype(np.float32), p32, atol=1e-3)


def test_list_and_scalar_like_inputs():
    p = entmax([1.0, 2.0, 3.0], 2.0)
    assert isinstance(p, np.ndarray) and p.dtype == np.float64
    np.testing.assert_allclose(p, simplex_projection(np.array([1.0, 2.0, 3.0])), atol=1e-15)
    np.testing.assert_allclose(entmax([[7.0]], 1.5), [[1.0]])


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
@pytest.mark.parametrize("backend", BACKENDS)
def test_axis(axis, backend):
    x = np.random.default_rng(1).standard_normal((3, 4, 5))
    p = entmax(x, 1.25, axis=axis, backend=backend)
    assert p.shape == x.shape
    np.testing.assert_allclose(p, entmax_ref(x, 1.25, axis=axis), rtol=0, atol=1e-12)
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, atol=1e-12)


def test_non_contiguous_and_fortran_input():
    x = np.random.default_rng(2).standard_normal((6, 10))
    ref = entmax_ref(x[:, ::2], 1.5)
    np.testing.assert_allclose(entmax(x[:, ::2], 1.5), ref, atol=1e-12)
    np.testing.assert_allclose(entmax(np.asfortranarray(x), 1.5), entmax_ref(x, 1.5), atol=1e-12)
    np.testing.assert_allclose(entmax(x.T, 1.5, axis=0), entmax_ref(x.T, 1.5, axis=0), atol=1e-12)


def test_input_not_modified():
    x = np.random.default_rng(3).standard_normal((4, 9))
    x[0, 0] = -np.inf
    x0 = x.copy()
    entmax(x, 1.5)
    threshold(x, 1.25, solver="sort")
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_row_alpha_shapes(backend):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7))
    a = np.array([[[1.0]], [[2.0]]])  # (2, 1, 1): per leading index
    p = entmax(x, a, axis=-1, backend=backend)
    np.testing.assert_allclose(p[0], entmax_ref(x[0], 1.0), atol=1e-12)
    np.testing.assert_allclose(p[1], entmax_ref(x[1], 2.0), atol=1e-12)
    a = np.array([1.5, 2.0, 1.25])[:, None]  # (3, 1) broadcast over the leading axis
    p = entmax(x, a, axis=-1, backend=backend)
    for j, aj in enumerate([1.5, 2.0, 1.25]):
        np.testing.assert_allclose(p[:, j], entmax_ref(x[:, j], aj), atol=1e-12)
    # per-row alpha along a non-last axis: x (2, 7, 3), axis=1, alpha (2, 1, 3)
    xt = np.moveaxis(x, -1, 1)
    at = np.array([[1.5, 2.0, 1.25]])[:, None, :].repeat(2, axis=0)
    at[1] = 3.0
    pt = entmax(xt, at, axis=1, backend=backend)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(pt[i, :, j], entmax_ref(xt[i, :, j], at[i, 0, j]), atol=1e-10)
    # 0-d array and a 1-element array are scalars
    np.testing.assert_allclose(entmax(x, np.array(1.5)), entmax(x, 1.5), atol=0)
    np.testing.assert_allclose(entmax(x, np.array([1.5])), entmax(x, 1.5), atol=0)
    np.testing.assert_allclose(entmax(x, 2), entmax(x, 2.0), atol=0)  # int alpha


def test_sparsemax_entmax15_aliases():
    x = np.random.default_rng(5).standard_normal((4, 11))
    np.testing.assert_array_equal(sparsemax(x), entmax(x, 2.0))
    np.testing.assert_array_equal(entmax15(x), entmax(x, 1.5))
    np.testing.assert_array_equal(sparsemax(x.T, axis=0), entmax(x.T, 2.0, axis=0))
    for i in range(4):
        np.testing.assert_allclose(sparsemax(x)[i], simplex_projection(x[i]), atol=1e-15)


def test_zero_rows_is_fine():
    p = entmax(np.zeros((0, 5)), 1.5)
    assert p.shape == (0, 5)
    assert threshold(np.zeros((0, 5)), 1.5).tau.shape == (0,)


def test_default_alpha_is_15():
    x = np.random.default_rng(6).standard_normal(9)
    np.testing.assert_array_equal(entmax(x), entmax(x, 1.5))


# ------------------------------------------------------------------------------------------------
# NaN / inf row policy
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0, 1.25, 3.0])
def test_row_policy(alpha, backend):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 8))
    x[1, 3] = np.nan
    x[2, 0] = np.inf
    x[3] = -np.inf
    x[4, ::2] = -np.inf
    x[5] = np.inf
    p = entmax(x, alpha, backend=backend)
    for r in (1, 2, 3, 5):
        assert np.isnan(p[r]).all(), r
    assert np.isfinite(p[[0, 4]]).all()
    assert (p[4, ::2] == 0).all()
    ok = [0, 4]
    np.testing.assert_allclose(p[ok], entmax_ref(x[ok], alpha), atol=1e-10)
    th = threshold(x, alpha, backend=backend)
    assert np.isnan(th.tau[[1, 2, 3, 5]]).all()
    assert np.isfinite(th.tau[ok]).all()
    assert not th.converged[[1, 2, 3, 5]].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_nan_row(backend):
    x = np.array([[1.0, np.nan, 0.0], [1.0, 2.0, 0.0]], np.float32)
    p = entmax(x, 1.5, backend=backend)
    assert p.dtype == np.float32
    assert np.isnan(p[0]).all() and np.isfinite(p[1]).all()


# ------------------------------------------------------------------------------------------------
# threshold()
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("alpha", [1.25, 1.5, 2.0, 3.0])
def test_threshold_reproduces_p(alpha, solver, backend):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 3, 13)) * 3 + 100.0
    x[0, 0, :4] = -np.inf
    th = threshold(x, alpha, axis=-1, solver=solver, backend=backend)
    assert isinstance(th, Threshold)
    for f in ("tau", "support_size", "iterations", "converged", "certified", "residual"):
        assert getattr(th, f).shape == (4, 3), f
    assert th.support_size.dtype.kind == "i" and th.iterations.dtype.kind == "i"
    assert th.converged.dtype == bool and th.certified.dtype == bool
    assert th.solver == ("newton" if solver == "auto" else solver)
    p = entmax(x, alpha, solver=solver, backend=backend)
    with np.errstate(invalid="ignore"):
        base = np.maximum((alpha - 1.0) * x - th.tau[..., None], 0.0)
    p_tau = np.where(np.isfinite(x), base ** (1.0 / (alpha - 1.0)), 0.0)
    # tau is ~ (alpha - 1) * 100 here: its rounding (1e-14) limits the check, sharper for alpha<=2
    np.testing.assert_allclose(p_tau, p, rtol=0, atol=1e-10 if alpha <= 2 else 1e-6)
    np.testing.assert_array_equal(th.support_size, (p > 0).sum(axis=-1))
    assert th.converged.all()
    assert np.all(np.abs(th.residual) < 1e-12)
    if solver in ("sort",) or (solver in ("auto", "newton") and alpha in (1.5, 2.0)):
        assert th.certified.all()
    if solver == "sort":
        assert (th.iterations[...] >= 0).all()
        if alpha in (1.5, 2.0):
            assert (th.iterations == 0).all()


def test_threshold_axis_and_softmax_rows():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 6, 2))
    th = threshold(x, 1.0, axis=1)
    assert th.tau.shape == (5, 2)
    lse = np.log(np.exp(x).sum(axis=1))
    np.testing.assert_allclose(th.tau, lse, rtol=1e-14)
    np.testing.assert_allclose(np.exp(x - th.tau[:, None, :]), entmax(x, 1.0, axis=1), rtol=1e-13)
    assert (th.support_size == 6).all()
    th = threshold(x, np.array([[[1.0, 2.0]]]), axis=1)  # per-row: softmax and sparsemax columns
    np.testing.assert_allclose(th.tau[:, 0], lse[:, 0], rtol=1e-14)
    p = entmax(x, 2.0, axis=1)
    np.testing.assert_allclose(np.maximum(x[:, :, 1] - th.tau[:, 1:2], 0), p[:, :, 1], atol=1e-14)


def test_threshold_dim_alias():
    x = np.random.default_rng(10).standard_normal((3, 4))
    a, b = threshold(x, 1.5, axis=0), threshold(x, 1.5, dim=0)
    np.testing.assert_array_equal(a.tau, b.tau)


# ------------------------------------------------------------------------------------------------
# properties (hypothesis)
# ------------------------------------------------------------------------------------------------

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False, width=64)
rows = hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 12)), elements=finite)
alphas = st.sampled_from([1.0001, 1.01, 1.25, 1.5, 1.75, 2.0, 3.0, 10.0])
solvers = st.sampled_from(SOLVERS)
backends = st.sampled_from(["numpy", "numba"] if HAS_NUMBA else ["numpy"])


def _tol(alpha):
    return 1e-12 if alpha <= 2 else 1e-7


@HYP
@given(x=rows, alpha=alphas, solver=solvers, backend=backends)
def test_prop_simplex_and_reference(x, alpha, solver, backend):
    p = entmax(x, alpha, solver=solver, backend=backend)
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    ref = entmax_ref(x, alpha)
    # alpha > 2: rows from hypothesis can put an entry within 1e-13 of tau (Hoelder, see
    # test_solvers); 1e-7 is (1e-14)^q for alpha = 3 and is looser than the tau check below
    atol = 1e-12 if alpha <= 2 else (1e-14) ** (1.0 / (alpha - 1.0))
    np.testing.assert_allclose(p, ref, rtol=0, atol=atol)


@HYP
@given(x=rows, alpha=alphas, c=st.floats(-1e3, 1e3), solver=solvers)
def test_prop_shift_invariance(x, alpha, c, solver):
    if alpha > 2:
        alpha = 1.5
    p0 = entmax(x, alpha, solver=solver, backend="numpy")
    p1 = entmax(x + c, alpha, solver=solver, backend="numpy")
    # x + c rounds every entry by up to ulp(|x| + |c|)/2 ~ 1.2e-13 (alpha near 1 amplifies by 1)
    np.testing.assert_allclose(p1, p0, rtol=0, atol=1e-10)


@HYP
@given(x=rows, alpha=alphas, data=st.data(), backend=backends)
def test_prop_permutation_equivariance(x, alpha, data, backend):
    perm = data.draw(st.permutations(range(x.shape[1])))
    p = entmax(x, alpha, backend=backend)
    pp = entmax(x[:, perm], alpha, backend=backend)
    np.testing.assert_allclose(pp, p[:, perm], rtol=0, atol=_tol(alpha))


@HYP
@given(x=rows)
def test_prop_support_monotone_in_alpha(x):
    """Larger alpha gives a sparser answer: support size non-increasing in alpha (sort: exact)."""
    grid = [1.0, 1.01, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 5.0, 10.0]
    sizes = [threshold(x, a, solver="sort", backend="numpy").support_size for a in grid[1:]]
    sizes.insert(0, np.full(x.shape[0], x.shape[1]))  # softmax: dense
    sizes = np.stack(sizes)
    assert (np.diff(sizes, axis=0) <= 0).all(), sizes.T


@HYP
@given(x=rows, backend=backends, solver=solvers)
def test_prop_alpha2_is_simplex_projection(x, backend, solver):
    p = entmax(x, 2.0, solver=solver, backend=backend)
    for i in range(x.shape[0]):
        np.testing.assert_allclose(p[i], simplex_projection(x[i]), rtol=0, atol=1e-12)


@HYP
@given(x=rows, backend=backends)
def test_prop_alpha1_is_softmax(x, backend):
    p = entmax(x, 1.0, backend=backend)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(axis=-1, keepdims=True), rtol=1e-13, atol=1e-300)


@HYP
@given(x=hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(2, 10)),
                    elements=st.floats(-5, 5, width=64)))
def test_prop_alpha_to_1_approaches_softmax(x):
    """The distance to softmax is O(alpha - 1) (notes 1.4): shrinks ~10x per decade of alpha-1."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    sm = e / e.sum(axis=-1, keepdims=True)
    prev = None
    for eps in (1e-2, 1e-3, 1e-4, 1e-6):
        dist = np.abs(entmax(x, 1.0 + eps) - sm).max()
        # |x| <= 5 so the spread is <= 10: the O(eps) constant is at most ~ (spread)^2 = 100
        assert dist <= 100 * eps, (eps, dist)
        if prev is not None and prev > 1e-9:
            assert dist <= 0.2 * prev + 1e-12
        prev = dist


@pytest.mark.parametrize("alpha", [1.25, 1.5, 2.0, 3.0])
def test_ties_stay_tied(alpha):
    x = np.array([[2.0, 1.0, 2.0, -1.0, 1.0, 2.0]])
    for solver in ("sort", "bisect", "newton", "halley"):
        p = entmax(x, alpha, solver=solver, backend="numpy")[0]
        assert p[0] == p[2] == p[5]
        assert p[1] == p[4]


# ------------------------------------------------------------------------------------------------
# bad input: ValueError / TypeError naming the argument
# ------------------------------------------------------------------------------------------------

X = np.random.default_rng(0).standard_normal((3, 4))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(alpha=0.5), ValueError, "alpha"),
        (dict(alpha=-2.0), ValueError, "alpha"),
        (dict(alpha=np.nan), ValueError, "alpha"),
        (dict(alpha=np.inf), ValueError, "alpha"),
        (dict(alpha=np.array([[1.5], [0.9], [2.0]])), ValueError, "alpha"),
        (dict(alpha=np.array([[1.5], [np.nan], [2.0]])), ValueError, "alpha"),
        (dict(alpha=np.full((3, 4), 1.5)), ValueError, "alpha"),  # size != 1 along axis
        (dict(alpha=np.full((2, 1), 1.5)), ValueError, "alpha"),  # not broadcastable
        (dict(alpha=np.full((1, 3, 1), 1.5)), ValueError, "alpha"),  # more dims than x
        (dict(alpha="1.5"), TypeError, "alpha"),
        (dict(alpha=True), TypeError, "alpha"),
        (dict(alpha=1.5 + 0j), TypeError, "alpha"),
        (dict(alpha=None), TypeError, "alpha"),
        (dict(axis=2), ValueError, "axis"),
        (dict(axis=-3), ValueError, "axis"),
        (dict(axis=1.0), TypeError, "axis"),
        (dict(axis="0"), TypeError, "axis"),
        (dict(axis=True), TypeError, "axis"),
        (dict(axis=None), TypeError, "axis"),
        (dict(solver="brent"), ValueError, "solver"),
        (dict(solver="Newton"), ValueError, "solver"),
        (dict(solver=None), ValueError, "solver"),
        (dict(backend="cuda"), ValueError, "backend"),
        (dict(backend="triton"), ValueError, "backend"),
        (dict(backend=3), ValueError, "backend"),
        (dict(tol=-1e-3), ValueError, "tol"),
        (dict(tol=np.nan), ValueError, "tol"),
        (dict(tol="1e-3"), TypeError, "tol"),
        (dict(max_iter=0), ValueError, "max_iter"),
        (dict(max_iter=-5), ValueError, "max_iter"),
        (dict(max_iter=2.5), TypeError, "max_iter"),
        (dict(axis=0, dim=1), ValueError, "dim"),
    ],
)
@pytest.mark.parametrize("fn", ["entmax", "threshold"])
def test_bad_arguments(fn, kwargs, exc, match):
    f = {"entmax": entmax, "threshold": threshold}[fn]
    kwargs = dict(kwargs)
    if "alpha" not in kwargs:
        kwargs["alpha"] = 1.5
    with pytest.raises(exc, match=match):
        f(X, **kwargs)


@pytest.mark.parametrize(
    "x, exc, match",
    [
        (np.array(["a", "b"]), TypeError, "x"),
        (np.array([1.0 + 1j, 2.0]), TypeError, "x"),
        (np.array([1, "a"], dtype=object), TypeError, "x"),
        (np.array([1.0, 2.0], dtype=object), TypeError, "x"),
        ([[1.0, 2.0], [3.0]], TypeError, "x"),  # ragged
        ("abc", TypeError, "x"),
        (None, TypeError, "x"),
        (np.float64(2.0), ValueError, "x"),  # 0-d
        (np.zeros((3, 0)), ValueError, "axis"),  # zero-length axis
        (np.zeros(0), ValueError, "axis"),
    ],
)
def test_bad_x(x, exc, match):
    with pytest.raises(exc, match=match):
        entmax(x, 1.5)
    with pytest.raises(exc, match=match):
        threshold(x, 1.5)


def test_sparsemax_entmax15_validate_too():
    with pytest.raises(ValueError, match="axis"):
        sparsemax(X, axis=5)
    with pytest.raises(ValueError, match="solver"):
        entmax15(X, solver="nope")
    with pytest.raises(ValueError, match="backend"):
        sparsemax(X, backend="nope")


def test_bad_dim_message_names_dim():
    """Regression: a bad dim= was reported as 'axis'."""
    with pytest.raises(TypeError, match="dim"):
        entmax(X, 1.5, dim=1.0)
    with pytest.raises(ValueError, match="dim"):
        entmax(X, 1.5, dim=5)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba backend not importable")
@pytest.mark.parametrize("solver", SOLVERS)
def test_threshold_fields_agree_across_backends(solver):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((6, 40))
    x[1, :5] = -np.inf
    x[2] = np.nan
    x[3] = -np.inf
    alpha = np.array([1.0, 1.0, 1.5, 2.0, 1.25, 3.0])[:, None]
    a = threshold(x, alpha, solver=solver, backend="numpy")
    b = threshold(x, alpha, solver=solver, backend="numba")
    np.testing.assert_allclose(b.tau, a.tau, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(b.support_size, a.support_size)
    np.testing.assert_array_equal(b.converged, a.converged)
    np.testing.assert_array_equal(b.certified, a.certified)
    np.testing.assert_array_equal(np.isnan(b.residual), np.isnan(a.residual))
    np.testing.assert_allclose(b.residual, a.residual, rtol=0, atol=1e-12)
    assert b.solver == a.solver


@HYP
@given(
    x=hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 12)),
                 elements=st.floats(-1e4, 1e4, width=32)),
    alpha=st.sampled_from([1.0, 1.0001, 1.01, 1.25, 1.5, 1.75, 2.0]),
    solver=solvers,
    backend=backends,
)
def test_prop_float32_within_1e6(x, alpha, solver, backend):
    p = entmax(x, alpha, solver=solver, backend=backend)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.astype(np.float64), entmax_ref(x.astype(np.float64), alpha), rtol=0, atol=1e-6)


def test_unconverged_rows_warn_and_are_flagged():
    """A budget too small to converge is reported, never silent (RuntimeWarning + flag)."""
    x = np.random.default_rng(21).standard_normal((4, 100))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        p = entmax(x, 1.25, solver="bisect", max_iter=3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    with pytest.warns(RuntimeWarning):
        r = threshold(x, 1.25, solver="bisect", max_iter=3)
    assert not r.converged.any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("row", [
    [-2.10149545e-31, 4.08717977e-32, 1.02787382e-31, -1.99224225e-31, 5.72285194e-32],
    [-1.342e-30, 9.198e-31, -1.121e-30, 1.151e-30, -3.848e-31]])
def test_auto_converges_on_large_alpha_tiny_spreads(backend, row):
    """α = 50 on entries ~10⁻³⁰ apart: every breakpoint of f has an unbounded slope and Newton
    stopped at max_iter (a warning and p 0.23 off); ``auto`` re-solves such rows with the exact
    sort solver, so it returns converged rows equal to ``sort``'s, without a warning (NumPy
    and torch input)."""
    import warnings

    x = np.array([row])
    want = entmax(x, 50.0, solver="sort", backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = entmax(x, 50.0, backend=backend)
        res = threshold(x, 50.0, backend=backend)
    np.testing.assert_allclose(got, want, atol=1e-15)
    assert bool(res.converged.all())
    np.testing.assert_allclose(got.sum(), 1.0, atol=1e-15)
    try:
        import torch
    except ImportError:
        return
    np.testing.assert_allclose(entmax(torch.tensor(x), 50.0, backend=backend).numpy(), want, atol=1e-15)


@pytest.mark.parametrize("kind", ["numpy", "torch", "torch_grad"])
def test_unconverged_warning_points_at_the_callers_line(kind):
    """The max_iter warning names the caller's file and line (the torch path, autograd
    included, is deeper than the NumPy one: a fixed stacklevel pointed into the package)."""
    import warnings

    x = np.random.default_rng(3).standard_normal((3, 50))
    if kind != "numpy":
        torch = pytest.importorskip("torch")
        x = torch.tensor(x, requires_grad=kind == "torch_grad")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        entmax(x, 1.3, solver="bisect", max_iter=2)
    msgs = [i for i in w if issubclass(i.category, RuntimeWarning) and "did not converge" in str(i.message)]
    assert len(msgs) == 1 and msgs[0].filename == __file__, [(i.filename, str(i.message)) for i in w]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0])
def test_extreme_finite_entries_warn_nothing(backend, alpha):
    """Entries ±1e308: x − max overflows to −inf (a zero weight) without a NumPy warning."""
    import warnings

    x = np.array([[1e308, -1e308, 0.0, 5.0], [1e308, 1e308, -1e308, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = entmax(x, alpha, backend=backend)
    np.testing.assert_array_equal(p, [[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])


@pytest.mark.parametrize("am1", [0.0, 1e-12, 1e-10])
def test_threshold_of_softmax_rows_is_logsumexp(am1):
    """α within 1e-9 of 1 is computed as softmax; its threshold is the log-sum-exp, as for
    α = 1 (it was NaN, with converged and certified True), for NumPy and torch input."""
    x = np.array([[1.0, 2.0, 3.0], [0.5, -np.inf, 0.0]])
    want = np.log(np.exp(x).sum(axis=1))
    r = threshold(x, 1.0 + am1)
    np.testing.assert_allclose(r.tau, want, rtol=1e-15)
    np.testing.assert_allclose(np.exp(x - r.tau[:, None]), entmax(x, 1.0 + am1), rtol=1e-14)
    torch = pytest.importorskip("torch")
    rt = threshold(torch.tensor(x), torch.tensor([[1.0 + am1], [1.0]], dtype=torch.float64))
    np.testing.assert_allclose(rt.tau.numpy(), want, rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["sort", "newton", "halley", "bisect"])
@pytest.mark.parametrize("row,alpha,k", [
    (np.r_[np.zeros(50), -1.0], 50.0, 50), ([0.0, 0.0, -1.0], 200.0, 2), (np.zeros(5), 70.0, 5),
    ([0.0, 0.0, -1.0], 3.0, 2)])
def test_rows_of_equal_top_entries_large_alpha(backend, solver, row, alpha, k):
    """The support is k entries equal to the row max: τ = −k^{1−α} (prepared space) exactly,
    for every solver (Numba's sort returned τ −7.9e-31 instead of −5.6e-84, residual 11, with
    certified = True)."""
    x = np.array([row], dtype=np.float64)
    r = threshold(x, alpha, solver=solver, backend=backend)
    np.testing.assert_allclose(r.tau, -(float(k) ** (1.0 - alpha)), rtol=1e-12)
    assert bool(r.converged.all()) and np.all(np.abs(r.residual) < 1e-12)
    assert int(r.support_size[0]) == k
    np.testing.assert_allclose(entmax(x, alpha, solver=solver, backend=backend)[0, :k], 1.0 / k, rtol=1e-12)
