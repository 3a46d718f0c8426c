"""Jit helpers shared by the fused attention kernels (``gpu/attention.py`` describes the
design): program and sequence geometry, masks, tile loads, z = fl(c·s − m), the p / u powers
and the live-tile list reader."""
from __future__ import annotations

import triton
import triton.language as tl

# sizes that change with the sequence length: never specialised (no recompilation per length)
_NOSPEC = ["Nq", "Nk", "stride_sb", "stride_sh"]
_NOSPEC_T = _NOSPEC + ["NQB", "NKB"]


@triton.jit
def _pow_pu(d, qexp, MODE: tl.constexpr):
    """p = [d]_+^Q and u = [d]_+^{Q−1} (0 where d ≤ 0).  [d]_+ is max(d, 0) (no predicate:
    a comparison whose result several uses share is kept per element, packed into general
    registers when the predicate registers run out)."""
    pos = d > 0
    dp = tl.maximum(d, 0.0)
    if MODE == 1:
        p = dp * dp
        u = dp
    elif MODE == 2:
        p = dp
        u = tl.where(pos, 1.0, 0.0)
    elif MODE == 3:
        d2 = dp * dp
        p = d2 * d2
        u = d2 * dp
    else:
        lg = tl.log2(tl.where(pos, d, 1.0))
        p = tl.where(pos, tl.exp2(qexp * lg), 0.0)
        u = tl.where(pos, tl.exp2((qexp - 1.0) * lg), 0.0)
    return p, u


@triton.jit
def _seq_info(pid_b, CU_Q, CU_K, Nq, Nk, VARLEN: tl.constexpr):
    """(start_q, len_q, start_k, len_k) of sequence ``pid_b``."""
    if VARLEN:
        sq = tl.load(CU_Q + pid_b)
        lq = tl.load(CU_Q + pid_b + 1) - sq
        sk = tl.load(CU_K + pid_b)
        lk = tl.load(CU_K + pid_b + 1) - sk
    else:
        sq = pid_b * 0
        lq = Nq + pid_b * 0
        sk = pid_b * 0
        lk = Nk + pid_b * 0
    return sq, lq, sk, lk


@triton.jit
def _program_head(pid_bh, H, GROUP, ALPHA, scale, CU_Q, CU_K, Nq, Nk, VARLEN: tl.constexpr):
    """What program axis 1 (batch × query head) stands for: batch b, query head h, key/value head
    hk (GQA), the sequence's query and key (start, length), α of the head, c = (α−1)·scale and
    the exponent Q = 1/(α−1)."""
    b = pid_bh // H
    h = pid_bh % H
    hk = h // GROUP
    sq, lq, sk, lk = _seq_info(b, CU_Q, CU_K, Nq, Nk, VARLEN)
    alpha = tl.load(ALPHA + h)
    return b, h, hk, sq, lq, sk, lk, alpha, (alpha - 1.0) * scale, 1.0 / (alpha - 1.0)


@triton.jit
def _offset(b, hh, s, stride_b, stride_h, stride_n):
    """64-bit element offset of (batch b, head hh, token s)."""
    return b.to(tl.int64) * stride_b + hh.to(tl.int64) * stride_h + s.to(tl.int64) * stride_n


@triton.jit
def _kend(start_m, len_q, len_k, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr):
    """One past the last key visible to any row of the query block starting at ``start_m``."""
    if CAUSAL:
        ke = tl.minimum(len_k, start_m + BLOCK_M + (len_k - len_q))
    else:
        ke = len_k
    ke = tl.where(start_m < len_q, ke, 0)
    return tl.maximum(ke, 0)


@triton.jit
def _mask_scores(z, start_m, start_n, rows, cols, len_q, len_k, CAUSAL: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """−inf outside the visible region; interior tiles skip the elementwise mask."""
    edge = (start_n + BLOCK_N > len_k) | (start_m + BLOCK_M > len_q)
    if CAUSAL:
        edge = edge | (start_n + BLOCK_N - 1 > start_m + (len_k - len_q))
    if edge:
        z = tl.where(_visible(rows, cols, len_q, len_k, CAUSAL), z, float("-inf"))
    return z


@triton.jit
def _interior_end(start_m, len_q, len_k, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr):
    """Key tiles [0, returned) are fully visible to every row of the block (no masking)."""
    if CAUSAL:
        e = tl.minimum(len_k, start_m + (len_k - len_q) + 1)
    else:
        e = len_k
    e = tl.where(start_m + BLOCK_M <= len_q, e, 0)
    return (tl.maximum(e, 0) // BLOCK_N) * BLOCK_N


@triton.jit
def _visible(rows, cols, len_q, len_k, CAUSAL: tl.constexpr):
    vis = (rows[:, None] < len_q) & (cols[None, :] < len_k)
    if CAUSAL:
        vis = vis & (cols[None, :] <= rows[:, None] + (len_k - len_q))
    return vis


@triton.jit
def _nvis(rows, len_q, len_k, CAUSAL: tl.constexpr):
    """Number of keys visible to each row (0 for rows past the sequence)."""
    if CAUSAL:
        n = tl.minimum(tl.maximum(rows + (len_k - len_q) + 1, 0), len_k)
    else:
        n = rows * 0 + len_k
    return tl.where(rows < len_q, n, 0)


@triton.jit
def _load_q(Q_base, rows, offs_d, len_q, stride_qn, HEAD_DIM: tl.constexpr):
    ptr = Q_base + rows[:, None].to(tl.int64) * stride_qn + offs_d[None, :]
    return tl.load(ptr, mask=(rows[:, None] < len_q) & (offs_d[None, :] < HEAD_DIM), other=0.0)


@triton.jit
def _load_kT(K_base, cols, offs_d, len_k, stride_kn, HEAD_DIM: tl.constexpr):
    ptr = K_base + cols[None, :].to(tl.int64) * stride_kn + offs_d[:, None]
    return tl.load(ptr, mask=(cols[None, :] < len_k) & (offs_d[:, None] < HEAD_DIM), other=0.0)


@triton.jit
def _load_kT_tma(KD, b, hk, sk, start_n, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                 VARLEN: tl.constexpr):
    """kᵀ of the key tile starting at ``start_n`` through the tensor descriptor KD ((B, Hkv, Nk,
    D) blocks [1, 1, BLOCK_N, BLOCK_D], or varlen (Tk, Hkv, D) blocks [BLOCK_N, 1, BLOCK_D]):
    zero past the tensor's keys and head dim (varlen: keys past the sequence are the next
    sequence's, masked by the caller as with ``_load_kT``)."""
    if VARLEN:
        t = KD.load([sk + start_n, hk, 0])
    else:
        t = KD.load([b, hk, start_n, 0])
    return tl.trans(tl.reshape(t, [BLOCK_N, BLOCK_D]))


@triton.jit
def _scan_kT(K_base, KD, b, hk, sk, start_n, offs_n, offs_d, lk, stride_kn, HEAD_DIM: tl.constexpr,
             BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, VARLEN: tl.constexpr, TMA: tl.constexpr):
    """The scan's kᵀ tile at ``start_n``: through the descriptor KD with TMA, else pointer loads."""
    if TMA:
        return _load_kT_tma(KD, b, hk, sk, start_n, BLOCK_N, BLOCK_D, VARLEN)
    return _load_kT(K_base, start_n + offs_n, offs_d, lk, stride_kn, HEAD_DIM)


@triton.jit
def _zval(s, c, m):
    """z = c·s − m rounded once (an fma), for a tile (m: (BLOCK_M, 1)) or one value per row: every
    kernel computes the shifted scaled scores this way, so a value the solve's pass 0 takes from
    the unscaled tile (``_copy_tile``) equals, bit for bit, the one the other kernels compute."""
    return tl.fma(s, c, -m)


@triton.jit
def _tile_z(q, K_base, start_n, offs_n, offs_d, rows, m, c, start_m, lq, lk, stride_kn,
            HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PREC: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(cols, kᵀ, z) of the key tile starting at ``start_n``: z = c·q·kᵀ − m, −inf where a key
    is not visible (the solve, output and dQ kernels' per-tile scores)."""
    cols = start_n + offs_n
    kT = _load_kT(K_base, cols, offs_d, lk, stride_kn, HEAD_DIM)
    z = _zval(tl.dot(q, kT, input_precision=PREC), c, m[:, None])
    z = _mask_scores(z, start_m, start_n, rows, cols, lq, lk, CAUSAL, BLOCK_M, BLOCK_N)
    return cols, kT, z


@triton.jit
def _tile_s(q, K_base, start_n, offs_n, offs_d, rows, start_m, lq, lk, stride_kn,
            HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PREC: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The unscaled scores s = q·kᵀ of a key tile, −inf where a key is not visible (pass 0)."""
    cols = start_n + offs_n
    kT = _load_kT(K_base, cols, offs_d, lk, stride_kn, HEAD_DIM)
    s = tl.dot(q, kT, input_precision=PREC)
    return _mask_scores(s, start_m, start_n, rows, cols, lq, lk, CAUSAL, BLOCK_M, BLOCK_N)


@triton.jit
def _load_rows(base, rows, offs_d, n, stride_n, HEAD_DIM: tl.constexpr):
    ptr = base + rows[:, None].to(tl.int64) * stride_n + offs_d[None, :]
    return tl.load(ptr, mask=(rows[:, None] < n) & (offs_d[None, :] < HEAD_DIM), other=0.0)


@triton.jit
def _query_block(pid_m, Q, b, h, sq, lq, stride_qb, stride_qh, stride_qn, stride_sb, stride_sh,
                 stride_sn, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """The rows of a query-block program (scan, solve, output, dQ): (start_m, rows, rmask, srow,
    offs_d, q) with srow the rows' offsets into the per-row statistics and q the block's queries
    (zero beyond the sequence)."""
    Q_base = Q + _offset(b, h, sq, stride_qb, stride_qh, stride_qn)
    S_base = _offset(b, h, sq, stride_sb, stride_sh, stride_sn)
    start_m = pid_m * BLOCK_M
    rows = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    rmask = rows < lq
    srow = S_base + rows.to(tl.int64) * stride_sn
    q = _load_q(Q_base, rows, offs_d, lq, stride_qn, HEAD_DIM)
    return start_m, rows, rmask, srow, offs_d, q


@triton.jit
def _query_start(pid_m, pid_bh, Q, K, ALPHA, CU_Q, CU_K, stride_qb, stride_qh, stride_qn, stride_kb,
                 stride_kh, stride_kn, stride_sb, stride_sh, stride_sn, Nq, Nk, H, GROUP, scale,
                 HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                 VARLEN: tl.constexpr):
    """The start of every kernel that owns a query block (scan, solve, output, dQ): the
    program's head and sequence (``_program_head``), its query block (``_query_block``) and the
    key base of its kv head."""
    b, h, hk, sq, lq, sk, lk, alpha, c, qexp = _program_head(pid_bh, H, GROUP, ALPHA, scale, CU_Q, CU_K,
                                                            Nq, Nk, VARLEN)
    start_m, rows, rmask, srow, offs_d, q = _query_block(pid_m, Q, b, h, sq, lq, stride_qb, stride_qh,
                                                         stride_qn, stride_sb, stride_sh, stride_sn,
                                                         HEAD_DIM, BLOCK_M, BLOCK_D)
    K_base = K + _offset(b, hk, sk, stride_kb, stride_kh, stride_kn)
    return b, h, hk, sq, lq, sk, lk, alpha, c, qexp, start_m, rows, rmask, srow, offs_d, q, K_base


@triton.jit
def _row_block(pid_m, pid_bh, Q, K, V, ALPHA, M, TAU, CU_Q, CU_K, stride_qb, stride_qh, stride_qn,
               stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn, stride_ob,
               stride_oh, stride_on, stride_sb, stride_sh, stride_sn, Nq, Nk, H, GROUP, scale,
               HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, VARLEN: tl.constexpr):
    """The common start of the kernels that use the solved rows (output pass, dQ):
    ``_query_start``, then the V base and the output rows' offset, the key-tile column offsets,
    and the rows' max m and threshold τ'."""
    (b, h, hk, sq, lq, sk, lk, alpha, c, qexp, start_m, rows, rmask, srow, offs_d, q,
     K_base) = _query_start(pid_m, pid_bh, Q, K, ALPHA, CU_Q, CU_K, stride_qb, stride_qh, stride_qn,
                            stride_kb, stride_kh, stride_kn, stride_sb, stride_sh, stride_sn, Nq, Nk,
                            H, GROUP, scale, HEAD_DIM, BLOCK_D, BLOCK_M, VARLEN)
    V_base = V + _offset(b, hk, sk, stride_vb, stride_vh, stride_vn)
    O_off = _offset(b, h, sq, stride_ob, stride_oh, stride_on)
    offs_n = tl.arange(0, BLOCK_N)
    m = tl.load(M + srow, mask=rmask, other=0.0)
    tau = tl.load(TAU + srow, mask=rmask, other=0.0)
    return (b, h, hk, sq, lq, sk, lk, alpha, c, qexp, start_m, rows, rmask, srow, offs_d, q, K_base,
            V_base, O_off, offs_n, m, tau)


@triton.jit
def _block_list(LIST, LCNT, pid_bh, blk, NBLK, LEN):
    """(start of block ``blk``'s compacted live-tile list, its length) for head ``pid_bh``; the
    lists are laid out (B·H, NBLK, LEN) with lengths (B·H, NBLK) (see ``_tile_list_kernel``)."""
    row = pid_bh.to(tl.int64) * NBLK + blk
    return LIST + row * LEN, tl.load(LCNT + row)
