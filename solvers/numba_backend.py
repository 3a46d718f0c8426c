r"""Compiled (Numba) threshold solvers and the fused row-wise entmax kernel.

Same mathematics, stopping rules and iteration counts as :mod:`.numpy_backend` (read its module
docstring first), restructured for a CPU core: one row per task of a ``numba.prange`` loop, all
arithmetic in float64 scalars, no temporaries the size of the row.

Rows are *prepared*: ``zs = (alpha - 1) (x - max x)`` (row maximum 0), ``q = 1/(alpha - 1)``,

.. math::  f(\tau) = \sum_i [zs_i - \tau]_+^q - 1, \qquad \tau^* \in [-1, -d_{eff}^{1-\alpha}].

**Candidates.** Every iterate of every solver stays at or above the lower bracket end
(``lo = -1`` at the start, and ``lo`` only increases), so an entry with ``zs_i <= lo`` has
``[zs_i - tau]_+ = 0`` at every later iterate: it can never be in the support. The kernels
therefore copy the candidates ``zs_i > -1`` of a row into a small per-thread buffer (with their
column indices) in one pass, iterate on the buffer only, and drop entries that fall to or below
``lo`` while they sum (``lo`` rises with every pass that has ``f >= 0``). For typical rows the
buffer holds a few percent of the row (``x_i > max x - 1/(alpha - 1)``); for flat rows it holds
all of it and everything stays correct, only slower.

**Powers.** ``d^q`` and ``d^(q-1)`` (and ``d^(q-2)`` for Halley) without ``pow`` for integer
``q <= 8`` (``alpha in {2, 1.5, 4/3, 1.25, ...}``: repeated multiplication), otherwise one
``log`` and one ``exp`` per element: ``d^q = exp(q log d)``, ``d^(q-1) = d^q / d``.

**Row conventions** (those of softmax, shared with ``numpy_backend.entmax_rows``): ``-inf``
entries get probability 0; a row that is all ``-inf`` or holds a NaN or ``+inf`` gives an all-NaN
output row with ``tau = NaN`` and ``converged = False``; ``alpha == 1`` rows are softmax, with
``tau = NaN``, ``iterations = 0``, ``converged = certified = True``.

Compilation is lazy (first call) and cached on disk (``cache=True``); importing this module
costs only the import of Numba.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from . import _closed_form as cf
from .result import TauResult

SORT, BISECT, NEWTON, HALLEY = 0, 1, 2, 3
_METHODS = {"sort": SORT, "bisect": BISECT, "newton": NEWTON, "halley": HALLEY}

# error_model="numpy": a division by zero gives inf/NaN like NumPy instead of raising.
_JIT = dict(cache=True, nogil=True, error_model="numpy")
# Safe subset for pure reductions over finite values (no nnan/ninf: NaN/inf must survive).
_SUM_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

_cf_delta = numba.njit(**_JIT)(cf.closed_form_delta_scalar)


# ----------------------------------------------------------------------------------------------
# scalar building blocks
# ----------------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def _pow_kind(q: float) -> int:
    """``int(q)`` if ``q`` is an integer in ``[1, 8]`` (powers by multiplication), else 0."""
    if q >= 1.0 and q <= 8.0 and q == math.floor(q):
        return int(q)
    return 0


@numba.njit(**_JIT)
def _ipow(d: float, n: int) -> float:
    """``d^n`` for ``0 <= n <= 8`` by repeated squaring (exact to a few ulps)."""
    r = 1.0
    b = d
    while n > 0:
        if n & 1:
            r *= b
        b *= b
        n >>= 1
    return r


@numba.njit(**_JIT)
def _powq(d: float, q: float, kind: int) -> tuple[float, float]:
    """``(d^q, d^(q-1))`` for ``d > 0``."""
    if kind == 1:
        return d, 1.0
    if kind == 2:
        return d * d, d
    if kind > 2:
        r = _ipow(d, kind - 1)
        return r * d, r
    a = math.exp(q * math.log(d))
    return a, a / d


@numba.njit(**_JIT)
def _pass(z, idx, m, t, lo, q, kind, halley, need_ss):
    """One pass over the ``m`` buffered candidates at ``tau = t``.

    Drops (compacts away) the candidates with ``z <= lo`` (they can never re-enter the
    support) and returns ``(f, sum d^(q-1), sum d^(q-2), k, sum d, centred sum (d - mean)^2,
    min d, new m)``, all sums over the support ``S = {d = z - t > 0}``. The centred sum of
    squares (for the alpha = 1.5 closed form) costs a second loop over the kept entries and is
    only computed when ``need_ss``.
    """
    f1 = 0.0
    sq1 = 0.0
    sq2 = 0.0
    cnt = 0
    s1 = 0.0
    mind = math.inf
    w = 0
    for j in range(m):
        zj = z[j]
        if zj > lo:
            z[w] = zj
            idx[w] = idx[j]
            w += 1
            d = zj - t
            if d > 0.0:
                cnt += 1
                s1 += d
                if d < mind:
                    mind = d
                a, b = _powq(d, q, kind)
                f1 += a
                sq1 += b
                if halley:
                    sq2 += b / d
    ss = 0.0
    if need_ss and cnt > 0:
        mean = s1 / cnt
        for j in range(w):
            d = z[j] - t
            if d > 0.0:
                ss += (d - mean) * (d - mean)
    return f1 - 1.0, sq1, sq2, cnt, s1, ss, mind, w


@numba.njit(**_JIT)
def _iterate_row(z, idx, m, alpha, method, tol, max_iter, lo, hi, use_cf):
    """Scalar twin of ``numpy_backend.iterate`` for one row (candidates ``z[:m]``).

    ``bisect``: midpoint of ``[lo, hi]`` until it stops moving or ``hi - lo <= tol``.
    ``newton`` (``q >= 1``, alpha <= 2): the l_q-Newton step on ``phi = (f+1)^(1/q) - 1``,

    .. math:: \tau^+ = \tau + \frac{q F (1 - F^{-1/q})}{q \sum_S d^{q-1}}, \quad F = \sum_S d^q,

    monotone from ``lo``; for ``q < 1`` plain Newton ``tau + f / (q sum d^(q-1))``, guarded.
    ``halley``: ``tau - 2 f f' / (2 f'^2 - f f'')``, guarded.
    Guard: a step outside ``(lo, hi)`` becomes the midpoint, and after a Newton/Halley step
    that did not halve ``|f|`` the next pass bisects. Stops on ``f == 0``, a raw step
    ``<= max(tol, 4e-16 |tau|)``, bracket collapse (guarded), no increase (monotone), or a
    certified closed form (alpha in {1.5, 2}, ``use_cf``).

    Returns ``(tau, iterations, converged, certified, m)`` (``m``: candidates kept).
    """
    q = 1.0 / (alpha - 1.0)
    kind = _pow_kind(q)
    bis = method == BISECT
    halley = method == HALLEY
    guarded = halley or (method == NEWTON and alpha > 2.0)
    has_cf = use_cf and (not bis) and (alpha == 2.0 or alpha == 1.5)
    need_ss = has_cf and alpha == 1.5
    tau = 0.5 * (lo + hi) if bis else lo
    iters = 0
    converged = False
    certified = False
    force = False
    last_absf = math.inf
    for _ in range(max_iter):
        t = 0.5 * (lo + hi) if bis else tau
        f, sq1, sq2, cnt, s1, ss, mind, m = _pass(z, idx, m, t, lo, q, kind, halley, need_ss)
        iters += 1
        if f >= 0.0:
            lo = t
        else:
            hi = t
        zero = f == 0.0
        if bis:
            new = 0.5 * (lo + hi)
            done = zero or new <= lo or new >= hi or hi - lo <= tol
            if zero:
                new = t
        else:
            fp = -q * sq1
            if halley:
                fpp = q * (q - 1.0) * sq2
                new = t - 2.0 * f * fp / (2.0 * fp * fp - f * fpp)
            elif q >= 1.0:
                fq = max(f + 1.0, 1e-300)
                new = t - q * fq * (1.0 - fq ** (-1.0 / q)) / fp
            else:
                new = t - f / fp
            finite = math.isfinite(new)
            small = finite and abs(new - t) <= max(tol, 4e-16 * abs(t))
            mid = 0.5 * (lo + hi)
            was_step = not force
            bad = (not finite) or new <= lo or new >= hi or force
            new_g = mid if bad else new
            force = guarded and was_step and abs(f) > 0.5 * last_absf
            if was_step or not guarded:
                last_absf = abs(f)
            collapsed = guarded and (mid <= lo or mid >= hi)
            stall = (not guarded) and not (new > t)
            done = zero or small or collapsed or stall
            if guarded and not small:
                new = new_g
            if zero or stall or (small and guarded and (new <= lo or new >= hi)):
                new = t
            if has_cf:
                delta = _cf_delta(alpha, cnt, s1, ss)
                if delta >= 0.0 and delta <= mind:  # certificate (False for NaN)
                    new = t + delta
                    done = True
                    certified = True
        tau = new
        if done:
            converged = True
            break
    return tau, iters, converged, certified, m


@numba.njit(**_JIT)
def _breakpoint_g(z, m, s, q, kind):
    """``G = f(s) + 1 = sum_{z > s} (z - s)^q`` over the candidates."""
    g = 0.0
    for j in range(m):
        d = z[j] - s
        if d > 0.0:
            g += _powq(d, q, kind)[0]
    return g


@numba.njit(**_JIT)
def _sort_row(z, idx, m, alpha, srt):
    """Scalar twin of ``numpy_backend.sort_solve`` on the candidates ``z[:m]``.

    Sort descending ``s_1 = 0 >= s_2 >= ...``; ``G(k) = sum_{j<k} (s_j - s_k)^q`` is
    nondecreasing, the support size is ``k* = max{k : G(k) < 1}`` (binary search), and on
    ``[a, b] = [max(s_{k*+1}, -1), s_{k*}]`` ``f`` is smooth: closed form (alpha in {1.5, 2},
    clipped to ``[a, b]``) or the l_q-/guarded Newton of :func:`_iterate_row` without
    closed-form finish. Returns ``(tau, k*, iterations)``.
    """
    q = 1.0 / (alpha - 1.0)
    kind = _pow_kind(q)
    for j in range(m):
        srt[j] = -z[j]
    srt[:m].sort()
    for j in range(m):
        srt[j] = -srt[j]
    lo_k = 1
    hi_k = m + 1
    while hi_k - lo_k > 1:
        mid = (lo_k + hi_k) // 2
        if _breakpoint_g(z, m, srt[mid - 1], q, kind) < 1.0:
            lo_k = mid
        else:
            hi_k = mid
    k = lo_k
    b = srt[k - 1]
    a = srt[k] if k < m else -1.0
    if a < -1.0:
        a = -1.0
    if alpha == 2.0 or alpha == 1.5:
        _, _, _, cnt, s1, ss, _, _ = _pass(z, idx, m, a, -math.inf, q, kind, False, alpha == 1.5)
        tau = min(max(a + _cf_delta(alpha, cnt, s1, ss), a), b)
        return tau, k, 0
    tau, iters, _, _, _ = _iterate_row(z, idx, m, alpha, NEWTON, 0.0, 100, a, b, False)
    return tau, k, iters


@numba.njit(**_JIT)
def _solve_candidates(z, idx, m, d_eff, alpha, method, tol, max_iter, srt):
    """Dispatch one row: returns ``(tau, support or -1, iterations, converged, certified, m)``."""
    if method == SORT:
        tau, k, iters = _sort_row(z, idx, m, alpha, srt)
        return tau, k, iters, True, True, m
    hi = -(d_eff ** (1.0 - alpha))
    tau, iters, conv, cert, m = _iterate_row(z, idx, m, alpha, method, tol, max_iter, -1.0, hi, True)
    return tau, -1, iters, conv, cert, m


# ----------------------------------------------------------------------------------------------
# solve_tau on prepared rows
# ----------------------------------------------------------------------------------------------


@numba.njit(parallel=True, **_JIT)
def _solve_tau_kernel(zs, alpha, method, tol, max_iter, nblocks, tau, support, iters, conv, cert, res):
    rows, d = zs.shape
    step = (rows + nblocks - 1) // nblocks
    for blk in numba.prange(nblocks):
        z = np.empty(max(d, 1))
        idx = np.empty(max(d, 1), np.int64)
        srt = np.empty(max(d, 1))
        for r in range(blk * step, min(rows, (blk + 1) * step)):
            row = zs[r]
            a = alpha[r]
            m = 0
            d_eff = 0
            bad = False
            for i in range(d):
                v = row[i]
                if v > -1.0:
                    z[m] = v
                    idx[m] = i
                    m += 1
                if v > -math.inf:
                    d_eff += 1
                if v != v or v == math.inf:
                    bad = True
            if bad or d_eff == 0 or m == 0 or not (a > 1.0):
                tau[r] = math.nan
                support[r] = 0
                iters[r] = 0
                conv[r] = False
                cert[r] = False
                res[r] = math.nan
                continue
            t, k, it, cv, ce, m = _solve_candidates(z, idx, m, float(d_eff), a, method, tol, max_iter, srt)
            q = 1.0 / (a - 1.0)
            kind = _pow_kind(q)
            f = 0.0
            cnt = 0
            for i in range(d):
                dd = row[i] - t
                if dd > 0.0:
                    cnt += 1
                    f += _powq(dd, q, kind)[0]
            tau[r] = t
            support[r] = cnt
            iters[r] = it
            conv[r] = cv
            cert[r] = ce
            res[r] = f - 1.0


def _nblocks(rows: int) -> int:
    return max(1, min(rows, 8 * numba.get_num_threads()))


def _method_code(solver: str) -> int:
    if solver not in _METHODS:
        raise ValueError(f"solver must be one of {tuple(_METHODS)}, got {solver!r}")
    return _METHODS[solver]


def solve_tau(
    zs: np.ndarray,
    alpha: np.ndarray | float,
    solver: str,
    *,
    tol: float | None = None,
    max_iter: int | None = None,
) -> TauResult:
    """Threshold of prepared rows ``zs`` (rows x d, row max 0, ``-inf`` allowed), per-row alpha > 1.

    Same solvers, semantics, stopping rules and :class:`TauResult` fields as the NumPy
    backend (``numpy_backend.sort_solve`` / ``iterate``); no history. Rows holding NaN or
    ``+inf`` / no finite entry get ``tau = NaN`` and ``converged = False``.
    """
    method = _method_code(solver)
    zs = np.ascontiguousarray(zs, dtype=np.float64)
    if zs.ndim != 2:
        raise ValueError(f"zs must be 2-D (rows, d), got shape {zs.shape}")
    rows = zs.shape[0]
    alpha = np.ascontiguousarray(np.broadcast_to(np.asarray(alpha, np.float64), (rows,)))
    if max_iter is None:
        max_iter = 200 if method == BISECT else 100
    tol = 0.0 if tol is None else float(tol)
    tau = np.empty(rows)
    support = np.empty(rows, np.int64)
    iters = np.empty(rows, np.int64)
    conv = np.empty(rows, np.bool_)
    cert = np.empty(rows, np.bool_)
    res = np.empty(rows)
    if rows:
        _solve_tau_kernel(
            zs, alpha, method, tol, int(max_iter), _nblocks(rows), tau, support, iters, conv, cert, res
        )
    return TauResult(tau, support, iters, conv, cert, res, solver)


# ----------------------------------------------------------------------------------------------
# fused entmax on raw rows
# ----------------------------------------------------------------------------------------------


@numba.njit(fastmath={"nnan", "nsz"}, **_JIT)
def _row_max(xr):
    """Row maximum (vectorisable; the NaN scan happens in the candidate pass)."""
    m = -np.inf
    for i in range(xr.shape[0]):
        v = xr[i]
        m = v if v > m else m
    return m


@numba.njit(**_JIT)
def _nan_row(o):
    for i in range(o.shape[0]):
        o[i] = np.nan


@numba.njit(**_JIT)
def _softmax_row(xr, o, mx):
    """``exp(x - max) / sum``, computed in float64 (alpha == 1)."""
    s = 0.0
    for i in range(xr.shape[0]):
        e = math.exp(float(xr[i]) - mx)
        o[i] = e
        s += e
    inv = 1.0 / s
    cnt = 0
    for i in range(xr.shape[0]):
        v = o[i] * inv
        o[i] = v
        if v > 0:
            cnt += 1
    return cnt, s


@numba.njit(**_JIT)
def _gather(xr, mx, a, z, idx):
    """Candidates ``zs_i = (a-1)(x_i - max) > -1`` into ``z``/``idx``; NaN scan; finite count.

    Returns ``(m, d_eff, has_nan)``. One pass, no ``pow``; the branch is rarely taken.
    """
    am1 = a - 1.0
    m = 0
    nfin = 0
    nan = False
    for i in range(xr.shape[0]):
        v = float(xr[i])
        zs = am1 * (v - mx)
        nfin += v > -math.inf
        if not (zs <= -1.0):
            if zs != zs:
                nan = True
            else:
                z[m] = zs
                idx[m] = i
                m += 1
    return m, nfin, nan


@numba.njit(**_JIT)
def _write_row(o, z, idx, m, tau, q, kind):
    """``p_i = [z_i - tau]_+^q / sum`` on the candidates, 0 elsewhere. Returns ``(k, sum)``."""
    s = 0.0
    cnt = 0
    for j in range(m):
        d = z[j] - tau
        if d > 0.0:
            p = _powq(d, q, kind)[0]
            cnt += 1
        else:
            p = 0.0
        z[j] = p
        s += p
    for i in range(o.shape[0]):
        o[i] = 0.0
    inv = 1.0 / s
    for j in range(m):
        o[idx[j]] = z[j] * inv
    return cnt, s


@numba.njit(parallel=True, **_JIT)
def _entmax_kernel(x, alpha, method, tol, max_iter, nblocks, out, tau, support, iters, conv, cert, res):
    rows, d = x.shape
    step = (rows + nblocks - 1) // nblocks
    for blk in numba.prange(nblocks):
        z = np.empty(max(d, 1))
        idx = np.empty(max(d, 1), np.int64)
        srt = np.empty(max(d, 1)) if method == SORT else np.empty(1)
        for r in range(blk * step, min(rows, (blk + 1) * step)):
            xr = x[r]
            o = out[r]
            a = alpha[r]
            tau[r] = math.nan
            support[r] = 0
            iters[r] = 0
            conv[r] = False
            cert[r] = False
            res[r] = math.nan
            mx = float(_row_max(xr))
            if not (mx < math.inf and mx > -math.inf):  # +inf, all -inf, (NaN)
                _nan_row(o)
                continue
            if a == 1.0:
                for i in range(d):
                    if xr[i] != xr[i]:
                        mx = math.nan
                if mx != mx:
                    _nan_row(o)
                    continue
                cnt, s = _softmax_row(xr, o, mx)
                support[r] = cnt
                conv[r] = True
                cert[r] = True
                res[r] = 0.0
                iters[r] = 0
                continue
            m, d_eff, nan = _gather(xr, mx, a, z, idx)
            if nan:
                _nan_row(o)
                continue
            t, k, it, cv, ce, m = _solve_candidates(z, idx, m, float(d_eff), a, method, tol, max_iter, srt)
            q = 1.0 / (a - 1.0)
            cnt, s = _write_row(o, z, idx, m, t, q, _pow_kind(q))
            tau[r] = t
            support[r] = cnt
            iters[r] = it
            conv[r] = cv
            cert[r] = ce
            res[r] = s - 1.0


def entmax_rows(
    x: np.ndarray,
    alpha: np.ndarray | float,
    solver: str = "newton",
    tol: float | None = None,
    max_iter: int | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, TauResult]:
    """Fused row-wise alpha-entmax: ``p = [(alpha-1)(x - max x) - tau]_+^(1/(alpha-1))``.

    ``x``: (R, d) C-contiguous float32 or float64 (other dtypes are converted: float16 etc.
    to float32, integers to float64). ``alpha``: float or (R,) array, every entry >= 1 and
    finite (``alpha == 1`` rows are softmax). ``solver`` in ``sort, bisect, newton, halley``.
    ``out``: optional (R, d) output of ``x``'s dtype. All arithmetic is float64; ``p`` is
    written in ``x``'s dtype. Returns ``(p, TauResult)``; ``tau`` is in the prepared space and
    ``residual`` is ``sum [zs - tau]_+^q - 1`` before the final normalisation.
    """
    method = _method_code(solver)
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64 if x.dtype.kind in "iub" else np.float32)
    x = np.ascontiguousarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (rows, d), got shape {x.shape}")
    rows, d = x.shape
    alpha = np.ascontiguousarray(np.broadcast_to(np.asarray(alpha, np.float64), (rows,)))
    if not np.all(np.isfinite(alpha) & (alpha >= 1.0)):
        raise ValueError("alpha must be finite and >= 1")
    if out is None:
        out = np.empty_like(x)
    elif out.shape != x.shape or out.dtype != x.dtype or not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous array with x's shape and dtype")
    if max_iter is None:
        max_iter = 200 if method == BISECT else 100
    tol = 0.0 if tol is None else float(tol)
    tau = np.empty(rows)
    support = np.empty(rows, np.int64)
    iters = np.empty(rows, np.int64)
    conv = np.empty(rows, np.bool_)
    cert = np.empty(rows, np.bool_)
    res = np.empty(rows)
    if rows and d:
        _entmax_kernel(
            x, alpha, method, tol, int(max_iter), _nblocks(rows), out, tau, support, iters, conv, cert, res
        )
    elif rows:
        tau[:] = np.nan
        support[:] = 0
        iters[:] = 0
        conv[:] = False
        cert[:] = False
        res[:] = np.nan
    return out, TauResult(tau, support, iters, conv, cert, res, solver)


__all__ = ["solve_tau", "entmax_rows"]
