"""The scalar brentq reference (``tests/_reference.py``) is itself checked: against 60-digit
mpmath bisection, against closed forms (softmax, simplex projection, uniform, one-hot), and it is
then used to cross-check the exact ``sort`` solver on small rows, row by row."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from _reference import entmax_ref, entmax_row, simplex_projection
from sparsemap_tools.solvers import numpy_backend

mpmath = pytest.importorskip("mpmath")

try:
    numba_backend = importlib.import_module("sparsemap_tools.solvers.numba_backend")
except ImportError:
    numba_backend = None


def mp_entmax(x, alpha, dps=60):
    """High-precision entmax by bisection on f(tau) in the prepared space (no float64 at all
    after reading the input)."""
    with mpmath.workdps(dps):
        xs = [mpmath.mpf(float(v)) for v in x if np.isfinite(v)]
        m = max(xs)
        a = mpmath.mpf(alpha)
        c = a - 1
        q = 1 / c
        zs = [c * (v - m) for v in xs]
        f = lambda t: sum((z - t) ** q for z in zs if z > t) - 1  # noqa: E731
        lo, hi = mpmath.mpf(-1), -mpmath.mpf(len(zs)) ** (1 - a)
        for _ in range(4 * dps):
            mid = (lo + hi) / 2
            if f(mid) >= 0:
                lo = mid
            else:
                hi = mid
        t = (lo + hi) / 2
        pf = [(z - t) ** q if z > t else mpmath.mpf(0) for z in zs]
        s = sum(pf)
        out, j = [], 0
        for v in x:
            if np.isfinite(v):
                out.append(float(pf[j] / s))
                j += 1
            else:
                out.append(0.0)
        return np.array(out), float(t)


@pytest.mark.parametrize("alpha", [1.0001, 1.01, 1.25, 1.5, 1.75, 2.0, 3.0, 10.0])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_reference_against_mpmath(alpha, scale):
    rng = np.random.default_rng(int(alpha * 100 + scale))
    for _ in range(2):
        x = rng.standard_normal(9) * scale
        x[3] = -np.inf
        p, tau = entmax_row(x, alpha)
        pm, tm = mp_entmax(x, alpha)
        # x is exact in both; the reference rounds zs once, so alpha > 2 entries near the
        # threshold inherit Hoelder amplification of that rounding (bounded generously here)
        tol = 2e-15 if alpha <= 2 else 1e-11
        np.testing.assert_allclose(p, pm, rtol=0, atol=tol)
        assert abs(tau - tm) <= 4e-16 * max(1.0, abs(tm)) + 1e-300


@pytest.mark.parametrize("alpha", [1.0001, 1.5, 2.0, 3.0, 10.0])
def test_reference_special_rows(alpha):
    p, _ = entmax_row(np.full(7, -2.5), alpha)
    np.testing.assert_allclose(p, 1 / 7, rtol=1e-15)
    p, _ = entmax_row(np.array([4.2]), alpha)
    assert p.tolist() == [1.0]
    p, _ = entmax_row(np.array([0.0, -np.inf, -np.inf]), alpha)
    assert p.tolist() == [1.0, 0.0, 0.0]
    gap = 1.5 / (alpha - 1.0)  # zs gap 1.5 > 1: nothing but the max can be in the support
    p, _ = entmax_row(np.array([gap, 0.0, -3.0]), alpha)
    assert p.tolist() == [1.0, 0.0, 0.0]
    for bad in ([np.nan, 1.0], [np.inf, 1.0], [-np.inf, -np.inf]):
        p, t = entmax_row(np.array(bad), alpha)
        assert np.isnan(p).all() and np.isnan(t)


def test_reference_softmax_and_sparsemax():
    rng = np.random.default_rng(0)
    for _ in range(10):
        x = rng.standard_normal(12) * 3
        e = np.exp(x - x.max())
        np.testing.assert_allclose(entmax_row(x, 1.0)[0], e / e.sum(), rtol=1e-14)
        np.testing.assert_allclose(entmax_row(x, 2.0)[0], simplex_projection(x), atol=1e-15)
    # the projection itself: KKT conditions
    x = rng.standard_normal(20)
    p = simplex_projection(x)
    assert abs(p.sum() - 1) < 1e-15 and (p >= 0).all()
    theta = (x - p)[p > 0]
    np.testing.assert_allclose(theta, theta[0], atol=1e-15)
    assert (x[p == 0] <= theta[0] + 1e-15).all()


def test_reference_entmax15_closed_form():
    """alpha = 1.5 on a known support: tau is the smaller root of a quadratic (notes 1.4)."""
    x = np.array([1.3, 0.2, 0.9, -2.0, 1.1])
    p, tau = entmax_row(x, 1.5)
    zs = 0.5 * (x - x.max())
    S = p > 0
    k, s1, s2 = S.sum(), zs[S].sum(), (zs[S] ** 2).sum()
    tau_cf = (2 * s1 - np.sqrt(4 * s1 * s1 - 4 * k * (s2 - 1))) / (2 * k)
    np.testing.assert_allclose(tau, tau_cf, rtol=0, atol=1e-15)


@pytest.mark.parametrize("alpha", [1.0001, 1.01, 1.25, 4 / 3, 1.5, 1.75, 2.0, 2.5, 3.0, 10.0])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_sort_solver_row_by_row(alpha, backend):
    """The exact sort solver against the scalar reference on many small rows (d <= 8)."""
    if backend == "numba" and numba_backend is None:
        pytest.skip("numba backend not importable")
    rng = np.random.default_rng(int(alpha * 1000))
    d = 1 + rng.integers(0, 8, size=40)
    for i, n in enumerate(d):
        x = rng.standard_normal(n) * rng.choice([0.1, 1.0, 5.0])
        if i % 5 == 0 and n > 1:
            x[rng.integers(0, n)] = -np.inf
        if i % 7 == 0:
            x = np.round(x)
        zs = (alpha - 1.0) * (x - x.max())
        zs2 = zs[None, :]
        if backend == "numpy":
            r = numpy_backend.sort_solve(zs2, np.array([alpha]))
        else:
            r = numba_backend.solve_tau(zs2, alpha, "sort")
        p_ref, tau_ref = entmax_row(x, alpha)
        assert abs(r.tau[0] - tau_ref) <= 1e-14, (x, alpha, r.tau[0], tau_ref)
        # an entry within a few ulps of tau may fall on either side (for alpha > 2 the root can
        # sit between two consecutive doubles next to a breakpoint); others must agree
        near = np.abs(zs - tau_ref) <= 8 * np.finfo(float).eps * max(1.0, abs(tau_ref))
        on_ref = (p_ref > 0) & ~near
        on_sort = (zs > r.tau[0]) & ~near
        np.testing.assert_array_equal(on_sort, on_ref, err_msg=f"{x} alpha={alpha}")
        if not near.any():
            assert r.support_size[0] == (p_ref > 0).sum(), (x, alpha)
        assert r.certified[0] and r.converged[0]


def test_entmax_ref_axis():
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    p = entmax_ref(x, 1.5, axis=1)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-15)
    np.testing.assert_allclose(p[1, :, 2], entmax_row(x[1, :, 2], 1.5)[0], atol=0)
