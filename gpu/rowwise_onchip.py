"""The on-chip forward kernel: rows up to ``MAX_ONCHIP`` read once into registers, several
short rows per program, solved and written (see ``gpu/rowwise.py``)."""
from __future__ import annotations

import triton
import triton.language as tl

from .rowwise_common import (
    INF, _load_alpha, _needs_renorm, _p_from_tau, _row_mode, _solve_tile, _start_from_subset,
    _unsure_sum, _upper_bound,
)


# ----------------------------------------------------------------------------------------
# forward kernel (rows on chip)
# ----------------------------------------------------------------------------------------


@triton.jit
def _fwd_onchip_kernel(X, ALPHA, P, TAU, SUPP, ITERS, CONV, R, D, stride_x, stride_p,
                       tol, max_iter, soft_below, alpha_s,
                       BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, SOLVER: tl.constexpr,
                       F64: tl.constexpr, GROUP: tl.constexpr, MODE: tl.constexpr,
                       SCALAR_ALPHA: tl.constexpr = False, RENORM: tl.constexpr = True):
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    cols = tl.arange(0, BLOCK_D)
    cmask = cols < D
    m2 = rmask[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)
    x = tl.load(X + r64[:, None] * stride_x + cols[None, :], mask=m2, other=-INF)
    alpha = _load_alpha(ALPHA, alpha_s, rows, rmask, SCALAR_ALPHA)
    if F64:
        x = x.to(tl.float64)
        alpha = alpha.to(tl.float64)
    else:
        x = x.to(tl.float32)
        alpha = alpha.to(tl.float32)
    # row checks and the prepared row
    isnan = x != x
    bad = (tl.max((isnan | (x == INF)).to(tl.int32), 1) > 0)
    xm = tl.where(isnan, -INF, x)
    m = tl.max(xm, 1)
    bad = bad | (m == -INF) | (~rmask)
    m = tl.where(bad, 0.0, m)
    # softmax rows (α − 1 ≤ soft_below): no solve; α = 2 stands in so nothing overflows
    soft = ((alpha - 1.0) <= soft_below) & (~bad)
    alpha = tl.where(soft, 2.0, alpha)
    zs = (alpha - 1.0)[:, None] * (xm - m[:, None])
    zs = tl.where(bad[:, None], 0.0, zs)
    d_eff = tl.sum((xm > -INF).to(alpha.dtype), 1)
    q = 1.0 / (alpha - 1.0)
    if MODE >= 0:
        mode = MODE
    else:
        mode = _row_mode(alpha, rmask)
    lo = alpha * 0.0 - 1.0
    hi = _upper_bound(alpha, d_eff, F64)
    tau = lo
    if GROUP > 1:
        # lower bound from the subset of group maxima (GROUP consecutive entries each):
        # the threshold of any subset is ≤ τ*, and the top entries usually sit in
        # different groups, so τ_sub is tight and the full-row loop mostly just certifies.
        # (the tile is re-read as [BLOCK_R, BLOCK_D/GROUP, GROUP] from L1/L2 rather than
        # reshaped: tl.reshape + reduce trips triton 3.6's layout pass)
        gi = tl.arange(0, BLOCK_D // GROUP)
        gj = tl.arange(0, GROUP)
        c3 = gi[None, :, None] * GROUP + gj[None, None, :]
        x3 = tl.load(X + r64[:, None, None] * stride_x + c3,
                     mask=rmask[:, None, None] & (c3 < D), other=-INF).to(alpha.dtype)
        x3 = tl.where(x3 != x3, -INF, x3)
        zsub = (alpha - 1.0)[:, None] * (tl.max(x3, 2) - m[:, None])
        zsub = tl.where(bad[:, None], 0.0, zsub)
        hsub = _upper_bound(alpha, tl.sum((zsub > -INF).to(alpha.dtype), 1), F64)
        tsub, csub, isub, sdev_sub = _solve_tile(zsub, lo, lo, hsub, bad, alpha, q, mode,
                                                 tol, max_iter, SOLVER, F64)
        tau = _start_from_subset(tsub, csub, hi, F64)
    tau, conv, it, sdev = _solve_tile(zs, tau, lo, hi, bad | soft, alpha, q, mode, tol,
                                      max_iter, SOLVER, F64)
    p, pos = _p_from_tau(zs, tau, q, mode, F64)
    # Σp off by more than NORM_TOL_*: divided by Σp (float32: measured where the bound says so)
    if RENORM:
        if F64:
            check = ~(bad | soft)
        else:
            check = _unsure_sum(sdev, conv, alpha, bad | soft)
        if tl.sum(check.to(tl.int32), 0) > 0:
            psum = tl.sum(p, 1)
            p = tl.where(_needs_renorm(psum, ~check, F64, True)[:, None], p / psum[:, None], p)
    if tl.sum(soft.to(tl.int32), 0) > 0:
        e = tl.exp(zs)  # softmax rows solve with α = 2 as a stand-in, so their zs is x − max
        se = tl.sum(e, 1)
        p = tl.where(soft[:, None], e / se[:, None], p)
        tau = tl.where(soft, tl.log(se), tau)
    p = tl.where(bad[:, None], INF - INF, p)
    # the support is counted on the stored p: entries whose d^q underflows are not in it
    pout = p.to(P.dtype.element_ty)
    tl.store(P + r64[:, None] * stride_p + cols[None, :], pout, mask=m2)
    supp = tl.where(bad, 0, tl.sum((pout > 0).to(tl.int32), 1))
    tl.store(TAU + rows, tl.where(bad, INF - INF, tau), mask=rmask)
    tl.store(SUPP + rows, supp, mask=rmask)
    tl.store(ITERS + rows, it, mask=rmask)
    tl.store(CONV + rows, conv.to(tl.int8), mask=rmask)
