"""Batched row-wise α-entmax on the GPU (Triton): forward (τ and p) and backward.

Math (shared with the CPU solvers; rows of length d, α > 1, q = 1/(α−1)):

    zs = (α−1)(x − max x)                     prepared row, max zs = 0
    p_i = [zs_i − τ]_+^q,  Σ p_i = 1,         τ ∈ [−1, −d_eff^{1−α}]   (d_eff = #finite)
    f(τ) = Σ [zs − τ]_+^q − 1                 decreasing; convex for α ≤ 2
    f'(τ) = −q Σ_S d^{q−1},  f''(τ) = q(q−1) Σ_S d^{q−2},   d = zs − τ,  S = {d > 0}

Solvers (``SOLVERS``), one pass over the row per iteration, every iteration evaluating the
sums at the current τ:

* ``auto``: for α ∈ {1.5, 2} the closed form on the current support S(τ),
  α = 2:   τ_cf = τ + (Σ_S d − 1)/|S|                                 (= Newton = Michelot),
  α = 1.5: τ_cf = τ + mean(d) − sqrt((1 − Σ(d − mean d)²)/k), with
           1 − Σ(d − mean d)² = (1 − Σd²) + (Σd)²/k  (sums of d = zs − τ, i.e. centred at the
           iterate; the rewrite has no cancellation: both terms are ≥ 0 near the root),
  accepted with the certificate τ_cf ≥ τ and min_S d ≥ τ_cf − τ (then S(τ_cf) = S and τ_cf is
  exact); otherwise a Halley step for α ≤ 1.5 (f is C² between breakpoints and f'' only jumps
  at them; measured on randn rows of 1024: mean passes 4.95 → 3.58 at α = 1.5 against Newton),
  a Newton step above. From τ₀ ≤ τ* Newton climbs monotonically for α ≤ 2 (convexity); a
  Halley step that leaves the bracket is replaced by bisection, and so is a step straight back
  to the bracket end that the previous iterate set (f changed sign in between: a 2-cycle of
  rounding noise in f, seen in float32 with a generic power). For α > 2: Newton with a bracket
  and a progress safeguard (|f| must at least halve after a Newton step, else bisect next).
* ``newton``: the same without the closed form (safeguarded for α > 2).
* ``halley``: Halley where f ∈ C² (α ≤ 1.5), Newton elsewhere.
* ``bisect``: bisection of the bracket [lo, hi] (one bit per pass).

"sort" is not offered on the GPU: a sort of every row costs O(d log d) work and several
passes through memory (or a shared-memory bitonic network that only fits short rows), while
Newton + closed form + certificate reaches the same exact answer for α ∈ {1.5, 2} in a few
on-chip passes; the CPU path keeps the sort-based reference.

Stopping (per row): certificate, or |τ_new − τ| ≤ tol·|τ| (Newton steps below tol mean the
error after the step is O(tol²)), or bracket width ≤ tol·|hi|, or τ stopped moving. Rows that
hit ``max_iter`` first are returned with ``converged = False``: never silently.

Kernels:

* ``_fwd_onchip_kernel`` (d ≤ ``MAX_ONCHIP`` = 1024): a tile of BLOCK_R rows × BLOCK_D
  columns is loaded once, all iterations run in registers, p is written once: 1 read + 1
  write, the same traffic as softmax. By default one warp holds a whole row (32 entries per
  thread; several rows per warp below 1024), so the per-iteration reductions are register
  shuffles: the loop is bound by reduction latency, and this layout measured 1.5–3× faster
  than rows spread over several warps (docs/benchmarks_gpu_rowwise.md). Optional
  (``CONFIG["group"]``): start from the threshold of the maxima of ``group`` consecutive
  entries (a subset, so its threshold is ≤ τ*), solved on chip first.
* ``_fwd_stream_kernel`` (longer rows, one program per row, U·CHUNK columns per loop step:
  U = ``CONFIG["stream_unroll"]`` chunks loaded at once, so a pass is a few long round trips
  to memory rather than many short dependent ones): pass 1 reads the row once for the lane
  maxima v_j = max_c x[c·CHUNK + j] (one
  NaN-propagating max per entry, which also flags NaN/+inf rows); the entmax threshold of that
  subset (solved on chip, started from a one-round multi-level lower bound on the maxima of 8
  consecutive lanes, ``_levels_start``) is a lower bound on τ* (adding elements only raises f).
  Each solver iteration is one more read (usually from L2), starting from that bound; when the
  subset already holds the support, a single certifying pass suffices. A last pass writes p.
  Passes: 1 + iterations + 1 reads, 1 write (measured mean iterations on randn rows: 1.0 for
  α = 2, 1.02 for 1.5, 2.0 for 1.25).  Write-first (default for α = 2, and for α = 1.5 above
  512 rows): the pass after pass 1 writes p at the subset's root and counts the row's entries
  above it; as many as the subset's means the same support, so the row is done in 2 reads and
  1 write; otherwise the solver passes and a second write follow (optional,
  ``CONFIG["stream_top2"]``: the subset holds each lane's two largest entries, so it misses the
  support only where three support entries share a lane). With at most 512 rows each step's tile is issued one
  step ahead (``CONFIG["stream_prefetch"]``). ``iterations`` counts the full-row passes (the
  subset solves are not counted; 0 for a row whose write at the subset's root certified it,
  ``CONFIG["stream_write_first"]``). The bracket's upper end is −d^{1−α} from the row length d
  (rows with −inf entries get a looser one than on chip; the solvers work from below).

Powers: α = 2, 1.5 and 1.25 (q = 1, 2, 4) run without pow. A python-float α fixes the branch
at compile time (``MODE``: smaller kernels, fewer registers) and, in float32 computation, is
passed as a scalar (``SCALAR_ALPHA``: no per-row α tensor to allocate and fill on each call,
which on a slow host was a measurable part of a short call); an α tensor picks it per program
at run time from the rows' α, so one compile serves every α; other α, and programs whose rows mix
α values, use exp2(e·log2 d) (exp/log in float64). Computation is in
float32 for fp16/bf16/fp32 inputs and float64 for float64 inputs.

Backward (no solver): u = p^{2−α} on the support, dx = u⊙dy − u⟨u, dy⟩/Σu; and
dα = ⟨∂p/∂α, dy⟩ with ∂p/∂α = (p − s)/(α−1)² − (h − sΣh)/(α−1), s = u/Σu, h = p log p.

Row conventions: −inf entries get p = 0; rows that are all −inf or hold NaN or +inf give NaN
(τ = NaN, support 0, converged True, 0 iterations). α must be ≥ 1 (not checked here: that
would need a host synchronisation). Rows with α − 1 ≤ ``SOFTMAX_BELOW`` (1e-4 in float32,
1e-9 in float64) are softmax rows: p = exp(x − max)/Σ, τ = log Σ exp(x − max), 0 iterations
(the on-chip kernel adds the exp only to programs holding such a row; the streaming kernel
one pass for the sum). Their backward uses u = p and, for ∂/∂α, the limit
(p/2)(Σ p log²p − log²p) within eps^{1/3} of α = 1 (as the CPU path).
α may be a float32 or float64 tensor (float64 keeps finite differences in α exact in
gradcheck).

Tested with triton 3.6 (compiled, H100) and triton 3.9 (``TRITON_INTERPRET=1`` on CPU);
only core ``tl`` ops. Module-level constants must be ``tl.constexpr(...)`` objects (3.6
rejects plain globals) and must compare equal to themselves (so no NaN constant: NaN is
built as INF − INF in the kernels).
"""
from __future__ import annotations

import os

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._host import cdiv, next_pow2

__all__ = ["SOLVERS", "RowwiseResult", "entmax_forward", "entmax_backward", "MAX_ONCHIP", "CHUNK",
           "CONFIG", "SOFTMAX_BELOW", "softmax_below"]

SOLVERS = ("auto", "bisect", "newton", "halley")
_SOLVER_ID = {"auto": 0, "bisect": 1, "newton": 2, "halley": 3}

#: rows up to this length are solved fully on chip (one read, one write), one warp per row
MAX_ONCHIP = 1024
#: chunk width of the streaming kernel (longer rows); None = 4096 for ≤ 512 rows, else 1024
#: (2048 for α tensors, generic powers, float64 and the write-first launches)
#: (with ``CONFIG["stream_unroll"]`` = 4 chunks per loop step; docs/benchmarks_gpu_rowwise.md)
CHUNK = None
#: launch configuration (module-level so that benchmarks can sweep it):
#: tile_elems: elements per on-chip program (several short rows per program);
#: elems_per_thread: on-chip num_warps = elements / (32 · elems_per_thread), clipped to
#: [1, 16]; 32 with tile_elems 1024 gives one warp per row (≤ 1024 wide), so every reduction
#: of the solver is a register shuffle within the warp (measured fastest on an H100);
#: stream_elems_per_thread: the same for the streaming kernels' chunks;
#: group / group_min_d: optional on-chip subset lower bound from maxima of `group`
#: consecutive entries, used when the row block is at least group_min_d wide (0 disables;
#: it cuts full-row passes to ~1 for α ∈ {1.5, 2} but its second solve loop cost more than
#: it saved on an H100, so it is off by default.  As compiled for sm_90 (triton 3.6, 1024-wide
#: rows) group 32 takes 255 registers and spills 1.6 kB: the re-read 3-D tile gives the row
#: tile a replicated layout (256 entries per thread); a reshape of the row tile instead
#: crashes triton 3.6's layout pass.  Fix that before timing it again)
#: stream_prefetch: 1 / 0 = always / never issue the load of a streamed row's next chunk before
#: the current chunk's arithmetic (two chunks in registers), −1 = only when there are at most
#: 512 rows (measured on an H100: 256×65536 1.41 → 1.16× softmax at α = 1.5, 1.22 → 1.04× at
#: α = 2, but no gain at 1024×16384, where the extra registers cost occupancy);
#: stream_levels: levels of the one-round start of the lane-maxima subset solve (0: start at −1;
#: 16 cut the subset solve's passes from 4–6 to 1–3 on randn rows)
#: stream_maxnreg: register cap per thread of the streaming kernel (ptxas ``maxnreg``; 0 = the
#: compiler's choice, which is 170 at α = 2: one 8-warp program per SM).  Paired medians of 5
#: rounds on an H100 (ratio to softmax, none → 128 / 80 / 64): 1024×16384 α 1.5 1.41 → 1.37 /
#: 1.42 / 1.51, α 2 1.32 → 1.33 / 1.39 / 1.58, α 1.25 1.59 → 1.59 / 1.52 / 1.68; 256×65536 α 1.5
#: 1.16 → 1.13, α 2 and 1.25 unchanged at 128: occupancy is not what holds 1024×16384 back.
#: onchip_maxnreg: the same cap for the on-chip kernel (0 = the compiler's choice; only matters
#: for experiments with wide on-chip rows, e.g. max_onchip=16384 with 64 elements per thread)
#: stream_unroll: chunks per loop step of the streaming kernel (U: each step loads a [U, CHUNK]
#: tile, U chunk loads in flight per round trip; the lane maxima and per-lane sums fold the U
#: chunks in registers, so the solve is the same as with U = 1).  The streamed passes were bound
#: by their chain of dependent chunk loads, not by HBM: H200, paired medians, ratio to softmax,
#: U = 1 → 4 with CHUNK 2048 → 1024 at 1024×16384 (four 4-warp programs per SM instead of two
#: 8-warp ones): α = 1.5 1.40 → 1.23, α = 2 1.33 → 1.17, α = 1.25 1.54 → 1.41; at 256×65536
#: (CHUNK 4096, prefetch on) 1.09 → 1.07, 1.01 → 0.97, 1.25 → 1.13.
#: stream_unroll_generic: the same for α tensors, generic powers and float64 (1: not measured
#: with more; at the 128-register cap the α-tensor kernel spills 832 B with U = 1 and 1952 B
#: with U = 4, a generic float α 52 B / 272 B; sm_90 ptxas, CHUNK 2048)
#: stream_write_first: 1 = streamed rows with α ∈ {2, 1.5} (python float, solver auto) write p at
#: the lane-maxima subset's root in the first pass after pass 1 and certify it there by a
#: support count (2 reads when it holds: on randn rows of 16384 always at α = 2, 73 % of rows
#: at α = 1.5 with 1024 lanes, 86–91 % with 2048; else 4 reads, 2 writes); 2 = only for α = 2;
#: 0 = never; −1 (default) = α = 2, and α = 1.5 above 512 rows, those launches above 512 rows
#: with 2048-wide chunks (``_chunk``).  H100, paired medians of 3 rounds, ratio to softmax,
#: previous default (1024-wide chunks, no write-first) → write-first: 1024×16384 α = 2 1.37 →
#: 1.17 (2048-wide; 1.44 with 1024-wide chunks), α = 1.5 1.39 → 1.31 (1.65 with 1024-wide);
#: 256×65536 α = 2 0.86 → 0.75, α = 1.5 1.01 → 1.04 (so not taken there).  Not measured on
#: an H200, where the previous default was 1.23 / 1.17 at 1024×16384.
#: stream_top2: 1 = the streamed subset holds every lane's two largest entries instead of one
#: (2·CHUNK values: it holds the support unless three support entries share a lane, so more
#: rows certify at the write-first pass — α = 1.5 on 256 randn rows of 16384, float64
#: supports: 73 % → 99.6 % of rows with 1024 lanes, 86 % → 100 % with 2048; the subset solve
#: works on twice the values and pass 1 does a few more operations per entry).  0 = never,
#: 1 = always, −1 (default) = α ∈ {2, 1.5} (python float, auto solver) at ≤ 512 rows, where
#: α = 1.5 then writes first too (``_write_first``), and α = 1.25 above 512 rows (its start for
#: the solver passes: H100 2026-12-07, A/B medians of 3 rounds, 1024×16384 1.482 → 1.429× softmax,
#: the same in an earlier call 1.479 → 1.428; 256×65536 0.986 → 0.993, so not at ≤ 512 rows;
#: benchmarks/results/gpu_rowwise_ab_a125_h100_2026-12-07d.txt).  H100 2026-12-07, ratio to softmax, A/B
#: medians of 3 rounds (benchmarks/results/gpu_rowwise_ab_top2_h100_2026-12-07c.txt), without →
#: with top-2 (→ with top-2 and write-first): 256×65536 α = 1.5 0.943 → 0.919 (→ 0.839), α = 2
#: (write-first already) 0.883 → 0.808; 1024×16384 α = 1.5 1.319 → 1.333, α = 2 1.174 → 1.263
#: (so not taken above 512 rows).  Not measured on other shapes or an H200.
#: stream_renorm / onchip_renorm: 1 (default) = rows whose Σp is off 1 by more than NORM_TOL_*
#: are divided by it (streamed rows: written again); 0 = not (for timing the check only)
#: (stream_hold, a streamed row held in registers and read once, was measured slower on an H100 —
#: 1024×16384, ratio to softmax: α = 1.5 1.31 → 1.35–1.71, α = 2 1.18 → 1.27–1.61 — and removed
#: on 2026-12-08; docs/benchmarks_gpu_rowwise.md, code at 2adc9e4.)
#: bwd_unroll: chunks per loop step of the backward's two streamed passes (1: U = 4 measured no
#: different on an H100, forward+backward 0.93 / 0.92 / 0.84 / 0.78× softmax's with either at
#: 1024×16384 and 256×65536, α = 1.5 / 2)
CONFIG = dict(tile_elems=1024, elems_per_thread=32, stream_elems_per_thread=8, group=0,
              group_min_d=256, stream_prefetch=-1, stream_levels=16, stream_maxnreg=128,
              onchip_maxnreg=0, stream_unroll=4, stream_unroll_generic=1, bwd_unroll=1,
              stream_write_first=-1, stream_top2=-1, stream_renorm=1, onchip_renorm=1)

INF = tl.constexpr(float("inf"))

#: rows with α − 1 at or below this are softmax rows (computed as softmax, no solve): below it
#: the q = 1/(α−1) power amplifies the rounding of the base (relative error ≈ eps/(α−1) on p)
#: beyond the distance between α-entmax and softmax, which is O(α−1). float64 uses the CPU
#: paths' threshold (``sparsemap_tools._validate.SOFTMAX_BELOW``).
SOFTMAX_BELOW = {torch.float32: 1e-4, torch.float64: 1e-9}


@dataclass
class RowwiseResult:
    """Per-row outcome of :func:`entmax_forward`.

    p: (R, d) in x's dtype; tau: (R,) τ in the prepared space zs = (α−1)(x − rowmax)
    (float32, float64 for float64 input); support_size: (R,) int32 = |{zs > τ}|;
    iterations: (R,) int32 solver passes over the row; converged: (R,) bool.
    """

    p: torch.Tensor
    tau: torch.Tensor
    support_size: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor


# ----------------------------------------------------------------------------------------
# jit helpers (all work on 2-D tiles [R, C] and per-row vectors [R])
# ----------------------------------------------------------------------------------------


@triton.jit
def _sqrt(v, F64: tl.constexpr):
    """Correctly rounded square root (float32 sqrt_rn; float64 sqrt)."""
    if F64:
        r = tl.sqrt(v)
    else:
        r = tl.sqrt_rn(v)
    return r


@triton.jit
def _log_b(d, F64: tl.constexpr):
    """The powers' logarithm: ln d in float64, log2 d in float32 (the fast MUFU base)."""
    if F64:
        r = tl.log(d)
    else:
        r = tl.log2(d)
    return r


@triton.jit
def _exp_b(v, F64: tl.constexpr):
    """The inverse of ``_log_b``: e^v in float64, 2^v in float32."""
    if F64:
        r = tl.exp(v)
    else:
        r = tl.exp2(v)
    return r


@triton.jit
def _pow_pos(d, e, F64: tl.constexpr):
    """d^e for d > 0 (caller masks d ≤ 0)."""
    return _exp_b(e * _log_b(d, F64), F64)


@triton.jit
def _terms(zs, tau, q, mode, NEED_S2: tl.constexpr, F64: tl.constexpr):
    """Elementwise terms of the sums at τ (to be summed along axis 1).

    Returns (t0, t1, t2, pos, dmin_term): with d = zs − τ and S = {d > 0},
    t0 = d^q, t1 = d^{q−1}, t2 = d^{q−2} on S (0 elsewhere), dmin_term = d on S (+inf else).
    mode 0 (α = 2): t0 = d, t1 = 1, t2 = 0;  mode 1 (α = 1.5): t0 = d², t1 = d, t2 = 1.
    """
    d = zs - tau[:, None]
    pos = d > 0
    dp = tl.where(pos, d, 0.0)
    one = pos.to(dp.dtype)
    if mode == 0:
        t0 = dp
        t1 = one
        t2 = dp * 0.0
    elif mode == 1:
        t0 = dp * dp
        t1 = dp
        t2 = one
    elif mode == 3:
        d2 = dp * dp
        t0 = d2 * d2
        t1 = d2 * dp
        t2 = d2
    else:
        qq = q[:, None]
        lg = _log_b(tl.where(pos, d, 1.0), F64)
        t0 = tl.where(pos, _exp_b(qq * lg, F64), 0.0)
        t1 = tl.where(pos, _exp_b((qq - 1.0) * lg, F64), 0.0)
        if NEED_S2:
            t2 = tl.where(pos, _exp_b((qq - 2.0) * lg, F64), 0.0)
        else:
            t2 = dp * 0.0
    dmin = tl.where(pos, d, INF)
    return t0, t1, t2, one, dmin


#: |Σp − 1| above which the forward kernels divide a row's p by its sum: 2 eps in float64,
#: 1e-5 in float32.  τ is exact to about an ulp, and one ulp of τ moves Σp by ~q·eps (q =
#: 1/(α−1): 5e-13 in float64 at α = 1.0001, 9e-4 in float32 at α = 1.0002), which the division
#: removes to first order, as on the CPU (which always divides); rows stopped at ``max_iter``
#: and α > 2 rows, whose Σp jumps across 1 between neighbouring floats τ (p is only Hölder in
#: τ), are divided too.  Float32 rows are measured only where a bound on |Σp − 1| from the
#: solver's last pass (``_sum_dev_bound``) passes half the tolerance, or where it cannot be
#: trusted (``_unsure_sum``): summing p in the output pass cost 3–40 % of the streamed forward
#: on an H100 (the per-lane sums made ptxas spill), and a converged α ≤ 2 row almost never
#: needs the division.  On-chip rows whose sum was measured are divided when it is off by more
#: than 2 eps (free there); streamed ones only above NORM_TOL_F32 (a division costs a pass).
NORM_TOL_F32 = tl.constexpr(1e-5)
EPS_F32 = tl.constexpr(float(torch.finfo(torch.float32).eps))
NORM_TOL_F64 = tl.constexpr(2.0 * float(torch.finfo(torch.float64).eps))


@triton.jit
def _needs_renorm(psum, skip, F64: tl.constexpr, TIGHT: tl.constexpr = False):
    """Rows (not ``skip``) whose Σp is off 1 by more than ``NORM_TOL_*`` and can be divided.
    ``TIGHT``: float32 rows by more than 2 eps (on-chip rows whose sum was measured anyway:
    the division costs nothing more there)."""
    if F64:
        tol = NORM_TOL_F64
    elif TIGHT:
        tol = 2.0 * EPS_F32
    else:
        tol = NORM_TOL_F32
    return (tl.abs(psum - 1.0) > tol) & (psum > 0) & (psum < INF) & (~skip)


@triton.jit
def _sum_dev_bound(S0, S1, S2, t_old, t_new, q):
    """A bound on |Σp − 1| at ``t_new`` from the sums at ``t_old`` (S0 = Σd^q, S1 = Σd^{q−1},
    S2 = Σd^{q−2} on the support, d = zs − t_old): |T − 1| for the Taylor polynomial T = S0 −
    qS1·δ + ½q(q−1)S2·δ², δ = t_new − t_old, plus 8 eps times the size of its terms (T's own
    rounding).  T is exact for q ∈ {1, 2} while the support stays the same (a closed-form
    certified step keeps it), and second-order accurate for the small steps of converged α ≤ 2
    rows (solvers that do not form S2 pass zeros: the missing term is O(δ²))."""
    dl = t_new - t_old
    t1 = q * S1 * dl
    t2 = 0.5 * q * (q - 1.0) * S2 * dl * dl
    return tl.abs(S0 - t1 + t2 - 1.0) + 8.0 * EPS_F32 * (tl.abs(S0) + tl.abs(t1) + tl.abs(t2))


@triton.jit
def _unsure_sum(dev, conv, alpha, skip):
    """Float32 rows whose Σp must be measured: the bound ``dev`` on |Σp − 1| from
    ``_sum_dev_bound`` passes half of NORM_TOL_F32, or cannot be trusted: unconverged rows,
    α > 2 (Σp not smooth in τ), and α < 1.05, where evaluating p = d^q rounds by up to q·eps/2
    relative at each τ, so that the estimate (from the sums at the previous τ) and the sum at
    the final τ can differ by q·eps·Σp ≥ NORM_TOL_F32/4 (q = 1/(α−1) ≥ 20)."""
    return ((~conv) | (alpha > 2.0) | (alpha < 1.05) | (dev > 0.5 * NORM_TOL_F32)
            | (dev != dev)) & (~skip)


@triton.jit
def _p_from_tau(zs, tau, q, mode, F64: tl.constexpr):
    """p = [zs − τ]_+^q for a tile (mode 0: d, mode 1: d², else the power)."""
    d = zs - tau[:, None]
    pos = d > 0
    dp = tl.where(pos, d, 0.0)
    if mode == 0:
        p = dp
    elif mode == 1:
        p = dp * dp
    elif mode == 3:
        p = (dp * dp) * (dp * dp)
    else:
        p = tl.where(pos, _pow_pos(tl.where(pos, d, 1.0), q[:, None], F64), 0.0)
    return p, pos


@triton.jit
def _update(tau, lo, hi, done, conv, fprev, nprev, S0, S1, S2, k, dmin, alpha, q, mode,
            tol, SOLVER: tl.constexpr, F64: tl.constexpr):
    """One solver update per row from the sums at τ. Returns the new loop state.

    S0 = Σd^q, S1 = Σd^{q−1}, S2 = Σd^{q−2}, k = |S|, dmin = min_S d.
    """
    F = S0 - 1.0
    lo = tl.where(F >= 0, tl.maximum(lo, tau), lo)          # f(τ) ≥ 0 ⇒ τ ≤ τ*
    hi = tl.where(F < 0, tl.minimum(hi, tau), hi)
    fp = q * S1                                              # −f'(τ) > 0
    step = tau + F / fp                                      # Newton
    if SOLVER == 0 or SOLVER == 3:                           # Halley where f ∈ C²
        use_h = alpha <= 1.5
        fpp = q * (q - 1.0) * S2
        hal = tau + 2.0 * F * fp / (2.0 * fp * fp - F * fpp)
        step = tl.where(use_h & (hal == hal), hal, step)
    if mode == 2:
        # α > 2: where the Newton step on f leaves the bracket, Newton on φ = (f + 1)^{1/q} − 1
        # (the l_q quasi-norm of d minus 1; exactly linear on rows of equal entries, whose root
        # −d^{1−α} plain Newton and bisection only reach after ~100 passes at α = 20)
        s0 = tl.maximum(S0, 1e-30)
        phi = tau + q * s0 * (1.0 - _pow_pos(s0, 1.0 - alpha, F64)) / fp
        outside = (step <= lo) | (step >= hi) | (step != step)
        step = tl.where((alpha > 2.0) & outside, phi, step)
    mid = 0.5 * (lo + hi)
    # safeguard: inside the bracket, and for α > 2 enough progress since the last Newton step
    slow = nprev & (tl.abs(F) > 0.5 * tl.abs(fprev)) & (alpha > 2.0)
    # a Newton step straight back to the bracket end just set by the previous Newton iterate
    # (f changed sign): a 2-cycle of rounding noise in f (seen in float32 with a generic power:
    # two iterates 3 ulp apart, each step just above tol, for 100 passes); bisect instead
    back = nprev & (F * fprev < 0) & (((F < 0) & (step <= lo)) | ((F >= 0) & (step >= hi)))
    use_step = (step >= lo) & (step <= hi) & (fp > 0) & (~slow) & (~back)
    if SOLVER == 1:
        new = mid
        took = use_step & False
    else:
        new = tl.where(use_step, step, mid)
        took = use_step
    cert = done & False
    if SOLVER == 0:
        if mode == 0:
            tcf = tau + (S0 - 1.0) / k
            cert = (tcf >= tau) & (dmin >= tcf - tau)
            new = tl.where(cert, tcf, new)
        elif mode == 1:
            mean = S1 / k
            disc = ((1.0 - S0) + S1 * mean) / k
            tcf = tau + mean - _sqrt(tl.maximum(disc, 0.0), F64)
            cert = (disc >= 0) & (tcf >= tau) & (dmin >= tcf - tau)
            new = tl.where(cert, tcf, new)
    small = (tl.abs(new - tau) <= tol * tl.abs(tau)) | (hi - lo <= tol * tl.abs(hi)) | (new == tau)
    now = (cert | small) & (~done)
    tau = tl.where(done, tau, new)
    conv = conv | now
    done = done | now
    fprev = tl.where(took, F, fprev)
    nprev = took
    return tau, lo, hi, done, conv, fprev, nprev


@triton.jit
def _min_positive(d, F64: tl.constexpr):
    """Row minimum of the entries d > 0 (+inf if there is none), one integer min per entry.

    Non-negative floats order like their bit patterns read as unsigned integers, and every
    pattern with the sign bit set (negative d, −0, −inf) lies above +inf's, so the unsigned
    minimum of the patterns is the smallest non-negative d.  An entry d = +0 (not in the
    support) can be the result: that only makes the certificate min_S d ≥ δ stricter.
    (No NaN reaches here: rows holding NaN are handled before the solve.)"""
    if F64:
        b = tl.min(d.to(tl.uint64, bitcast=True), 1)
        r = tl.where(b <= 0x7FF0000000000000, b.to(tl.float64, bitcast=True), INF)
    else:
        b = tl.min(d.to(tl.uint32, bitcast=True), 1)
        r = tl.where(b <= 0x7F800000, b.to(tl.float32, bitcast=True), INF)
    return r


@triton.jit
def _tile_sums(zs, tau, q, mode, NEED_S2: tl.constexpr, F64: tl.constexpr):
    """Per-row sums at τ over a tile held on chip, reducing only what the mode needs.

    Returns (S0, S1, S2, k, dmin) = (Σd^q, Σd^{q−1}, Σd^{q−2}, |S|, min_S d); for α = 2
    S1 = k, S2 = 0; for α = 1.5 S2 = k; in the generic mode k and dmin are not needed
    (no closed form) and come back as 1 and +inf.
    """
    d = zs - tau[:, None]
    # branch-free forms (max, compare-to-float): the masked-select forms made the compiler keep
    # the support mask as packed predicate bits, ~18 instructions per element and pass
    dp = tl.maximum(d, 0.0)
    if mode == 0:
        S0 = tl.sum(dp, 1)
        k = tl.sum((d > 0).to(dp.dtype), 1)
        dmin = _min_positive(d, F64)
        S1 = k
        S2 = k * 0.0
    elif mode == 1:
        S0 = tl.sum(dp * dp, 1)
        S1 = tl.sum(dp, 1)
        k = tl.sum((d > 0).to(dp.dtype), 1)
        dmin = _min_positive(d, F64)
        S2 = k
    elif mode == 3:
        d2 = dp * dp
        S0 = tl.sum(d2 * d2, 1)
        S1 = tl.sum(d2 * dp, 1)
        if NEED_S2:
            S2 = tl.sum(d2, 1)
        else:
            S2 = S1 * 0.0
        k = S1 * 0.0 + 1.0
        dmin = S1 * 0.0 + INF
    else:
        t0, t1, t2, one, dm = _terms(zs, tau, q, mode, NEED_S2, F64)
        S0 = tl.sum(t0, 1)
        S1 = tl.sum(t1, 1)
        if NEED_S2:
            S2 = tl.sum(t2, 1)
        else:
            S2 = S1 * 0.0
        k = S1 * 0.0 + 1.0
        dmin = S1 * 0.0 + INF
    return S0, S1, S2, k, dmin


@triton.jit
def _solve_tile(zs, tau, lo, hi, done, alpha, q, mode, tol, max_iter,
                SOLVER: tl.constexpr, F64: tl.constexpr):
    """Iterate on a tile held on chip until every row is done or max_iter passes.  Returns
    (τ, converged, passes, the bound on |Σp − 1| at τ from the last pass: ``_sum_dev_bound``;
    0 for rows that took no pass)."""
    NEED_S2: tl.constexpr = SOLVER == 0 or SOLVER == 3
    conv = done
    fprev = tau * 0.0 + INF
    nprev = done & False
    it = (tau * 0.0).to(tl.int32)
    sdev = tau * 0.0
    n = tl.sum(it, 0)
    while (n < max_iter) & (tl.sum((~done).to(tl.int32), 0) > 0):
        S0, S1, S2, k, dmin = _tile_sums(zs, tau, q, mode, NEED_S2, F64)
        it += (~done).to(tl.int32)
        act = ~done
        t_old = tau
        tau, lo, hi, done, conv, fprev, nprev = _update(
            tau, lo, hi, done, conv, fprev, nprev, S0, S1, S2, k, dmin, alpha, q, mode, tol,
            SOLVER, F64)
        sdev = tl.where(act, _sum_dev_bound(S0, S1, S2, t_old, tau, q), sdev)
        n += 1
    return tau, conv, it, sdev


@triton.jit
def _levels_start(zsv, hsub, alpha, q, mode, NLEV: tl.constexpr, G: tl.constexpr,
                  F64: tl.constexpr):
    """A start τ₀ for the threshold of the [1, C] tile ``zsv`` that lies below its root, from
    one round of reductions: f of the maxima of G consecutive entries (a subset, so its f is
    below the tile's) at NLEV levels of [−1, hsub], the highest level where it is ≥ 0, then
    one Newton step there (α ≤ 2: f convex, so the step stays below the subset's root)."""
    C: tl.constexpr = zsv.shape[1]
    g = tl.max(tl.reshape(zsv, [C // G, G]), 1)                 # [C/G] group maxima
    j = tl.arange(0, NLEV)
    w = (hsub + 1.0) / NLEV                                      # [1]
    lev = w * j.to(w.dtype) - 1.0                                # [NLEV]
    zz = g[None, :] + (lev * 0.0)[:, None]                       # [NLEV, C/G]
    qq = q + lev * 0.0
    S0, S1, S2, k, dmin = _tile_sums(zz, lev, qq, mode, False, F64)
    jsel = tl.max(tl.where(S0 >= 1.0, j, 0), 0, keep_dims=True)             # [1]
    pick = j == jsel
    lo = tl.sum(tl.where(pick, lev, 0.0), 0, keep_dims=True)
    F = tl.sum(tl.where(pick, S0, 0.0), 0, keep_dims=True)
    fp = tl.sum(tl.where(pick, qq * S1, 0.0), 0, keep_dims=True)
    newton = lo + (F - 1.0) / tl.maximum(fp, 1e-30)
    t0 = tl.where((alpha <= 2.0) & (fp > 0), tl.maximum(newton, lo), lo)
    return tl.minimum(t0, hsub)


@triton.jit
def _start_from_subset(tsub, csub, hi, F64: tl.constexpr):
    """Initial τ from a subset's threshold τ_sub ≤ τ* (less a relative margin that covers
    rounding), clipped to the bracket [−1, hi]; −1 where the subset solve did not converge."""
    if F64:
        margin = 1e-13
    else:
        margin = 2e-6
    tau = tl.where(csub, tl.maximum(tsub - margin * tl.abs(tsub), -1.0), -1.0)
    return tl.minimum(tau, hi)


@triton.jit
def _load_alpha(ALPHA, alpha_s, rows, rmask, SCALAR: tl.constexpr):
    """Per-row α: ``alpha_s`` for every row (SCALAR: a python-float α, no α tensor is
    allocated or read) or ALPHA[rows]; 2.0 on masked rows."""
    if SCALAR:
        a = tl.where(rmask, alpha_s, 2.0)
    else:
        a = tl.load(ALPHA + rows, mask=rmask, other=2.0)
    return a


@triton.jit
def _row_mode(alpha, valid):
    """Power mode of a program: 0 if every valid row has α = 2 (q = 1), 1 if every one has
    α = 1.5 (q = 2), 3 if every one has α = 1.25 (q = 4: products, no pow), else 2
    (generic powers exp2(e·log2 d))."""
    amin = tl.min(tl.where(valid, alpha, INF), 0)
    amax = tl.max(tl.where(valid, alpha, -INF), 0)
    same = amin == amax
    mode = tl.where(same & (amin == 2.0), 0,
                    tl.where(same & (amin == 1.5), 1, tl.where(same & (amin == 1.25), 3, 2)))
    return mode


@triton.jit
def _upper_bound(alpha, d_eff, F64: tl.constexpr):
    """hi = −d_eff^{1−α}: upper end of the bracket."""
    return -_pow_pos(tl.maximum(d_eff, 1.0), 1.0 - alpha, F64)


@triton.jit
def _tile_cols(start, lane, U: tl.constexpr):
    """Columns of the [U, CHUNK] tile of a streamed row at ``start``: start + u·CHUNK + lane
    (U consecutive chunks; every loop step loads all U at once, so U chunk loads are in
    flight per round trip instead of one)."""
    CH: tl.constexpr = lane.shape[0]
    return start + tl.arange(0, U)[:, None] * CH + lane[None, :]


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
def _max_nan(a, b):
    """max that propagates NaN (a reduction's combine function)."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _fold_sum(t, U: tl.constexpr):
    """Sum of a [U, CHUNK] tile's U chunks, per lane ([1, CHUNK]; in-thread adds)."""
    if U > 1:
        t = tl.sum(t, 0, keep_dims=True)
    return t


@triton.jit
def _fold_min(t, U: tl.constexpr):
    """Per-lane minimum of a [U, CHUNK] tile's U chunks ([1, CHUNK])."""
    if U > 1:
        t = tl.min(t, 0, keep_dims=True)
    return t


@triton.jit
def _fold_second(t, m1, U: tl.constexpr):
    """Per-lane second largest of a [U, CHUNK] tile's U chunks given their per-lane maximum
    ``m1`` (``_fold_max_nan``), as a multiset (a value held twice in a lane is both; −inf where
    a lane has one entry): with m1, two distinct entries of the row per lane, whatever the ties."""
    if U > 1:
        eq = t == m1
        m2 = tl.max(tl.where(eq, -INF, t), 0, keep_dims=True)
        m2 = tl.where(tl.sum(eq.to(tl.int32), 0, keep_dims=True) >= 2, m1, m2)
    else:
        m2 = tl.zeros_like(t) - INF      # (not t·0 − ∞: NaN for t = ±∞)
    return m2


@triton.jit
def _fold_max_nan(t, U: tl.constexpr, REDUCE: tl.constexpr):
    """Per-lane NaN-propagating maximum of a [U, CHUNK] tile's U chunks ([1, CHUNK]).
    REDUCE (compiled launches): one ``tl.reduce`` with a NaN-propagating max; else (the
    interpreter, whose generic reduce calls the combine function per element in Python, 10×
    slower on 10⁶-entry rows) ``tl.max`` and a NaN test: the same values."""
    if U > 1:
        if REDUCE:
            t = tl.reduce(t, 0, _max_nan, keep_dims=True)
        else:
            isnan = tl.max((t != t).to(tl.int32), 0, keep_dims=True) > 0
            t = tl.where(isnan, INF - INF, tl.max(t, 0, keep_dims=True))
    return t


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
# forward kernels
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


# ----------------------------------------------------------------------------------------
# backward kernel
# ----------------------------------------------------------------------------------------


@triton.jit
def _bwd_terms(p, dy, alpha, mode, F64: tl.constexpr):
    """u = p^{2−α} on the support (0 elsewhere) and h = p log p (0 off the support)."""
    pos = p > 0
    ps = tl.where(pos, p, 1.0)
    if mode == 0:
        u = pos.to(p.dtype)
    elif mode == 1:
        u = tl.where(pos, _sqrt(ps, F64), 0.0)
    else:
        u = tl.where(pos, _pow_pos(ps, (2.0 - alpha)[:, None], F64), 0.0)
    if F64:
        h = tl.where(pos, p * tl.log(ps), 0.0)
    else:
        h = tl.where(pos, p * (tl.log2(ps) * 0.6931471805599453), 0.0)
    return u, h


@triton.jit
def _plog2(p, h, F64: tl.constexpr):
    """p log²p = h log p (0 off the support), for ∂p/∂α at α → 1."""
    pos = p > 0
    ps = tl.where(pos, p, 1.0)
    if F64:
        lg = tl.log(ps)
    else:
        lg = tl.log2(ps) * 0.6931471805599453
    return h * lg


@triton.jit
def _bwd_kernel(P, DY, ALPHA, DX, DALPHA, R, D, stride_p, stride_dy, stride_dx, near_one, alpha_s,
                BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, ONE_PASS: tl.constexpr,
                NEED_ALPHA: tl.constexpr, F64: tl.constexpr, MODE: tl.constexpr,
                SCALAR_ALPHA: tl.constexpr = False, U: tl.constexpr = 1):
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    r64 = rows.to(tl.int64)
    cols0 = tl.arange(0, BLOCK_D)
    alpha = _load_alpha(ALPHA, alpha_s, rows, rmask, SCALAR_ALPHA)
    if F64:
        alpha = alpha.to(tl.float64)
    else:
        alpha = alpha.to(tl.float32)
    if MODE >= 0:
        mode = MODE
    else:
        mode = _row_mode(alpha, rmask)
    zero2 = (alpha * 0.0)[:, None] + (cols0 * 0)[None, :]
    if ONE_PASS:
        m2 = rmask[:, None] & (cols0 < D)[None, :]
        p = tl.load(P + r64[:, None] * stride_p + cols0[None, :], mask=m2, other=0.0).to(zero2.dtype)
        dy = tl.load(DY + r64[:, None] * stride_dy + cols0[None, :], mask=m2, other=0.0).to(zero2.dtype)
        u, h = _bwd_terms(p, dy, alpha, mode, F64)
        su = tl.sum(u, 1)
        suy = tl.sum(u * dy, 1)
        c = suy / su
        dx = u * dy - u * c[:, None]
        tl.store(DX + r64[:, None] * stride_dx + cols0[None, :], dx.to(DX.dtype.element_ty), mask=m2)
        if NEED_ALPHA:
            spy = tl.sum(p * dy, 1)
            sh = tl.sum(h, 1)
            shy = tl.sum(h * dy, 1)
            g = _plog2(p, h, F64)
            sg = tl.sum(g, 1)
            sgy = tl.sum(g * dy, 1)
    else:
        au = zero2
        auy = zero2
        apy = zero2
        ah = zero2
        ahy = zero2
        ag = zero2
        agy = zero2
        # streamed rows (BLOCK_R = 1): U chunks of BLOCK_D per step as a [U, BLOCK_D] tile, folded
        # into per-lane sums (as in the forward's streaming kernel)
        for start in range(0, D, U * BLOCK_D):
            cols = _tile_cols(start, cols0, U)
            m2 = rmask[:, None] & (cols < D)
            p = tl.load(P + r64[:, None] * stride_p + cols, mask=m2, other=0.0).to(zero2.dtype)
            dy = tl.load(DY + r64[:, None] * stride_dy + cols, mask=m2, other=0.0).to(zero2.dtype)
            u, h = _bwd_terms(p, dy, alpha, mode, F64)
            au += _fold_sum(u, U)
            auy += _fold_sum(u * dy, U)
            if NEED_ALPHA:
                apy += _fold_sum(p * dy, U)
                ah += _fold_sum(h, U)
                ahy += _fold_sum(h * dy, U)
                g = _plog2(p, h, F64)
                ag += _fold_sum(g, U)
                agy += _fold_sum(g * dy, U)
        su = tl.sum(au, 1)
        suy = tl.sum(auy, 1)
        c = suy / su
        spy = tl.sum(apy, 1)
        sh = tl.sum(ah, 1)
        shy = tl.sum(ahy, 1)
        sg = tl.sum(ag, 1)
        sgy = tl.sum(agy, 1)
        for start in range(0, D, U * BLOCK_D):
            cols = _tile_cols(start, cols0, U)
            m2 = rmask[:, None] & (cols < D)
            p = tl.load(P + r64[:, None] * stride_p + cols, mask=m2, other=0.0).to(zero2.dtype)
            dy = tl.load(DY + r64[:, None] * stride_dy + cols, mask=m2, other=0.0).to(zero2.dtype)
            u, h = _bwd_terms(p, dy, alpha, mode, F64)
            dx = u * dy - u * c[:, None]
            tl.store(DX + r64[:, None] * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=m2)
    if NEED_ALPHA:
        # Σ ∂p/∂α·dy = (Σp·dy − Σs·dy)/(α−1)² − (Σh·dy − (Σs·dy)Σh)/(α−1),  Σs·dy = c
        am1 = alpha - 1.0
        # the two terms diverge like (α−1)^−2 and cancel: within near_one of α = 1 use the
        # limit ∂p/∂α → (p/2)(Σ p log²p − log²p), i.e. dα → ½(Σp·dy · Σp log²p − Σp log²p·dy)
        near = am1 < near_one
        am1s = tl.where(near, 1.0, am1)
        da = (spy - c) / (am1s * am1s) - (shy - c * sh) / am1s
        da = tl.where(near, 0.5 * (spy * sg - sgy), da)
        tl.store(DALPHA + rows, da, mask=rmask)


# ----------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------


def _num_warps(elems: int, cfg: dict, stream: bool = False, block_d: int = 1024) -> int:
    ept = cfg["stream_elems_per_thread"] if stream else cfg["elems_per_thread"]
    if not stream and block_d <= 128:
        # short rows: a warp spans whole rows anyway; 8 per thread keeps the per-row state
        # vectors small (32 per thread spilled here)
        ept = min(ept, 8)
    return int(min(16, max(1, elems // (32 * ept))))


# host-side only (not read by the kernels): read once, like attention.INTERPRET
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _maxnreg(cap: int) -> dict:
    """Launch option capping a kernel's registers per thread (ptxas ``maxnreg``); none when 0
    or under the interpreter."""
    if not cap or _INTERPRET:
        return {}
    return {"maxnreg": int(cap)}


def _fast_mode(mode: int, f64: bool) -> bool:
    """Whether a launch runs a compile-time power branch without pow (α ∈ {2, 1.5, 1.25} as a
    python float) in float32: the launches the streaming defaults were measured with."""
    return mode in (0, 1, 3) and not f64


def _chunk(R: int, chunk: int | None, fast: bool = True, write_first: bool = False) -> int:
    """Streaming chunk width: wider chunks (more warps per row) when rows are few; above 512
    rows 1024 (4 warps, U chunks per step) for the fast modes, 2048 (8 warps) for the others
    (α tensors and generic powers keep the layout they were measured with) and for the
    write-first launches (whose 2048 lane maxima hold the support more often)."""
    if chunk is not None:
        return int(chunk)
    if CHUNK is not None:
        return int(CHUNK)
    return 4096 if R <= 512 else (1024 if fast and not write_first else 2048)


def _prefetch(R: int, cfg: dict) -> int:
    """Whether the streaming kernel prefetches the next chunk (``CONFIG["stream_prefetch"]``)."""
    pf = int(cfg["stream_prefetch"])
    return int(R <= 512) if pf < 0 else int(pf > 0)


def _unroll(D: int, chunk: int, cfg: dict, fast: bool = True) -> int:
    """Chunks per streaming loop step, a power of two, no more than the row needs:
    ``CONFIG["stream_unroll"]`` for the fast modes, ``CONFIG["stream_unroll_generic"]`` for α
    tensors, generic powers and float64 (more chunks per step were not measured for them, and
    their kernels spill more with them)."""
    return _steps(D, chunk, cfg, "stream_unroll" if fast else "stream_unroll_generic")


def _renorm(cfg: dict, key: str) -> bool:
    """``CONFIG[key]`` (``stream_renorm`` / ``onchip_renorm``) checked: 1 unless timing."""
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v not in (0, 1):
        raise ValueError(f"{key} must be 0 or 1, got {v!r}")
    return bool(v)


def _top2(mode: int, sid: int, cfg: dict, R: int) -> bool:
    """Whether a streamed launch's subset holds two entries per lane (``CONFIG["stream_top2"]``:
    0 never, 1 always, −1 (default) with the auto solver and a python-float α: α ∈ {2, 1.5} at
    ≤ 512 rows (the 4096-wide chunks; above 512 rows it was slower) and α = 1.25 above 512 rows
    (a better start for its solver passes; no gain at ≤ 512 rows), as measured on an H100)."""
    t2 = cfg["stream_top2"]
    if isinstance(t2, bool) or not isinstance(t2, int) or t2 not in (-1, 0, 1):
        raise ValueError(f"stream_top2 must be -1, 0 or 1, got {t2!r}")
    if t2 == -1:
        return sid == 0 and ((mode in (0, 1) and R <= 512) or (mode == 3 and R > 512))
    return t2 == 1


def _write_first(mode: int, sid: int, cfg: dict, R: int) -> bool:
    """Whether a streamed launch writes p first at the lane-maxima subset's root
    (``CONFIG["stream_write_first"]``: 0 never, 1 for α ∈ {2, 1.5}, 2 for α = 2, −1 (default)
    for α = 2, and for α = 1.5 above 512 rows or with the two-per-lane subset (``_top2``), as
    measured; only with a python-float α, whose compile-time mode is 0 / 1 there, and the auto
    solver)."""
    wf = cfg["stream_write_first"]
    if isinstance(wf, bool) or not isinstance(wf, int) or wf not in (-1, 0, 1, 2):
        raise ValueError(f"stream_write_first must be -1, 0, 1 or 2, got {wf!r}")
    if wf == -1:
        return sid == 0 and (mode == 0 or (mode == 1 and (R > 512 or _top2(mode, sid, cfg, R))))
    return sid == 0 and ((wf == 1 and mode in (0, 1)) or (wf == 2 and mode == 0))


def _merged_config(config: dict | None) -> dict:
    """``CONFIG`` with the overrides of ``config`` (the launchers' timing knobs); a key that
    ``CONFIG`` does not have is an error (a misspelt or removed knob would otherwise time the
    default kernels under another name)."""
    if config is None:
        return CONFIG
    unknown = sorted(set(config) - set(CONFIG))
    if unknown:
        raise ValueError(f"config: unknown keys {unknown}; known: {sorted(CONFIG)}")
    return {**CONFIG, **config}


def _steps(D: int, chunk: int, cfg: dict, key: str) -> int:
    """``cfg[key]`` chunks per loop step (a power of two, checked), at most the row's chunk
    count rounded up to a power of two."""
    u = int(cfg[key])
    if u < 1 or u & (u - 1):
        raise ValueError(f"{key} must be a power of two >= 1, got {u}")
    return max(1, min(u, next_pow2(cdiv(D, chunk))))


def _onchip_blocks(R: int, D: int, cfg: dict) -> tuple[int, int]:
    block_d = next_pow2(D)
    block_r = max(1, min(cfg["tile_elems"] // block_d, next_pow2(R)))
    return block_r, block_d


#: within this of α = 1 the backward's ∂/∂α uses its limit at 1 (eps^{1/3}), by float64-ness
_NEAR_ONE = {False: float(torch.finfo(torch.float32).eps ** (1.0 / 3.0)),
             True: float(torch.finfo(torch.float64).eps ** (1.0 / 3.0))}


def softmax_below(dtype: torch.dtype) -> float:
    """Rows with α − 1 ≤ this are softmax rows (``SOFTMAX_BELOW``, by compute dtype)."""
    return SOFTMAX_BELOW[torch.float64 if dtype == torch.float64 else torch.float32]


def _soft_below_arg(dtype: torch.dtype, scalar: bool, alpha_s: float) -> float:
    """The kernels' ``soft_below``: rows with α − 1 ≤ it are softmax rows.  A python-float α
    (``scalar``: float32 computation, passed to the kernel as float32) was decided on the host in
    float64 (``_mode_of``, as the CPU paths decide); the kernel's float32 re-test could disagree
    near the threshold (α = 1.0001: 1.0001 − 1 ≤ 10⁻⁴ in float64, not in float32), and would
    then solve with the softmax stand-in's power.  So it gets the host's answer: always / never."""
    below = softmax_below(dtype)
    if scalar:
        return 1e30 if alpha_s - 1.0 <= below else -1.0
    return below


def _mode_of(alpha: float, forward: bool, dtype: torch.dtype) -> int:
    """Compile-time power mode for a row-uniform α known on the host (see ``_row_mode``); the
    forward treats softmax rows with α = 2 as a stand-in (they skip the solve)."""
    if forward and float(alpha) - 1.0 <= softmax_below(dtype):
        return 0
    return {2.0: 0, 1.5: 1, 1.25: 3}.get(float(alpha), 2)


def _alpha_rows(alpha, x: torch.Tensor, forward: bool,
                f64: bool) -> tuple[torch.Tensor | None, float, int]:
    """(per-row α tensor or None, scalar α, MODE).  A tensor gives (it, 0, −1): the kernels pick
    the power mode per program at run time, no host synchronisation.  A python float gives a
    compile-time mode and, in float32 computation, no tensor at all (the kernels take it as a
    scalar argument: no allocation and no fill kernel per call); float64 computation keeps a
    float64 tensor (Triton passes python floats to kernels as float32)."""
    if isinstance(alpha, torch.Tensor):
        return alpha, 0.0, -1
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a float or a tensor, got {type(alpha).__name__}")
    mode = _mode_of(alpha, forward, torch.float64 if f64 else torch.float32)
    if not f64:
        return None, float(alpha), mode
    return (torch.full((x.shape[0],), float(alpha), dtype=torch.float64, device=x.device),
            0.0, mode)


def _check(x: torch.Tensor, alpha: torch.Tensor | None) -> None:
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (R, d), got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"unsupported dtype {x.dtype}")
    if alpha is None:
        return
    if alpha.shape != (x.shape[0],):
        raise ValueError(f"alpha must have shape ({x.shape[0]},), got {tuple(alpha.shape)}")
    if alpha.device != x.device:
        raise ValueError("alpha must be on x's device")


def entmax_forward(x: torch.Tensor, alpha: torch.Tensor | float, solver: str = "auto",
                   tol: float | None = None, max_iter: int | None = None,
                   max_onchip: int | None = None, chunk: int | None = None,
                   config: dict | None = None) -> RowwiseResult:
    """Row-wise α-entmax of a contiguous (R, d) tensor; α: (R,) float32 tensor (> 1), or a
    python float shared by every row (the kernel is then specialised for its power).

    Computes in float32 (float64 for float64 x), returns p in x's dtype and per-row τ (in the
    prepared space), support size, iteration count and convergence flag. No host
    synchronisation. ``tol`` is the relative step tolerance on τ (default 2·eps of the compute
    dtype); ``max_iter`` caps solver passes (default 100); ``max_onchip`` overrides
    ``MAX_ONCHIP`` (rows longer than it are streamed) and ``chunk`` (a power of two) the
    streaming chunk width ``CHUNK``; ``config`` overrides entries of ``CONFIG`` (all three
    mainly for tests and benchmarks).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    f64 = x.dtype == torch.float64
    if x.dim() == 2:
        alpha, alpha_s, mode = _alpha_rows(alpha, x, True, f64)
    _check(x, alpha)
    x = x.contiguous()
    scalar = alpha is None
    alpha = x if scalar else alpha.contiguous()   # x: a placeholder pointer, never read
    R, D = x.shape
    cdt = torch.float64 if f64 else torch.float32
    if tol is None:
        tol = 2.0 * torch.finfo(cdt).eps
    if max_iter is None:
        max_iter = 200 if solver == "bisect" else 100  # bisection: one bit per pass (as on the CPU)
    p = torch.empty_like(x)
    tau = torch.empty(R, dtype=cdt, device=x.device)
    supp = torch.empty(R, dtype=torch.int32, device=x.device)
    iters = torch.empty(R, dtype=torch.int32, device=x.device)
    conv = torch.empty(R, dtype=torch.int8, device=x.device)
    res = RowwiseResult(p, tau, supp, iters, conv.view(torch.bool))
    if R == 0 or D == 0:
        return res
    sid = _SOLVER_ID[solver]
    cfg = _merged_config(config)
    renorm_onchip, renorm_stream = _renorm(cfg, "onchip_renorm"), _renorm(cfg, "stream_renorm")
    limit = MAX_ONCHIP if max_onchip is None else max_onchip
    if D <= limit:
        block_r, block_d = _onchip_blocks(R, D, cfg)
        group = cfg["group"] if (cfg["group"] > 1 and block_d >= cfg["group_min_d"]) else 0
        grid = (cdiv(R, block_r),)
        _fwd_onchip_kernel[grid](
            x, alpha, p, tau, supp, iters, conv, R, D, x.stride(0), p.stride(0),
            float(tol), int(max_iter), _soft_below_arg(x.dtype, scalar, alpha_s), alpha_s,
            BLOCK_R=block_r, BLOCK_D=block_d, SOLVER=sid, F64=f64, GROUP=group, MODE=mode,
            SCALAR_ALPHA=scalar, RENORM=renorm_onchip,
            num_warps=_num_warps(block_d * block_r, cfg, block_d=block_d),
            **_maxnreg(cfg["onchip_maxnreg"]))
    else:
        fast = _fast_mode(mode, f64)
        wf = _write_first(mode, sid, cfg, R)
        ch = _chunk(R, chunk, fast, wf)
        pf = _prefetch(R, cfg)
        unroll = _unroll(D, ch, cfg, fast)
        _fwd_stream_kernel[(R,)](
            x, alpha, p, tau, supp, iters, conv, D, x.stride(0), p.stride(0),
            float(tol), int(max_iter), _soft_below_arg(x.dtype, scalar, alpha_s), alpha_s,
            CHUNK=ch, SOLVER=sid, F64=f64, MODE=mode, PF=pf, SCALAR_ALPHA=scalar,
            LEV=cfg["stream_levels"], U=unroll, REDUCE_NAN=not _INTERPRET,
            WRITE_FIRST=wf, TOP2=_top2(mode, sid, cfg, R),
            RENORM=renorm_stream,
            num_warps=_num_warps(ch, cfg, stream=True),
            **_maxnreg(cfg["stream_maxnreg"]))
    return res


def entmax_backward(p: torch.Tensor, grad: torch.Tensor, alpha: torch.Tensor | float,
                    need_alpha_grad: bool, max_onchip: int | None = None,
                    chunk: int | None = None,
                    config: dict | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Vector–Jacobian product of row-wise entmax from its output p (R, d).

    dx = u⊙dy − u⟨u, dy⟩/Σu with u = p^{2−α} on the support; if ``need_alpha_grad``,
    dα_r = ⟨∂p/∂α, dy⟩ with ∂p/∂α = (p − s)/(α−1)² − (h − sΣh)/(α−1), s = u/Σu, h = p log p.
    Returns (dx in grad's dtype, dα (R,) float32/float64 or None).
    """
    f64 = p.dtype == torch.float64 or grad.dtype == torch.float64
    if p.dim() == 2:
        alpha, alpha_s, mode = _alpha_rows(alpha, p, False, f64)
    _check(p, alpha)
    p = p.contiguous()
    grad = grad.contiguous()
    scalar = alpha is None
    alpha = p if scalar else alpha.contiguous()   # p: a placeholder pointer, never read
    R, D = p.shape
    cdt = torch.float64 if f64 else torch.float32
    dx = torch.empty_like(grad)
    dalpha = torch.empty(R, dtype=cdt, device=p.device) if need_alpha_grad else None
    if R == 0 or D == 0:
        if dalpha is not None:
            dalpha.zero_()
        return dx, dalpha
    cfg = _merged_config(config)
    one_pass = D <= (MAX_ONCHIP if max_onchip is None else max_onchip)
    if one_pass:
        block_r, block_d = _onchip_blocks(R, D, cfg)
    else:
        block_r, block_d = 1, _chunk(R, chunk, _fast_mode(mode, f64))
    grid = (cdiv(R, block_r),)
    _bwd_kernel[grid](
        p, grad, alpha, dx, dalpha if dalpha is not None else dx, R, D,
        p.stride(0), grad.stride(0), dx.stride(0), _NEAR_ONE[f64], alpha_s,
        BLOCK_R=block_r, BLOCK_D=block_d, ONE_PASS=one_pass, NEED_ALPHA=need_alpha_grad,
        F64=f64, MODE=mode, SCALAR_ALPHA=scalar,
        U=1 if one_pass else _steps(D, block_d, cfg, "bwd_unroll"),
        num_warps=_num_warps(block_d * block_r, cfg, stream=not one_pass, block_d=block_d))
    return dx, dalpha
