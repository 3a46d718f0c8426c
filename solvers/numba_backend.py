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
column indices) in one pass, iterate on the buffer only, and compact away the entries at or
below ``lo`` once fewer than 70 % of the buffer lie above it (``lo`` rises with every pass that
has ``f >= 0``). For typical rows the buffer holds a few percent of the row
(``x_i > max x - 1/(alpha - 1)``); for flat rows it holds all of it and everything stays
correct, only slower.

**Passes.** The row max and NaN scan work on the raw bits (an integer max reduction, which LLVM
vectorises); the candidate gather is a branch-free index compaction; the per-pass sums over the
buffer are masked reductions vectorised with a reassociating fastmath subset (``entmax_rows``)
or kept in strict order (``solve_tau``, so that the rounding-level endgame matches the NumPy
reference pass for pass). The buffer is padded to a multiple of 8 with ``-2`` (below every
iterate) so the reductions run on whole SIMD vectors.

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
    """``d^n`` for ``0 <= n <= 7`` by squaring, branch-free (selects on the bits of ``n``)."""
    d2 = d * d
    r = d if n & 1 else 1.0
    r = r * d2 if n & 2 else r
    return r * (d2 * d2) if n & 4 else r


@numba.njit(**_JIT)
def _powq(d: float, q: float, kind: int) -> tuple[float, float]:
    """``(d^q, d^(q-1))`` for ``d > 0`` (``kind = _pow_kind(q)``)."""
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
def _root_inv(f: float, q: float, kind: int) -> float:
    """``f^(-1/q)`` (no ``pow`` for q in {1, 2})."""
    if kind == 1:
        return 1.0 / f
    if kind == 2:
        return 1.0 / math.sqrt(f)
    return f ** (-1.0 / q)


@numba.njit(fastmath=_SUM_FASTMATH, **_JIT)
def _sums(z, m, t, q, kind, halley):
    """Power sums at ``tau = t`` over the support ``S = {d = z - t > 0}`` of ``z[:m]``.

    Returns ``(f = sum d^q - 1, sum d^(q-1), sum d^(q-2) (Halley only), |S|, sum d)``.
    Pure masked reductions over finite values: vectorised with the reassociating fastmath
    subset (no ``nnan``/``ninf``), so the order of the additions differs from NumPy's
    pairwise sums by rounding only. ``sum d^(q-2)`` is computed whatever ``halley`` says: with
    an ``if halley`` in the loop LLVM unswitched it and, once inlined into the solver loop,
    left the ``halley=False`` copy scalar -- Newton passes cost 3x Halley passes (measured).
    """
    f1 = 0.0
    sq1 = 0.0
    sq2 = 0.0
    cnt = 0
    s1 = 0.0
    for j in range(m):
        d = z[j] - t
        ins = d > 0.0
        dp = d if ins else 1.0
        a, b = _powq(dp, q, kind)
        cnt += 1 if ins else 0
        s1 += d if ins else 0.0
        f1 += a if ins else 0.0
        sq1 += b if ins else 0.0
        sq2 += b / dp if ins else 0.0  # always: see the docstring
    return f1 - 1.0, sq1, sq2, cnt, s1


@numba.njit(**_JIT)
def _sums_strict(z, m, t, q, kind, halley):
    """:func:`_sums` in strict left-to-right order (no reassociation, not vectorised).

    Used by :func:`solve_tau`: the rounding of these sums decides the last passes of the
    rounding-level endgame (raw step below 2 ulps, ``f == 0``, the Halley progress test), and
    in this order the endgame takes the same number of passes as the NumPy reference on
    almost every row; the vectorised order of :func:`_sums` often ends one or two passes
    earlier or later (same tau to an ulp). ``entmax_rows`` uses the fast one.
    """
    f1 = 0.0
    sq1 = 0.0
    sq2 = 0.0
    cnt = 0
    s1 = 0.0
    for j in range(m):
        d = z[j] - t
        ins = d > 0.0
        dp = d if ins else 1.0
        a, b = _powq(dp, q, kind)
        cnt += 1 if ins else 0
        s1 += d if ins else 0.0
        f1 += a if ins else 0.0
        sq1 += b if ins else 0.0
        if halley:
            sq2 += b / dp if ins else 0.0
    return f1 - 1.0, sq1, sq2, cnt, s1


@numba.njit(fastmath=_SUM_FASTMATH, **_JIT)
def _centred_ss(z, m, t, mean):
    """``sum_S (d - mean)^2`` (two-pass variance: no cancellation)."""
    ss = 0.0
    for j in range(m):
        d = z[j] - t
        e = d - mean
        ss += e * e if d > 0.0 else 0.0
    return ss


@numba.njit(fastmath=_SUM_FASTMATH, **_JIT)
def _n_violating(z, m, t, delta):
    """Entries that break the certificate ``max_{not S} d <= delta <= min_S d``.

    Counts ``0 < d < delta`` (a support entry that would fall below ``tau_cf``) and
    ``delta < d <= 0`` (an outside entry that would rise above it; possible only when
    ``delta < 0``, i.e. after an overshoot). Zero iff certified (for the entries in ``z``).
    """
    n = 0
    for j in range(m):
        d = z[j] - t
        bad = (d > 0.0 and d < delta) or (d <= 0.0 and d > delta)
        n += 1 if bad else 0
    return n


@numba.njit(**_JIT)
def _pad(z, m):
    """Fill ``z[m : m8]`` (``m8`` = ``m`` rounded up to 8) with ``-2`` and return ``m8``.

    ``-2`` lies below every iterate (``tau >= -1``), so the padding never enters a sum; the
    reduction loops then run over whole SIMD vectors (no scalar remainder, fewer
    mispredicted loop exits). Buffers hold ``d + 8`` entries.
    """
    m8 = (m + 7) & ~7
    for j in range(m, m8):
        z[j] = -2.0
    return m8


@numba.njit(**_JIT)
def _compact(z, idx, m, lo):
    """Keep the entries ``z > lo`` (order preserved, branch-free); returns their count."""
    w = 0
    for j in range(m):
        zj = z[j]
        z[w] = zj
        idx[w] = idx[j]
        w += zj > lo
    _pad(z, w)
    return w


@numba.njit(**_JIT)
def _iterate_row(z, idx, m, alpha, method, tol, max_iter, lo, hi, use_cf, strict):
    r"""Scalar twin of ``numpy_backend.iterate`` for one row (candidates ``z[:m]``).

    ``bisect``: midpoint of ``[lo, hi]`` until it stops moving or ``hi - lo <= tol``.
    ``newton`` (``q >= 1``, alpha <= 2): the l_q-Newton step on ``phi = (f+1)^(1/q) - 1``,

    .. math:: \tau^+ = \tau + \frac{q F (1 - F^{-1/q})}{q \sum_S d^{q-1}}, \quad F = \sum_S d^q,

    monotone from ``lo``; for ``q < 1`` plain Newton ``tau + f / (q sum d^(q-1))``, guarded.
    ``halley``: ``tau - 2 f f' / (2 f'^2 - f f'')`` where f is C^2 (alpha <= 1.5), a Newton
    step elsewhere; guarded.
    Guard: a step outside ``(lo, hi)`` becomes the midpoint, and after a Newton/Halley step
    that did not halve ``|f|`` the next pass bisects. Stops on ``f == 0``, a raw step
    ``<= max(tol, 4e-16 |tau|)``, bracket collapse (guarded), no increase (monotone), or a
    closed form (alpha in {1.5, 2}, ``use_cf``) that passes the two-sided certificate.

    ``strict``: sums in the reference order (:func:`_sums_strict`) instead of vectorised.
    Returns ``(tau, iterations, converged, certified, m)`` (``m``: candidates kept).
    """
    q = 1.0 / (alpha - 1.0)
    kind = _pow_kind(q)
    bis = method == BISECT
    halley = method == HALLEY
    guarded = halley or (method == NEWTON and alpha > 2.0)
    has_cf = use_cf and (not bis) and (alpha == 2.0 or alpha == 1.5)
    tau = 0.5 * (lo + hi) if bis else lo
    iters = 0
    converged = False
    certified = False
    force = False
    last_absf = math.inf
    cnt_lo = m  # entries above lo (lo only rises; those at or below it are dead)
    m8 = _pad(z, m)
    for _ in range(max_iter):
        if 10 * cnt_lo < 7 * m:
            m = _compact(z, idx, m, lo)
            m8 = (m + 7) & ~7
        t = 0.5 * (lo + hi) if bis else tau
        if strict:
            f, sq1, sq2, cnt, s1 = _sums_strict(z, m8, t, q, kind, halley)
        else:
            f, sq1, sq2, cnt, s1 = _sums(z, m8, t, q, kind, halley)
        iters += 1
        if f >= 0.0:
            lo = t
            cnt_lo = cnt
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
            if halley and alpha <= 1.5:
                fpp = q * (q - 1.0) * sq2
                new = t - 2.0 * f * fp / (2.0 * fp * fp - f * fpp)
            elif halley and alpha <= 2.0:  # f'' unbounded at breakpoints: a Newton step
                new = t - f / fp
            else:  # Newton on phi = (f + 1)^(1/q) - 1 (see numpy_backend.iterate)
                new = t - f / fp
                if q >= 1.0 or not (new > lo and new < hi):
                    fq = max(f + 1.0, 1e-300)
                    new = t - q * fq * (1.0 - _root_inv(fq, q, kind)) / fp
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
                ss = _centred_ss(z, m8, t, s1 / cnt) if (alpha == 1.5 and cnt > 0) else 0.0
                delta = _cf_delta(alpha, cnt, s1, ss)
                # certificate max_{not S} d <= delta <= min_S d (False for NaN). Entries no
                # longer buffered are <= lo, so they pass iff t + delta >= lo; below that the
                # row is simply not certified at this pass (tau_cf < lo can only be rounding).
                if t + delta >= lo and _n_violating(z, m8, t, delta) == 0:
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
def _sort_row(z, idx, m, alpha, srt, strict):
    """Scalar twin of ``numpy_backend.sort_solve`` on the candidates ``z[:m]``.

    Sort descending ``s_1 = 0 >= s_2 >= ...``; ``G(k) = sum_{j<k} (s_j - s_k)^q`` is
    nondecreasing, the support size is ``k* = max{k : G(k) < 1}`` (binary search), and on
    ``[a, b] = [max(s_{k*+1}, -1), s_{k*}]`` ``f`` is smooth: closed form (alpha in {1.5, 2},
    clipped to ``[a, b]``) or the l_q-/guarded Newton of :func:`_iterate_row` without
    closed-form finish; when the k* support entries all equal the row max (0), ``f = k*(−τ)^q
    − 1`` there and τ = −k*^{1−α} for every α (the iterations reach it only slowly for α > 2).
    Returns ``(tau, k*, iterations, converged, m)`` (``m``: candidates kept).
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
    if b == 0.0:
        return min(max(-(float(k) ** (1.0 - alpha)), a), b), k, 0, True, m
    if alpha == 2.0 or alpha == 1.5:
        m8 = _pad(z, m)
        _, _, _, cnt, s1 = _sums(z, m8, a, q, kind, False)
        ss = _centred_ss(z, m8, a, s1 / cnt) if alpha == 1.5 else 0.0
        tau = min(max(a + _cf_delta(alpha, cnt, s1, ss), a), b)
        return tau, k, 0, True, m
    tau, iters, conv, _, m = _iterate_row(z, idx, m, alpha, NEWTON, 0.0, 100, a, b, False, strict)
    return tau, k, iters, conv, m


@numba.njit(**_JIT)
def _solve_candidates(z, idx, m, hi, alpha, method, tol, max_iter, srt, strict):
    """Dispatch one row (``hi = -d_eff^(1-alpha)``, the upper bracket end).

    Returns ``(tau, support or -1, iterations, converged, certified, m)``.
    """
    if method == SORT:
        tau, k, iters, conv, m = _sort_row(z, idx, m, alpha, srt, strict)
        return tau, k, iters, conv, conv, m
    if alpha > 2.0 and m > 0:
        # every candidate equals the row max: root -m^(1-alpha) in closed form (see
        # numpy_backend.iterate; the iterations reach it only slowly for alpha > 2, bisection
        # included: ~210 passes to -8.6e-48 at alpha = 20, n = 300)
        flat = True
        for j in range(m):
            if z[j] != 0.0:
                flat = False
                break
        if flat:
            return -(float(m) ** (1.0 - alpha)), -1, 1, True, False, m
    tau, iters, conv, cert, m = _iterate_row(
        z, idx, m, alpha, method, tol, max_iter, -1.0, hi, True, strict
    )
    return tau, -1, iters, conv, cert, m


# ----------------------------------------------------------------------------------------------
# solve_tau on prepared rows
# ----------------------------------------------------------------------------------------------


@numba.njit(parallel=True, **_JIT)
def _solve_tau_kernel(zs, alpha, hi, method, tol, max_iter, nblocks, tau, support, iters, conv, cert, res):
    rows, d = zs.shape
    step = (rows + nblocks - 1) // nblocks
    for blk in numba.prange(nblocks):
        z = np.empty(d + 8)
        idx = np.empty(d + 8, np.int64)
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
            t, k, it, cv, ce, m = _solve_candidates(
                z, idx, m, hi[r], a, method, tol, max_iter, srt, True
            )
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
        # the upper bracket end exactly as the NumPy reference computes it (np.power may round
        # differently from libm pow, and bisection's last passes depend on that ulp)
        with np.errstate(divide="ignore", invalid="ignore"):
            hi = -np.power(np.isfinite(zs).sum(axis=1).astype(np.float64), 1.0 - alpha)
        _solve_tau_kernel(
            zs, alpha, hi, method, tol, int(max_iter), _nblocks(rows), tau, support, iters, conv, cert, res
        )
    return TauResult(tau, support, iters, conv, cert, res, solver)


# ----------------------------------------------------------------------------------------------
# fused entmax on raw rows
# ----------------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def _max_key(xb, buf):
    """Row maximum and NaN scan on the raw bits of a float32/float64 row, vectorisable.

    ``xb`` is the row viewed as int32/int64. IEEE floats order like sign-magnitude integers;
    ``key = b ^ ((b >> (bits-1)) & (2^(bits-1) - 1))`` maps them to two's-complement order
    (``-inf`` < finite < ``+inf``), so an integer max reduction (which LLVM vectorises; the float
    ``fcmp``/``select`` one it does not) gives the float max. A NaN has all exponent bits set
    and a nonzero mantissa: ``(b & ~sign) > bits(+inf)``. The max is decoded through ``buf``
    (a 1-element array of the same integer type, viewed as float). Returns ``(max, has_nan)``.
    """
    sh = xb.itemsize * 8 - 1
    one = xb[0] - xb[0] + 1
    mag = (one << sh) - one  # 0x7fff...  (all but the sign bit)
    inf_bits = 0x7F800000 if sh == 31 else 0x7FF0000000000000
    kmax = -mag - one
    nan = 0
    for i in range(xb.shape[0]):
        v = xb[i]
        k = v ^ ((v >> sh) & mag)
        kmax = max(kmax, k)
        nan |= (v & mag) > inf_bits
    buf[0] = kmax ^ ((kmax >> sh) & mag)
    return buf, nan != 0


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
def _gather(xr, mx, a, z, idx, tbuf):
    """Candidates ``zs_i = (a-1)(x_i - max) > -1`` into ``z`` (float64) and ``idx``.

    First a branch-free compaction of the indices with ``x_i > thr`` (a branch would be
    mispredicted on every candidate), compared in the row's own dtype: ``thr`` is set
    slightly below ``max - 1/(a-1)`` (margin 1e-6 relative, above the float32 rounding of
    ``thr`` and of ``zs``) and stored through ``tbuf`` (1 element of ``x``'s dtype). Then, on
    those few, ``zs_i`` is formed exactly as the NumPy reference does and ``zs_i > -1`` is
    tested. Returns ``m``.
    """
    am1 = a - 1.0
    thr = mx - 1.0 / am1
    tbuf[0] = thr - (abs(thr) + abs(mx)) * 1e-6 - 1e-30
    tx = tbuf[0]
    m = 0
    for i in range(xr.shape[0]):
        idx[m] = i
        m += xr[i] > tx
    w = 0
    for j in range(m):
        i = idx[j]
        zs = am1 * (float(xr[i]) - mx)
        z[w] = zs
        idx[w] = i
        w += zs > -1.0
    return w


@numba.njit(**_JIT)
def _count_finite(xr):
    """``d_eff``: entries above ``-inf`` (NaN rows never get here)."""
    n = 0
    for i in range(xr.shape[0]):
        n += xr[i] > -math.inf
    return n


@numba.njit(fastmath=_SUM_FASTMATH, **_JIT)
def _probs(z, m, tau, q, kind):
    """``z_j <- [z_j - tau]_+^q`` in place; returns ``(k, sum)`` (branch-free, vectorised)."""
    s = 0.0
    cnt = 0
    for j in range(m):
        d = z[j] - tau
        ins = d > 0.0
        p = _powq(d if ins else 1.0, q, kind)[0]
        p = p if ins else 0.0
        z[j] = p
        s += p
        cnt += 1 if ins else 0
    return cnt, s


@numba.njit(**_JIT)
def _write_row(o, z, idx, m, tau, q, kind):
    """``p_i = [z_i - tau]_+^q / sum`` on the candidates, 0 elsewhere. Returns ``(k, sum)``."""
    cnt, s = _probs(z, _pad(z, m), tau, q, kind)
    o[:] = 0.0
    inv = 1.0 / s
    for j in range(m):
        o[idx[j]] = z[j] * inv
    return cnt, s



# ----------------------------------------------------------------------------------------------
# dense path: short float32 rows, integer q >= 2 (alpha = 1.5, 4/3, 1.25, ...), solver newton
# ----------------------------------------------------------------------------------------------
#
# For rows that sit in L1/L2 the candidate gather of the general path (a scalar store per entry)
# costs more than a few full SIMD passes. Here: l_q-Newton from tau = -1 in float32 over the
# whole row (vectorised, branch-free) locates tau*; one float64 pass at that iterate gives the
# sums for the closed form (q = 2) or for float64 l_q-Newton steps (q >= 3); the write pass
# checks the two-sided certificate of the closed form while it writes p (by comparing support
# counts, see _dense_write). Any row that does not certify (an entry between the float32 iterate
# and the threshold) or does not converge is redone by the general path, so the answer is always
# the same as the general path's.
#
# When to leave float32. q >= 3: once the step is <= 1e-5 (the float64 Newton steps then need two
# passes). q = 2: the closed form only needs the *support* at the iterate to be the final one,
# not tau to 1e-5. Newton converges quadratically (error after a step ~ K step^2, K ~ 1-7 seen),
# and the chance that an entry lies in that gap grows with the density of entries near tau,
# which scales like S^3 (S = sum d at the iterate; F = sum d^2 ~ 1 there). So the loop stops
# once step * S^1.5 <= 3e-2 (randn rows of 1024: one float32 pass fewer than the 1e-5 rule, in
# 99.8 % of rows; <= 0.2 % of rows fall back on flat or long rows, measured on randn rows of
# length 64..2048 at scales 0.03..10).
#
# Rejected (measured, 4096 x 1024, alpha = 1.5): fusing the row max with the first float32 pass
# (from the max of the first 64 entries minus 1: starts below -1 and costs ~0.8 passes more on
# randn rows, which eats the saved pass); software prefetch of the next row (slower: the
# hardware prefetcher already streams the rows); skipping 16-entry chunks without support
# entries in the float64 and write passes (branchy, 4x slower in Numba); more aggressive first
# steps (Newton on F^(1/r) - 1 with r > q: fewer passes at scale 1, more on flat rows).

DENSE_MAX = 2048  # longest row for the dense path (longer rows: the gather is cheaper)
_DENSE_STOP = 1e-5  # q >= 3: leave float32 once |step| <= this
_DENSE_STOP_CF = 3e-2  # q = 2: leave float32 once |step| * S^1.5 <= this (see above)
# float64 passes: only reassociation (to vectorise the sums). With the wider fast-math set LLVM
# was seen to evaluate ``float(x) - max`` in float32 once inlined (x and max are float32 data),
# which moved tau by ~5e-10.
_F64_FASTMATH = _SUM_FASTMATH


@numba.njit(inline="always", fastmath=_SUM_FASTMATH, **_JIT)
def _acc_powers(d, n, F, S):
    """``(F + d^n, S + d^(n-1))`` for n in 2..4 without ``pow`` (the float32 passes' body)."""
    d2 = d * d
    if n == 2:
        return F + d2, S + d
    if n == 3:
        return F + d2 * d, S + d2
    return F + d2 * d2, S + d2 * d


@numba.njit(fastmath=_SUM_FASTMATH, **_JIT)
def _dense_f32_sums(xr, mx, am1, t, n):
    """float32 ``(sum d^n, sum d^(n-1))`` with ``d = [am1 (x - mx) - t]_+`` (n in 2..4)."""
    z0 = np.float32(0.0)
    F = z0
    S = z0
    for i in range(xr.shape[0]):
        d = max(am1 * (xr[i] - mx) - t, z0)
        F, S = _acc_powers(d, n, F, S)
    return F, S


@numba.njit(fastmath=_F64_FASTMATH, **_JIT)
def _dense_f64_sums(xr, mx, am1, t, n):
    """float64 ``(sum d^n, sum d^(n-1), sum d, |S|)`` with ``d = [am1 (x - mx) - t]_+``."""
    F = 0.0
    S = 0.0
    s1 = 0.0
    c = 0.0
    for i in range(xr.shape[0]):
        d = max(am1 * (float(xr[i]) - mx) - t, 0.0)
        d2 = d * d
        c += 1.0 if d > 0.0 else 0.0
        s1 += d
        if n == 2:
            F += d2
            S += d
        elif n == 3:
            F += d2 * d
            S += d2
        else:
            F += d2 * d2
            S += d2 * d
    return F, S, s1, int(c)


@numba.njit(fastmath=_F64_FASTMATH, **_JIT)
def _dense_f64_sums_cf(xr, mx, am1, t):
    """q = 2: float64 ``(sum d^2, sum d, |S|)`` with ``d = [am1 (x - mx) - t]_+``.

    ``|S| = |{am1 (x - mx) > t}|``: ``fl(a - t) > 0`` iff ``a > t`` (no underflow to 0 in
    IEEE subtraction), so the count is exact whatever the rounding of ``d``.
    """
    F = 0.0
    s1 = 0.0
    c = 0.0
    for i in range(xr.shape[0]):
        d = max(am1 * (float(xr[i]) - mx) - t, 0.0)
        c += 1.0 if d > 0.0 else 0.0
        s1 += d
        F += d * d
    return F, s1, int(c)


@numba.njit(fastmath=_F64_FASTMATH, **_JIT)
def _dense_f64_sums_cf_c(xr, am1, c):
    """:func:`_dense_f64_sums_cf` at ``d = [am1 x - c]_+`` (one fma per entry).

    With ``am1 = 1/2`` (the only alpha with q = 2), ``am1 max`` is exact, so these are the sums
    at ``t = c - am1 max`` exactly, and ``am1 x - c`` is rounded once as ``am1 (x - max) - t``
    is; ``|S| = |{am1 x > c}|`` exactly.
    """
    F = 0.0
    s1 = 0.0
    n = 0.0
    for i in range(xr.shape[0]):
        d = max(am1 * float(xr[i]) - c, 0.0)
        n += 1.0 if d > 0.0 else 0.0
        s1 += d
        F += d * d
    return F, s1, int(n)


@numba.njit(fastmath=_F64_FASTMATH, **_JIT)
def _dense_write(xr, o, mx, am1, tau, n):
    """``p = [am1 (x - mx) - tau]_+^n`` into ``o``; returns ``(k, sum p)``, ``k = |{p > 0}|``.

    ``k`` counts ``am1 (x - mx) > tau`` exactly (as in :func:`_dense_f64_sums_cf`), which makes
    the certificate free for q = 2: the closed form ``tau`` computed on the support ``S(t0)``
    is exact iff ``S(tau) = S(t0)`` (no entry between ``t0`` and ``tau``, on either side), and
    since the two sets are nested, iff their counts agree: ``k == |S(t0)|``.
    """
    s = 0.0
    k = 0
    for i in range(xr.shape[0]):
        e = max(am1 * (float(xr[i]) - mx) - tau, 0.0)
        e2 = e * e
        p = e2 if n == 2 else (e2 * e if n == 3 else e2 * e2)
        o[i] = p
        s += p
        k += 1 if e > 0.0 else 0
    return k, s


@numba.njit(fastmath=_SUM_FASTMATH, **_JIT)
def _dense_f32_sums_c(xr, am1, c, n):
    """:func:`_dense_f32_sums` with ``d = [am1 x - c]_+`` (``c = am1 mx + t``): one fused
    multiply-add per entry instead of a subtraction and a multiply-add."""
    z0 = np.float32(0.0)
    F = z0
    S = z0
    for i in range(xr.shape[0]):
        d = max(am1 * xr[i] - c, z0)
        F, S = _acc_powers(d, n, F, S)
    return F, S


# |(alpha-1) max| up to which the float32 passes use _dense_f32_sums_c: the threshold
# c = (alpha-1) max + t is then held to <= ulp(8) = 9.5e-7 (the error of the float32 iterate
# itself); beyond, x - max first keeps the iterate at ulp(t) (shifted rows, e.g. x + 1e4).
_DENSE_C_MAX = 8.0


@numba.njit(**_JIT)
def _dense_row(xr, o, mx, a, n, max_iter):
    """One row on the dense path. Returns ``(ok, tau, k, iterations, certified, sum p)``."""
    am1 = a - 1.0
    q = float(n)
    mx32 = np.float32(mx)
    am32 = np.float32(am1)
    cform = abs(am1 * mx) <= _DENSE_C_MAX
    cm = am1 * mx if cform else 0.0  # iterate: t (x - max form) or c = t + cm (c form)
    t = np.float32(cm - 1.0)
    it = 0
    ok = False
    for _ in range(min(max_iter, 30)):
        if cform:
            F, S = _dense_f32_sums_c(xr, am32, t, n)
        else:
            F, S = _dense_f32_sums(xr, mx32, am32, t, n)
        it += 1
        if not (S > 0.0 and F > 0.0):
            return False, 0.0, 0, it, False, 0.0
        Fd = float(F)
        step = Fd * (1.0 - _root_inv(Fd, q, n)) / float(S)
        t = np.float32(float(t) + step)
        Sd = float(S)
        if (abs(step) * Sd * math.sqrt(Sd) <= _DENSE_STOP_CF) if n == 2 else (abs(step) <= _DENSE_STOP):
            ok = True
            break
    if not ok:
        return False, 0.0, 0, it, False, 0.0
    # ``mx`` is a widened float32; when LLVM can see that (after inlining) it may evaluate
    # ``float(x) - mx`` in float32 under the reassociating fast-math of the sums (seen: tau off
    # by 5e-10). Adding a zero it cannot fold (a runtime count times 0.0) hides the widening.
    mx = mx + float(xr.shape[0]) * 0.0
    t0 = float(t) - cm
    if n == 2:
        if cform:
            # the float32 iterate c itself (exact in float64), hidden like mx above
            F, s1, cnt = _dense_f64_sums_cf_c(xr, am1, float(t) + float(xr.shape[0]) * 0.0)
        else:
            F, s1, cnt = _dense_f64_sums_cf(xr, mx, am1, t0)
        it += 1
        if cnt == 0:
            return False, 0.0, 0, it, False, 0.0
        delta = _cf_delta(a, cnt, s1, 1.0 - (s1 * s1 / cnt - (F - 1.0)))
        if not delta == delta:
            return False, 0.0, 0, it, False, 0.0
        tau = t0 + delta
        k, sp = _dense_write(xr, o, mx, am1, tau, n)
        return k == cnt, tau, k, it, k == cnt, sp
    F, S, s1, cnt = _dense_f64_sums(xr, mx, am1, t0, n)
    it += 1
    if cnt == 0 or not S > 0.0:
        return False, 0.0, 0, it, False, 0.0
    # q >= 3: float64 l_q-Newton (monotone from the left once below tau*), to rounding
    tau = t0
    for _ in range(min(max_iter, 30)):
        st = F * (1.0 - _root_inv(F, q, n)) / S
        tau = tau + st
        if abs(st) <= 4e-16 * abs(tau):
            k, sp = _dense_write(xr, o, mx, am1, tau, n)
            return True, tau, k, it, False, sp
        F, S, s1, cnt = _dense_f64_sums(xr, mx, am1, tau, n)
        it += 1
        if cnt == 0 or not S > 0.0:
            break
    return False, 0.0, 0, it, False, 0.0

@numba.njit(parallel=True, **_JIT)
def _entmax_kernel(x, xb, alpha, method, tol, max_iter, nblocks, out, tau, support, iters, conv, cert, res, dense):
    rows, d = x.shape
    step = (rows + nblocks - 1) // nblocks
    for blk in numba.prange(nblocks):
        z = np.empty(d + 8)
        idx = np.empty(d + 8, np.int32)
        srt = np.empty(max(d, 1)) if method == SORT else np.empty(1)
        kbuf = np.empty(1, xb.dtype)
        fbuf = kbuf.view(x.dtype)
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
            _, nan = _max_key(xb[r], kbuf)
            mx = float(fbuf[0])
            if nan or not (mx < math.inf and mx > -math.inf):  # NaN, +inf, all -inf
                _nan_row(o)
                continue
            # hide that mx is a widened float32 (see _dense_row): exact float64 x - mx below
            mx = mx + float(d) * 0.0
            if a == 1.0:
                cnt, s = _softmax_row(xr, o, mx)
                support[r] = cnt
                conv[r] = True
                cert[r] = True
                continue
            if dense and method == NEWTON and tol == 0.0:
                n = _pow_kind(1.0 / (a - 1.0))
                if n >= 2 and n <= 4:
                    ok, t, k, it, ce, sp = _dense_row(xr, o, mx, a, n, max_iter)
                    if ok:
                        tau[r] = t
                        support[r] = k
                        iters[r] = it
                        conv[r] = True
                        cert[r] = ce
                        res[r] = sp - 1.0
                        continue
            m = _gather(xr, mx, a, z, idx, fbuf)
            guarded = method == HALLEY or (method == NEWTON and a > 2.0)
            # d_eff only enters the upper bracket end, which only bisect/guarded steps read
            d_eff = _count_finite(xr) if (method == BISECT or guarded) else d
            t, k, it, cv, ce, m = _solve_candidates(
                z, idx, m, -(float(d_eff) ** (1.0 - a)), a, method, tol, max_iter, srt, False
            )
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
        xb = x.view(np.int32 if x.dtype == np.float32 else np.int64)
        _entmax_kernel(
            x, xb, alpha, method, tol, int(max_iter), _nblocks(rows), out, tau, support, iters, conv, cert, res,
            x.dtype == np.float32 and d <= DENSE_MAX,
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
