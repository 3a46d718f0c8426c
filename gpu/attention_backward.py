"""The backward kernels: dK/dV per key block and query head, dQ per query block (tile by
tile, or key by key from a gathered block's kept supports); see ``gpu/attention.py``."""
from __future__ import annotations

import triton
import triton.language as tl

from .attention_common import (
    _NOSPEC_T, _block_list, _load_kT, _load_q, _load_rows, _offset, _pow_pu, _program_head,
    _row_block, _tile_z,
)


# ----------------------------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=_NOSPEC_T)
def _bwd_dkdv_kernel(
    Q, K, V, DO, ALPHA, M, TAU, DELTA, LIST, LCNT, DK, DV, LIM, CU_Q, CU_K,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_on,
    stride_sb, stride_sh, stride_sn,
    stride_pb, stride_ph, stride_pn,
    Nq, Nk, H, GROUP, scale, NQB, NKB,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr, PREC: tl.constexpr, MODE: tl.constexpr,
    SUB_M: tl.constexpr,
):
    """One program per (key block, query head): dV_h = Σ_i pᵀ dO, dK_h = scale·Σ_i dSᵀ Q.
    Keys up to LIM[b, hk] (sequence-local; −1: none) are seen by a row the forward flagged as
    non-finite: their dK, dV are NaN (``_nan_key_limits``)."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b, h, hk, sq, lq, sk, lk, alpha, c, qexp = _program_head(pid_bh, H, GROUP, ALPHA, scale, CU_Q, CU_K,
                                                            Nq, Nk, VARLEN)
    Q_base = Q + _offset(b, h, sq, stride_qb, stride_qh, stride_qn)
    K_base = K + _offset(b, hk, sk, stride_kb, stride_kh, stride_kn)
    V_base = V + _offset(b, hk, sk, stride_vb, stride_vh, stride_vn)
    DO_base = DO + _offset(b, h, sq, stride_ob, stride_oh, stride_on)
    S_base = _offset(b, h, sq, stride_sb, stride_sh, stride_sn)
    start_n = pid_n * BLOCK_N
    cols = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_m = tl.arange(0, SUB_M)
    k = _load_rows(K_base, cols, offs_d, lk, stride_kn, HEAD_DIM)
    v = _load_rows(V_base, cols, offs_d, lk, stride_vn, HEAD_DIM)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    # live query blocks of this key block (compacted list, built from the forward's tiles)
    L_col, n_live = _block_list(LIST, LCNT, pid_bh, pid_n, NKB, NQB)
    for i in range(0, n_live):
        qb = tl.load(L_col + i)
        # the live 64-row query block in SUB_M-row slices (fewer registers, no spills)
        for sub in range(0, BLOCK_M // SUB_M):
            rows = qb * BLOCK_M + sub * SUB_M + offs_m
            rmask = rows < lq
            srow = S_base + rows.to(tl.int64) * stride_sn
            m = tl.load(M + srow, mask=rmask, other=0.0)
            tau = tl.load(TAU + srow, mask=rmask, other=0.0)
            dlt = tl.load(DELTA + srow, mask=rmask, other=0.0)
            q = _load_q(Q_base, rows, offs_d, lq, stride_qn, HEAD_DIM)
            do = _load_rows(DO_base, rows, offs_d, lq, stride_on, HEAD_DIM)
            # transposed tile: keys × queries
            zT = tl.dot(k, tl.trans(q), input_precision=PREC) * c - m[None, :]
            r0 = qb * BLOCK_M + sub * SUB_M
            edge = (start_n + BLOCK_N > lk) | (r0 + SUB_M > lq)
            if CAUSAL:
                edge = edge | (start_n + BLOCK_N - 1 > r0 + (lk - lq))
            if edge:
                visT = (cols[:, None] < lk) & (rows[None, :] < lq)
                if CAUSAL:
                    visT = visT & (cols[:, None] <= rows[None, :] + (lk - lq))
                zT = tl.where(visT, zT, float("-inf"))
            pT, uT = _pow_pu(zT - tau[None, :], qexp, MODE)
            dv += tl.dot(pT.to(do.dtype), do, input_precision=PREC)
            dpT = tl.dot(v, tl.trans(do), input_precision=PREC)
            dsT = uT * (dpT - dlt[None, :])
            dk += tl.dot(dsT.to(q.dtype), q, input_precision=PREC)
    P_off = _offset(b, h, sk, stride_pb, stride_ph, stride_pn)
    ptr = P_off + cols[:, None].to(tl.int64) * stride_pn + offs_d[None, :]
    msk = (cols[:, None] < lk) & (offs_d[None, :] < HEAD_DIM)
    nan_k = (cols <= tl.load(LIM + b * (H // GROUP) + hk))[:, None]
    tl.store(DK + ptr, tl.where(nan_k, float("nan"), dk * scale), mask=msk)
    tl.store(DV + ptr, tl.where(nan_k, float("nan"), dv), mask=msk)


@triton.jit
def _dq_from_support(q, do, dlt, m, tau, c, qexp, rmask, offs_d, K_base, V_base, stride_kn, stride_vn,
                     SUP_row, NS_row, MODE: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Σ_j dS_ij k_j over each row's kept support (``_keep_support``), unscaled, float32."""
    ns = tl.load(NS_row, mask=rmask, other=0)
    dm = offs_d < HEAD_DIM
    qf = q.to(tl.float32)
    dof = do.to(tl.float32)
    dq = tl.zeros(qf.shape, tl.float32)
    for kk in range(0, tl.max(ns, axis=0)):
        has = kk < ns
        j = tl.load(SUP_row + kk, mask=has, other=0).to(tl.int64)
        kj = tl.load(K_base + j[:, None] * stride_kn + offs_d[None, :], mask=has[:, None] & dm[None, :],
                     other=0.0).to(tl.float32)
        vj = tl.load(V_base + j[:, None] * stride_vn + offs_d[None, :], mask=has[:, None] & dm[None, :],
                     other=0.0).to(tl.float32)
        z = tl.sum(qf * kj, axis=1) * c - m
        p, u = _pow_pu(z - tau, qexp, MODE)
        ds = tl.where(has, u, 0.0) * (tl.sum(dof * vj, axis=1) - dlt)
        dq += ds[:, None] * kj
    return dq


@triton.jit(do_not_specialize=_NOSPEC_T)
def _bwd_dq_kernel(
    Q, K, V, DO, O2, ALPHA, M, TAU, DELTA, LIST, LCNT, DQ, GDONE, SUP, NS, CU_Q, CU_K,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_on,
    stride_sb, stride_sh, stride_sn,
    Nq, Nk, H, GROUP, scale, NQB, NKB,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr, PREC: tl.constexpr, MODE: tl.constexpr,
    DQG: tl.constexpr = False, S: tl.constexpr = 64,
):
    """One program per (query block, query head): dQ = scale·Σ_j dS K.  Also writes the rows'
    δ_i = dO_i · O2_i to DELTA for the dK/dV kernel, which runs after it.  O2, DO and DQ share
    their layout (``stride_o*``).  With DQG, a block whose forward kept its rows' supports
    (GDONE = 2, ``_keep_support``) takes them instead of the live tiles: per support key j,
    z_ij = c·q_i·k_j − m_i again, dS_ij = u_ij (dO_i·v_j − δ_i), dQ_i += dS_ij k_j (float32
    products of the gathered key and value rows)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    (b, h, hk, sq, lq, sk, lk, alpha, c, qexp, start_m, rows, rmask, srow, offs_d, q, K_base, V_base,
     O_off, offs_n, m, tau) = _row_block(pid_m, pid_bh, Q, K, V, ALPHA, M, TAU, CU_Q, CU_K, stride_qb,
                                         stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
                                         stride_vb, stride_vh, stride_vn, stride_ob, stride_oh,
                                         stride_on, stride_sb, stride_sh, stride_sn, Nq, Nk, H, GROUP,
                                         scale, HEAD_DIM, BLOCK_D, BLOCK_M, BLOCK_N, VARLEN)
    do = _load_rows(DO + O_off, rows, offs_d, lq, stride_on, HEAD_DIM)
    o2 = _load_rows(O2 + O_off, rows, offs_d, lq, stride_on, HEAD_DIM)
    dlt = tl.sum(do.to(tl.float32) * o2, axis=1)
    tl.store(DELTA + srow, dlt, mask=rmask)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    L_row, n_live = _block_list(LIST, LCNT, pid_bh, pid_m, NQB, NKB)
    use = pid_m < 0
    if DQG:
        blk = pid_bh.to(tl.int64) * NQB + pid_m
        use = tl.load(GDONE + blk) == 2
        if use:
            dq = _dq_from_support(q, do, dlt, m, tau, c, qexp, rmask, offs_d, K_base, V_base,
                                  stride_kn, stride_vn, SUP + blk * (BLOCK_M * S) + tl.arange(0, BLOCK_M) * S,
                                  NS + blk * BLOCK_M + tl.arange(0, BLOCK_M), MODE, HEAD_DIM)
    for i in range(0, tl.where(use, 0, n_live)):
        start_n = tl.load(L_row + i) * BLOCK_N
        cols, kT, z = _tile_z(q, K_base, start_n, offs_n, offs_d, rows, m, c, start_m, lq, lk, stride_kn,
                              HEAD_DIM, CAUSAL, PREC, BLOCK_M, BLOCK_N)
        vT = _load_kT(V_base, cols, offs_d, lk, stride_vn, HEAD_DIM)
        p, u = _pow_pu(z - tau[:, None], qexp, MODE)
        dp = tl.dot(do, vT, input_precision=PREC)
        ds = u * (dp - dlt[:, None])
        dq += tl.dot(ds.to(kT.dtype), tl.trans(kT), input_precision=PREC)
    optr = O_off + rows[:, None].to(tl.int64) * stride_on + offs_d[None, :]
    dq = tl.where((m != m)[:, None], float("nan"), dq * scale)  # rows flagged by the scan
    tl.store(DQ + optr, dq, mask=rmask[:, None] & (offs_d[None, :] < HEAD_DIM))
