r"""Closed-form thresholds on a known support, and their certificate.

Shared by every backend: the functions are plain arithmetic on scalars or NumPy arrays, so the
NumPy backend calls them on arrays and the Numba backend compiles them (``numba.njit``).

Let ``S`` be the support at the current iterate ``tau`` and ``d_i = zs_i - tau > 0`` on it,
``k = |S|``, ``s1 = sum_S d``, ``ss = sum_S (d - s1/k)^2`` (centred: no cancellation).
On the support ``S`` the threshold equation is polynomial for ``q = 1/(alpha-1) in {1, 2}``:

* ``alpha = 2`` (sparsemax): ``sum_S (d_i - delta) = 1``  =>  ``delta = (s1 - 1)/k``.
* ``alpha = 1.5``: ``sum_S (d_i - delta)^2 = 1``, the smaller root
  ``delta = s1/k - sqrt((1 - ss)/k)`` (needs ``ss <= 1``).

``tau_cf = tau + delta`` is the exact threshold iff it induces the same support:
``max_{not S} d <= delta`` (everything outside ``S`` stays at or below ``tau_cf``; automatic
when ``delta >= 0``, i.e. when the iterate approached from the left) and ``min_S d >= delta``
(everything in ``S`` stays at or above ``tau_cf``; an element landing exactly on ``tau_cf`` has
``p = 0`` and changes nothing). Then ``f(tau_cf) = 0`` exactly in real arithmetic.
"""

from __future__ import annotations

import math

import numpy as np


def has_closed_form(alpha):
    """True where alpha is exactly 1.5 or 2."""
    return (alpha == 2.0) | (alpha == 1.5)


def closed_form_delta(alpha, count, s1, ss):
    """``delta`` with ``tau_cf = tau + delta`` on the current support (NaN if none exists)."""
    k = np.maximum(count, 1)
    mean = s1 / k
    disc = (1.0 - ss) / k
    d15 = mean - np.sqrt(np.maximum(disc, 0.0))
    d15 = np.where(disc >= 0.0, d15, np.nan)
    d2 = (s1 - 1.0) / k
    out = np.where(alpha == 2.0, d2, np.where(alpha == 1.5, d15, np.nan))
    return np.where(count > 0, out, np.nan)


def certified(delta, min_d, max_out=0.0):
    """The certificate ``max_{not S} d <= delta <= min_S d`` (False for NaN).

    With the default ``max_out = 0`` it is the one-sided test ``0 <= delta <= min_S d``, valid
    for iterates below the root (every element outside ``S`` has ``d <= 0``).
    """
    return (delta >= max_out) & (delta <= min_d)


def closed_form_delta_scalar(alpha: float, count: int, s1: float, ss: float) -> float:
    """Scalar twin of :func:`closed_form_delta` for compiled per-row kernels."""
    if count <= 0:
        return math.nan
    if alpha == 2.0:
        return (s1 - 1.0) / count
    if alpha == 1.5:
        disc = (1.0 - ss) / count
        if disc < 0.0:
            return math.nan
        return s1 / count - math.sqrt(disc)
    return math.nan
