"""The forward's sparse output pass: out = Σ p v (and O2 = Σ u v / Σ u for the backward,
the ∂/∂α statistics) over the live tiles of the blocks the solve did not gather (see
``gpu/attention.py``)."""
from __future__ import annotations

import triton
import triton.language as tl

from .attention_common import (
    _NOSPEC_T, _block_list, _kend, _load_rows, _pow_pu, _row_block, _tile_z,
)


# ----------------------------------------------------------------------------------------------
# forward, sparse output pass
# ----------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=_NOSPEC_T)
def _fwd_output_kernel(
    Q, K, V, ALPHA, M, TAU, LIST, LCNT, O, O2, O3, HS, LIVE, GDONE, CU_Q, CU_K,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_on,
    stride_sb, stride_sh, stride_sn,
    Nq, Nk, H, GROUP, scale, NQB, NKB,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr, PREC: tl.constexpr, MODE: tl.constexpr,
    NEED_O2: tl.constexpr, NEED_DALPHA: tl.constexpr, GATHER: tl.constexpr = False,
    WIDE_U: tl.constexpr = False,
):
    """out = Σ p v on live tiles; with NEED_O2 also O2 = Σ u v / Σ u (for δ in the backward); with
    NEED_DALPHA also O3 = Σ h v and HS = Σ h, h = p log p (for ∂L/∂α, see ``entmax_attention_dalpha``).
    With GATHER, blocks the solve kernel already wrote (GDONE) only record their tile counts.
    WIDE_U: the Σ u v product on float32 operands (float16 inputs with a generic α: for α > 2,
    u = p^{2−α} is unbounded near the threshold and passes float16's 65504 while float32 holds
    it; bfloat16 has float32's range)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    (b, h, hk, sq, lq, sk, lk, alpha, c, qexp, start_m, rows, rmask, srow, offs_d, q, K_base, V_base,
     O_off, offs_n, m, tau) = _row_block(pid_m, pid_bh, Q, K, V, ALPHA, M, TAU, CU_Q, CU_K, stride_qb,
                                         stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
                                         stride_vb, stride_vh, stride_vn, stride_ob, stride_oh,
                                         stride_on, stride_sb, stride_sh, stride_sn, Nq, Nk, H, GROUP,
                                         scale, HEAD_DIM, BLOCK_D, BLOCK_M, BLOCK_N, VARLEN)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    acc2 = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    su = tl.zeros([BLOCK_M], tl.float32)
    acc3 = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    hs = tl.zeros([BLOCK_M], tl.float32)
    # live tiles under the block's final threshold min_i τ'_i (compacted list)
    L_row, n_live = _block_list(LIST, LCNT, pid_bh, pid_m, NQB, NKB)
    n_tiles = tl.cdiv(_kend(start_m, lq, lk, CAUSAL, BLOCK_M), BLOCK_N)
    todo = pid_m >= 0
    if GATHER:
        todo = tl.load(GDONE + pid_bh.to(tl.int64) * NQB + pid_m) == 0
    for i in range(0, tl.where(todo, n_live, 0)):
        start_n = tl.load(L_row + i) * BLOCK_N
        cols, kT, z = _tile_z(q, K_base, start_n, offs_n, offs_d, rows, m, c, start_m, lq, lk, stride_kn,
                              HEAD_DIM, CAUSAL, PREC, BLOCK_M, BLOCK_N)
        v = _load_rows(V_base, cols, offs_d, lk, stride_vn, HEAD_DIM)
        p, u = _pow_pu(z - tau[:, None], qexp, MODE)
        acc += tl.dot(p.to(v.dtype), v, input_precision=PREC)
        if NEED_O2:
            if WIDE_U:
                acc2 += tl.dot(u, v.to(tl.float32), input_precision=PREC)
            else:
                acc2 += tl.dot(u.to(v.dtype), v, input_precision=PREC)
            su += tl.sum(u, axis=1)
        if NEED_DALPHA:
            d = z - tau[:, None]
            pos = d > 0
            # h = p·ln p = p · Q · ln d
            hh = tl.where(pos, p * (qexp * 0.6931471805599453) * tl.log2(tl.where(pos, d, 1.0)), 0.0)
            acc3 += tl.dot(hh.to(v.dtype), v, input_precision=PREC)
            hs += tl.sum(hh, axis=1)
    optr = O_off + rows[:, None].to(tl.int64) * stride_on + offs_d[None, :]
    # (blocks the solve wrote: no store; an all-false mask built by comparison, as the interpreter
    # does not take a mask combined with a scalar)
    omask = rmask[:, None] & (offs_d[None, :] < tl.where(todo, HEAD_DIM, 0))
    bad = (m != m)[:, None]  # rows flagged by the scan: NaN
    tl.store(O + optr, tl.where(bad, float("nan"), acc).to(O.dtype.element_ty), mask=omask)
    if NEED_O2:
        o2 = acc2 / tl.where(su > 0, su, 1.0)[:, None]
        tl.store(O2 + optr, tl.where(bad, float("nan"), o2), mask=omask)
    if NEED_DALPHA:
        tl.store(O3 + optr, tl.where(bad, float("nan"), acc3), mask=omask)
        tl.store(HS + srow, tl.where(m != m, float("nan"), hs), mask=rmask)
    tl.store(LIVE + (pid_bh.to(tl.int64) * NQB + pid_m) * 2, n_live)
    tl.store(LIVE + (pid_bh.to(tl.int64) * NQB + pid_m) * 2 + 1, n_tiles)
