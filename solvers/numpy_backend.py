r"""Vectorised NumPy threshold solvers: the reference backend.

All solvers work on *prepared* rows ``zs = (alpha - 1) * (x - max x)`` (shape ``(rows, d)``,
float64, the row maximum is 0, ``-inf`` entries allowed, no NaN / ``+inf``) and a per-row
``alpha`` (shape ``(rows,)``, every entry > 1). With ``q = 1/(alpha-1)`` they find the root of

.. math::  f(\tau) = \sum_i [zs_i - \tau]_+^q - 1,

which is continuous and strictly decreasing on ``(-inf, 0)`` and lies in the bracket
``[-1, -d_eff^(1-alpha)]`` (``d_eff`` = number of finite entries). For ``1 < alpha <= 2``
``f`` is convex, so Newton started at the lower end climbs monotonically to the root.

Each iterative solver evaluates, in one pass over a row, the power sums it needs together with
the support statistics ``k = |S|``, ``sum_S d``, ``min_S d`` (``d = zs - tau``). For
``alpha in {1.5, 2}`` those sums also give the closed-form threshold on the current support;
when it passes the certificate (``tau_cf >= tau`` and ``min_S d >= tau_cf - tau``, see
:mod:`._closed_form`) the answer is exact and the solver stops in that same pass.

``sort`` is exact for every alpha: it binary-searches the support size on the sorted breakpoints
and then solves the kink-free restricted equation (closed form or safeguarded Newton).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _closed_form as cf
from .result import TauResult

ITERATIVE = ("bisect", "newton", "halley")


@dataclass
class _Sums:
    """Power sums of ``d = zs - tau`` over the support ``S = {d > 0}`` (one pass)."""

    f: np.ndarray  # sum d^q - 1
    sq1: np.ndarray  # sum d^(q-1)
    sq2: np.ndarray | None  # sum d^(q-2) (Halley only)
    count: np.ndarray  # |S|
    s1: np.ndarray  # sum d
    ss: np.ndarray  # sum (d - mean d)^2, centred
    min_d: np.ndarray  # min_S d (inf if S empty)
    max_out: np.ndarray  # max of d outside S (-inf if none): <= 0


def bracket(zs: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[-1, -d_eff^(1-alpha)]``: ``f(lo) >= 0 >= f(hi)`` on prepared rows."""
    d_eff = np.isfinite(zs).sum(axis=1).astype(np.float64)
    lo = -np.ones(zs.shape[0])
    hi = -np.power(d_eff, 1.0 - alpha)
    return lo, hi


def _powers(dpos: np.ndarray, q: np.ndarray, p: float) -> np.ndarray:
    """``dpos ** (q + p)`` row-wise with fast paths for the integer exponents of 1.5 and 2."""
    e = q + p
    if np.all(e == e[0]):
        e0 = float(e[0])
        if e0 == 0.0:
            return np.ones_like(dpos)
        if e0 == 1.0:
            return dpos
        if e0 == 2.0:
            return dpos * dpos
        if e0 == -1.0:
            return 1.0 / dpos
        return np.power(dpos, e0)
    return np.power(dpos, e[:, None])


def row_sums(zs: np.ndarray, tau: np.ndarray, q: np.ndarray, halley: bool = False) -> _Sums:
    """One pass over each row at the rows' current ``tau``."""
    d = zs - tau[:, None]
    support = d > 0
    dpos = np.where(support, d, 1.0)
    count = support.sum(axis=1)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        f = np.where(support, _powers(dpos, q, 0.0), 0.0).sum(axis=1) - 1.0
        sq1 = np.where(support, _powers(dpos, q, -1.0), 0.0).sum(axis=1)
        sq2 = np.where(support, _powers(dpos, q, -2.0), 0.0).sum(axis=1) if halley else None
        dz = np.where(support, d, 0.0)
        s1 = dz.sum(axis=1)
        mean = s1 / np.maximum(count, 1)
        ss = np.where(support, (d - mean[:, None]) ** 2, 0.0).sum(axis=1)
    min_d = np.where(support, d, np.inf).min(axis=1)
    max_out = np.where(support, -np.inf, d).max(axis=1)
    return _Sums(f, sq1, sq2, count, s1, ss, min_d, max_out)


def _empty_result(solver: str) -> TauResult:
    e = np.zeros(0)
    return TauResult(e, e.astype(np.int64), e.astype(np.int64), e.astype(bool), e.astype(bool),
                     e, solver, None)


def residual(zs: np.ndarray, tau: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``f(tau)`` in float64 (diagnostic)."""
    return row_sums(zs, tau, 1.0 / (alpha - 1.0)).f


def _closed_form_step(s: _Sums, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form increment ``delta`` (tau_cf = tau + delta) and its certificate, per row."""
    delta = cf.closed_form_delta(alpha, s.count, s.s1, s.ss)
    ok = cf.certified(delta, s.min_d, s.max_out)
    return delta, ok


def iterate(
    zs: np.ndarray,
    alpha: np.ndarray,
    method: str,
    *,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
    record_history: bool = False,
    closed_form: bool = True,
) -> TauResult:
    """The shared iteration loop of ``bisect``, ``newton`` and ``halley``.

    ``bisect``: evaluate ``f`` at the midpoint, keep the half with the sign change; stop when
    the midpoint no longer moves (bracket collapse) or ``hi - lo <= tol``. No closed-form finish
    (it is the baseline the analyzer compares against), except the flat-row root below, which
    every method shares.

    ``newton``: ``tau <- tau + f / (q sum d^(q-1))`` from ``tau = lo``. For ``alpha <= 2`` it is
    monotone and needs no safeguard; for ``alpha > 2`` it is safeguarded like ``halley``.

    ``halley``: ``tau <- tau - 2 f f' / (2 f'^2 - f f'')`` where ``f`` is C^2 (alpha <= 1.5;
    elsewhere ``f''`` is unbounded at breakpoints and the step is a Newton step), with a bracket
    *and progress* safeguard: a step that leaves ``(lo, hi)`` is replaced by the midpoint, and after a
    Newton/Halley step that failed to halve ``|f|`` the next pass bisects. This is what keeps the
    hybrid from stalling at ``alpha = 3`` (where ``f'`` is unbounded at breakpoints and the
    unguarded hybrid makes vanishing steps).

    Every pass of ``newton``/``halley`` also tries the certified closed form for
    ``alpha in {1.5, 2}``.
    """
    if method not in ITERATIVE:
        raise ValueError(f"solver must be one of {ITERATIVE}, got {method!r}")
    rows = zs.shape[0]
    if rows == 0:
        return _empty_result(method)
    q = 1.0 / (alpha - 1.0)
    lo0, hi0 = bracket(zs, alpha)
    lo = lo0 if lo is None else lo.astype(np.float64, copy=True)
    hi = hi0 if hi is None else hi.astype(np.float64, copy=True)
    if max_iter is None:
        max_iter = 200 if method == "bisect" else 100
    tol = 0.0 if tol is None else float(tol)

    has_cf = closed_form & cf.has_closed_form(alpha) & (method != "bisect")
    guarded = (method == "halley") | ((method == "newton") & (alpha > 2.0))
    tau = 0.5 * (lo + hi) if method == "bisect" else lo.copy()
    iters = np.zeros(rows, np.int64)
    converged = np.zeros(rows, bool)
    certified = np.zeros(rows, bool)
    force_bisect = np.zeros(rows, bool)
    last_absf = np.full(rows, np.inf)
    active = np.ones(rows, bool)
    # Rows whose candidates (entries above lo, the only ones that can enter the support) all
    # equal the row max: f(tau) = m (-tau)^q - 1, root -m^(1-alpha) in closed form. For
    # alpha > 2 the iterations reach that root only slowly: -5e-33 at alpha = 20, m = 50, from a
    # bracket that starts at -1, and each step cancels against tau.
    # (For bisect too: it would need ~210 passes to -8.6e-48 at alpha = 20, n = 300, past its
    # max_iter.)  In the history such a row starts where the others do and holds the closed
    # form after its one pass.
    history = [tau.copy()] if record_history else None
    with np.errstate(invalid="ignore"):
        n_top = (zs == 0.0).sum(axis=1)
        flat = (alpha > 2.0) & ((zs > lo[:, None]).sum(axis=1) == n_top) & (n_top > 0)
    if np.any(flat):
        tau[flat] = -np.power(n_top[flat].astype(np.float64), 1.0 - alpha[flat])
        iters[flat] = 1
        converged[flat] = True
        active[flat] = False
    first = True

    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        z, a, qq = zs[idx], alpha[idx], q[idx]
        l, h = lo[idx], hi[idx]
        t = 0.5 * (l + h) if method == "bisect" else tau[idx]
        s = row_sums(z, t, qq, halley=(method == "halley"))
        iters[idx] += 1
        f = s.f
        pos = f >= 0
        l = np.where(pos, t, l)
        h = np.where(pos, h, t)
        zero = f == 0

        if method == "bisect":
            new = 0.5 * (l + h)
            done = zero | (new <= l) | (new >= h) | (h - l <= tol)
            new = np.where(zero, t, new)
        else:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                fp = -qq * s.sq1  # f'(t) < 0 on a non-empty support
                if method == "halley" and np.all(a <= 1.5):
                    fpp = qq * (qq - 1.0) * s.sq2
                    new = t - 2.0 * f * fp / (2.0 * fp * fp - f * fpp)
                else:
                    # Newton on phi = (f + 1)^(1/q) - 1, the l_q (quasi-)norm of (zs - tau)_+
                    # minus 1. q >= 1: still convex and decreasing (so still monotone from the
                    # left), but nearly linear far from the root, where plain Newton only gains
                    # a factor (1 - 1/q) per pass. q < 1 (alpha > 2): plain Newton on f, and the
                    # phi step where that leaves the bracket: phi is exactly linear on rows of
                    # equal entries, where the f step jumps out of the bracket every pass and only
                    # bisection was left (~100 passes to the root -n^(1-alpha) at alpha = 20).
                    # Halley keeps f for alpha <= 2.
                    fq = np.maximum(f + 1.0, 1e-300)
                    phi = t - qq * fq * (1.0 - np.power(fq, -1.0 / qq)) / fp
                    plain = t - f / fp
                    out = ~((plain > l) & (plain < h))
                    if method == "halley":
                        fpp = qq * (qq - 1.0) * s.sq2
                        hal = t - 2.0 * f * fp / (2.0 * fp * fp - f * fpp)
                        new = np.where(a <= 1.5, hal, np.where((a > 2.0) & out, phi, plain))
                    else:
                        new = np.where((qq >= 1.0) | out, phi, plain)
            g = guarded[idx]
            # converged on the raw step: it no longer moves tau beyond rounding (or tol)
            small = np.isfinite(new) & (np.abs(new - t) <= np.maximum(tol, 4e-16 * np.abs(t)))
            mid = 0.5 * (l + h)
            was_step = ~force_bisect[idx]
            bad = ~np.isfinite(new) | (new <= l) | (new >= h) | force_bisect[idx]
            new_g = np.where(bad, mid, new)
            # progress test: a Newton/Halley step must at least halve |f|
            force_bisect[idx] = g & was_step & (np.abs(f) > 0.5 * last_absf[idx])
            last_absf[idx] = np.where(was_step | ~g, np.abs(f), last_absf[idx])
            collapsed = g & ((mid <= l) | (mid >= h))
            monotone_stall = ~g & ~(new > t)
            done = zero | small | collapsed | monotone_stall
            new = np.where(g & ~small, new_g, new)
            new = np.where(zero | monotone_stall | (small & ((new <= l) | (new >= h)) & g), t, new)

            cfm = has_cf[idx]
            if np.any(cfm):
                delta, ok = _closed_form_step(s, a)
                ok &= cfm
                new = np.where(ok, t + delta, new)
                done |= ok
                certified[idx] |= ok

        tau[idx] = new
        lo[idx], hi[idx] = l, h
        converged[idx] |= done
        active[idx] = ~done
        if history is not None:
            col = np.full(rows, np.nan)
            col[idx] = new
            if first:
                col[flat] = tau[flat]
            history.append(col)
        first = False
    if history is not None and first and np.any(flat):  # every row was flat: no pass ran
        col = np.full(rows, np.nan)
        col[flat] = tau[flat]
        history.append(col)

    support = (zs > tau[:, None]).sum(axis=1)
    hist = np.stack(history, axis=1) if history is not None else None
    return TauResult(
        tau=tau,
        support_size=support.astype(np.int64),
        iterations=iters,
        converged=converged,
        certified=certified,
        residual=residual(zs, tau, alpha),
        solver=method,
        history=hist,
    )


def sort_solve(zs: np.ndarray, alpha: np.ndarray, *, record_history: bool = False) -> TauResult:
    """Exact threshold for every alpha via sorted breakpoints.

    With the row sorted descending (``s_1 = 0 >= s_2 >= ...``), ``G(k) = f(s_k) + 1
    = sum_{j<k} (s_j - s_k)^q`` is nondecreasing in ``k`` and the support size is
    ``k* = max{k : G(k) < 1}`` (ties share ``G`` and enter or leave together). It is found by a
    vectorised binary search over ``k`` (``O(d log d)``). On ``[max(s_{k*+1}, -1), s_{k*})``
    ``f`` has no kinks: closed form for ``alpha in {1.5, 2}``, otherwise a safeguarded Newton
    solve on that interval (whose passes are reported as iterations).
    """
    rows, d = zs.shape
    if rows == 0:
        return _empty_result("sort")
    q = 1.0 / (alpha - 1.0)
    srt = -np.sort(-zs, axis=1)
    m = np.maximum((srt > -1.0).sum(axis=1), 1)  # candidates; s_1 = 0 > -1 always
    lo_k = np.ones(rows, np.int64)  # G(lo_k) < 1 holds
    hi_k = m + 1  # G(m+1) >= 1 (s_{m+1} <= -1 or absent)
    while True:
        open_ = hi_k - lo_k > 1
        if not np.any(open_):
            break
        idx = np.flatnonzero(open_)
        mid = (lo_k[idx] + hi_k[idx]) // 2
        t = srt[idx, mid - 1]
        g = row_sums(zs[idx], t, q[idx]).f + 1.0
        below = g < 1.0
        lo_k[idx] = np.where(below, mid, lo_k[idx])
        hi_k[idx] = np.where(below, hi_k[idx], mid)
    k = lo_k
    b = srt[np.arange(rows), k - 1]
    nxt = np.where(k < d, srt[np.arange(rows), np.minimum(k, d - 1)], -np.inf)
    a = np.maximum(nxt, -1.0)
    a = np.where(np.isfinite(a), a, -1.0)

    # the k support entries all equal the row max (0): f = k (-tau)^q - 1 on [a, b], root
    # -k^(1-alpha) for every alpha (the iterations reach it only slowly for alpha > 2)
    tau = np.empty(rows)
    iters = np.zeros(rows, np.int64)
    conv = np.ones(rows, bool)
    top = b == 0.0
    tau[top] = np.clip(-np.power(k[top].astype(np.float64), 1.0 - alpha[top]), a[top], b[top])
    # restricted sums at tau = a over the top-k (all of them are > a by construction)
    closed = cf.has_closed_form(alpha) & ~top
    if np.any(closed):
        idx = np.flatnonzero(closed)
        s = row_sums(zs[idx], a[idx], q[idx])
        delta = cf.closed_form_delta(alpha[idx], s.count, s.s1, s.ss)
        tau[idx] = np.clip(a[idx] + delta, a[idx], b[idx])
    rest = ~closed & ~top
    if np.any(rest):
        idx = np.flatnonzero(rest)
        r = iterate(zs[idx], alpha[idx], "newton", lo=a[idx], hi=b[idx], closed_form=False)
        tau[idx] = r.tau
        iters[idx] = r.iterations
        conv[idx] = r.converged
    hist = tau[:, None].copy() if record_history else None
    return TauResult(
        tau=tau,
        support_size=k.astype(np.int64),
        iterations=iters,
        converged=conv,
        certified=conv.copy(),
        residual=residual(zs, tau, alpha),
        solver="sort",
        history=hist,
    )


def solve(
    zs: np.ndarray,
    alpha: np.ndarray,
    solver: str,
    *,
    tol: float | None = None,
    max_iter: int | None = None,
    record_history: bool = False,
) -> TauResult:
    """Dispatch a concrete solver name on prepared rows."""
    if solver == "sort":
        return sort_solve(zs, alpha, record_history=record_history)
    return iterate(zs, alpha, solver, tol=tol, max_iter=max_iter, record_history=record_history)


def entmax_rows(
    x: np.ndarray,
    alpha: np.ndarray,
    solver: str = "newton",
    tol: float | None = None,
    max_iter: int | None = None,
) -> tuple[np.ndarray, TauResult]:
    """Reference end-to-end row-wise entmax: ``x`` (R, d) float, ``alpha`` (R,) >= 1.

    Row conventions (those of softmax): ``-inf`` entries get probability 0; a row that is all
    ``-inf`` or contains NaN or ``+inf`` gives an all-NaN row (tau NaN, converged False).
    ``alpha == 1`` rows are softmax (tau reported as NaN). Everything is computed in float64;
    ``p`` is returned in ``x``'s dtype. ``tau`` is in the prepared space.
    """
    rows, d = x.shape
    xf = x.astype(np.float64, copy=False)
    alpha = np.asarray(alpha, np.float64)
    with np.errstate(invalid="ignore"):
        rowmax = xf.max(axis=1) if d else np.full(rows, -np.inf)
    bad = ~np.isfinite(rowmax) | np.isnan(xf).any(axis=1)
    soft = ~bad & (alpha == 1.0)
    ent = ~bad & ~soft
    p = np.full((rows, d), np.nan)
    tau = np.full(rows, np.nan)
    support = np.zeros(rows, np.int64)
    iters = np.zeros(rows, np.int64)
    conv = np.zeros(rows, bool)
    cert = np.zeros(rows, bool)
    res = np.full(rows, np.nan)
    if np.any(soft):
        with np.errstate(over="ignore"):  # (as below)
            e = np.exp(xf[soft] - rowmax[soft, None])
        p[soft] = e / e.sum(axis=1, keepdims=True)
        support[soft] = (p[soft] > 0).sum(axis=1)
        conv[soft] = True
        cert[soft] = True
    if np.any(ent):
        a = alpha[ent]
        with np.errstate(over="ignore"):  # x − max below −1.8e308: −inf, a zero weight
            zs = (a - 1.0)[:, None] * (xf[ent] - rowmax[ent, None])
        r = solve(zs, a, solver, tol=tol, max_iter=max_iter)
        pe = probabilities(zs, r.tau, a)
        p[ent] = pe
        tau[ent], support[ent], iters[ent] = r.tau, r.support_size, r.iterations
        conv[ent], cert[ent], res[ent] = r.converged, r.certified, r.residual
    result = TauResult(tau, support, iters, conv, cert, res, solver)
    return p.astype(x.dtype, copy=False), result


def probabilities(zs: np.ndarray, tau: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``p = [zs - tau]_+^q / sum`` (the normalisation only removes solver rounding)."""
    q = 1.0 / (alpha - 1.0)
    d = np.maximum(zs - tau[:, None], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(d > 0, _powers(np.where(d > 0, d, 1.0), q, 0.0), 0.0)
        p /= p.sum(axis=1, keepdims=True)
    return p
