"""Fused flash α-entmax attention: the design, the launchers and their settings.

Weights p = α-entmax over keys of s = scale·q·kᵀ, out = p·v, never materialising the N×N
score matrix.  The naive reference is ``attention_reference.py`` beside this file.  The Triton
kernels live in the modules beside it, one per stage: ``attention_common`` (shared jit
helpers), ``attention_scan`` (the dense sweep and the live-tile lists), ``attention_copy`` (the
solve's candidate copy), ``attention_solve`` (the threshold solve and the gathered output),
``attention_output`` (the sparse output pass) and ``attention_backward`` (dQ, dK/dV).

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

from ._host import cdiv, next_pow2
from .attention_backward import _bwd_dkdv_kernel, _bwd_dq_kernel  # noqa: F401
from .attention_output import _fwd_output_kernel  # noqa: F401
from .attention_scan import _fwd_scan_kernel, _tile_list_kernel  # noqa: F401
from .attention_solve import _fwd_solve_kernel  # noqa: F401
from .attention_common import _NOSPEC_T  # noqa: F401  (the kernels' unspecialised sizes)

__all__ = ["entmax_attention_fwd", "entmax_attention_bwd", "entmax_attention_dalpha", "alpha_mode",
           "tile_lists"]

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _env(name: str, default: str, kind: type = int):
    """Setting ``name`` from the environment (``default`` when unset) as ``kind``: int, float,
    bool (a "0" / "1" flag) or str (one of "", "0", "1").  A value that does not parse is a
    ValueError naming the variable (read once, when this module is imported)."""
    text = os.environ.get(name, default)
    try:
        if kind is bool:
            if text not in ("0", "1"):
                raise ValueError(text)
            return text == "1"
        if kind is str:
            if text not in ("", "0", "1"):
                raise ValueError(text)
            return text
        return kind(text)
    except ValueError:
        want = {bool: '"0" or "1"', str: 'unset, "0" or "1"', int: "an integer",
                float: "a number"}[kind]
        raise ValueError(f"{name} must be {want}, got {text!r}") from None


# candidate buffer per query row in the solve kernel (floats); rows with more candidates fall back
# to sparse sweeps
_CAND_CAP = _env("SPARSEMAP_ATTN_CAND_CAP", "128")
# bytes the buffers of α other than 1.5 / 2 may take in all (``_cand_cap``)
_CAND_BUDGET = _env("SPARSEMAP_ATTN_CAND_BUDGET", str(2**30))

# iterations of the scan's lower bound on its subset (per row, the maxima of the key columns
# ≡ j mod BLOCK_N)
_NIT = _env("SPARSEMAP_ATTN_NIT", "8")

# profiling hook of the solve kernel (benchmarks only): 1 = no candidate copy and 2 = no buffer
# iterations (both give wrong results), 3 = report buffer iterations ×1000 + sweeps in the
# stats, 6 = no candidate buffer at all (sparse QKᵀ sweeps until converged; a correct solver),
# 7 = the top two per row and tile always, no block-wide test (wrong when a row has more),
# 8 = the prefix-sum copy instead of repeated extraction for α ∈ {1.5, 2} (correct).  (9, storing
# a row's whole tile slice when it has > 2 candidates there, was measured slower on an H100 at
# N = 1k and 4k and removed on 2026-11-23.)
_SOLVE_DIAG = _env("SPARSEMAP_ATTN_SOLVE_DIAG", "0")

# register caps (ptxas ``maxnreg``) per kernel; 0 = the compiler's choice.  Override with
# SPARSEMAP_ATTN_MAXNREG="solve=128,output=0,..." (benchmarks); see ``_regs``.
#: the kernels a register cap can be set for (``_regs``)
_REG_KERNELS = ("solve", "output", "output_o2", "dkdv", "dq")


def _parse_maxnreg(spec: str) -> dict:
    """``SPARSEMAP_ATTN_MAXNREG`` = "kernel=regs,...": the register caps by kernel (0: the
    compiler's choice); an unknown kernel or a count that is not a number is a ValueError."""
    out = {}
    for kv in filter(None, spec.split(",")):
        k_, eq, v_ = kv.partition("=")
        k_ = k_.strip()
        if not eq or not v_.strip().isdigit() or k_ not in _REG_KERNELS:
            raise ValueError(f"SPARSEMAP_ATTN_MAXNREG: expected kernel=registers items with kernel "
                             f"one of {_REG_KERNELS}, got {kv!r}")
        out[k_] = int(v_)
    return out


_MAXNREG = _parse_maxnreg(os.environ.get("SPARSEMAP_ATTN_MAXNREG", ""))

# profiling hook of the scan kernel (benchmarks only): 1 = no tile bounds (every tile live),
# 2 = no subset (lower bound −1); both still give correct results, only slower downstream
_SCAN_DIAG = _env("SPARSEMAP_ATTN_SCAN_DIAG", "0")

# the scan loads its key tiles with TMA (a host-side tensor descriptor: no per-tile address
# arithmetic or cp.async, zero fill past the keys) where the layout allows (``_scan_tma``)
_SCAN_TMA = _env("SPARSEMAP_ATTN_SCAN_TMA", "0", bool)

# the scan's subset keeps the two largest scores per key-column class instead of one, for α other
# than 1.5 / 2 (whose bound is already tight).  Timed on an H100 (α = 1.25, D = 64, N = 16k,
# causal, one program per block): random fwd 14.9 → 14.0 ms (10.8 → 10.1 with 2048-float
# buffers), but the scan costs 0.4 ms more and topics went 3.44 → 3.70; so off by default
_SCAN_TOP2 = _env("SPARSEMAP_ATTN_SCAN_TOP2", "0", bool)

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
_SOLVE_PERSIST = _env("SPARSEMAP_ATTN_SOLVE_PERSIST", "", str)

# blocks of the solve that skip the candidate copy and take sparse sweeps only (``_sweep_rule``):
# α ≤ _SWEEP_ALPHA (α = 1.25 and generic α near 1; never the α = 1.5 / 2 kernels), head dims
# ≤ _SWEEP_MAX_D, at least _SWEEP_MIN live key tiles, and at least _SWEEP_LIVE % of the block's
# visible tiles live (dense rows: ~1000 scattered candidates per row).  _SWEEP_LIVE = 101 turns
# it off.  H100, α = 1.25, D = 64, causal, bf16, fwd ms, copy → rule at 90 % (Newton sweeps):
# N = 16k random 9.54 → 8.26 (f+b 15.58 → 14.06), topics 3.24 → 3.49 (6.02 → 6.21); N = 4k
# random 3.06 → 2.42, topics 1.12 → 1.13; at 75 % topics lost more (3.58)
_SWEEP_ALPHA = _env("SPARSEMAP_ATTN_SWEEP_ALPHA", "1.3", float)
_SWEEP_MIN = _env("SPARSEMAP_ATTN_SWEEP_MIN", "16")
_SWEEP_LIVE = _env("SPARSEMAP_ATTN_SWEEP_LIVE", "90")
# ... and head dims ≤ _SWEEP_MAX_D: at D = 128 the rule lost with Newton sweeps (random 12.36 →
# 13.43 ms) and won with Halley sweeps (random 12.85 → 12.26, topics 2.55 → 2.57; N = 4k random
# 3.98 → 3.34); D = 256 not measured
_SWEEP_MAX_D = _env("SPARSEMAP_ATTN_SWEEP_MAX_D", "128")
# "1": the sparse sweeps test each listed tile's bound against the open rows' lower ends and skip
# the tiles below (a load and a branch per tile, which kept the compiler from pipelining the
# K-tile loads: plain loads and shared-memory stores instead of cp.async).  Default "0": every
# listed tile, no branch (a skipped tile's scores add nothing either way).  H100, N = 16k,
# causal, bf16, forward ms, test → no test (with the certified stops below), same call:
# α = 1.25 D = 64 random 6.38 → 5.69, topics 3.09 → 2.93; D = 128 random 9.42 → 8.24, topics
# 2.41 → 2.38; α = 1.5 D = 64 random 3.72 → 3.69, topics 1.66 → 1.66; α = 2 D = 64 random
# 2.70 → 2.61, topics 1.35 → 1.35 (the sweeps there are only for overflowing rows)
_SWEEP_SKIP = _env("SPARSEMAP_ATTN_SWEEP_SKIP", "0", bool)
# α = 1.25 rows in the sparse sweeps stop on a certified quadratic-model step
# (``_quartic_certificate``) instead of sweeping once more to confirm |F − 1| ≤ TOL; "0": off.
# H100, N = 16k, D = 64, causal, bf16, forward ms, off → on (tile tests on, same call): random
# 7.56 → 6.38 (solve 5.28 → 4.00, 4 → 3 solve passes), topics 3.39 → 3.09
_SWEEP_CERT = _env("SPARSEMAP_ATTN_SWEEP_CERT", "1", bool)

# profiling hook (benchmarks only): run just the first k forward stages (scan, solve, output)
_PROFILE_STAGES = 3

#: gathered output (``_gather_out``): a solve block whose rows all kept their candidates writes
#: its output itself when it has at most this many candidates per row for each tile of its live
#: list (0: never, the output pass does every block); read by the launcher at each call
_GATHER_RATIO = _env("SPARSEMAP_ATTN_GATHER", "1.0", float)

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
_DQ_GATHER = _env("SPARSEMAP_ATTN_DQ_GATHER", "1", bool)
_KEEP_SUPPORT = _env("SPARSEMAP_ATTN_KEEP_SUPPORT", "64")
# the solve's pass 0 stores its per-row candidates with inline ``st.global`` (``_store_rows``;
# never under the interpreter).  H100, N = 16k, causal, bf16, forward ms tl.store → asm, same
# call: D 64 α 1.5 random 4.18 → 3.72, D 64 α 2 2.93 → 2.77, D 128 α 1.5 5.42 → 5.01, N = 1k
# (B 16) 0.90 → 0.83; block-sparse inputs within ±3 %
_ASM_STORE = _env("SPARSEMAP_ATTN_ASM_STORE", "1", bool)


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
