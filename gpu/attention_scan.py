"""The forward's one dense QKᵀ sweep (row max, tile bounds, the lower bound τ₁ from the
column-class subset) and the compacted live-tile lists built from its bounds (see
``gpu/attention.py``)."""
from __future__ import annotations

import triton
import triton.language as tl

from .attention_common import (
    _NOSPEC_T, _interior_end, _kend, _nvis, _pow_pu, _query_start, _scan_kT, _seq_info,
    _visible, _zval,
)


# ----------------------------------------------------------------------------------------------
# forward, the one dense sweep: row max, tile maxima, lower bound on τ
# ----------------------------------------------------------------------------------------------


@triton.jit
def _scan_tile(s, c, mraw, acc, acc2, tile, T_base, DIAG: tl.constexpr = 0, TOP2: tl.constexpr = False):
    """Fold one tile of *unscaled* scores s = q·kᵀ (−inf where invisible) into the scan state;
    the scaled score is c·s (c > 0) and the kernels' shifted score z = fl(c·s − m) (``_zval``).
    The maxima are taken on s: mraw, the running row max of s (the row max is m = fl(c·mraw):
    rounding is monotone), and acc, acc2 (kept unscaled), for one multiply per row instead of
    one per score.

    acc[i, j]: the row's maximum over the key columns ≡ j (mod BLOCK_N)
    seen so far (one actual score per column class, so together a *subset* of the row; one max
    per score, in the scores' own register layout); with TOP2 also acc2, each class's second
    largest score (so the subset has two actual scores per class; ties count twice, as they
    are two scores).  Stores the tile's bound max_i fl(c·max_j s_ij − mrun_i), mrun = fl(c·mraw)
    with mraw already including this tile: the fma is monotone in both arguments and the final
    m_i ≥ mrun_i, so every z_ij = fl(c·s_ij − m_i) of the tile is ≤ that value."""
    traw = tl.max(s, axis=1)
    mraw = tl.maximum(mraw, traw)
    mrun = mraw * c
    if DIAG == 1:  # profiling: no tile bound (every tile live)
        tl.store(T_base + tile, 0.0)
    else:
        y = tl.where(traw > float("-inf"), _zval(traw, c, mrun), float("-inf"))
        tl.store(T_base + tile, tl.max(y, axis=0))
    if DIAG != 2:  # 2, profiling: no subset (the bound stays −1)
        # NaN-propagating (the same one instruction): a NaN score reaches its column class, and
        # so flags its row (see the end of the scan)
        if TOP2:
            acc2 = tl.maximum(acc2, tl.minimum(acc, s))
        acc = tl.maximum(acc, s, propagate_nan=tl.PropagateNan.ALL)
    return mraw, acc, acc2


@triton.jit
def _scan_masked_s(q, K_base, KD, b, hk, sk, start_n, rows, offs_n, offs_d, lq, lk, stride_kn,
                   HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   VARLEN: tl.constexpr, TMA: tl.constexpr, CAUSAL: tl.constexpr, PREC: tl.constexpr):
    """The scan's unscaled scores q·kᵀ of the key tile at ``start_n``, −inf where not visible."""
    kT = _scan_kT(K_base, KD, b, hk, sk, start_n, offs_n, offs_d, lk, stride_kn, HEAD_DIM,
                  BLOCK_N, BLOCK_D, VARLEN, TMA)
    sc = tl.dot(q, kT, input_precision=PREC)
    return tl.where(_visible(rows, start_n + offs_n, lq, lk, CAUSAL), sc, float("-inf"))


@triton.jit
def _scan_interior_s(q, K_base, KD, b, hk, sk, t, d0, nint, offs_n, offs_d, lk, stride_kn,
                     HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     VARLEN: tl.constexpr, TMA: tl.constexpr, PREC: tl.constexpr):
    """(tile, unscaled scores q·kᵀ) of the scan's t-th interior tile (no mask), in the order
    d0, d0 − 1, …, 0, nint − 1, …, d0 + 1."""
    tile = d0 - t
    tile = tl.where(tile < 0, tile + nint, tile)
    kT = _scan_kT(K_base, KD, b, hk, sk, tile * BLOCK_N, offs_n, offs_d, lk, stride_kn,
                  HEAD_DIM, BLOCK_N, BLOCK_D, VARLEN, TMA)
    return tile, tl.dot(q, kT, input_precision=PREC)


@triton.jit(do_not_specialize=_NOSPEC_T)
def _fwd_scan_kernel(
    Q, K, ALPHA, M, TAU, TMAX, THR, WORK, CU_Q, CU_K,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_sb, stride_sh, stride_sn,
    Nq, Nk, H, GROUP, scale, NQB, NKB,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr, PREC: tl.constexpr, MODE: tl.constexpr,
    NIT: tl.constexpr, DIAG: tl.constexpr, TOP2: tl.constexpr, KD=None, TMA: tl.constexpr = False,
):
    """The forward's only dense QKᵀ sweep (see the module docstring): row max m, per-tile bounds
    (TMAX), and a lower bound τ₁ ≤ τ'* from the column-class maxima subset; also the block's tile
    threshold min_i τ₁ (THR) for the live-tile list of the solve's pass 0.  Program (0, 0) also
    zeroes the persistent solve's work counter WORK[0] (the solve runs after the scan).

    Tile order: the tiles with masks first (for causal attention the diagonal, where the row max
    usually is), then the interior tiles starting from the diagonal one and going down (wrapping
    around): the sooner the running max is final, the tighter the stored tile bounds.  With TMA
    the key tiles come through the tensor descriptor KD (``_load_kT_tma``; without it the launch
    passes K again there, unused)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    tl.store(WORK, 0, mask=(pid_m == 0) & (pid_bh == 0))
    (b, h, hk, sq, lq, sk, lk, alpha, c, qexp, start_m, rows, rmask, srow, offs_d, q,
     K_base) = _query_start(pid_m, pid_bh, Q, K, ALPHA, CU_Q, CU_K, stride_qb, stride_qh, stride_qn,
                            stride_kb, stride_kh, stride_kn, stride_sb, stride_sh, stride_sn, Nq, Nk,
                            H, GROUP, scale, HEAD_DIM, BLOCK_D, BLOCK_M, VARLEN)
    offs_n = tl.arange(0, BLOCK_N)
    n = _nvis(rows, lq, lk, CAUSAL)
    T_base = TMAX + (pid_bh.to(tl.int64) * NQB + pid_m) * NKB
    mraw = tl.full([BLOCK_M], float("-inf"), tl.float32)
    acc = tl.full([BLOCK_M, BLOCK_N], float("-inf"), tl.float32)
    if TOP2:
        acc2 = tl.full([BLOCK_M, BLOCK_N], float("-inf"), tl.float32)
    else:
        acc2 = tl.full([1, 1], float("-inf"), tl.float32)  # unused
    kend = _kend(start_m, lq, lk, CAUSAL, BLOCK_M)
    kint = tl.minimum(_interior_end(start_m, lq, lk, CAUSAL, BLOCK_M, BLOCK_N), kend)
    for start_n in range(kint, kend, BLOCK_N):  # tiles that need the mask (diagonal, ends)
        sc = _scan_masked_s(q, K_base, KD, b, hk, sk, start_n, rows, offs_n, offs_d, lq, lk,
                            stride_kn, HEAD_DIM, BLOCK_N, BLOCK_D, VARLEN, TMA, CAUSAL, PREC)
        mraw, acc, acc2 = _scan_tile(sc, c, mraw, acc, acc2, start_n // BLOCK_N, T_base, DIAG, TOP2)
    nint = kint // BLOCK_N
    d0 = tl.minimum(tl.maximum((start_m + (lk - lq)) // BLOCK_N, 0), tl.maximum(nint - 1, 0))
    for t in range(0, nint):  # interior tiles, no mask: d0, d0 − 1, …, 0, nint − 1, …, d0 + 1
        tile, sc = _scan_interior_s(q, K_base, KD, b, hk, sk, t, d0, nint, offs_n, offs_d, lk,
                                    stride_kn, HEAD_DIM, BLOCK_N, BLOCK_D, VARLEN, TMA, PREC)
        mraw, acc, acc2 = _scan_tile(sc, c, mraw, acc, acc2, tile, T_base, DIAG, TOP2)
    mrun = mraw * c
    m = tl.where(n > 0, mrun, 0.0)
    # rows whose visible scores hold NaN or +inf, or are all −inf (from non-finite q or k): the
    # library's row convention gives them NaN (out, τ, dq; the dK/dV they touch).  Marked by a
    # NaN row max; their τ bound here is 0 and they take no part in the block's threshold.
    bad = ((tl.max((acc != acc).to(tl.int32), axis=1) > 0) | (mrun == float("inf"))
           | ((mrun == float("-inf")) & (n > 0)))
    tl.store(M + srow, tl.where(bad, float("nan"), m), mask=rmask)
    m = tl.where(bad, 0.0, m)
    # The kernels' z = fl(c·s − m) is one fma, so the row max's own z is r = c·mraw − fl(c·mraw),
    # the (exact) rounding residual of m, not 0: |r| ≤ ulp(m)/2, 6·10⁻⁴ at |m| = 10⁴.  The
    # bracket and the one-key rows' τ' are taken relative to it (with −1 and −n^{1−α} the rows
    # of large scores lost shift invariance: a single key's weight was (1 + r)^Q).
    r = tl.where((n > 0) & ~bad, _zval(mraw, c, m), 0.0)
    # ---- lower bound on τ' from the column-class maxima (a subset of the row: f_sub ≤ f) ----
    v = _zval(acc, c, m[:, None])                               # ≤ r, −inf for empty classes
    nf = tl.maximum(n, 1).to(tl.float32)
    hi = r - tl.exp2((1.0 - alpha) * tl.log2(nf))               # r − n^{1−α}: uniform weights
    convex = (tl.zeros([BLOCK_M], tl.float32) + alpha) <= 2.0
    # f_sub(lo) ≥ 0: the max is in the subset and r − lo ≥ 1 (the subtraction rounded down)
    lo = (r - 1.0) - 2.4e-7
    bhi = hi
    tau = lo
    for _ in tl.static_range(NIT):
        # convex (α ≤ 2): Newton on f_sub from below stays below its root; else bisection of
        # [lo, bhi] keeping f_sub(lo) ≥ 0
        mid = 0.5 * (lo + bhi)
        x = tl.where(convex, tau, mid)
        p_, u_ = _pow_pu(v - x[:, None], qexp, MODE)
        F = tl.sum(p_, axis=1)
        G = tl.sum(u_, axis=1)
        if TOP2:
            p_, u_ = _pow_pu(_zval(acc2, c, m[:, None]) - x[:, None], qexp, MODE)
            F += tl.sum(p_, axis=1)
            G += tl.sum(u_, axis=1)
        up = F >= 1.0
        lo = tl.where(up, tl.maximum(lo, x), lo)
        bhi = tl.where(up, bhi, tl.minimum(bhi, x))
        newton = x + (F - 1.0) / (qexp * tl.maximum(G, 1e-30))
        tau = tl.where(convex & up, tl.maximum(newton, x), lo)
    # a rounding margin (the Newton iterate is not verified), never above the bracket's top
    tau = tl.minimum(tau - (1e-6 + 2e-6 * tl.abs(tau)), hi)
    # a single visible key: τ' = r − 1, its weight (r − fl(r − 1))^Q = 1 to float32 rounding
    # (the solve keeps it)
    tau = tl.where(n == 1, r - 1.0, tau)
    tau = tl.where((n > 0) & ~bad, tau, 0.0)
    tl.store(TAU + srow, tau, mask=rmask)
    # the block's tile threshold for the solve's pass 0 (rows with ≤ 1 visible key need no tile)
    thr = tl.min(tl.where((n > 1) & ~bad, tau, float("inf")), axis=0)
    tl.store(THR + pid_bh.to(tl.int64) * NQB + pid_m, thr)


# ----------------------------------------------------------------------------------------------
# compacted live-tile lists
# ----------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=_NOSPEC_T)
def _tile_list_kernel(
    TMAX, THR, LIST, LCNT, CU_Q, CU_K, Nq, Nk, H, NQB, NKB,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, VARLEN: tl.constexpr,
    TRANS: tl.constexpr, CH: tl.constexpr,
):
    """The live tiles of one query block (``TRANS`` = 0: key tiles t with TMAX[mb, t] > THR[mb],
    in increasing t) or of one key block (``TRANS`` = 1: query blocks mb with TMAX[mb, kb] >
    THR[mb]), written compactly to LIST with their number in LCNT.

    Only tiles the forward's dense sweep visited are considered (TMAX is undefined elsewhere).
    The sparse kernels then loop over ``LIST[0:LCNT]`` with no per-tile test: a dead tile costs
    nothing (the per-tile load of TMAX and its branch were a serial global-memory latency per
    tile) and the loop body is unconditional, so its K/V loads can be software-pipelined."""
    pid = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    sq, lq, sk, lk = _seq_info(b, CU_Q, CU_K, Nq, Nk, VARLEN)
    offs = tl.arange(0, CH)
    T_head = TMAX + pid_bh.to(tl.int64) * NQB * NKB
    R_head = THR + pid_bh.to(tl.int64) * NQB
    if TRANS:
        start_n = pid * BLOCK_N
        if CAUSAL:
            lo = tl.maximum(start_n - (lk - lq), 0) // BLOCK_M
        else:
            lo = 0
        hi = tl.where(start_n < lk, tl.cdiv(lq, BLOCK_M), 0)
        L_base = LIST + (pid_bh.to(tl.int64) * NKB + pid) * NQB
        C_ptr = LCNT + pid_bh.to(tl.int64) * NKB + pid
        thr = 0.0
    else:
        lo = 0
        hi = tl.cdiv(_kend(pid * BLOCK_M, lq, lk, CAUSAL, BLOCK_M), BLOCK_N)
        L_base = LIST + (pid_bh.to(tl.int64) * NQB + pid) * NKB
        C_ptr = LCNT + pid_bh.to(tl.int64) * NQB + pid
        thr = tl.load(R_head + pid)
    n = 0
    for c0 in range(lo, hi, CH):
        idx = c0 + offs
        inr = idx < hi
        if TRANS:
            tm = tl.load(T_head + idx.to(tl.int64) * NKB + pid, mask=inr, other=float("-inf"))
            th = tl.load(R_head + idx, mask=inr, other=float("inf"))
        else:
            tm = tl.load(T_head + pid.to(tl.int64) * NKB + idx, mask=inr, other=float("-inf"))
            th = thr
        live = (tm > th) & inr
        li = live.to(tl.int32)
        tl.store(L_base + (n + tl.cumsum(li, 0) - 1), idx, mask=live)
        n += tl.sum(li, 0)
    tl.store(C_ptr, n)
