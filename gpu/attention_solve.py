"""The forward's threshold solve: exact τ' per query row from the candidate buffers (no
QKᵀ), sparse sweeps where a row overflowed or the block is dense (α = 1.25 with Halley steps
and certified stops), and the gathered output of blocks whose rows kept every candidate
(see ``gpu/attention.py``)."""
from __future__ import annotations

import triton
import triton.language as tl

from .attention_common import (
    _NOSPEC_T, _block_list, _kend, _nvis, _offset, _pow_pu, _query_start, _tile_z,
)
from .attention_copy import _collect, _store_rows


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
