"""Fused flash α-entmax attention: Triton kernels and their launchers.

Weights p = α-entmax over keys of s = scale·q·kᵀ, out = p·v, never materialising the N×N
score matrix.  The naive reference is ``attention_reference.py`` beside this file.

Notation (per query row i, keys j visible to it; n_i = their number)::

    c     = (α−1)·scale                       (per head)
    z_ij  = c·(q_i·k_j) − m_i ≤ r_i           (m_i = max_j c·q_i·k_j: the row max)
    τ'_i  ∈ [r_i − 1, r_i − n_i^{1−α}]        (threshold relative to the row max)

In float32 z = fl(c·s − m) is one fma (``_zval``) and m = fl(c·max s), so the row max's own z is
r_i = c·max s − m_i, m's rounding residual (|r| ≤ ulp(m)/2; 0 in exact arithmetic).
    d_ij  = z_ij − τ'_i,   p_ij = [d_ij]_+^Q,  u_ij = [d_ij]_+^{Q−1} = p_ij^{2−α}   (Q = 1/(α−1))
    f(τ') = Σ_j [z_ij − τ']_+^Q − 1           decreasing; convex for α ≤ 2

Forward pipeline (one program per block of BLOCK_M query rows and one head; grid
(cdiv(max Nq, BLOCK_M), B·H)):

1. ``_fwd_scan_kernel``    (the one dense sweep): running row max m_i, and per tile and row the
   tile's row maximum.  Two things come out of the maxima:
   - a **tile bound** per (query block, key block): max_i (max_j c·q_i·k_j − m_i^run), with the
     running max m^run including that tile.  Since the final m_i ≥ m_i^run, every z_ij of the
     tile is ≤ it.  Tiles are visited diagonal first (masked tiles, then the interior ones from
     the diagonal downwards), so for the usual inputs m^run is final early and the bound tight;
   - a **lower bound** τ₁ ≤ τ'_i from a subset of the row: for each column class j (keys ≡ j
     mod BLOCK_N) the row's maximum over it (one max per score, kept in the scores' register
     layout) — actual scores, so f_sub ≤ f and the subset's root is ≤ τ'.  NIT = 8 Newton steps
     on f_sub from −1 (monotone from below for α ≤ 2: convexity; bisection keeping
     f_sub(lo) ≥ 0 for α > 2), less a rounding margin.
   Until 2026-11-23 this was two sweeps (a row-max sweep, then a bound sweep knowing m).
   The tile mask is then implicit: a tile is *live* for lower bounds ℓ_i of the block's rows iff
   tile bound > min_i ℓ_i.  Any element of a dead tile has z ≤ ℓ_i ≤ τ'_i, so p = 0 there: the
   live set contains the true support.  Memory: one float per tile (≤ N²/(BM·BN) per head).
   ``_tile_list_kernel`` then writes each query block's live key tiles as a compacted list
   (and, for the dK/dV kernel, each key block's live query blocks): the sparse kernels loop over
   these lists with no per-tile test.
2. ``_fwd_solve_kernel``   (one sparse sweep, then no QKᵀ): pass 0 over the live tiles copies each
   row's candidates z > τ₁ into a per-row buffer (CAP floats); the iterations then run on the
   buffers until every row has converged (|Σp − 1| ≤ TOL).  Rows whose candidates overflow the
   buffer iterate with further sparse sweeps over the live tiles, starting from the root of the
   candidates they kept (a subset of the row, so a lower bound).  Updates:
   - α = 2:   Michelot / closed form  τ = τ_k + (Σd − 1)/|S|,
   - α = 1.5: closed form on the current support τ = τ_k + d̄ − √((1 − Σ(d−d̄)²)/|S|),
     accepted when certified (δ ≥ 0 and min_S d ≥ δ: no element crosses), else Newton;
   - other α ≤ 2: Newton on φ = F^{1/Q} (a norm of [z − τ]_+: convex, monotone from below);
   - α > 2: safeguarded Newton inside the bracket [lo, hi] with bisection when the step
     does not halve (f is not convex there); the tile mask uses the bracket's lower end.
   The loop is a device-side ``while``: no host synchronisation, no fixed iteration count.
   Also writes the per-block minimum of the final τ' (the threshold of the output pass's and the
   backward's tile lists).  **Gathered output**: pass 0 also stores each candidate's key index
   (second half of the buffer row); a block whose rows all kept every candidate (a superset of
   their supports) and hold at most ``_GATHER_RATIO`` (1) candidates per row for each live tile
   computes out (and O2) right there, out_i = Σ_k p_ik v_{j_ik} over its buffered candidates,
   loading only the value rows of the support, and marks itself done for the output pass: on
   inputs with no zero tiles (dense tiles, short supports) this replaces the output pass's QKᵀ
   and PV sweep by a gather of ~|support| value rows per query.
3. ``_fwd_output_kernel``  (sparse): out = Σ_j p_ij v_j over live tiles (mask from the final τ),
   and, only when a gradient is needed, O2 = Σ_j u_ij v_j / Σ_j u_ij (for δ in the backward);
   only when α requires grad, O3 = Σ_j h_ij v_j and Σ_j h_ij with h = p ln p (fused ∂L/∂α).
   Also writes live/visible tile counts.  Skips the blocks the solve kernel gathered.

Dense QKᵀ sweeps before the sparse passes: **1**.

Backward (deterministic, no atomics): δ_i = dO_i·O2_i, dP = dO·Vᵀ, dS = u ⊙ (dP − δ),
dV = pᵀ·dO, dK = scale·dSᵀ·Q (one program per key block *and query head*; GQA partial sums are
reduced afterwards in a fixed order), dQ = scale·dS·K (one program per query block).  Both
kernels visit only live tiles.

Offsets are 64-bit; sequence lengths are runtime arguments (not specialised), so a new length
does not recompile.  Varlen (packed, cu_seqlens) and the padded (B, H, N, D) layout share the
kernels: the padded layout is "varlen with batch strides".
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._host import cdiv, next_pow2

__all__ = ["entmax_attention_fwd", "entmax_attention_bwd", "entmax_attention_dalpha", "alpha_mode",
           "tile_lists"]

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# sizes that change with the sequence length: never specialised (no recompilation per length)
_NOSPEC = ["Nq", "Nk", "stride_sb", "stride_sh"]
_NOSPEC_T = _NOSPEC + ["NQB", "NKB"]

# candidate buffer per query row in the solve kernel (floats); rows with more candidates fall back
# to sparse sweeps
_CAND_CAP = int(os.environ.get("SPARSEMAP_ATTN_CAND_CAP", "128"))
# bytes the buffers of α other than 1.5 / 2 may take in all (``_cand_cap``)
_CAND_BUDGET = int(os.environ.get("SPARSEMAP_ATTN_CAND_BUDGET", str(2**30)))

# iterations of the scan's lower bound on its subset (per row, the maxima of the key columns
# ≡ j mod BLOCK_N)
_NIT = int(os.environ.get("SPARSEMAP_ATTN_NIT", "8"))

# profiling hook of the solve kernel (benchmarks only): 1 = no candidate copy and 2 = no buffer
# iterations (both give wrong results), 3 = report buffer iterations ×1000 + sweeps in the
# stats, 6 = no candidate buffer at all (sparse QKᵀ sweeps until converged; a correct solver),
# 7 = the top two per row and tile always, no block-wide test (wrong when a row has more),
# 8 = the prefix-sum copy instead of repeated extraction for α ∈ {1.5, 2} (correct).  (9, storing
# a row's whole tile slice when it has > 2 candidates there, was measured slower on an H100 at
# N = 1k and 4k and removed on 2026-11-23.)
_SOLVE_DIAG = int(os.environ.get("SPARSEMAP_ATTN_SOLVE_DIAG", "0"))

# register caps (ptxas ``maxnreg``) per kernel; 0 = the compiler's choice.  Override with
# SPARSEMAP_ATTN_MAXNREG="solve=128,output=0,..." (benchmarks); see ``_regs``.
_MAXNREG = {k_: int(v_) for k_, v_ in (kv.split("=") for kv in
            os.environ.get("SPARSEMAP_ATTN_MAXNREG", "").split(",") if kv)}

# profiling hook of the scan kernel (benchmarks only): 1 = no tile bounds (every tile live),
# 2 = no subset (lower bound −1); both still give correct results, only slower downstream
_SCAN_DIAG = int(os.environ.get("SPARSEMAP_ATTN_SCAN_DIAG", "0"))

# the scan loads its key tiles with TMA (a host-side tensor descriptor: no per-tile address
# arithmetic or cp.async, zero fill past the keys) where the layout allows (``_scan_tma``)
_SCAN_TMA = os.environ.get("SPARSEMAP_ATTN_SCAN_TMA", "0") == "1"

# the scan's subset keeps the two largest scores per key-column class instead of one, for α other
# than 1.5 / 2 (whose bound is already tight).  Timed on an H100 (α = 1.25, D = 64, N = 16k,
# causal, one program per block): random fwd 14.9 → 14.0 ms (10.8 → 10.1 with 2048-float
# buffers), but the scan costs 0.4 ms more and topics went 3.44 → 3.70; so off by default
_SCAN_TOP2 = os.environ.get("SPARSEMAP_ATTN_SCAN_TOP2", "0") == "1"

# the solve kernel as a persistent grid with dynamically claimed query blocks (one candidate-buffer
# slot per resident program, so its scratch does not grow with N; ``_solve_persist``): "1" always,
# "0" never (one program per query block, the layout before 2026-11-23), unset: for α other than
# 1.5 / 2 (long buffers) and for head dims ≤ 64.  H100, N = 16k, causal, bf16, fwd ms, one program
# per block → persistent: D = 64: α = 1.25 random 14.9 → 10.2 (9.5 with 4096-float buffers),
# topics 3.42 → 3.25; α = 1.5 random 4.42 → 4.33, topics 1.79 → 1.79; α = 2 random 3.77 → 3.66;
# N = 1k / 4k within 2 %.  D = 128: α = 1.25 random 19.4 → 12.3, but α = 1.5 random 6.51 → 6.82
# and α = 2 5.77 → 6.11 (the persistent loop spills ~400 B at 128 registers there, 168 did not
# help): not persistent.  Forward scratch at N = 128k, D = 128, α = 1.5: 2.0 GiB one per block,
# 1.0 GiB persistent.
_SOLVE_PERSIST = os.environ.get("SPARSEMAP_ATTN_SOLVE_PERSIST", "")

# blocks of the solve that skip the candidate copy and take sparse sweeps only (``_sweep_rule``):
# α ≤ _SWEEP_ALPHA (α = 1.25 and generic α near 1; never the α = 1.5 / 2 kernels), head dims
# ≤ _SWEEP_MAX_D, at least _SWEEP_MIN live key tiles, and at least _SWEEP_LIVE % of the block's
# visible tiles live (dense rows: ~1000 scattered candidates per row).  _SWEEP_LIVE = 101 turns
# it off.  H100, α = 1.25, D = 64, causal, bf16, fwd ms, copy → rule at 90 % (Newton sweeps):
# N = 16k random 9.54 → 8.26 (f+b 15.58 → 14.06), topics 3.24 → 3.49 (6.02 → 6.21); N = 4k
# random 3.06 → 2.42, topics 1.12 → 1.13; at 75 % topics lost more (3.58)
_SWEEP_ALPHA = float(os.environ.get("SPARSEMAP_ATTN_SWEEP_ALPHA", "1.3"))
_SWEEP_MIN = int(os.environ.get("SPARSEMAP_ATTN_SWEEP_MIN", "16"))
_SWEEP_LIVE = int(os.environ.get("SPARSEMAP_ATTN_SWEEP_LIVE", "90"))
# ... and head dims ≤ _SWEEP_MAX_D: at D = 128 the rule lost with Newton sweeps (random 12.36 →
# 13.43 ms) and won with Halley sweeps (random 12.85 → 12.26, topics 2.55 → 2.57; N = 4k random
# 3.98 → 3.34); D = 256 not measured
_SWEEP_MAX_D = int(os.environ.get("SPARSEMAP_ATTN_SWEEP_MAX_D", "128"))
# "1": the sparse sweeps test each listed tile's bound against the open rows' lower ends and skip
# the tiles below (a load and a branch per tile, which kept the compiler from pipelining the
# K-tile loads: plain loads and shared-memory stores instead of cp.async).  Default "0": every
# listed tile, no branch (a skipped tile's scores add nothing either way).  H100, N = 16k,
# causal, bf16, forward ms, test → no test (with the certified stops below), same call:
# α = 1.25 D = 64 random 6.38 → 5.69, topics 3.09 → 2.93; D = 128 random 9.42 → 8.24, topics
# 2.41 → 2.38; α = 1.5 D = 64 random 3.72 → 3.69, topics 1.66 → 1.66; α = 2 D = 64 random
# 2.70 → 2.61, topics 1.35 → 1.35 (the sweeps there are only for overflowing rows)
_SWEEP_SKIP = os.environ.get("SPARSEMAP_ATTN_SWEEP_SKIP", "0") == "1"
# α = 1.25 rows in the sparse sweeps stop on a certified quadratic-model step
# (``_quartic_certificate``) instead of sweeping once more to confirm |F − 1| ≤ TOL; "0": off.
# H100, N = 16k, D = 64, causal, bf16, forward ms, off → on (tile tests on, same call): random
# 7.56 → 6.38 (solve 5.28 → 4.00, 4 → 3 solve passes), topics 3.39 → 3.09
_SWEEP_CERT = os.environ.get("SPARSEMAP_ATTN_SWEEP_CERT", "1") == "1"

# profiling hook (benchmarks only): run just the first k forward stages (scan, solve, output)
_PROFILE_STAGES = 3

#: gathered output (``_gather_out``): a solve block whose rows all kept their candidates writes
#: its output itself when it has at most this many candidates per row for each tile of its live
#: list (0: never, the output pass does every block); read by the launcher at each call
_GATHER_RATIO = float(os.environ.get("SPARSEMAP_ATTN_GATHER", "1.0"))

# ALPHA_MODE: 0 = generic α (powers through exp2/log2), 1 = α = 1.5, 2 = α = 2, 3 = α = 1.25
# (p = d⁴, u = d³: no transcendental functions).
MODE_GENERIC, MODE_15, MODE_2, MODE_125 = 0, 1, 2, 3

#: the power modes that copy key indices for it: α ∈ {1.5, 2}, where it was measured (H200,
#: N = 16k causal: random inputs 5–20 % faster, block-sparse ones unchanged).  Smaller α has
#: ~10× longer supports (α = 1.25: ~700 candidates per row on 16k random keys), so its blocks
#: would rarely pass the rule while every scattered candidate store doubled; not measured there,
#: so off (the kernels support every mode: the tests run them all)
_GATHER_MODES = (MODE_15, MODE_2)

#: gathered dQ (``_keep_support`` in the forward, the dQ kernel's gather path): gathered blocks of
#: a forward that needs gradients also keep each row's support as key indices (at most
#: ``_KEEP_SUPPORT`` per row, int32), and the dQ kernel computes their rows from those keys
#: instead of sweeping the live tiles.  On by default (``SPARSEMAP_ATTN_DQ_GATHER=0`` turns it off):
#: H100, N = 16k causal bf16, forward+backward ms, off → on (same call): random inputs D = 64
#: α = 1.5 9.28 → 9.14, D = 128 α = 1.5 13.91 → 13.83, D = 64 α = 2 8.12 → 6.90; block-sparse
#: ("topics") inputs within ±2 % (2.66 → 2.63, 2.57 → 2.63, 1.91 → 1.90).  Memory: 256 B per row
#: and head kept for the backward (64 MB at N = 16k, H = 16)
_DQ_GATHER = os.environ.get("SPARSEMAP_ATTN_DQ_GATHER", "1") == "1"
_KEEP_SUPPORT = int(os.environ.get("SPARSEMAP_ATTN_KEEP_SUPPORT", "64"))
# the solve's pass 0 stores its per-row candidates with inline ``st.global`` (``_store_rows``;
# never under the interpreter).  H100, N = 16k, causal, bf16, forward ms tl.store → asm, same
# call: D 64 α 1.5 random 4.18 → 3.72, D 64 α 2 2.93 → 2.77, D 128 α 1.5 5.42 → 5.01, N = 1k
# (B 16) 0.90 → 0.83; block-sparse inputs within ±3 %
_ASM_STORE = os.environ.get("SPARSEMAP_ATTN_ASM_STORE", "1") == "1"


_HIP = getattr(torch.version, "hip", None) is not None


def _asm_stores() -> bool:
    """Whether the solve kernel stores its candidates with inline PTX (``_store_rows``): by
    default on compiled launches for NVIDIA GPUs; the interpreter has no inline assembly, and a
    ROCm build of torch would compile for AMD GPUs, which take no PTX."""
    return _ASM_STORE and not INTERPRET and not _HIP


def alpha_mode(alpha) -> int:
    """Compile-time specialisation for a python-float α (tensors use the generic path)."""
    if isinstance(alpha, float):
        if alpha == 1.5:
            return MODE_15
        if alpha == 2.0:
            return MODE_2
        if alpha == 1.25:
            return MODE_125
    return MODE_GENERIC


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------


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


@triton.jit
def _block_list(LIST, LCNT, pid_bh, blk, NBLK, LEN):
    """(start of block ``blk``'s compacted live-tile list, its length) for head ``pid_bh``; the
    lists are laid out (B·H, NBLK, LEN) with lengths (B·H, NBLK) (see ``_tile_list_kernel``)."""
    row = pid_bh.to(tl.int64) * NBLK + blk
    return LIST + row * LEN, tl.load(LCNT + row)


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


# ----------------------------------------------------------------------------------------------
# forward, sparse sweeps: exact τ on live tiles
# ----------------------------------------------------------------------------------------------


@triton.jit
def _quartic_certificate(F, G, H, S, NV, TOL):
    """α = 1.25 (F(τ) = Σ_j [z_j − τ]_+⁴): a step δ from τ and whether it is certified, i.e.
    whether |F(τ + δ) − 1| ≤ TOL follows from the sums at τ, without another sweep.

    With d = z − τ and, over d > 0, F = Σd⁴, G = Σd³, H = Σd², S = Σd, C = #{d > 0}, the
    support's own polynomial is exact: P(δ) = Σ_{d>0} (d − δ)⁴ = F − 4Gδ + 6Hδ² − 4Sδ³ + Cδ⁴.
    δ is the smaller root of the quadratic model q(δ) = F − 4Gδ + 6Hδ² = 1, written without
    cancellation as δ = 2(F − 1) / (4G + √(16G² − 24H(F − 1))).
    - F ≥ 1 (τ at or below the root, δ ≥ 0): Taylor's theorem with F''' = −24·Σ[z − t]_+,
      which increases in t from −24S, puts F(τ + δ) in [q(δ) − 4Sδ³, q(δ)] = [1 − 4Sδ³, 1].
    - F < 1 (τ above the root, δ < 0): F(τ + δ) = P(δ) + Σ_{δ<d≤0} (d − δ)⁴, the keys that
      re-enter adding at most δ⁴ each, so F(τ + δ) − 1 ∈ [0, 4S|δ|³ + Cδ⁴ + (NV − C)δ⁴].
    So the error is at most 4S|δ|³ (+ NV·δ⁴ when δ < 0, NV the row's visible keys): certified
    when that is ≤ TOL and the model has a real root (the sweep must have seen every key with
    d > 0, as the sparse sweeps do).  Where it is not, the root x of the cubic model (the −4Sδ³
    term too) may be: its error is NV·x⁴ plus its measured residual (see below; since the
    seventh session of 2026-12-07).  (Until 2026-12-07 the sweeps summed C instead of S and
    bounded S ≤ √(C·H); S needs no comparison per score, see ``_row_sums``.)  On 16k random
    keys this saves the sweep that would only confirm the last Halley step (3 → 2 sweeps per
    block in a float64 simulation)."""
    fm1 = F - 1.0
    disc = 16.0 * G * G - 24.0 * H * fm1
    den = 4.0 * G + tl.sqrt(tl.maximum(disc, 0.0))
    step = 2.0 * fm1 / tl.where(den > 0, den, 1.0)
    a = tl.abs(step)
    err = 4.0 * S * a * a * a + tl.where(fm1 < 0, NV * a * a * a * a, 0.0)
    model = (S > 0) & (disc >= 0) & (den > 0)
    cert_q = model & (err <= TOL)
    # The cubic model T(δ) = F − 4Gδ + 6Hδ² − 4Sδ³: the remainder R = F(τ + δ) − T(δ) is, key
    # by key, δ⁴ for d ≥ δ and δ⁴ − (δ − d)⁴ ∈ [0, 4dδ³] for 0 < d < δ (plus (d − δ)⁴ ≤ δ⁴ for
    # the keys that re-enter when δ < 0), so 0 ≤ R ≤ NV·δ⁴, and R ≤ 4S·δ³ when δ > 0.  Two
    # Newton steps on T = 1 from the quadratic root and the residual |T(x) − 1| measured (the
    # bound holds however far the steps got): certified when that bound plus the residual is
    # ≤ TOL, and then preferred (its own error is the smaller).  On 16k random keys it certifies
    # from ~1.6× as far as the quadratic model (0.003 vs 0.0019 from the root)
    x = step
    for _ in tl.static_range(2):
        P = fm1 + x * (-4.0 * G + x * (6.0 * H - 4.0 * S * x))
        dP = -4.0 * G + x * (12.0 * H - 12.0 * S * x)
        x = x - P / tl.where(dP < 0, dP, -1.0)
    res = tl.abs(fm1 + x * (-4.0 * G + x * (6.0 * H - 4.0 * S * x)))
    ax = tl.abs(x)
    rem = NV * ax * ax * ax * ax
    rem = tl.where(x > 0, tl.minimum(rem, 4.0 * S * ax * ax * ax), rem)
    cert_c = model & (rem + res <= TOL) & (x == x)
    return tl.where(cert_c, x, step), cert_q | cert_c


@triton.jit
def _solver_update(F, G, S1, CNT, DMIN, tau, lo, hi, last_step, done, active, convex, qexp, TOL,
                   top, nv, MODE: tl.constexpr, HALLEY: tl.constexpr = False, CERT: tl.constexpr = False):
    """One threshold update per row from the sums at the current τ (rows not ``active`` keep
    their state).  F = Σ[d]_+^Q, G = Σ[d]_+^{Q−1}, S1 = Σ[d]_+ (α = 1.25 with ``HALLEY``:
    Σ[d]_+²), CNT = #{d > 0} (α = 1.25 with ``HALLEY``: Σ[d]_+), DMIN = min_{d>0} d, d = z − τ;
    ``top`` ≥ every z of the row (the reference of α > 2's geometric bisection, see
    ``_solve_block``); ``nv`` the row's number of visible keys (float).  With ``CERT`` (α = 1.25 in the sparse sweeps) a row whose quadratic
    Taylor step is certified to land within TOL (``_quartic_certificate``) takes that step and
    is done.  Returns (tau, lo, hi,
    last_step, done)."""
    f = F - 1.0
    ok = tl.abs(f) <= TOL
    lo_n = tl.where(f >= 0, tl.maximum(lo, tau), lo)
    hi_n = tl.where(f < 0, tl.minimum(hi, tau), hi)
    newton = tau + f / (qexp * tl.maximum(G, 1e-30))
    cnt = tl.maximum(CNT, 1.0)
    if MODE == 1:
        # α = 1.5: Σ_S (d − δ)² = 1 on the support S = {d > 0}; certified if no element crosses
        mean = S1 / cnt
        var_sum = tl.maximum(F - cnt * mean * mean, 0.0)
        delta = mean - tl.sqrt(tl.maximum(1.0 - var_sum, 0.0) / cnt)
        cert = (delta >= 0) & (DMIN >= delta) & (var_sum <= 1.0)
        new_tau = tl.where(cert, tau + delta, newton)
        ok = ok | cert
    elif MODE == 2:
        # α = 2 (Michelot): Σ_S (d − δ) = 1
        delta = (S1 - 1.0) / cnt
        cert = (delta >= 0) & (DMIN >= delta)
        new_tau = tau + delta
        ok = ok | cert
    else:
        # convex (α ≤ 2): Newton (on φ, below), monotone from below.  α > 2: Newton only if it stays
        # strictly inside the bracket and at least halves the previous step, else bisection.
        # where the step on f leaves the bracket, Newton on φ = (f + 1)^{1/Q} − 1 (the l_Q
        # quasi-norm of d minus 1: exactly linear on rows of equal scores), as the row-wise
        # solvers
        Fs = tl.maximum(F, 1e-30)
        root = tl.exp2(tl.minimum(-tl.log2(Fs) / qexp, 126.0))              # F^{−1/Q}
        phi = tau + Fs * (1.0 - root) / tl.maximum(G, 1e-30)
        # convex rows (α ≤ 2) take the φ step too: for Q ≥ 1, F^{1/Q} is a norm of [z − τ]_+,
        # convex and decreasing in τ, so its Newton step from below stays below the root (as
        # the plain step does) while being exact on equal scores (α = 1.25 rows overflowing the
        # candidate buffer: up to ~2× fewer QKᵀ sweeps)
        if MODE == 0:
            newton = tl.where(convex | ~((newton > lo_n) & (newton < hi_n)), phi, newton)
        elif HALLEY:  # MODE 3 (α = 1.25, convex), in the sparse sweeps
            # Halley on g = φ − 1 = F^{1/Q} − 1 (S1 carries H = Σ[d]_+^{Q−2} = Σd² here):
            # g' = −a·G/F, g'' = (Q−1)·a·(F·H − G²)/F² with a = F^{1/Q}, so the step is
            # 2(a−1)·G·F / (2a·G² − (a−1)(Q−1)(F·H − G²)); it reduces to the Newton step on φ
            # when the curvature term vanishes, and from below it goes further (cubic: on 16k
            # random keys 3 sums instead of 4 from the scan's bound).  Kept below the bracket's
            # top (an overshoot only turns the next step around) and only with a positive
            # denominator; else Newton on φ.
            a = 1.0 / root
            den = 2.0 * a * G * G - (a - 1.0) * (qexp - 1.0) * (F * S1 - G * G)
            halley = tau + 2.0 * (a - 1.0) * G * Fs / tl.where(den > 0, den, 1.0)
            ok_h = (den > 0) & (G > 0) & (F > 0) & (halley < hi_n) & (halley >= phi)
            newton = tl.where(ok_h, halley, phi)
            if CERT:
                # the root of F's quadratic model, where certified within TOL
                # (``_quartic_certificate``): that step, and the row is done without the sweep
                # that would only confirm it
                cert_step, certified = _quartic_certificate(F, G, S1, CNT, nv, TOL)
                newton = tl.where(certified, tau + cert_step, newton)
        else:  # MODE 3 on the candidate buffers: Newton on φ (a buffer iteration is cheap; the
            # Halley step's third sum cost more there than the iterations it saved: H100, N = 4k,
            # topics inputs, fwd 1.13 → 1.18 ms)
            newton = phi
        inside = (newton > lo_n) & (newton < hi_n)
        fast = tl.abs(newton - tau) <= 0.5 * tl.abs(last_step)
        use_newton = convex | (inside & fast)
        # bisection point: geometric in the distance below ``top`` while the bracket spans more
        # than 2× of it (τ' = top − n^{1−α} can lie orders of magnitude closer to the top than
        # the start at −1: 55 arithmetic halvings at α = 6, n = 78)
        d_lo = top - lo_n
        d_hi = top - hi_n
        mid = tl.where((d_hi > 0) & (d_lo > 2.0 * d_hi), top - tl.sqrt(d_lo * d_hi),
                       0.5 * (lo_n + hi_n))
        new_tau = tl.where(use_newton, newton, mid)
        # relative to the bracket (τ' can be tiny for α > 2); an absolute width stopped rows with
        # τ' ≈ −3e-9 (α = 6, n = 50) at a bracket 30× wider than the root.  Or the bracket can no
        # longer shrink in float32.
        tiny = ((hi_n - lo_n) <= 1e-7 * tl.abs(lo_n)) | (mid <= lo_n) | (mid >= hi_n)
        ok = ok | ((~convex) & tiny)
    new_tau = tl.where(convex, new_tau, tl.minimum(tl.maximum(new_tau, lo_n), hi_n))
    upd = active & (~done)
    if MODE == 3 and HALLEY and CERT:
        # a certified row takes its certified step (``newton`` above) and is done
        tau_n = tl.where(ok & ~certified, tau, new_tau)
        ok = ok | certified
    elif MODE == 0 or MODE == 3:
        tau_n = tl.where(ok, tau, new_tau)
    else:
        tau_n = new_tau
    last_n = tl.where(ok, last_step, new_tau - tau)
    tau = tl.where(upd, tau_n, tau)
    lo = tl.where(upd, lo_n, lo)
    hi = tl.where(upd, hi_n, hi)
    last_step = tl.where(upd, last_n, last_step)
    done = done | (upd & ok)
    return tau, lo, hi, last_step, done


@triton.jit
def _row_sums(z, tau, qexp, MODE: tl.constexpr, HALLEY: tl.constexpr = False):
    """(F, G, S1, CNT, DMIN) of d = z − τ over a tile (see ``_solver_update``)."""
    d = z - tau[:, None]
    if MODE == 3 and HALLEY:
        # α = 1.25 in the sparse sweeps: S1 carries H = Σ[d]_+² (Q − 2 = 2) for the Halley step
        # of ``_solver_update`` and CNT the sum S = Σ[d]_+ for the certificate
        # (``_quartic_certificate``).  Written on dp = max(d, 0) with no comparison: a predicate
        # d > 0 used by several sums made the compiler keep 32 predicates per thread packed into
        # bit fields of general registers (a LOP3 to set and one to test each; sm_90 SASS of the
        # sweep loop: 890 instructions per tile before)
        dp = tl.maximum(d, 0.0)
        d2 = dp * dp
        d3 = d2 * dp
        d4 = d2 * d2
        F = tl.sum(d4, axis=1)
        G = tl.sum(d3, axis=1)
        S1 = tl.sum(d2, axis=1)
        CNT = tl.sum(dp, axis=1)
        return F, G, S1, CNT, F
    p, u = _pow_pu(d, qexp, MODE)
    pos = d > 0
    F = tl.sum(p, axis=1)
    if MODE == 1:
        S1 = tl.sum(u, axis=1)
        G = S1
        CNT = tl.sum(pos.to(tl.float32), axis=1)
        DMIN = tl.min(tl.where(pos, d, float("inf")), axis=1)
    elif MODE == 2:
        S1 = F
        CNT = tl.sum(u, axis=1)
        G = CNT
        DMIN = tl.min(tl.where(pos, d, float("inf")), axis=1)
    else:
        G = tl.sum(u, axis=1)
        S1 = F
        CNT = tl.sum(pos.to(tl.float32), axis=1)
        DMIN = F
    return F, G, S1, CNT, DMIN


@triton.jit
def _store_rows(ptr, bits, mask, ASM: tl.constexpr = False):
    """Store one 32-bit pattern ``bits`` (int32) per row where ``mask`` (to a float32 or int32
    buffer).  With
    ASM a predicated ``st.global.b32`` per element, in the layout the values have (the rows of a
    tile's reductions): ``tl.store`` first moves pointer, value and mask to a store layout
    through shared memory, three conversions with barriers per store, several stores per tile in
    the solve's pass 0.  (Threads holding the same row store the same value.)  The interpreter
    has no inline assembly: launches there pass ASM = False."""
    if ASM:
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.b32 p, $3, 0; @p st.global.b32 [$1], $2; mov.b32 $0, 0; }",
            "=r,l,r,r", [ptr.to(tl.int64), bits, mask.to(tl.int32)], dtype=tl.int32, is_pure=False,
            pack=1)
    else:
        tl.store(ptr, bits.to(ptr.dtype.element_ty, bitcast=True), mask=mask)


@triton.jit
def _put_value(ptr, val, mask, ASM: tl.constexpr = False):
    """Store candidate values (float32) into the row buffers (``_store_rows``)."""
    _store_rows(ptr, val.to(tl.int32, bitcast=True), mask, ASM)


@triton.jit
def _put_index(ptr, idx, mask, ASM: tl.constexpr = False):
    """Store key indices into the float candidate buffer (bit patterns: the second half of each
    buffer row, ``I_row`` = ``C_row`` + CAP, holds the first half's key indices)."""
    _store_rows(ptr, idx.to(tl.int32), mask, ASM)


@triton.jit
def _top_two(s, thr):
    """Each row's two largest scores of a tile; where a row has exactly two candidates
    (> thr) but the second largest distinct value is not one, the top value is tied and
    counts twice."""
    t1 = tl.max(s, axis=1)
    t2 = tl.max(tl.where(s < t1[:, None], s, float("-inf")), axis=1)
    return t1, tl.where(t2 > thr, t2, t1)


@triton.jit
def _store_top_two(s, thr, c, m, ncand, C_row, first, second, CAP: tl.constexpr, I_row=None,
                   start_n=0, csum=None, offs_n=None, BLOCK_N: tl.constexpr = 1,
                   GATHER: tl.constexpr = False, ASM: tl.constexpr = False):
    """Each row's top value to slot ncand where ``first``, its second (``_top_two``) to ncand + 1
    where ``second`` (slots ≥ CAP dropped), as z = c·s − m (``_zval``).  With GATHER their key
    indices too: the top value's first column j₁, and the other candidate's as ``csum`` − j₁
    (csum: the sum of the row's candidate columns in this tile, two of them where ``second``; a
    tied top value is both)."""
    t1, t2 = _top_two(s, thr)
    k1 = first & (ncand < CAP)
    k2 = second & (ncand + 1 < CAP)
    _put_value(C_row + ncand, _zval(t1, c, m), k1, ASM)
    _put_value(C_row + ncand + 1, _zval(t2, c, m), k2, ASM)
    if GATHER:
        j1 = tl.min(tl.where(s == t1[:, None], offs_n[None, :], BLOCK_N), axis=1)
        _put_index(I_row + ncand, start_n + j1, k1, ASM)
        _put_index(I_row + ncand + 1, start_n + csum - j1, k2, ASM)


@triton.jit
def _copy_by_extraction(s, c, m, cnt, rounds, ncand, C_row, rmask, offs_n, CAP: tl.constexpr,
                        BLOCK_N: tl.constexpr, I_row=None, start_n=0, GATHER: tl.constexpr = False,
                        ASM: tl.constexpr = False):
    """A tile's candidates (the cnt largest values of each row) to the row buffers at slots
    ncand, ncand + 1, …: ``rounds`` = max cnt rounds of (row max, its first column, remove it).
    Ties are kept: one instance is removed per round.  Values stored as z = c·s − m; with
    GATHER the key index of each value goes to the same slot of ``I_row``."""
    zz = s
    for r in range(0, rounds):
        t = tl.max(zz, axis=1)
        j = tl.min(tl.where(zz == t[:, None], offs_n[None, :], BLOCK_N), axis=1)
        keep = (cnt > r) & (ncand + r < CAP) & rmask
        _put_value(C_row + ncand + r, _zval(t, c, m), keep, ASM)
        if GATHER:
            _put_index(I_row + ncand + r, start_n + j, keep, ASM)
        zz = tl.where(offs_n[None, :] == j[:, None], float("-inf"), zz)


@triton.jit
def _copy_all(s, thr, c, m, ncand, C_row, rmask, CAP: tl.constexpr, I_row=None, cols=None,
              GATHER: tl.constexpr = False, ASM: tl.constexpr = False):
    """Every candidate s > thr of a tile to its row's buffer as z = c·s − m, at slots ncand,
    ncand + 1, … (a prefix sum along the row; slots ≥ CAP are dropped, the row then overflows);
    with GATHER their key indices ``cols`` to the same slots of ``I_row``.  (A scatter of the
    whole tile: with ASM, in the scores' own layout, ``_store_rows``.)"""
    is_c = s > thr[:, None]
    slot = ncand[:, None] + tl.cumsum(is_c.to(tl.int32), axis=1) - 1
    keep = is_c & (slot < CAP) & rmask[:, None]
    _put_value(C_row[:, None] + slot, _zval(s, c, m[:, None]), keep, ASM)
    if GATHER:
        _put_index(I_row[:, None] + slot, cols[None, :] + slot * 0, keep, ASM)


@triton.jit
def _copy_tile(s, thr, c, m, ncand, C_row, rmask, offs_n, CAP: tl.constexpr,
               BLOCK_N: tl.constexpr, MODE: tl.constexpr, DIAG: tl.constexpr, I_row=None,
               start_n=0, GATHER: tl.constexpr = False, ASM: tl.constexpr = False):
    """Append each row's candidates of one tile to its buffer (slots ncand, ncand + 1, …; slots
    ≥ CAP are dropped); returns the new counts (which may exceed CAP).  The tile comes as its
    unscaled scores s, a candidate is s > thr (``_collect``'s threshold), and the values stored
    are z = c·s − m (``_zval``), one fma per stored value instead of one per score.  The usual tile
    has at most two candidates per row: the row's top one or two values are stored, no prefix
    sum; a tile where some row has more takes a few extraction rounds (α ∈ {1.5, 2}) or the
    prefix-sum copy (longer supports).  With GATHER each value's key index goes to the same slot
    of ``I_row`` (for the gathered output, ``_gather_out``), at little extra cost: the count is
    taken together with the sum of the candidates' columns (one float sum of MULT + column per
    candidate: exact integers, MULT above any column sum of the tile), which is the column
    of a row's only candidate and, less the top value's column, that of the second; the
    extraction rounds know their columns anyway."""
    is_c = s > thr[:, None]
    # counted in float (the scores' layout); an int32 count shared with the prefix sum below
    # made the compiler convert the whole indicator tile's layout on every tile
    if GATHER:
        # (a power of two above the largest column sum BLOCK_N·(BLOCK_N − 1)/2; the total stays
        # below 2^24 for BLOCK_N ≤ 256)
        MULT: tl.constexpr = 4096 if BLOCK_N <= 64 else (8192 if BLOCK_N <= 128 else 32768)
        a = tl.sum(tl.where(is_c, offs_n.to(tl.float32)[None, :] + MULT, 0.0), axis=1).to(tl.int32)
        cnt = a // MULT
        csum = a % MULT
    else:
        cnt = tl.sum(tl.where(is_c, 1.0, 0.0), axis=1).to(tl.int32)
        csum = cnt
    if DIAG == 7:
        # profiling only (wrong when a row has > 2 candidates in a tile): the top two
        # always, without the block-wide count maximum and its branch
        _store_top_two(s, thr, c, m, ncand, C_row, (cnt >= 1) & rmask, (cnt >= 2) & rmask, CAP,
                       I_row, start_n, csum, offs_n, BLOCK_N, GATHER, ASM)
    elif DIAG != 1:
        worst = tl.max(cnt, axis=0)
        if worst <= 1:
            k1 = (cnt >= 1) & (ncand < CAP) & rmask
            _put_value(C_row + ncand, _zval(tl.max(s, axis=1), c, m), k1, ASM)
            if GATHER:
                _put_index(I_row + ncand, start_n + csum, k1, ASM)
        elif worst <= 2:
            # at most two candidates per row in this tile (the usual case): the row's top two
            # values, no prefix sum and no tile-wide scatter
            _store_top_two(s, thr, c, m, ncand, C_row, (cnt >= 1) & rmask, (cnt == 2) & rmask,
                           CAP, I_row, start_n, csum, offs_n, BLOCK_N, GATHER, ASM)
        elif (MODE == 1 or MODE == 2) and DIAG != 8:
            # short supports: a few more rounds of the same (a prefix sum over the tile would
            # double the kernel's registers, and so halve its occupancy, for a rare case)
            _copy_by_extraction(s, c, m, cnt, worst, ncand, C_row, rmask, offs_n, CAP, BLOCK_N,
                                I_row, start_n, GATHER, ASM)
        else:
            _copy_all(s, thr, c, m, ncand, C_row, rmask, CAP, I_row, start_n + offs_n, GATHER, ASM)
    if DIAG == 7:
        # (profiling: the slots of candidates not stored are not counted, so the gathered
        # output never reads unwritten slots)
        cnt = tl.minimum(cnt, 2)
    return ncand + cnt


@triton.jit
def _collect(q, K_base, L_row, n_list, offs_n, offs_d, rows, m, c, start_m, lq, lk, stride_kn,
             cbound, ncand, C_row, rmask, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
             PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MODE: tl.constexpr,
             CAP: tl.constexpr, DIAG: tl.constexpr, I_row=None, GATHER: tl.constexpr = False,
             ASM: tl.constexpr = False):
    """One sweep over the live tiles ``L_row[0:n_list]`` appending each row's candidates
    z > cbound to its buffer (slots ncand, ncand + 1, …; slots ≥ CAP are dropped).  Returns the
    rows' candidate counts (ncand + candidates found, which may exceed CAP).

    The tiles are compared unscaled: z = fl(c·s − m) > cbound implies s > (cbound + m)/c up to
    the roundings of the fma and of this quotient (a few units of 2⁻²⁴ relative), so with the
    threshold lowered by 10⁻⁶ of its terms every candidate passes; the few extra values that
    pass with z ≤ cbound are scores of the row below every iterate τ' ≥ cbound (weight 0), so
    the buffer stays a subset of the row holding all of its candidates."""
    t = (cbound + m) / c
    thr = t - (tl.abs(t) + tl.abs(cbound) / c) * 1e-6
    for i in range(0, n_list):
        start_n = tl.load(L_row + i) * BLOCK_N
        s = _tile_s(q, K_base, start_n, offs_n, offs_d, rows, start_m, lq, lk, stride_kn,
                    HEAD_DIM, CAUSAL, PREC, BLOCK_M, BLOCK_N)
        ncand = _copy_tile(s, thr, c, m, ncand, C_row, rmask, offs_n, CAP, BLOCK_N, MODE, DIAG,
                           I_row, start_n, GATHER, ASM)
    return ncand


@triton.jit(do_not_specialize=_NOSPEC_T + ["N_WORK"])
def _fwd_solve_kernel(
    Q, K, V, ALPHA, M, TAU, TMAX, TMIN, LIST, LCNT, ITERS, CAND, GDONE, O, O2, SUP, NS, WORK, CU_Q,
    CU_K, stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_on,
    stride_sb, stride_sh, stride_sn,
    Nq, Nk, H, GROUP, scale, NQB, NKB, TOL, MAX_ITER, N_WORK, GRATIO,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr, PREC: tl.constexpr, MODE: tl.constexpr,
    CAP: tl.constexpr, CHUNK: tl.constexpr, DIAG: tl.constexpr, PERSIST: tl.constexpr,
    SWEEP_ALPHA: tl.constexpr, SWEEP_MIN: tl.constexpr, SWEEP_LIVE: tl.constexpr,
    GATHER: tl.constexpr = False, NEED_O2: tl.constexpr = False, KEEP: tl.constexpr = False,
    S: tl.constexpr = 64, ASM: tl.constexpr = False, SWEEP_SKIP: tl.constexpr = False,
    SWEEP_CERT: tl.constexpr = True,
):
    """Exact τ' per row (``_solve_block``), one query block per program (grid (NQB, B·H), CAND
    holds N_WORK = NQB·B·H slots of BLOCK_M buffers), or with ``PERSIST`` a persistent grid of P
    programs, each with its own slot, so the scratch is P·BLOCK_M·CAP floats whatever N is
    (``_solve_programs``).  Program p first solves block p, then claims the next unsolved one
    from the counter WORK[0] (zero at launch): the blocks are handed out dynamically, in the
    order w = 0, 1, …, which is query block NQB − 1 − w // (B·H) of head w mod (B·H) (the longest
    causal rows first).  Which program solves a block does not change its result (a slot is
    read only where the block wrote it): bitwise deterministic.

    With GATHER, each buffer row is 2·CAP floats, the second half holding the key indices of the
    candidates in the first (as bit patterns), and a block whose rows
    all kept every candidate writes its output here (``_gather_out``: O, and O2 with NEED_O2)
    when it has at most GRATIO candidates per row for each live tile of its list; GDONE[block]
    = 1 then tells the output kernel to skip it.  With KEEP (a forward that needs gradients) such
    a block also writes each row's support as key indices to SUP (S per row; counts in NS) and
    GDONE = 2 where every row's support fit, for the dQ kernel's gather path."""
    pid = tl.program_id(0)
    ROW: tl.constexpr = 2 * CAP if GATHER else CAP
    if PERSIST:
        nprog = tl.num_programs(0)
        C_slot = CAND + pid.to(tl.int64) * (BLOCK_M * ROW)
        BH = N_WORK // NQB
        w = pid
        while w < N_WORK:
            # claim the next block now: the atomic's latency hides behind this block's work
            nxt = tl.atomic_add(WORK, 1) + nprog
            _solve_block(NQB - 1 - w // BH, w % BH, C_slot,
                         Q, K, V, ALPHA, M, TAU, TMAX, TMIN, LIST, LCNT, ITERS, GDONE, O, O2, SUP, NS,
                         CU_Q, CU_K, stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
                         stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_on,
                         stride_sb, stride_sh, stride_sn, Nq, Nk, H, GROUP, scale, NQB, NKB, TOL,
                         MAX_ITER, GRATIO, HEAD_DIM, BLOCK_D, BLOCK_M, BLOCK_N, CAUSAL, VARLEN, PREC,
                         MODE, CAP, CHUNK, DIAG, SWEEP_ALPHA, SWEEP_MIN, SWEEP_LIVE, GATHER, NEED_O2,
                         KEEP, S, ASM, SWEEP_SKIP, SWEEP_CERT)
            # the slot is rewritten by the next block: every thread is done reading it
            tl.debug_barrier()
            w = nxt
    else:
        pid_bh = tl.program_id(1)
        C_slot = CAND + (pid_bh.to(tl.int64) * NQB + pid) * (BLOCK_M * ROW)
        _solve_block(pid, pid_bh, C_slot,
                     Q, K, V, ALPHA, M, TAU, TMAX, TMIN, LIST, LCNT, ITERS, GDONE, O, O2, SUP, NS,
                     CU_Q, CU_K, stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
                     stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_on,
                     stride_sb, stride_sh, stride_sn, Nq, Nk, H, GROUP, scale, NQB, NKB, TOL,
                     MAX_ITER, GRATIO, HEAD_DIM, BLOCK_D, BLOCK_M, BLOCK_N, CAUSAL, VARLEN, PREC,
                     MODE, CAP, CHUNK, DIAG, SWEEP_ALPHA, SWEEP_MIN, SWEEP_LIVE, GATHER, NEED_O2,
                     KEEP, S, ASM, SWEEP_SKIP, SWEEP_CERT)


@triton.jit
def _sweep_tile(F, G, S1, CNT, DMIN, q, K_base, start_n, offs_n, offs_d, rows, m, c, start_m, lq, lk,
                stride_kn, tau, qexp, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
                PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                MODE: tl.constexpr):
    """One key tile of a sparse sweep: its scores' sums (``_row_sums``, with α = 1.25's Halley
    sum) added to the running ones."""
    cols, kT, z = _tile_z(q, K_base, start_n, offs_n, offs_d, rows, m, c, start_m, lq, lk,
                          stride_kn, HEAD_DIM, CAUSAL, PREC, BLOCK_M, BLOCK_N)
    f_, g_, s_, c_, d_ = _row_sums(z, tau, qexp, MODE, MODE == 3)
    return F + f_, G + g_, S1 + s_, CNT + c_, tl.minimum(DMIN, d_)


@triton.jit
def _solve_rows(q, K_base, T_base, L_row, n_list, nobuf, m, tau, lo, hi, top, nv, last_step, done, ncand, C_row,
                rows, rmask, offs_n, offs_d, start_m, lq, lk, stride_kn, c, qexp, convex, TOL,
                MAX_ITER, it, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PREC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MODE: tl.constexpr,
                CAP: tl.constexpr, CHUNK: tl.constexpr, DIAG: tl.constexpr,
                SKIP: tl.constexpr = False, CERT: tl.constexpr = False):
    """Exact τ' of a block's rows from their candidate buffers (``ncand`` candidates each, the
    first CAP kept) and a lower bound ``tau`` = ``lo``:
    iterations on the buffers (no QKᵀ) until every row that fits has converged; rows that
    overflowed start from the root of the CAP candidates they kept (unless ``nobuf``: the block
    copied none) and continue with sparse
    sweeps over the live key tiles ``L_row[0:n_list]``, skipping tiles whose bound (T_base) is
    below every open row's lower end (with ``SKIP``; without it every listed tile, a loop with no
    branch that the compiler can pipeline; the skipped tiles add nothing either way).  ``CERT``:
    α = 1.25 rows may finish on a certified step (``_quartic_certificate``).  Returns (τ', sweeps,
    buffer iterations); ``it`` counts the sweeps made before."""
    everyone = rows >= 0
    offs_c = tl.arange(0, CHUNK)
    it = it + tl.zeros([], tl.int32)  # a loop-carried tensor, also when a literal is passed
    # ---- iterations on the candidate buffers (no QKᵀ; chunks of CHUNK from L2) ----
    fits = tl.where(nobuf, rows < 0, (ncand <= CAP) & rmask)  # nobuf: the block copied nothing
    if DIAG == 1 or DIAG == 2:
        done = done | fits
    # rows that overflowed iterate on the CAP candidates they have, too: a subset of the row,
    # so the root found (f_sub ≤ f) is a lower bound on τ' that starts their sweeps closer
    part = tl.where(nobuf, rows < 0, (ncand > CAP) & rmask & ~done)
    used = fits | part
    nbuf = tl.minimum(ncand, CAP)
    hi0 = hi
    last0 = last_step
    it_buf = 0
    n_open = tl.sum((used & ~done).to(tl.int32), axis=0)
    nmax = tl.max(tl.where(used & ~done, nbuf, 0), axis=0)
    while (n_open > 0) & (it_buf < MAX_ITER):
        F = tl.zeros([BLOCK_M], tl.float32)
        G = tl.zeros([BLOCK_M], tl.float32)
        S1 = tl.zeros([BLOCK_M], tl.float32)
        CNT = tl.zeros([BLOCK_M], tl.float32)
        DMIN = tl.full([BLOCK_M], float("inf"), tl.float32)
        for c0 in range(0, nmax, CHUNK):
            oc = c0 + offs_c
            Z = tl.load(C_row[:, None] + oc[None, :],
                        mask=used[:, None] & (oc[None, :] < nbuf[:, None]), other=float("-inf"))
            f_, g_, s_, c_, d_ = _row_sums(Z, tau, qexp, MODE)
            F += f_
            G += g_
            S1 += s_
            CNT += c_
            DMIN = tl.minimum(DMIN, d_)
        tau, lo, hi, last_step, done = _solver_update(F, G, S1, CNT, DMIN, tau, lo, hi, last_step, done,
                                                      used, convex, qexp, TOL, top, nv, MODE)
        it_buf += 1
        n_open = tl.sum((used & ~done).to(tl.int32), axis=0)
    # the overflowed rows: their subset's iterate (convex: Newton from below; else the bracket's
    # lower end, f_sub(lo) ≥ 0 ⇒ f(lo) ≥ 0) less a rounding margin is the sweeps' start and lower
    # end; the subset's upper end says nothing about the row (f_sub(hi) < 0 ⇏ f(hi) < 0)
    start = tl.where(convex, tl.minimum(tau, hi0), lo)
    start = start - (1e-6 + 2e-6 * tl.abs(start))
    start = tl.maximum(lo, start)
    tau = tl.where(part, start, tau)
    lo = tl.where(part, start, lo)
    hi = tl.where(part, hi0, hi)
    last_step = tl.where(part, last0, last_step)
    done = done & ~part

    # ---- rows whose candidates overflowed the buffer: sparse sweeps ----
    n_open = tl.sum((~done).to(tl.int32), axis=0)
    while (n_open > 0) & (it < MAX_ITER):
        F, G, S1, CNT, DMIN = _sweep(q, K_base, T_base, L_row, n_list, m, tau, lo, done, rows,
                                     offs_n, offs_d, start_m, lq, lk, stride_kn, c, qexp,
                                     HEAD_DIM, CAUSAL, PREC, BLOCK_M, BLOCK_N, MODE, SKIP)
        tau, lo, hi, last_step, done = _solver_update(F, G, S1, CNT, DMIN, tau, lo, hi, last_step, done,
                                                      everyone, convex, qexp, TOL, top, nv, MODE,
                                                      MODE == 3, CERT)
        it += 1
        n_open = tl.sum((~done).to(tl.int32), axis=0)
    return tau, it, it_buf


@triton.jit
def _sweep(q, K_base, T_base, L_row, n_list, m, tau, lo, done, rows, offs_n, offs_d, start_m, lq,
           lk, stride_kn, c, qexp, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
           PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MODE: tl.constexpr,
           SKIP: tl.constexpr):
    """One sparse sweep over the listed tiles ``L_row[0:n_list]``: the rows' sums at τ
    (``_sweep_tile``); with ``SKIP`` tiles whose bound (T_base) is below every open row's lower
    end are skipped (they add nothing)."""
    if SKIP:  # the open rows' lowest lower end: tiles whose bound is below it add nothing
        bound = tl.min(tl.where(done, float("inf"), tl.minimum(lo, tau)), axis=0)
    F = tl.zeros([BLOCK_M], tl.float32)
    G = tl.zeros([BLOCK_M], tl.float32)
    S1 = tl.zeros([BLOCK_M], tl.float32)
    CNT = tl.zeros([BLOCK_M], tl.float32)
    DMIN = tl.full([BLOCK_M], float("inf"), tl.float32)
    for i in range(0, n_list):
        start_n = tl.load(L_row + i) * BLOCK_N
        if SKIP:
            tmax = tl.load(T_base + start_n // BLOCK_N)
            if tmax > bound:
                F, G, S1, CNT, DMIN = _sweep_tile(F, G, S1, CNT, DMIN, q, K_base, start_n, offs_n,
                                                  offs_d, rows, m, c, start_m, lq, lk, stride_kn,
                                                  tau, qexp, HEAD_DIM, CAUSAL, PREC, BLOCK_M,
                                                  BLOCK_N, MODE)
        else:
            F, G, S1, CNT, DMIN = _sweep_tile(F, G, S1, CNT, DMIN, q, K_base, start_n, offs_n,
                                              offs_d, rows, m, c, start_m, lq, lk, stride_kn,
                                              tau, qexp, HEAD_DIM, CAUSAL, PREC, BLOCK_M,
                                              BLOCK_N, MODE)
    return F, G, S1, CNT, DMIN


@triton.jit
def _cand(C_row, I_row, kk, ncand, rmask, tau):
    """(z − τ', key index) of each row's buffered candidate kk (−inf, 0 past the row's count)."""
    has = (kk < ncand) & rmask
    d = tl.load(C_row + kk, mask=has, other=float("-inf")) - tau
    jk = tl.load(I_row + kk, mask=has, other=0.0).to(tl.int32, bitcast=True)
    return d, jk


@triton.jit
def _vrow(V_base, jk, d, offs, dm, stride_vn):
    """Value rows j (columns ``offs``) of the rows whose candidate is in the support (d > 0)."""
    return tl.load(V_base + jk.to(tl.int64)[:, None] * stride_vn + offs[None, :],
                   mask=(d > 0)[:, None] & dm[None, :], other=0.0).to(tl.float32)


@triton.jit
def _gather_out(C_row, I_row, ncand, nmax, tau, bad, rows, rmask, V_base, stride_vn, O, O2, O_off,
                stride_on, qexp, MODE: tl.constexpr, NEED_O2: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr):
    """out_i = Σ_k p_ik v_{j_ik} over row i's buffered candidates (values z_ik, key indices j_ik;
    p = [z − τ']_+^Q, only keys with z > τ' are loaded), and with NEED_O2 O2_i = Σ u v / Σ u —
    what the output pass computes, as a gather of the support's value rows instead of a QKᵀ and
    PV sweep over the live tiles.  The products are in float32 (the output pass rounds p to the
    input dtype for its PV dot).  Head dims in chunks of 64 (accumulator registers; unrolling
    the candidate loop and chunks of 32 were measured no faster; so was a software-pipelined
    loop that issued candidate kk + 2's loads and row j_{kk+1}'s before using candidate kk: H100,
    N = 16k, causal, random, forward 3.78 → 3.90 ms at D = 64, 4.99 → 5.16 at D = 128)."""
    DCH: tl.constexpr = 64 if BLOCK_D > 64 else BLOCK_D
    for d0 in tl.static_range(0, BLOCK_D, DCH):
        offs = d0 + tl.arange(0, DCH)
        dm = offs < HEAD_DIM
        acc = tl.zeros([BLOCK_M, DCH], tl.float32)
        acc2 = tl.zeros([BLOCK_M, DCH], tl.float32)
        su = tl.zeros([BLOCK_M], tl.float32)
        for kk in range(0, nmax):
            d, jk = _cand(C_row, I_row, kk, ncand, rmask, tau)
            p, u = _pow_pu(d, qexp, MODE)
            v = _vrow(V_base, jk, d, offs, dm, stride_vn)
            acc += p[:, None] * v
            if NEED_O2:
                acc2 += u[:, None] * v
                su += u
        optr = O_off + rows[:, None].to(tl.int64) * stride_on + offs[None, :]
        omask = rmask[:, None] & dm[None, :]
        tl.store(O + optr, tl.where(bad[:, None], float("nan"), acc).to(O.dtype.element_ty), mask=omask)
        if NEED_O2:
            o2 = acc2 / tl.where(su > 0, su, 1.0)[:, None]
            tl.store(O2 + optr, tl.where(bad[:, None], float("nan"), o2), mask=omask)


@triton.jit
def _keep_support(C_row, I_row, ncand, nmax, tau, rmask, SUP_row, NS_row, S: tl.constexpr,
                  ASM: tl.constexpr = False):
    """Each row's support (buffered candidates with z > τ') as key indices at SUP_row[0:count],
    in buffer order, the counts to NS_row; returns whether every row's support fit in S."""
    cnt = tl.zeros_like(ncand)
    for kk in range(0, nmax):
        has = (kk < ncand) & rmask
        d = tl.load(C_row + kk, mask=has, other=float("-inf")) - tau
        jk = tl.load(I_row + kk, mask=has, other=0.0).to(tl.int32, bitcast=True)
        live = d > 0
        _store_rows(SUP_row + cnt, jk, live & (cnt < S), ASM)
        cnt += live.to(tl.int32)
    tl.store(NS_row, cnt, mask=rmask)
    return tl.max(tl.where(rmask, cnt, 0), axis=0) <= S


@triton.jit
def _solve_block(
    pid_m, pid_bh, C_slot,
    Q, K, V, ALPHA, M, TAU, TMAX, TMIN, LIST, LCNT, ITERS, GDONE, O, O2, SUP, NS, CU_Q, CU_K,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_on,
    stride_sb, stride_sh, stride_sn,
    Nq, Nk, H, GROUP, scale, NQB, NKB, TOL, MAX_ITER, GRATIO,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr, PREC: tl.constexpr, MODE: tl.constexpr,
    CAP: tl.constexpr, CHUNK: tl.constexpr, DIAG: tl.constexpr,
    SWEEP_ALPHA: tl.constexpr, SWEEP_MIN: tl.constexpr, SWEEP_LIVE: tl.constexpr,
    GATHER: tl.constexpr, NEED_O2: tl.constexpr, KEEP: tl.constexpr, S: tl.constexpr,
    ASM: tl.constexpr = False, SWEEP_SKIP: tl.constexpr = False, SWEEP_CERT: tl.constexpr = True,
):
    """Exact τ' for the rows of query block ``pid_m`` of head ``pid_bh``.

    Pass 0 sweeps the live tiles once (tile mask from the K2 lower bound), updates τ, and copies
    every candidate value z > (lower bound) of each row into a per-row buffer of CAP floats (the
    program's slot ``C_slot``).  For α ≤ 2 the iterates only increase, so the buffer holds
    everything that can still matter: rows whose candidates fit finish **in registers** (no more
    QKᵀ).  Rows that overflow the buffer (e.g. α close to 1 with long rows) continue with sparse
    sweeps over the live tiles.  With GATHER a block whose rows all kept their candidates may
    write its output from them (``_gather_out``) instead of leaving it to the output pass.
    """
    (b, h, hk, sq, lq, sk, lk, alpha, c, qexp, start_m, rows, rmask, srow, offs_d, q,
     K_base) = _query_start(pid_m, pid_bh, Q, K, ALPHA, CU_Q, CU_K, stride_qb, stride_qh, stride_qn,
                            stride_kb, stride_kh, stride_kn, stride_sb, stride_sh, stride_sn, Nq, Nk,
                            H, GROUP, scale, HEAD_DIM, BLOCK_D, BLOCK_M, VARLEN)
    convex = (tl.zeros([BLOCK_M], tl.float32) + alpha) <= 2.0
    offs_n = tl.arange(0, BLOCK_N)
    m = tl.load(M + srow, mask=rmask, other=0.0)
    tau = tl.load(TAU + srow, mask=rmask, other=0.0)
    n = _nvis(rows, lq, lk, CAUSAL)
    # the scan's lower bound is the bracket's lower end; its upper end is r − n^{1−α} with r the
    # row max's own z (the rounding residual of m, see the scan), which the solve does not know:
    # it takes top = 2⁻²⁴·|m| ≥ |r| instead (so top ≥ r ≥ every z of the row; α > 2's geometric
    # bisection measures distances from it), and a relative margin for the roundings of hi.
    # (With −n^{1−α} the bracket missed the root of near-uniform α > 2 rows of large scores:
    # α = 4, rows of 40 near-equal scores shifted by 10⁴, Σp = 2.)
    lo = tau
    top = tl.where(m == m, tl.abs(m) * 5.9604645e-08, 0.0)
    hi = top - tl.exp2((1.0 - alpha) * tl.log2(tl.maximum(n, 1).to(tl.float32)))
    hi = hi + 2.4e-7 * tl.abs(hi)
    # a single visible key: the scan's τ' = r − 1 (p = 1 to float32 rounding; r the row max's
    # own z, see the scan); rows flagged by the scan (NaN row max) are not solved
    bad = m != m
    done = (n <= 1) | bad
    last_step = hi - lo
    T_base = TMAX + (pid_bh.to(tl.int64) * NQB + pid_m) * NKB
    ROW: tl.constexpr = 2 * CAP if GATHER else CAP
    C_row = C_slot + tl.arange(0, BLOCK_M) * ROW
    I_row = C_row + CAP  # (with GATHER) the key indices of the candidates

    # ---- pass 0: one sweep over the live tiles, copying candidates to the row buffers ----
    # (the live tiles of this block under the bound kernel's threshold: a compacted list)
    cbound = tl.minimum(lo, tau)
    L_row, n_list = _block_list(LIST, LCNT, pid_bh, pid_m, NQB, NKB)
    # α close to 1 on dense rows (most of the block's tiles live): the copy would take ~1000
    # candidates per row, scattered, and cost more than the sparse sweeps it saves (H100,
    # α = 1.25, D = 64, N = 16k random: copy 4.6 ms, the buffer iterations 1.7, four sweeps
    # ~4.9): sweeps only, no buffer (``_SWEEP_LIVE``)
    n_vis = tl.cdiv(_kend(start_m, lq, lk, CAUSAL, BLOCK_M), BLOCK_N)
    nobuf = (alpha <= SWEEP_ALPHA) & (n_list >= SWEEP_MIN) & (n_list * 100 >= n_vis * SWEEP_LIVE)
    if DIAG == 6:
        nobuf = n_list >= 0
    ncand = _collect(q, K_base, L_row, tl.where(nobuf, 0, n_list), offs_n, offs_d, rows, m, c, start_m,
                     lq, lk, stride_kn, cbound, tl.zeros([BLOCK_M], tl.int32), C_row, rmask, HEAD_DIM,
                     CAUSAL, PREC, BLOCK_M, BLOCK_N, MODE, CAP, DIAG, I_row, GATHER, ASM)
    it = 1

    V_base = V + _offset(b, hk, sk, stride_vb, stride_vh, stride_vn)
    O_off = _offset(b, h, sq, stride_ob, stride_oh, stride_on)
    tau, it, it_buf = _solve_rows(q, K_base, T_base, L_row, n_list, nobuf, m, tau, lo, hi, top,
                                  n.to(tl.float32), last_step, done, ncand, C_row, rows, rmask,
                                  offs_n, offs_d, start_m, lq, lk, stride_kn, c, qexp, convex, TOL,
                                  MAX_ITER, it, HEAD_DIM, CAUSAL, PREC, BLOCK_M, BLOCK_N, MODE, CAP,
                                  CHUNK, DIAG, SWEEP_SKIP, SWEEP_CERT)
    tau = tl.where(n > 0, tau, 0.0)
    if GATHER:
        # every row kept all its candidates (a superset of its support) and they are few next
        # to the keys the output pass would visit: out (and O2) from the buffers here
        nmax = tl.max(tl.where(rmask, ncand, 0), axis=0)
        # (a row with one visible key takes no part in the block's list threshold: its key is
        # only in the buffer if another row made its tile live — the row's max is a candidate
        # of every row that has keys, so ncand ≥ 1 says the buffer holds it)
        miss = rmask & ((ncand > CAP) | ((ncand == 0) & (n > 0)))
        allfit = (tl.max(tl.where(miss, 1, 0), axis=0) == 0) & ~nobuf
        gather = allfit & (nmax.to(tl.float32) <= GRATIO * n_list.to(tl.float32))
        if gather:
            _gather_out(C_row, I_row, ncand, nmax, tau, bad, rows, rmask, V_base, stride_vn, O, O2,
                        O_off, stride_on, qexp, MODE, NEED_O2, BLOCK_M, BLOCK_D, HEAD_DIM)
        flag = gather.to(tl.int32)
        if KEEP:
            if gather:
                blk = pid_bh.to(tl.int64) * NQB + pid_m
                kept = _keep_support(C_row, I_row, ncand, nmax, tau, rmask,
                                     SUP + blk * (BLOCK_M * S) + tl.arange(0, BLOCK_M) * S,
                                     NS + blk * BLOCK_M + tl.arange(0, BLOCK_M), S, ASM)
                flag = flag + kept.to(tl.int32)
        tl.store(GDONE + pid_bh.to(tl.int64) * NQB + pid_m, flag)
    tl.store(TAU + srow, tl.where(bad, float("nan"), tau), mask=rmask)
    # the block's final tile threshold (output pass and backward)
    tl.store(TMIN + pid_bh.to(tl.int64) * NQB + pid_m,
             tl.min(tl.where((n > 0) & ~bad, tau, float("inf")), axis=0))
    if DIAG == 3:
        it = it + 1000 * it_buf
    tl.store(ITERS + pid_bh.to(tl.int64) * NQB + pid_m, it)


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


# ----------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------


# Tile configurations.  One (BLOCK_M, BLOCK_N) serves every kernel of a call (the tile lists are
# per tile); warps and pipeline stages are per kernel.  Key: (head-dim bucket, "f32" or "16").
# Values: BM, BN, then "kernel.nw" / "kernel.ns" for kernel in _KERNELS.  The sm_90 table was
# chosen by ``benchmarks/gpu_attention_tune.py`` on an H100 (see docs/benchmarks_gpu_attention.md);
# other GPUs use it too (H200 is the same SM).  Override for experiments and other GPUs with
# SPARSEMAP_ATTN_TILES="BM=64,BN=64,nw=4,ns=3,scan.nw=8,..." (``nw``/``ns`` set every kernel).
_KERNELS = ("scan", "solve", "output", "dkdv", "dq")
_TILES = {
    # H100, N = 16k causal α = 1.5: 64×64 with 4 warps, 3 stages (2 for the solve) is the best of
    # 64/128 × 64/128 tiles, 4/8 warps, 2/3 stages (fwd+bwd 10.06 ms random, 2.99 topics)
    (64, "16"): dict(BM=64, BN=64, nw=4, ns=3),
    # H100, N = 16k causal α = 1.5 (fwd / fwd+bwd ms, random · topics): 8 warps everywhere 9.73 /
    # 30.6 · 3.24 / 4.72 → this 6.54 / 16.5 · 2.02 / 3.11
    (128, "16"): dict(BM=64, BN=64, nw=4, ns=2, **{"scan.ns": 3, "output.ns": 3}),
    # H100, D = 256, N = 16k causal α = 1.5: 64×64 tiles; 4 warps for the scan and the solve, 8 for
    # the output (with O2: 4 warps spill) and the backward (8 warps on 64×32 tiles before: fwd 21.0
    # / f+b 71.9 ms random, 6.2 / 8.7 topics; 64×64 with 8 warps everywhere 16.3 / 50.4, 4.5 / 6.8)
    (256, "16"): dict(BM=64, BN=64, nw=8, ns=2, **{"scan.nw": 4, "solve.nw": 4}),
    (64, "f32"): dict(BM=64, BN=32, nw=4, ns=2),
    (256, "f32"): dict(BM=32, BN=32, nw=4, ns=2),
}


def _parse_tiles(spec: str) -> dict:
    """``"BM=64,BN=32,scan.nw=8"`` → {"BM": 64, "BN": 32, "scan.nw": 8}; clear errors."""
    out = {}
    for item in filter(None, (s_.strip() for s_ in spec.split(","))):
        key, sep, val = item.partition("=")
        valid = key in ("BM", "BN", "nw", "ns") or (
            key.partition(".")[0] in _KERNELS and key.partition(".")[2] in ("nw", "ns"))
        if not sep or not valid or not val.strip().isdigit():
            raise ValueError(f"SPARSEMAP_ATTN_TILES: cannot read {item!r} (expected BM=, BN=, nw=, "
                             f"ns= or <kernel>.nw= / <kernel>.ns= with kernel in {_KERNELS})")
        out[key] = int(val)
    for key in ("BM", "BN"):
        if key in out and (out[key] < 16 or out[key] & (out[key] - 1)):
            raise ValueError(f"SPARSEMAP_ATTN_TILES: {key} must be a power of two ≥ 16, got {out[key]}")
    return out


_TILES_ENV = _parse_tiles(os.environ.get("SPARSEMAP_ATTN_TILES", ""))


def _tiles(head_dim: int, dtype: torch.dtype) -> dict:
    """The tile configuration for a head dim and dtype, with every kernel's warps and stages
    resolved: {"BM", "BN", "scan.nw", "scan.ns", ..., "dq.ns"}."""
    if INTERPRET:
        base = dict(BM=32, BN=32, nw=4, ns=1)
    else:
        kind = "f32" if dtype == torch.float32 else "16"
        bucket = min(b for b, k in _TILES if k == kind and b >= min(head_dim, 256))
        base = dict(_TILES[(bucket, kind)])
    base.update(_TILES_ENV)
    out = dict(BM=base["BM"], BN=base["BN"])
    for k_ in _KERNELS:
        for o_ in ("nw", "ns"):
            out[f"{k_}.{o_}"] = base.get(f"{k_}.{o_}", base[o_])
    return out


def _config(head_dim: int, dtype: torch.dtype):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of the scan (the dense sweep); the other
    kernels' warps and stages come from ``_launch(kernel, _tiles(...))``."""
    t = _tiles(head_dim, dtype)
    return t["BM"], t["BN"], t["scan.nw"], t["scan.ns"]


def _launch(kernel: str, tiles: dict) -> dict:
    """num_warps and num_stages of one kernel from a resolved configuration (``_tiles``)."""
    return dict(num_warps=tiles[f"{kernel}.nw"], num_stages=tiles[f"{kernel}.ns"])


def _cand_cap(mode: int, rows: int) -> int:
    """Floats per row of the solve's candidate buffer, for ``rows`` buffer rows in all (the
    persistent solve's slots: programs × BLOCK_M, independent of N).  α = 1.5 / 2 supports are
    short: 128 (``SPARSEMAP_ATTN_CAND_CAP``).  Smaller α (α = 1.25, and the generic path: other
    α and per-head α tensors) has far longer ones (α = 1.25 on 16k random keys: ~700 per row,
    up to ~1200), and a block with one overflowing row pays whole QKᵀ sweeps: the largest of
    4096 / 2048 / 1024 / 512 floats (32 … 4× the base; at least 2×) within ``_CAND_BUDGET`` bytes
    (H100, α = 1.25, N = 16k, D = 64, causal, random: 2048 → 4096 floats took the forward from
    10.3 to 9.5 ms, with no row overflowing; the persistent solve's 396 slots of 64 rows then
    take 0.52 GB)."""
    if mode in (MODE_15, MODE_2):
        return _CAND_CAP
    for cap in (32 * _CAND_CAP, 16 * _CAND_CAP, 8 * _CAND_CAP, 4 * _CAND_CAP):
        if rows * cap * 4 <= _CAND_BUDGET:
            return cap
    return 2 * _CAND_CAP


def _solve_persist(mode: int, head_dim: int) -> bool:
    """Whether the solve runs as a persistent grid (``_SOLVE_PERSIST``; by default for α other
    than 1.5 / 2, and for head dims ≤ 64)."""
    if _SOLVE_PERSIST in ("0", "1"):
        return _SOLVE_PERSIST == "1"
    return mode not in (MODE_15, MODE_2) or head_dim <= 64


_SM_COUNT: dict = {}


def _solve_programs(n_work: int, device: torch.device, tiles: dict, mode: int) -> int:
    """Programs of the persistent solve kernel: as many as can be resident at once (SMs × blocks
    per SM, from the register cap of ``_regs`` and the warps; 2 under the interpreter, so that
    the tests run several blocks per program), at most ``n_work``.  More would only add
    candidate-buffer slots; fewer would leave SMs idle."""
    if INTERPRET:
        return max(1, min(n_work, 2))
    key = (device.type, device.index)
    if key not in _SM_COUNT:
        _SM_COUNT[key] = torch.cuda.get_device_properties(device).multi_processor_count
    regs = _regs("solve", mode).get("maxnreg", 255)
    threads = 32 * tiles["solve.nw"]
    per_sm = max(1, min(65536 // (threads * regs), 2048 // threads))
    return max(1, min(n_work, _SM_COUNT[key] * per_sm))


def _sweep_rule(mode: int, head_dim: int) -> dict:
    """The solve kernel's constexprs for its sparse sweeps: which blocks skip the copy (see
    ``_SWEEP_LIVE``; head dims ≤ ``_SWEEP_MAX_D`` (128) only), whether a sweep tests each tile's
    bound (``_SWEEP_SKIP``) and whether α = 1.25 rows may stop on a certified step
    (``_SWEEP_CERT``)."""
    off = mode in (MODE_15, MODE_2) or _SWEEP_LIVE > 100 or head_dim > _SWEEP_MAX_D
    return dict(SWEEP_ALPHA=0.0 if off else _SWEEP_ALPHA, SWEEP_MIN=_SWEEP_MIN,
                SWEEP_LIVE=101 if off else _SWEEP_LIVE, SWEEP_SKIP=_SWEEP_SKIP,
                SWEEP_CERT=_SWEEP_CERT)


def _scan_top2(mode: int) -> bool:
    """Whether the scan keeps two scores per column class (``_SCAN_TOP2``; never for α ∈ {1.5, 2})."""
    return _SCAN_TOP2 and mode not in (MODE_15, MODE_2)


def _scan_tma(k: torch.Tensor, varlen: bool, BN: int, BD: int):
    """The scan's key-tile descriptor (``_SCAN_TMA``), or None: off, no descriptor support in
    this Triton, or a layout TMA cannot take (base or strides not 16-byte aligned)."""
    if not _SCAN_TMA or _HIP:
        return None
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor
    except ImportError:  # pragma: no cover - older Triton
        return None
    e = k.element_size()
    if k.numel() == 0 or k.data_ptr() % 16 or any((st * e) % 16 for st in k.stride()[:-1]) or k.stride(-1) != 1:
        return None
    if varlen:
        return TensorDescriptor(k, list(k.shape), list(k.stride()), [BN, 1, BD])
    return TensorDescriptor(k, list(k.shape), list(k.stride()), [1, 1, BN, BD])


def _list_chunk(n: int) -> int:
    """Tiles examined per step of the list kernel (a power of two, 16 … 1024)."""
    return int(min(1024, max(16, next_pow2(n))))


def tile_lists(tmax: torch.Tensor, thr: torch.Tensor, trans: bool, cfg: tuple, causal: bool,
               cu_seqlens_q: Optional[torch.Tensor] = None,
               cu_seqlens_k: Optional[torch.Tensor] = None,
               out: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
    """Compacted live-tile lists from the tile maxima ``tmax`` (B·H, NQB, NKB) and per-query-block
    thresholds ``thr`` (B·H, NQB): tile (mb, kb) is live iff tmax > thr[mb] (and the forward
    visited it).  ``trans`` = False: (list (B·H, NQB, NKB) of key blocks per query block, counts
    (B·H, NQB)); True: (list (B·H, NKB, NQB) of query blocks per key block, counts (B·H, NKB)).
    ``cfg`` is the forward's ``cfg`` tuple; ``out`` reuses buffers."""
    BM, BN, _, _, _, NQB, NKB, _, _, _, B, H, Nq, Nk = cfg
    BH = tmax.shape[0]
    outer, inner = (NKB, NQB) if trans else (NQB, NKB)
    if out is None:
        out = (torch.empty((BH, outer, inner), dtype=torch.int32, device=tmax.device),
               torch.empty((BH, outer), dtype=torch.int32, device=tmax.device))
    lst, cnt = out
    varlen = cu_seqlens_q is not None
    cq = cu_seqlens_q if varlen else thr
    ck = cu_seqlens_k if varlen else thr
    if BH > 0 and outer > 0:
        _tile_list_kernel[(outer, BH)](tmax, thr, lst, cnt, cq, ck, Nq, Nk, H, NQB, NKB,
                                       BLOCK_M=BM, BLOCK_N=BN, CAUSAL=causal, VARLEN=varlen,
                                       TRANS=trans, CH=_list_chunk(inner), num_warps=4)
    return lst, cnt


def _regs(kernel: str, mode: int) -> dict:
    """Launch option ``maxnreg`` for a kernel ("solve", "output", "output_o2", "dkdv", "dq").

    The solve kernel's rare paths (more than two candidates of a row in one tile; the sparse
    sweeps) made ptxas give the whole kernel ~250 registers per thread: 2 blocks per SM, and its
    pass 0 is latency-bound.  Capped at 128 (α = 1.5 / 2: no spills) or 168 (other α: a few
    spilled bytes in the prefix-sum path) it runs 3–4 blocks per SM (H100, N = 16k, random
    inputs: solve 3.26 → 2.48 ms at α = 1.5, 15.9 → 14.0 ms at α = 1.25)."""
    if INTERPRET:
        return {}
    if kernel in _MAXNREG:
        cap = _MAXNREG[kernel]
    elif kernel == "solve":
        cap = 128 if mode in (MODE_15, MODE_2) else 168
    else:
        cap = 0
    return {"maxnreg": cap} if cap else {}


def _layout(x: torch.Tensor, varlen: bool):
    """(batch, head, token) strides; the last dim must be contiguous."""
    if varlen:  # (T, H, D)
        return 0, x.stride(1), x.stride(0)
    return x.stride(0), x.stride(1), x.stride(2)


#: ``forward_state``'s python values and its buffers (in the order the launcher unpacks them)
_STATE_PARAMS = ("varlen", "B", "H", "D", "G", "Nq", "Nk", "tiles", "BM", "BN", "BD", "NQB", "NKB",
                 "prec", "need_o2", "runs", "n_work", "gather", "persist", "nprog", "cap", "keep", "S")
_STATE_BUFFERS = ("o", "o2", "o3", "m", "tau", "tmax", "tmin", "live", "hsum", "iters", "work", "lst",
                  "lcnt", "cand", "gdone", "sup", "ns")


def forward_geometry(q: torch.Tensor, k: torch.Tensor, cu_seqlens_q: Optional[torch.Tensor] = None,
                     max_seqlen_q: int = 0, max_seqlen_k: int = 0,
                     dtype: Optional[torch.dtype] = None) -> dict:
    """Sizes and tiles of a forward (no allocation): varlen, B, H, D, G (query heads per key
    head), Nq, Nk, stat_shape (the per-row statistics' shape), tiles (``_tiles``), BM, BN, BD,
    NQB, NKB, prec, and ``cfg``, the tuple the tile lists and the backward take.  ``dtype``: the
    dtype the kernels compute on, if not q's."""
    varlen = cu_seqlens_q is not None
    if varlen:
        Tq, H, D = q.shape
        Hkv = k.shape[1]
        B = cu_seqlens_q.numel() - 1
        Nq, Nk = max_seqlen_q, max_seqlen_k
        stat_shape = (Tq, H)
        ss = (0, 1, H)  # stats (T, H)
    else:
        B, H, Nq, D = q.shape
        Hkv, Nk = k.shape[1], k.shape[2]
        stat_shape = (B, H, Nq)
        ss = (H * Nq, Nq, 1)
    G = H // Hkv
    dtype = q.dtype if dtype is None else dtype
    tiles = _tiles(D, dtype)
    BM, BN = tiles["BM"], tiles["BN"]
    BD = max(16, next_pow2(D))
    NQB = max(1, cdiv(Nq, BM))
    NKB = max(1, cdiv(Nk, BN))
    prec = "ieee" if dtype == torch.float32 else "tf32"
    cfg = (BM, BN, tiles["scan.nw"], tiles["scan.ns"], BD, NQB, NKB, prec, ss, G, B, H, Nq, Nk)
    return dict(varlen=varlen, B=B, H=H, D=D, G=G, Nq=Nq, Nk=Nk, stat_shape=stat_shape, tiles=tiles,
                BM=BM, BN=BN, BD=BD, NQB=NQB, NKB=NKB, prec=prec, cfg=cfg)


def forward_state(q: torch.Tensor, k: torch.Tensor, mode: int, need_o2: bool, need_dalpha: bool,
                  cu_seqlens_q: Optional[torch.Tensor] = None, max_seqlen_q: int = 0,
                  max_seqlen_k: int = 0) -> dict:
    """The forward's geometry (tiles, block counts, which solve layout) and every buffer it
    writes, allocated and not yet written (``_STATE_PARAMS`` / ``_STATE_BUFFERS``): shared by the
    launcher and by the shape-only (fake) forward that ``torch.compile`` traces
    (``sparsemap_tools._ops``).  ``q``/``k`` in the dtype the kernels compute on (``o`` too: the
    launcher converts it to the input dtype at the end).  Buffers a launch does not need alias
    another one (o2 / o3 → o, hsum → m, gdone / sup / ns → lcnt).  Also every key of
    :func:`forward_geometry`."""
    geo = forward_geometry(q, k, cu_seqlens_q, max_seqlen_q, max_seqlen_k)
    varlen, B, H, D, G, Nq, Nk, stat_shape, tiles, BM, BN, BD, NQB, NKB, prec = (
        geo[k_] for k_ in ("varlen", "B", "H", "D", "G", "Nq", "Nk", "stat_shape", "tiles", "BM",
                           "BN", "BD", "NQB", "NKB", "prec"))
    dev = q.device
    o = torch.empty(q.shape, dtype=q.dtype, device=dev)
    need_o2 = need_o2 or need_dalpha
    o2 = torch.empty(q.shape, dtype=torch.float32, device=dev) if need_o2 else o
    o3 = torch.empty(q.shape, dtype=torch.float32, device=dev) if need_dalpha else o
    f32 = dict(dtype=torch.float32, device=dev)
    m = torch.empty(stat_shape, **f32)
    tau = torch.empty(stat_shape, **f32)
    tmax = torch.empty((B * H, NQB, NKB), **f32)
    tmin = torch.empty((B * H, NQB), **f32)
    # written in full by the kernels (the scan zeroes the work counter) when they run: no fill
    # kernels (host time per call matters at short lengths)
    runs = B * H > 0 and Nq > 0
    alloc = torch.empty if runs else torch.zeros
    live = alloc((B * H, NQB, 2), dtype=torch.int32, device=dev)
    hsum = alloc(stat_shape, **f32) if need_dalpha else m
    # solve passes per query block, and one more int: the persistent solve's work counter
    iters_work = alloc(B * H * NQB + 1, dtype=torch.int32, device=dev)
    iters, work = iters_work[:-1].view(B * H, NQB), iters_work[-1:]
    # compacted live-tile lists per query block (key-tile indices) and their lengths
    lst = torch.empty((B * H, NQB, NKB), dtype=torch.int32, device=dev)
    lcnt = torch.empty((B * H, NQB), dtype=torch.int32, device=dev)
    # candidate buffers of the solve: a slot of BM rows per query block, or per program when the
    # solve is persistent
    n_work = NQB * B * H
    # the gathered output needs the candidates' key indices, in the second half of each buffer
    # row (not with ∂/∂α: the output pass computes its extra sums); gdone marks the blocks it wrote
    gather = _GATHER_RATIO != 0 and mode in _GATHER_MODES and not need_dalpha and BN <= 256
    width = 2 if gather else 1
    # one slot per query block unless that would take more than the budget (long sequences):
    # then the persistent grid, whose scratch does not grow with N
    persist = (_solve_persist(mode, D)
               or (_SOLVE_PERSIST != "0" and n_work * BM * _CAND_CAP * width * 4 > _CAND_BUDGET))
    nprog = _solve_programs(n_work, dev, tiles, mode) if persist else n_work
    cap = _cand_cap(mode, nprog * BM * width)
    cand = torch.empty((nprog, BM, width * cap), **f32)
    gdone = torch.empty((B * H, NQB), dtype=torch.int32, device=dev) if gather else lcnt
    # gathered blocks of a training forward keep their rows' supports for the dQ kernel
    keep = gather and need_o2 and _DQ_GATHER
    S = _KEEP_SUPPORT
    sup = torch.empty((n_work, BM, S), dtype=torch.int32, device=dev) if keep else lcnt
    ns = torch.empty((n_work, BM), dtype=torch.int32, device=dev) if keep else lcnt
    return dict(geo, need_o2=need_o2, need_dalpha=need_dalpha, runs=runs, n_work=n_work,
                gather=gather, persist=persist, nprog=nprog, cap=cap, keep=keep, S=S, o=o, o2=o2,
                o3=o3, m=m, tau=tau, tmax=tmax, tmin=tmin, live=live, hsum=hsum, iters=iters,
                work=work, lst=lst, lcnt=lcnt, cand=cand, gdone=gdone, sup=sup, ns=ns)


def forward_result(st: dict, o: torch.Tensor) -> dict:
    """What the forward returns, from its ``forward_state`` and its output o (in the input
    dtype): o, o2 (None for inference), o3 and hsum (None unless ∂/∂α is needed), m, tau, tmax,
    tmin, live, lst, lcnt, gathered (None when the gathered output is off), support ((sup, ns, S)
    or None), iters and cfg."""
    d = st["need_dalpha"]
    return dict(o=o, o2=st["o2"] if st["need_o2"] else None, o3=st["o3"] if d else None,
                hsum=st["hsum"] if d else None, m=st["m"], tau=st["tau"], tmax=st["tmax"],
                tmin=st["tmin"], live=st["live"], lst=st["lst"], lcnt=st["lcnt"],
                gathered=st["gdone"] if st["gather"] else None,
                support=(st["sup"], st["ns"], st["S"]) if st["keep"] else None,
                iters=st["iters"], cfg=st["cfg"])


def entmax_attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha_h: torch.Tensor,
    mode: int,
    scale: float,
    causal: bool,
    need_o2: bool,
    cu_seqlens_q: Optional[torch.Tensor] = None,
    cu_seqlens_k: Optional[torch.Tensor] = None,
    max_seqlen_q: int = 0,
    max_seqlen_k: int = 0,
    tol: float = 2e-6,
    max_iter: int = 64,
    need_dalpha: bool = False,
):
    """Launch the forward pipeline.

    Padded layout: q (B, H, Nq, D), k/v (B, Hkv, Nk, D).  Varlen: q (Tq, H, D), k/v (Tk, Hkv, D)
    with int32 ``cu_seqlens_*`` (B+1,).  ``alpha_h``: float32 (H,) on the device.
    Returns a dict with o, o2 (or None), m, tau (shifted τ'), tmax, tmin, live, iters, config, and
    ``gathered`` ((B·H, NQB) int32, 1 for the query blocks whose output the solve kernel gathered;
    None when the gathered output is off).
    """
    out_dtype = q.dtype
    if INTERPRET and q.dtype == torch.bfloat16:
        # triton 3.9's interpreter mis-computes tl.dot on bfloat16 operands: interpret in float32
        q, k, v = q.float(), k.float(), v.float()
    st = forward_state(q, k, mode, need_o2, need_dalpha, cu_seqlens_q, max_seqlen_q, max_seqlen_k)
    (varlen, B, H, D, G, Nq, Nk, tiles, BM, BN, BD, NQB, NKB, prec, need_o2, runs, n_work, gather,
     persist, nprog, cap, keep, S) = (st[k_] for k_ in _STATE_PARAMS)
    (o, o2, o3, m, tau, tmax, tmin, live, hsum, iters, work, lst, lcnt, cand, gdone, sup,
     ns) = (st[k_] for k_ in _STATE_BUFFERS)
    cfg, ss = st["cfg"], st["cfg"][8]
    if varlen:
        cq, ck = cu_seqlens_q, cu_seqlens_k
    else:
        cq = ck = alpha_h  # unused placeholders
    sqs = _layout(q, varlen)
    sks = _layout(k, varlen)
    svs = _layout(v, varlen)
    sos = _layout(o, varlen)
    grid = (NQB, B * H)
    common = dict(HEAD_DIM=D, BLOCK_D=BD, BLOCK_M=BM, BLOCK_N=BN, CAUSAL=causal, VARLEN=varlen,
                  PREC=prec)
    if runs and _PROFILE_STAGES >= 1:
        # the scan leaves each block's pass-0 threshold in tmin
        kd = _scan_tma(k, varlen, BN, BD)
        _fwd_scan_kernel[grid](q, k, alpha_h, m, tau, tmax, tmin, work, cq, ck, *sqs, *sks, *ss,
                               Nq, Nk, H, G, scale, NQB, NKB, MODE=mode, NIT=_NIT, DIAG=_SCAN_DIAG,
                               TOP2=_scan_top2(mode), KD=k if kd is None else kd, TMA=kd is not None,
                               **common, **_launch("scan", tiles))
        tile_lists(tmax, tmin, False, cfg, causal, cu_seqlens_q, cu_seqlens_k, out=(lst, lcnt))
    if runs and _PROFILE_STAGES >= 2:
        # the solve kernel overwrites tmin with each block's final threshold min_i τ'_i
        _fwd_solve_kernel[(nprog,) if persist else grid](
                                q, k, v, alpha_h, m, tau, tmax, tmin, lst, lcnt, iters, cand, gdone, o, o2, sup, ns, work,
                                cq, ck, *sqs, *sks, *svs, *sos, *ss, Nq, Nk, H, G,
                                scale, NQB, NKB, tol, max_iter, n_work, _GATHER_RATIO,
                                MODE=mode, PERSIST=persist, **_sweep_rule(mode, D),
                                GATHER=gather, NEED_O2=need_o2, KEEP=keep, S=S,
                                CAP=cap, CHUNK=32 if INTERPRET else 64, DIAG=_SOLVE_DIAG,
                                ASM=_asm_stores(), **common,
                                **_launch("solve", tiles), **_regs("solve", mode))
        tile_lists(tmax, tmin, False, cfg, causal, cu_seqlens_q, cu_seqlens_k, out=(lst, lcnt))
    if runs and _PROFILE_STAGES >= 3:
        _fwd_output_kernel[grid](q, k, v, alpha_h, m, tau, lst, lcnt, o, o2, o3, hsum, live, gdone,
                                 cq, ck, *sqs, *sks, *svs, *sos, *ss, Nq, Nk, H, G, scale, NQB, NKB,
                                 MODE=mode, NEED_O2=need_o2, NEED_DALPHA=need_dalpha,
                                 GATHER=gather,
                                 WIDE_U=need_o2 and mode == MODE_GENERIC and v.dtype == torch.float16,
                                 **common,
                                 **_launch("output", tiles),
                                 **_regs("output_o2" if need_o2 else "output", mode))
    if o.dtype != out_dtype:
        o = o.to(out_dtype)
    return forward_result(st, o)


def entmax_attention_bwd(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o2: torch.Tensor,
    alpha_h: torch.Tensor,
    mode: int,
    scale: float,
    causal: bool,
    fwd: dict,
    cu_seqlens_q: Optional[torch.Tensor] = None,
    cu_seqlens_k: Optional[torch.Tensor] = None,
):
    """dq, dk, dv (in the input dtypes) from the saved forward state ``fwd``."""
    dtypes = (q.dtype, k.dtype, v.dtype)
    if INTERPRET and q.dtype == torch.bfloat16:  # see entmax_attention_fwd
        q, k, v, do = q.float(), k.float(), v.float(), do.float()
    varlen = cu_seqlens_q is not None
    BM, BN, nw, ns, BD, NQB, NKB, prec, ss, G, B, H, Nq, Nk = fwd["cfg"]
    D = q.shape[-1]
    do = do.contiguous()
    # δ_i = dO_i · O2_i (the stats' layout), written by the dQ kernel
    delta = torch.empty(fwd["m"].shape, dtype=torch.float32, device=q.device)
    # the kernels store in the gradients' dtypes (float32 dK/dV partials under GQA, summed over
    # the group below; float32 under the interpreter's bfloat16 stand-in, converted at the end)
    direct = not (INTERPRET and dtypes[0] == torch.bfloat16)
    dq = torch.empty(o2.shape, dtype=dtypes[0] if direct else torch.float32, device=q.device)
    if varlen:
        pshape = (k.shape[0], H, D)
    else:
        pshape = (B, H, Nk, D)
    G1 = direct and G == 1
    dk_p = torch.empty(pshape, dtype=dtypes[1] if G1 else torch.float32, device=q.device)
    dv_p = torch.empty(pshape, dtype=dtypes[2] if G1 else torch.float32, device=q.device)
    cq = cu_seqlens_q if varlen else alpha_h
    ck = cu_seqlens_k if varlen else alpha_h
    sqs, sks, svs = _layout(q, varlen), _layout(k, varlen), _layout(v, varlen)
    sos = _layout(o2, varlen)
    sps = _layout(dk_p, varlen)
    common = dict(HEAD_DIM=D, BLOCK_D=BD, BLOCK_M=BM, BLOCK_N=BN, CAUSAL=causal, VARLEN=varlen,
                  PREC=prec, MODE=mode)
    tiles = _tiles(D, q.dtype)
    if B * H > 0 and Nq > 0:
        sup = fwd.get("support")
        sup_t, ns_t, S = sup if sup is not None else (delta, delta, 64)
        _bwd_dq_kernel[(NQB, B * H)](q, k, v, do, o2, alpha_h, fwd["m"], fwd["tau"], delta, fwd["lst"],
                                     fwd["lcnt"], dq, fwd["gathered"] if sup is not None else delta,
                                     sup_t, ns_t, cq, ck, *sqs, *sks, *svs, *sos, *ss,
                                     Nq, Nk, H, G, scale, NQB, NKB, DQG=sup is not None, S=S, **common,
                                     **_launch("dq", tiles), **_regs("dq", mode))
    else:
        dq.zero_()
    if B * H > 0 and Nk > 0:
        # per key block: the live query blocks (the forward's tiles, transposed)
        lst_t, lcnt_t = tile_lists(fwd["tmax"], fwd["tmin"], True, fwd["cfg"], causal,
                                   cu_seqlens_q, cu_seqlens_k)
        lim = _nan_key_limits(fwd["m"], G, causal, Nq, Nk, cu_seqlens_q, cu_seqlens_k, B)
        _bwd_dkdv_kernel[(NKB, B * H)](q, k, v, do, alpha_h, fwd["m"], fwd["tau"], delta, lst_t,
                                       lcnt_t, dk_p, dv_p, lim, cq, ck, *sqs, *sks, *svs, *sos, *ss,
                                       *sps, Nq, Nk, H, G, scale, NQB, NKB, SUB_M=BM, **common,
                                       **_launch("dkdv", tiles), **_regs("dkdv", mode))
    if varlen:
        Tk, Hkv = k.shape[0], k.shape[1]
        dk = dk_p.view(Tk, Hkv, G, D).sum(2) if G > 1 else dk_p
        dv = dv_p.view(Tk, Hkv, G, D).sum(2) if G > 1 else dv_p
    else:
        Hkv = k.shape[1]
        dk = dk_p.view(B, Hkv, G, Nk, D).sum(2) if G > 1 else dk_p
        dv = dv_p.view(B, Hkv, G, Nk, D).sum(2) if G > 1 else dv_p
    return dq.to(dtypes[0]), dk.to(dtypes[1]), dv.to(dtypes[2])


def _nan_key_limits(m: torch.Tensor, G: int, causal: bool, Nq: int, Nk: int,
                    cu_q: Optional[torch.Tensor], cu_k: Optional[torch.Tensor], B: int) -> torch.Tensor:
    """Per (sequence, key/value head), flattened (B·Hkv,) int32: the last key (sequence-local
    index) visible to a query row the forward flagged as non-finite (NaN row max ``m``; any head
    of the GQA group), or −1.  Keys up to it get NaN dK and dV, as a dense backward would give
    them.  Device tensor ops only (no host synchronisation)."""
    dev = m.device
    bad = torch.isnan(m)
    if cu_q is None:  # m (B, H, Nq)
        H = m.shape[1]
        if Nq == 0:
            return torch.full((B * (H // G),), -1, dtype=torch.int32, device=dev)
        bad = bad.view(B, H // G, G, Nq).any(2)
        i = torch.arange(Nq, device=dev)
        reach = i + (Nk - Nq) if causal else torch.full_like(i, Nk - 1)   # last visible key
        lim = torch.where(bad, reach, torch.full_like(reach, -1)).amax(-1)
        return lim.to(torch.int32).reshape(-1)
    # varlen: m (Tq, H); the sequence of each query token from the offsets
    Tq, H = m.shape
    Hkv = H // G
    bad = bad.view(Tq, Hkv, G).any(2)
    cq, ck = cu_q.long(), cu_k.long()
    tq = torch.arange(Tq, device=dev)
    sid = torch.searchsorted(cq, tq, right=True) - 1
    lq = cq[sid + 1] - cq[sid]
    lk = ck[sid + 1] - ck[sid]
    local = tq - cq[sid]
    reach = local + lk - lq if causal else lk - 1                        # last visible key (local)
    cand = torch.where(bad, reach[:, None], torch.full_like(bad, -1, dtype=torch.long))
    lim = torch.full((B, Hkv), -1, device=dev, dtype=torch.long)
    lim = lim.scatter_reduce(0, sid[:, None].expand(Tq, Hkv), cand, reduce="amax")
    return lim.to(torch.int32).reshape(-1)


def entmax_attention_dalpha(do: torch.Tensor, alpha_h: torch.Tensor, fwd: dict, varlen: bool) -> torch.Tensor:
    """∂L/∂α per query head from row statistics of the forward (no extra pass over the keys).

    With ∂p/∂α = (p − ŝ)/(α−1)² − (h − ŝ Σh)/(α−1) (ŝ = u/Σu, h = p ln p) and dP = dO·Vᵀ:
    Σ_j dP_ij ∂p_ij/∂α = (dO_i·O_i − δ_i)/(α−1)² − (dO_i·O3_i − δ_i·HS_i)/(α−1),
    δ_i = dO_i·O2_i, O3_i = Σ_j h_ij v_j, HS_i = Σ_j h_ij.  Summed over the rows of each head.
    """
    dof = do.float()
    o = fwd["o"].float()
    delta = (dof * fwd["o2"]).sum(-1)
    r_oo = (dof * o).sum(-1)
    r_o3 = (dof * fwd["o3"]).sum(-1)
    am1 = alpha_h.float() - 1.0
    if varlen:  # rows (T, H)
        am1 = am1.view(1, -1)
        per_row = (r_oo - delta) / am1**2 - (r_o3 - delta * fwd["hsum"]) / am1
        return per_row.sum(0)
    am1 = am1.view(1, -1, 1)  # rows (B, H, N)
    per_row = (r_oo - delta) / am1**2 - (r_o3 - delta * fwd["hsum"]) / am1
    return per_row.sum(dim=(0, 2))
