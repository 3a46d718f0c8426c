"""Numba backend (``solvers/numba_backend.py``) against the NumPy reference (``numpy_backend``).

Which is which: ``numpy_backend.sort_solve`` is the float64 *exact* reference (support decided
combinatorially, tau to ulps); ``numpy_backend.iterate`` is the vectorised reference of the
iterative solvers whose pass counts the Numba twin must reproduce; ``numba_backend`` is the
compiled code under test (``solve_tau`` on prepared rows, ``entmax_rows`` fused on raw rows).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsemap_tools.solvers import numba_backend as nb
from sparsemap_tools.solvers import numpy_backend as npb

ALPHAS = (1.0001, 1.01, 1.25, 1.5, 1.75, 2.0, 3.0, 10.0)
SOLVERS = ("sort", "bisect", "newton", "halley")


def prepare(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``zs = (alpha - 1)(x - max x)`` in float64, as the public API prepares rows."""
    x = np.asarray(x, np.float64)
    return (alpha - 1.0)[:, None] * (x - x.max(axis=1, keepdims=True))


def p_atol(alpha: float, base: float = 1e-12) -> float:
    """Attainable error on p. For alpha > 2, p is only Hoelder-q in tau (q = 1/(alpha-1) < 1):
    one ulp of tau moves an entry at the support boundary by ~ulp^q (notes, hazard 'alpha > 2'),
    e.g. 1.5e-8 at alpha = 3 and 2e-2 at alpha = 10, in float64, for any solver."""
    if alpha <= 2.0:
        return base
    return max(base, 10.0 * np.finfo(np.float64).eps ** (1.0 / (alpha - 1.0)))


def exact_p(x: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 exact ``(p, tau)`` from the sort reference (finite rows, alpha > 1)."""
    zs = prepare(x, alpha)
    ref = npb.sort_solve(zs, alpha)
    return npb.probabilities(zs, ref.tau, alpha), ref.tau


def nasty_rows(d: int = 64) -> np.ndarray:
    """Ties, all-equal, peaked, flat, huge/tiny scales, big shifts, masks (finite max)."""
    rng = np.random.default_rng(7)
    rows = [
        np.zeros(d),  # all equal: p = 1/d
        np.resize(np.repeat(rng.standard_normal(d // 8 + 1), 8), d),  # ties in blocks of 8
        np.r_[np.full(3, 2.0), rng.standard_normal(d - 3)],  # tie at the top
        100.0 * rng.standard_normal(d),  # peaked (support 1)
        1e-8 * rng.standard_normal(d),  # flat: every entry a candidate
        1e8 * rng.standard_normal(d),
        rng.standard_normal(d) + 1e4,
        rng.standard_normal(d) - 1e4,
        np.where(rng.random(d) < 0.5, -np.inf, rng.standard_normal(d)),  # -inf mask
        np.r_[0.0, np.full(d - 1, -np.inf)],  # a single finite entry
        np.linspace(-3.0, 0.0, d),
    ]
    return np.stack(rows)


# ----------------------------------------------------------------------------------------------
# solve_tau on prepared rows
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_tau_and_support_match_exact_reference(solver: str, alpha: float) -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal((40, 300)), nasty_rows(300)])
    a = np.full(x.shape[0], alpha)
    zs = prepare(x, a)
    ref = npb.sort_solve(zs, a)
    got = nb.solve_tau(zs, a, solver)
    assert got.solver == solver
    if solver == "sort":
        assert np.all(got.converged)
    else:  # the same rows as the NumPy loop (alpha = 10, all-equal row: both hit max_iter)
        np.testing.assert_array_equal(got.converged, npb.iterate(zs, a, solver).converged)
    np.testing.assert_allclose(got.tau, ref.tau, rtol=0, atol=1e-12)
    if alpha <= 2.0:
        np.testing.assert_array_equal(got.support_size, ref.support_size)
    else:  # an entry within an ulp of tau may flip (it carries p ~ ulp^q): rare
        assert np.mean(got.support_size == ref.support_size) >= 0.95
        assert np.all(np.abs(got.support_size - ref.support_size) <= 1)
    if alpha <= 2.0:  # |f| ~ |f'| ulp(tau) with |f'| up to ~q: q amplifies the rounding of tau
        assert np.all(np.abs(got.residual) < 2e-13 / (alpha - 1.0))
    if solver == "sort" or (solver in ("newton", "halley") and alpha in (1.5, 2.0)):
        assert np.all(got.certified)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_iteration_counts_match_numpy_backend(solver: str, alpha: float) -> None:
    """Same passes as the NumPy loop. Differences come only from the rounding-level endgame.

    The sums are the same numbers added in another order (NumPy: pairwise over the whole row,
    zeros included; Numba: left to right over the candidates), so they differ in the last
    ulp. That can decide the very last passes: whether ``f`` rounds to exactly 0 (a stop), the
    sign of ``f`` at a bisection midpoint one ulp from the root (which half is kept, hence
    when the bracket collapses), or whether a raw step is under 2 ulps. Where both runs stay
    away from that regime -- every certified alpha in {1.5, 2} row, most others -- the counts
    are equal.
    """
    rng = np.random.default_rng(2)
    x = rng.standard_normal((120, 1024))
    a = np.full(x.shape[0], alpha)
    zs = prepare(x, a)
    ref = npb.sort_solve(zs, a) if solver == "sort" else npb.iterate(zs, a, solver)
    got = nb.solve_tau(zs, a, solver)
    diff = got.iterations - ref.iterations
    if solver in ("newton", "halley") and alpha in (1.5, 2.0):
        np.testing.assert_array_equal(got.iterations, ref.iterations)
        np.testing.assert_array_equal(got.certified, ref.certified)
        return
    endgame_zero = (got.residual == 0.0) | (ref.residual == 0.0)
    explained = endgame_zero | (np.abs(diff) <= 1)
    assert np.all(explained), (diff[~explained], got.iterations[~explained])
    if solver == "bisect" and alpha == 10.0:
        # q = 1/9: every term is a pow that np.power (SIMD) and libm round differently on
        # ~5 % of arguments, and f is so steep that the last bisection pass is decided there
        assert abs(np.median(got.iterations) - np.median(ref.iterations)) <= 1
    else:
        assert np.mean(diff == 0) >= (0.7 if solver == "bisect" else 0.95)
        assert np.median(got.iterations) == np.median(ref.iterations)
    np.testing.assert_allclose(got.tau, ref.tau, rtol=0, atol=4.5e-16)


def test_solve_tau_bad_rows_and_empty() -> None:
    zs = np.array([[0.0, -0.5, np.nan], [0.0, np.inf, -1.0], [0.0, -0.2, -3.0]])
    r = nb.solve_tau(zs, 1.5, "newton")
    assert np.isnan(r.tau[:2]).all() and not r.converged[:2].any()
    assert r.converged[2] and r.certified[2]
    e = nb.solve_tau(np.zeros((0, 5)), 1.5, "bisect")
    assert len(e) == 0
    with pytest.raises(ValueError, match="solver"):
        nb.solve_tau(zs, 1.5, "auto")


def test_dispatch_from_solvers_package() -> None:
    from sparsemap_tools.solvers import solve_tau

    rng = np.random.default_rng(3)
    zs = prepare(rng.standard_normal((8, 100)), np.full(8, 1.5))
    r = solve_tau(zs, 1.5, "newton", backend="numba")
    np.testing.assert_allclose(r.tau, npb.sort_solve(zs, np.full(8, 1.5)).tau, atol=1e-15)


# ----------------------------------------------------------------------------------------------
# entmax_rows: fused path on raw rows
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_entmax_rows_float64_matches_exact(solver: str, alpha: float) -> None:
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.standard_normal((30, 513)), nasty_rows(513)])
    a = np.full(x.shape[0], alpha)
    p_ref, tau_ref = exact_p(x, a)
    p, r = nb.entmax_rows(x, a, solver)
    assert p.dtype == np.float64 and p.shape == x.shape
    np.testing.assert_allclose(p, p_ref, rtol=0, atol=p_atol(alpha))
    np.testing.assert_allclose(r.tau, tau_ref, rtol=0, atol=1e-12)
    if solver == "sort" or alpha <= 2.0:
        assert np.all(r.converged)
    if alpha <= 2.0:
        np.testing.assert_array_equal(r.support_size, (p_ref > 0).sum(axis=1))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-13)
    assert np.all(p[np.isneginf(x)] == 0.0)


@pytest.mark.parametrize("alpha", (1.01, 1.25, 1.5, 1.75, 2.0))
@pytest.mark.parametrize("solver", ("newton", "sort", "bisect"))
def test_entmax_rows_float32_within_1e6(solver: str, alpha: float) -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal((64, 1000)), 0.05 * rng.standard_normal((8, 1000))])
    x = x.astype(np.float32)
    a = np.full(x.shape[0], alpha)
    p_ref, _ = exact_p(x.astype(np.float64), a)
    p, r = nb.entmax_rows(x, a, solver)
    assert p.dtype == np.float32
    assert np.max(np.abs(p - p_ref)) <= 1e-6
    # float32 output: only the final rounding of p remains (computed in float64)
    assert np.max(np.abs(p - p_ref)) <= 2.0 * np.finfo(np.float32).eps


def test_entmax_rows_nan_inf_and_masked_rows() -> None:
    x = np.array(
        [
            [0.3, np.nan, 1.0, 2.0],
            [0.3, np.inf, 1.0, 2.0],
            [-np.inf] * 4,
            [0.3, -np.inf, 1.0, 2.0],
            [0.3, -0.1, 1.0, 2.0],
        ]
    )
    for dtype in (np.float64, np.float32):
        for alpha in (1.0, 1.5, 3.0):
            p, r = nb.entmax_rows(x.astype(dtype), np.full(5, alpha), "newton")
            assert np.isnan(p[:3]).all()
            assert np.isnan(r.tau[:3]).all() and not r.converged[:3].any()
            assert np.isfinite(p[3:]).all() and p[3, 1] == 0.0
            np.testing.assert_allclose(p[3:].sum(axis=1), 1.0, atol=1e-6)


def test_entmax_rows_alpha_one_is_softmax() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 50)) * 3
    x[0, :10] = -np.inf
    a = np.r_[np.ones(8), np.full(8, 1.5)]
    p, r = nb.entmax_rows(x, a, "newton")
    e = np.exp(x[:8] - x[:8].max(axis=1, keepdims=True))
    np.testing.assert_allclose(p[:8], e / e.sum(axis=1, keepdims=True), rtol=1e-14, atol=1e-300)
    assert np.isnan(r.tau[:8]).all() and r.converged[:8].all() and (r.iterations[:8] == 0).all()
    np.testing.assert_array_equal(r.support_size[:8], (p[:8] > 0).sum(axis=1))
    p_ref, _ = exact_p(x[8:], a[8:])
    np.testing.assert_allclose(p[8:], p_ref, atol=1e-12)


def test_entmax_rows_per_row_alpha() -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((len(ALPHAS) * 3, 200))
    a = np.tile(np.array(ALPHAS), 3)
    for solver in SOLVERS:
        p, r = nb.entmax_rows(x, a, solver)
        p_ref, tau_ref = exact_p(x, a)
        for i, al in enumerate(a):
            np.testing.assert_allclose(p[i], p_ref[i], rtol=0, atol=p_atol(al))
        np.testing.assert_allclose(r.tau, tau_ref, rtol=0, atol=1e-12)


def test_entmax_rows_near_one_is_close_to_softmax() -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 64))
    p, _ = nb.entmax_rows(x, np.full(4, 1.0001), "newton")
    s, _ = nb.entmax_rows(x, np.ones(4), "newton")
    assert np.max(np.abs(p - s)) < 1e-3  # O(alpha - 1) from softmax


def test_entmax_rows_one_column_dtypes_and_out() -> None:
    p, r = nb.entmax_rows(np.array([[3.0], [-1e30]]), np.array([1.5, 2.0]), "bisect")
    np.testing.assert_array_equal(p, [[1.0], [1.0]])
    p16, _ = nb.entmax_rows(np.ones((2, 3), np.float16), 1.5)
    assert p16.dtype == np.float32
    np.testing.assert_allclose(p16, 1 / 3, rtol=1e-7)
    pi, _ = nb.entmax_rows(np.arange(6).reshape(2, 3), 2.0)
    assert pi.dtype == np.float64
    out = np.empty((2, 3), np.float32)
    x = np.array([[0.0, 1.0, 3.0], [1.0, 1.0, 1.0]], np.float32)
    res, _ = nb.entmax_rows(x, 1.5, out=out)
    assert res is out
    with pytest.raises(ValueError, match="alpha"):
        nb.entmax_rows(x, 0.5)
    with pytest.raises(ValueError, match="out"):
        nb.entmax_rows(x, 1.5, out=np.empty((2, 3)))
    e, er = nb.entmax_rows(np.zeros((0, 4), np.float32), 1.5)
    assert e.shape == (0, 4) and len(er) == 0


def test_entmax_rows_iterations_track_solve_tau() -> None:
    """The fused path runs the same solver (vectorised sums): same passes, same certificate."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((64, 700))
    for alpha in (1.5, 2.0):
        a = np.full(64, alpha)
        _, r = nb.entmax_rows(x, a, "newton")
        ref = npb.iterate(prepare(x, a), a, "newton")
        np.testing.assert_array_equal(r.iterations, ref.iterations)
        assert r.certified.all()


# ----------------------------------------------------------------------------------------------
# properties
# ----------------------------------------------------------------------------------------------

finite = st.floats(-50.0, 50.0, allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=60, deadline=None)
@given(
    row=st.lists(finite, min_size=1, max_size=40),
    alpha=st.sampled_from(ALPHAS + (1.0,)),
    solver=st.sampled_from(SOLVERS),
    shift=st.sampled_from([0.0, 1e4, -1e4, 3.7]),
)
def test_properties_simplex_and_shift_invariance(row, alpha, solver, shift) -> None:
    x = np.array([row])
    a = np.array([alpha])
    p, r = nb.entmax_rows(x, a, solver)
    assert np.all(p >= 0.0)
    assert abs(p.sum() - 1.0) < 1e-12
    ps, _ = nb.entmax_rows(x + shift, a, solver)
    # x + 1e4 rounds x itself by up to ulp(1e4) = 1.8e-12; the map x -> p has a Lipschitz
    # constant <= q in x (for alpha <= 2), so the outputs may move by ~q * 2e-12.
    q = 1.0 / (alpha - 1.0) if alpha > 1.0 else 1.0
    tol = p_atol(alpha, (q + 1.0) * 4e-12 if abs(shift) > 10 else 1e-12) if alpha > 1 else 1e-11
    np.testing.assert_allclose(ps, p, rtol=0, atol=max(tol, p_atol(alpha, 1e-12)) * 10)
    if alpha > 1.0:
        p_ref, _ = exact_p(x, a)
        np.testing.assert_allclose(p, p_ref, rtol=0, atol=p_atol(alpha, 1e-12))


@settings(max_examples=30, deadline=None)
@given(
    row=st.lists(finite, min_size=2, max_size=30),
    alpha=st.sampled_from((1.25, 1.5, 2.0, 3.0)),
    seed=st.integers(0, 2**16),
)
def test_property_permutation_equivariance(row, alpha, seed) -> None:
    x = np.array([row])
    perm = np.random.default_rng(seed).permutation(x.shape[1])
    p, _ = nb.entmax_rows(x, alpha, "newton")
    pp, _ = nb.entmax_rows(x[:, perm], alpha, "newton")
    np.testing.assert_allclose(pp, p[:, perm], atol=1e-12)


@pytest.mark.parametrize("alpha", [1.25, 4 / 3, 1.5, 1.75, 2.0, 3.0])
@pytest.mark.parametrize("d", [7, 700, 3000])
def test_entmax_rows_float32_tau_exact(alpha: float, d: int) -> None:
    """float32 input: tau is the float64 answer for the float32 scores, to the last bits.

    Guards the dense path (short rows, integer q) and the float64 formation of
    ``(alpha - 1)(x - max)`` from float32 data: LLVM once evaluated ``x - max`` in float32
    there (tau off by ~5e-10) because both operands were widened float32 values.
    """
    rng = np.random.default_rng(int(alpha * 100) + d)
    x = (rng.standard_normal((40, d)) * rng.choice([0.1, 1.0, 10.0], (40, 1))).astype(np.float32)
    x[0, : d // 2] = -np.inf
    a = np.full(40, alpha)
    p, r = nb.entmax_rows(x, a, "newton")
    ref = npb.sort_solve(prepare(x.astype(np.float64), a), a)
    np.testing.assert_allclose(r.tau, ref.tau, rtol=0, atol=1e-14)
    assert r.converged.all()
    if alpha in (1.5, 2.0):
        assert r.certified.all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# the dense path of entmax_rows (float32 rows, d <= DENSE_MAX, integer q in {2, 3, 4}, newton)
# ----------------------------------------------------------------------------------------------


def dense_nasty_rows(d: int, seed: int = 11) -> np.ndarray:
    """float32 rows for the dense path: random at many scales, ties, masks, shifts, flat rows."""
    rng = np.random.default_rng(seed)
    g = lambda: rng.standard_normal(d)  # noqa: E731
    rows = [s * g() for s in (1e-3, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)]
    rows += [
        np.zeros(d),  # all equal
        1e-20 * g(),  # flat to float32 resolution
        1e20 * g(),  # huge scale: support 1
        np.resize(np.repeat(g()[: d // 4 + 1], 4), d),  # ties in blocks of 4
        np.r_[np.full(min(3, d), 2.0), g()[: max(d - 3, 0)]][:d],  # tie at the top
        g() + 1e4,  # shifts: float32 ulp 1e-3 there
        g() + 12.0,  # (alpha-1) max near 8: both forms of the float32 pass
        g() - 14.0,
        g() - 1e4,
        0.1 * g() + 1e4,
        np.where(rng.random(d) < 0.5, -np.inf, g()),  # -inf mask
        np.r_[g()[:1], np.full(d - 1, -np.inf)],  # a single finite entry
        np.linspace(-3.0, 0.0, d),
        np.r_[g()[: d // 2], np.full(d - d // 2, -np.inf)],
    ]
    x = np.stack(rows).astype(np.float32)
    return x[np.isfinite(x).any(axis=1)]  # (d = 1: the mask may hide the only entry)


def p32_tol(p_ref: np.ndarray, alpha: float) -> np.ndarray:
    """float32 rounding of p, plus what a tau off by 4e-16 does to an entry just above it
    (``dp = q p^((q-1)/q) dtau``: relative 1e-7 at p ~ 1e-20 for alpha = 1.5)."""
    f32 = np.finfo(np.float32)
    q = 1.0 / (alpha - 1.0)
    return f32.eps * p_ref + q * p_ref ** ((q - 1.0) / q) * 4e-16 + f32.smallest_subnormal


def near_threshold_rows(d: int, alpha: float, rows: int = 40, seed: int = 13) -> np.ndarray:
    """float32 rows with entries placed on the float32 grid points nearest the threshold.

    A float32 search cannot tell on which side of tau* such an entry lies, so the float32
    iterate's support is often wrong here: only the float64 certificate keeps the answer exact.
    """
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, d)) * rng.choice([0.1, 1.0, 3.0], (rows, 1))).astype(np.float32)
    a = np.full(rows, alpha)
    tau = npb.sort_solve(prepare(x.astype(np.float64), a), a).tau
    mx = x.max(axis=1).astype(np.float64)
    for i in range(rows):
        c = np.float32(mx[i] + tau[i] / (alpha - 1.0))  # x value at the threshold, rounded
        near = [c, np.nextafter(c, np.float32(np.inf)), np.nextafter(c, np.float32(-np.inf))]
        for j, v in enumerate(near[: 1 + i % 3]):
            x[i, (7 * i + 31 * j + 1) % d] = v
    return x


@pytest.mark.parametrize("alpha", [1.5, 4 / 3, 1.25])
@pytest.mark.parametrize("d", [1, 2, 5, 64, 1000, 2048])
def test_dense_path_exact_on_nasty_rows(alpha: float, d: int) -> None:
    """tau equals the float64 sort reference (to a few ulps of 1, the scale of the prepared row;
    e.g. 1.5e-16 off at tau = -0.033 on a flat row, as before the dense path) and p is that reference's p
    rounded to float32, on rows that stress the float32 search: ties, masks, +-1e4 shifts, tiny
    and huge scales, a single entry. Certified (alpha = 1.5) wherever the dense path ran."""
    x = np.concatenate([dense_nasty_rows(d), dense_nasty_rows(d, seed=12)])
    if d >= 64:
        x = np.concatenate([x, near_threshold_rows(d, alpha)])
    a = np.full(x.shape[0], alpha)
    p, r = nb.entmax_rows(x, a, "newton")
    zs = prepare(x.astype(np.float64), a)
    ref = npb.sort_solve(zs, a)
    np.testing.assert_allclose(r.tau, ref.tau, rtol=2e-15, atol=5e-16)
    p_ref = npb.probabilities(zs, ref.tau, a)
    assert p.dtype == np.float32
    err = np.abs(p.astype(np.float64) - p_ref)
    assert np.all(err <= p32_tol(p_ref, alpha))
    assert r.converged.all()
    if alpha == 1.5:
        assert r.certified.all()
        np.testing.assert_array_equal(r.support_size, ref.support_size)
    assert np.all(p[np.isneginf(x)] == 0.0)


@pytest.mark.parametrize("alpha, n", [(1.5, 2), (4 / 3, 3), (1.25, 4)])
def test_dense_path_is_taken_and_exact(alpha: float, n: int) -> None:
    """``_dense_row`` itself: it accepts (nearly) every randn row, and what it accepts is exact.

    Also pins the early exit from float32 for q = 2 (the closed form needs the support, not tau
    to 1e-5): randn rows of 1024 need at most 4 float32 passes + 1 float64 pass in >= 95 %.
    """
    rng = np.random.default_rng(21)
    x = np.concatenate(
        [s * rng.standard_normal((100, 1024)) for s in (0.1, 1.0, 10.0)]
    ).astype(np.float32)
    o = np.empty(x.shape[1], np.float32)
    a = np.full(x.shape[0], alpha)
    zs = prepare(x.astype(np.float64), a)
    ref = npb.sort_solve(zs, a)
    oks, its = [], []
    for i in range(x.shape[0]):
        ok, t, k, it, ce, sp = nb._dense_row(x[i], o, float(x[i].max()), alpha, n, 100)
        oks.append(ok)
        its.append(it)
        if ok:
            assert t == pytest.approx(ref.tau[i], rel=2e-15, abs=5e-16)
            assert k == ref.support_size[i]
            p_ref = npb.probabilities(zs[i : i + 1], ref.tau[i : i + 1], a[:1])[0]
            err = np.abs(o.astype(np.float64) - p_ref)
            assert np.all(err <= p32_tol(p_ref, alpha))
            assert ce == (n == 2)
    assert np.mean(oks) >= 0.99
    if n == 2:
        assert np.mean(np.array(its[100:200]) <= 5) >= 0.95
