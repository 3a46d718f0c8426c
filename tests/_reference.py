r"""Tiny independent scalar reference for alpha-entmax (test code only; imports no library code).

One row at a time, with ``scipy.optimize.brentq`` on the threshold equation

.. math:: f(\tau) = \sum_i [zs_i - \tau]_+^q - 1 = 0, \qquad zs = (\alpha-1)(x - \max x),
          \quad q = 1/(\alpha-1), \quad \tau \in [-1, -d_{eff}^{1-\alpha}].

For ``alpha > 2`` (q < 1) it is solved as written, in ``tau`` (the bases ``zs_i - tau`` are then
small differences of small numbers, exact to a few ulps). For ``1 < alpha <= 2``, to stay accurate
near alpha = 1 (where the q-th power amplifies the rounding of the base ``zs_i - tau`` by q), the
same equation is solved in the variable ``mu = (tau + 1)/(alpha - 1)``:
``zs_i - tau = 1 + (alpha-1)(x_i - max x - mu)``, so
``p_i = exp(q * log1p((alpha-1)(x_i - max x - mu)))`` has a relative error of a few ulps (no
rounded base near 1 raised to a large power). ``mu`` lies in ``[0, (1 - d^(1-alpha))/(alpha-1)]``.
The final ``p`` is renormalised (this removes the common-mode effect of the last ulp of the root).
Checked against 60-digit mpmath bisection in ``test_reference.py``.

``alpha == 1`` rows are softmax. Row conventions: -inf entries get 0; an all -inf row, or one
holding NaN or +inf, is all NaN.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq


def _terms(xs: np.ndarray, c: float, mu: float) -> np.ndarray:
    """[1 + c (xs - mu)]_+^(1/c) for the finite, max-shifted scores ``xs`` (<= 0)."""
    base = c * (xs - mu)  # > -1 on the support
    out = np.zeros_like(xs)
    on = base > -1.0
    out[on] = np.exp(np.log1p(base[on]) / c)
    return out


def entmax_row(x: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """(p, tau_prepared) for one row. ``tau_prepared`` is tau in the max-shifted scaled space."""
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[0]
    if np.isnan(x).any() or np.isposinf(x).any() or not np.isfinite(x).any():
        return np.full(d, np.nan), math.nan
    m = x[np.isfinite(x)].max()
    fin = np.isfinite(x)
    xs = x[fin] - m
    p = np.zeros(d)
    if alpha == 1.0:
        e = np.exp(xs)
        p[fin] = e / e.sum()
        return p, math.nan
    c = alpha - 1.0
    d_eff = xs.shape[0]
    if alpha > 2.0:
        zs = c * xs
        q = 1.0 / c
        f = lambda t: float((np.maximum(zs - t, 0.0) ** q).sum() - 1.0)  # noqa: E731
        hi = -float(d_eff) ** (1.0 - alpha)
        if d_eff == 1 or f(hi) >= 0.0:
            tau = hi
        else:
            tau = brentq(f, -1.0, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
        t = np.maximum(zs - tau, 0.0) ** q
        p[fin] = t / t.sum()
        return p, tau
    g = lambda mu: float(_terms(xs, c, mu).sum() - 1.0)  # noqa: E731  decreasing in mu
    mu_hi = -math.expm1((1.0 - alpha) * math.log(d_eff)) / c  # (1 - d^(1-alpha))/c
    if d_eff == 1 or g(mu_hi) >= 0.0:
        mu = mu_hi
    else:
        mu = brentq(g, 0.0, mu_hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
    t = _terms(xs, c, mu)
    p[fin] = t / t.sum()
    return p, -1.0 + c * mu


def entmax_rows(x2d: np.ndarray, alpha) -> tuple[np.ndarray, np.ndarray]:
    """Row loop over a (R, d) array; ``alpha`` scalar or (R,)."""
    x2d = np.asarray(x2d, dtype=np.float64)
    a = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (x2d.shape[0],))
    ps, taus = [], []
    for row, ar in zip(x2d, a):
        p, t = entmax_row(row, float(ar))
        ps.append(p)
        taus.append(t)
    return np.array(ps).reshape(x2d.shape), np.array(taus)


def entmax_ref(x: np.ndarray, alpha=1.5, axis: int = -1) -> np.ndarray:
    """Reference entmax along ``axis`` for a scalar alpha."""
    x = np.asarray(x, dtype=np.float64)
    moved = np.moveaxis(x, axis, -1)
    p, _ = entmax_rows(moved.reshape(-1, moved.shape[-1]), alpha)
    return np.moveaxis(p.reshape(moved.shape), -1, axis)


def simplex_projection(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of one vector onto the probability simplex by bisection on the
    Lagrange multiplier (deliberately not the sort algorithm): find theta with
    sum max(v - theta, 0) = 1, then finish exactly on the detected support."""
    v = np.asarray(v, dtype=np.float64)
    lo, hi = v.max() - 1.0, v.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.maximum(v - mid, 0.0).sum() >= 1.0:
            lo = mid
        else:
            hi = mid
    s = v > lo
    theta = (v[s].sum() - 1.0) / s.sum()
    return np.maximum(v - theta, 0.0)
