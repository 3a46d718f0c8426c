"""The streaming forward kernel (rows longer than ``MAX_ONCHIP``: one program per row, the row
read in [U, CHUNK] tiles) and its pass helpers; see ``gpu/rowwise.py``."""
from __future__ import annotations

import triton
import triton.language as tl

from .rowwise_common import (
    INF, _fold_max_nan, _fold_min, _fold_second, _fold_sum, _levels_start, _load_alpha,
    _needs_renorm, _p_from_tau, _row_mode, _solve_tile, _start_from_subset, _sum_dev_bound,
    _terms, _tile_cols, _unsure_sum, _update, _upper_bound,
)


@triton.jit
def _load_chunk(xrow, cols, D, PF: tl.constexpr):
    """The [U, CHUNK] tile at columns ``cols`` of a streamed row (−inf past the end); with
    PF = 0 nothing is loaded (the loop loads its own tile)."""
    if PF == 1:
        x = tl.load(xrow + cols, mask=cols < D, other=-INF)
    else:
        x = tl.zeros(cols.shape, xrow.dtype.element_ty)
    return x


@triton.jit
def _next_chunk(xrow, start, lane, D, U: tl.constexpr, xn, PF: tl.constexpr):
    """(tile at ``start``, prefetched tile after it).  PF = 1: the tile was loaded one
    iteration earlier and the next one is issued now, before this tile's arithmetic, so its
    latency overlaps that work (two tiles in registers); PF = 0: a plain load."""
    CH: tl.constexpr = lane.shape[0]
    if PF == 1:
        x = xn
        xn = _load_chunk(xrow, _tile_cols(start + U * CH, lane, U), D, PF)
    else:
        cols = _tile_cols(start, lane, U)
        x = tl.load(xrow + cols, mask=cols < D, other=-INF)
    return x, xn


@triton.jit
def _prepared(x, alpha, m, bad):
    """zs = (α−1)(x − m) of a tile (0 on bad rows), in x's compute dtype.  Softmax rows run
    with α = 2 here, so their zs is x − m exactly."""
    zs = (alpha - 1.0)[:, None] * (x - m[:, None])
    return tl.where(bad[:, None], 0.0, zs)


@triton.jit
def _stream_write(xrow, prow, D, lane, m, alpha, tau, q, mode, bad, soft, se, n_soft, zero2,
                  scale, U: tl.constexpr, PF: tl.constexpr, F64: tl.constexpr,
                  SUM: tl.constexpr = True, SCALED: tl.constexpr = False):
    """The output pass of a streamed row: p = [zs − τ]_+^q (``SCALED``: times ``scale``;
    softmax rows: exp(x − m)/Σ; bad rows: NaN) stored in P's dtype, U chunks per step.  Returns
    (entries with p > 0 as stored, entries with zs > τ, ``SUM``: Σ [zs − τ]_+^q before
    ``scale``, else ones), per row."""
    CH: tl.constexpr = lane.shape[0]
    STEP: tl.constexpr = U * CH
    cnt = zero2.to(tl.int32)         # per-lane counts, reduced once after the loop
    kpos = zero2.to(tl.int32)
    psum = zero2
    xn = _load_chunk(xrow, _tile_cols(0, lane, U), D, PF)
    for start in range(0, D, STEP):
        cols = _tile_cols(start, lane, U)
        cm = cols < D
        x, xn = _next_chunk(xrow, start, lane, D, U, xn, PF)
        zs = _prepared(x.to(zero2.dtype), alpha, m, bad)
        p, pos = _p_from_tau(zs, tau, q, mode, F64)
        if SUM:
            psum += _fold_sum(p, U)  # (masked-off columns: zs = −inf, p = 0)
        if SCALED:
            p = p * scale[:, None]
        if n_soft > 0:
            p = tl.where(soft[:, None], tl.exp(zs) / se[:, None], p)    # (zs = x − m there)
        p = tl.where(bad[:, None], INF - INF, p)
        pout = p.to(prow.dtype.element_ty)
        cnt += _fold_sum(((pout > 0) & cm).to(tl.int32), U)
        kpos += _fold_sum((pos & cm).to(tl.int32), U)
        tl.store(prow + cols, pout, mask=cm)
    if not SUM:
        psum = zero2 + 1.0 / CH
    return tl.sum(cnt, 1), tl.sum(kpos, 1), tl.sum(psum, 1)


@triton.jit
def _stream_sum(xrow, D, lane, m, alpha, tau, q, mode, bad, zero2, U: tl.constexpr,
                PF: tl.constexpr, F64: tl.constexpr):
    """Σ [zs − τ]_+^q over a streamed row (one read pass, per-lane sums reduced at the end)."""
    CH: tl.constexpr = lane.shape[0]
    STEP: tl.constexpr = U * CH
    acc = zero2
    xn = _load_chunk(xrow, _tile_cols(0, lane, U), D, PF)
    for start in range(0, D, STEP):
        x, xn = _next_chunk(xrow, start, lane, D, U, xn, PF)
        zs = _prepared(x.to(zero2.dtype), alpha, m, bad)
        p, pos = _p_from_tau(zs, tau, q, mode, F64)
        acc += _fold_sum(p, U)
    return tl.sum(acc, 1)


# ----------------------------------------------------------------------------------------
# forward kernel
# ----------------------------------------------------------------------------------------


@triton.jit
def _fwd_stream_kernel(X, ALPHA, P, TAU, SUPP, ITERS, CONV, D, stride_x, stride_p,
                       tol, max_iter, soft_below, alpha_s,
                       CHUNK: tl.constexpr, SOLVER: tl.constexpr, F64: tl.constexpr,
                       MODE: tl.constexpr, PF: tl.constexpr = 0, LEV: tl.constexpr = 16,
                       SCALAR_ALPHA: tl.constexpr = False, U: tl.constexpr = 1,
                       REDUCE_NAN: tl.constexpr = True, WRITE_FIRST: tl.constexpr = False,
                       TOP2: tl.constexpr = False, RENORM: tl.constexpr = True):
    row = tl.program_id(0).to(tl.int64)
    xrow = X + row * stride_x
    prow = P + row * stride_p
    lane = tl.arange(0, CHUNK)
    ridx = tl.arange(0, 1)
    alpha = _load_alpha(ALPHA, alpha_s, row + ridx, ridx < 1, SCALAR_ALPHA)
    if F64:
        alpha = alpha.to(tl.float64)
    else:
        alpha = alpha.to(tl.float32)
    zero2 = (alpha * 0.0)[:, None] + (lane * 0)[None, :]       # [1, CHUNK] in compute dtype
    unit = alpha * 0.0 + 1.0     # (per-row ones: the scale of a first write)
    # float64 rows sum p in the output pass; float32 rows estimate Σp from the last solver
    # pass and measure it in a separate pass only where the bound says so (NORM_TOL_F32)
    SUM: tl.constexpr = RENORM and F64
    sdev = unit * 0.0            # (the bound on |Σp − 1|: _sum_dev_bound)
    # ---- pass 1: max, NaN/inf flags and lane maxima ----------------------------------
    vmax = zero2 - INF
    vsec = zero2 - INF      # TOP2: per-lane second largest entries (the subset doubles)
    STEP: tl.constexpr = U * CHUNK
    xn = _load_chunk(xrow, _tile_cols(0, lane, U), D, PF)
    for start in range(0, D, STEP):
        x, xn = _next_chunk(xrow, start, lane, D, U, xn, PF)
        x = x.to(zero2.dtype)
        s1 = _fold_max_nan(x, U, REDUCE_NAN)
        if TOP2:
            # top two of {vmax, vsec} ∪ {s1, s2} (vmax ≥ vsec, s1 ≥ s2), before vmax moves
            vsec = tl.maximum(tl.minimum(vmax, s1), tl.maximum(vsec, _fold_second(x, s1, U)))
        # one NaN-propagating max per entry: a NaN reaches its lane's maximum (an earlier
        # version also counted the finite entries and flagged NaN/inf per entry: 4 more
        # operations per entry, measurably slower on an H100)
        vmax = tl.maximum(vmax, s1, propagate_nan=tl.PropagateNan.ALL)
    lnan = vmax != vmax
    vmax = tl.where(lnan, -INF, vmax)
    m = tl.max(vmax, 1)
    # the bracket's upper end from the row length: −D^{1−α} ≥ −d_eff^{1−α} (looser only when
    # the row holds −inf entries; the solvers start from below and do not need it tight)
    d_eff = (alpha * 0.0) + D
    bad = (tl.sum(lnan.to(tl.int32), 1) > 0) | (m == -INF) | (m == INF)
    m = tl.where(bad, 0.0, m)
    # softmax row (α − 1 ≤ soft_below): one extra pass for Σ exp(x − m), no solve
    soft = ((alpha - 1.0) <= soft_below) & (~bad)
    alpha = tl.where(soft, 2.0, alpha)
    n_soft = tl.sum(soft.to(tl.int32), 0)
    esum = zero2
    for start in range(0, D * n_soft, STEP):
        cols = _tile_cols(start, lane, U)
        x = tl.load(xrow + cols, mask=cols < D, other=-INF).to(zero2.dtype)
        esum += _fold_sum(tl.exp(x - m[:, None]), U)
    se = tl.sum(esum, 1)
    q = 1.0 / (alpha - 1.0)
    if MODE >= 0:
        mode = MODE
    else:
        mode = _row_mode(alpha, bad | True)
    neg1 = alpha * 0.0 - 1.0
    hi = _upper_bound(alpha, d_eff, F64)
    # ---- lower bound from the subset of lane maxima (solved on chip) ----------------
    zsv = (alpha - 1.0)[:, None] * (vmax - m[:, None])
    zsv = tl.where(bad[:, None], 0.0, zsv)
    if TOP2:
        # the subset: every lane's two largest entries, interleaved ([1, 2·CHUNK])
        zs2 = (alpha - 1.0)[:, None] * (vsec - m[:, None])
        zs2 = tl.where(bad[:, None] | (vsec != vsec), -INF, zs2)
        zsv = tl.reshape(tl.join(zsv, zs2), [1, 2 * CHUNK])
        hsub = _upper_bound(alpha, tl.sum((zsv > -INF).to(zero2.dtype), 1), F64)
    else:
        hsub = _upper_bound(alpha, tl.sum((vmax > -INF).to(zero2.dtype), 1), F64)
    tau0 = neg1
    if LEV > 0:
        tau0 = tl.where(bad | soft, neg1, _levels_start(zsv, hsub, alpha, q, mode, LEV, 8, F64))
    tsub, csub, isub, sdev_sub = _solve_tile(zsv, tau0, neg1, hsub, bad | soft, alpha, q, mode,
                                             tol, max_iter, SOLVER, F64)
    tau = _start_from_subset(tsub, csub, hi, F64)
    fixed = bad | soft
    cert = fixed
    if WRITE_FIRST:
        # p written at the subset's own root τ_g, certified when the row has as many entries
        # above τ_g as the subset: the lane maxima are row entries, so the two supports are
        # then the same set, f_row = f_sub around τ_g and τ_g is the row's root (as exact as
        # the subset solve).  The zs of a lane maximum is computed by the same operations in
        # both places, so the comparisons agree bitwise.  Otherwise the solver passes and a
        # second write follow (4 reads, 2 writes for that row).
        tg = tl.where(csub, tsub, tau)
        ksub = tl.sum((zsv > tg[:, None]).to(tl.int32), 1)
        supp, krow, psum = _stream_write(xrow, prow, D, lane, m, alpha, tg, q, mode, bad, soft,
                                         se, n_soft, zero2, unit, U, PF, F64, SUM)
        cert = fixed | (csub & (krow == ksub))
        tau = tl.where(cert & ~fixed, tg, tau)
        sdev = tl.where(cert & ~fixed, sdev_sub, sdev)   # (the same support: the subset's bound)
    # ---- solver passes over the full row --------------------------------------------
    NEED_S2: tl.constexpr = SOLVER == 0 or SOLVER == 3
    lo = neg1
    done = cert
    conv = cert
    fprev = alpha * 0.0 + INF
    nprev = bad & False
    it = (alpha * 0.0).to(tl.int32)
    n = tl.sum(it, 0)
    while (n < max_iter) & (tl.sum((~done).to(tl.int32), 0) > 0):
        a0 = zero2
        a1 = zero2
        a2 = zero2
        ak = zero2
        am = zero2 + INF
        xn = _load_chunk(xrow, _tile_cols(0, lane, U), D, PF)
        for start in range(0, D, STEP):
            x, xn = _next_chunk(xrow, start, lane, D, U, xn, PF)
            zs = _prepared(x.to(zero2.dtype), alpha, m, bad)
            t0, t1, t2, one, dm = _terms(zs, tau, q, mode, NEED_S2, F64)
            a0 += _fold_sum(t0, U)
            a1 += _fold_sum(t1, U)
            a2 += _fold_sum(t2, U)
            ak += _fold_sum(one, U)
            am = tl.minimum(am, _fold_min(dm, U))
        it += (~done).to(tl.int32)
        act = ~done
        t_old = tau
        S0 = tl.sum(a0, 1)
        S1 = tl.sum(a1, 1)
        S2 = tl.sum(a2, 1)
        tau, lo, hi, done, conv, fprev, nprev = _update(
            tau, lo, hi, done, conv, fprev, nprev, S0, S1, S2, tl.sum(ak, 1), tl.min(am, 1),
            alpha, q, mode, tol, SOLVER, F64)
        sdev = tl.where(act, _sum_dev_bound(S0, S1, S2, t_old, tau, q), sdev)
        n += 1
    # ---- output pass ----------------------------------------------------------------
    if WRITE_FIRST:
        if tl.sum((~cert).to(tl.int32), 0) > 0:
            supp, krow, psum = _stream_write(xrow, prow, D, lane, m, alpha, tau, q, mode, bad,
                                             soft, se, n_soft, zero2, unit, U, PF, F64, SUM)
    else:
        supp, krow, psum = _stream_write(xrow, prow, D, lane, m, alpha, tau, q, mode, bad, soft,
                                         se, n_soft, zero2, unit, U, PF, F64, SUM)
    # Σp off by more than NORM_TOL_* (a row stopped at max_iter, or α > 2 where no float τ gives
    # Σp = 1: p is only Hölder in τ): written again divided by Σp, as the CPU paths divide
    if RENORM:
        if F64:
            check = ~fixed
        else:
            check = _unsure_sum(sdev, conv, alpha, fixed)
            if tl.sum(check.to(tl.int32), 0) > 0:
                psum = _stream_sum(xrow, D, lane, m, alpha, tau, q, mode, bad, zero2, U, PF, F64)
        renorm = _needs_renorm(psum, ~check, F64)
        if tl.sum(renorm.to(tl.int32), 0) > 0:
            supp, krow, psum = _stream_write(xrow, prow, D, lane, m, alpha, tau, q, mode, bad,
                                             soft, se, n_soft, zero2, 1.0 / psum, U, PF, F64,
                                             False, True)
    tau = tl.where(soft, tl.log(se), tau)
    tl.store(TAU + row + ridx, tl.where(bad, INF - INF, tau))
    tl.store(SUPP + row + ridx, tl.where(bad, 0, supp))
    tl.store(ITERS + row + ridx, it)
    tl.store(CONV + row + ridx, conv.to(tl.int8))
