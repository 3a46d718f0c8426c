"""Batched row-wise α-entmax on the GPU (Triton): forward (τ and p) and backward — the design,
the launch configuration and the launchers.  The kernels are in the modules beside this one:
``rowwise_common`` (jit helpers: powers, the solver update, tile sums, the on-chip solve),
``rowwise_onchip`` (rows up to ``MAX_ONCHIP``), ``rowwise_stream`` (longer rows) and
``rowwise_backward``; the naive reference is ``rowwise_reference.py``.

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

from ._host import cdiv, next_pow2
from .rowwise_backward import _bwd_kernel
from .rowwise_onchip import _fwd_onchip_kernel
from .rowwise_stream import _fwd_stream_kernel

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
