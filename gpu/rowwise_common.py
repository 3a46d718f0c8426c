"""Jit helpers of the row-wise entmax kernels (``gpu/rowwise.py`` describes the design):
powers without pow for α ∈ {2, 1.5, 1.25}, the solver update shared by every solver,
per-row sums over a tile, the on-chip solve and the subset start, the Σp checks."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


INF = tl.constexpr(float("inf"))


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


# ----------------------------------------------------------------------------------------
# tiles of streamed rows ([U, CHUNK]: U chunks per loop step)
# ----------------------------------------------------------------------------------------


@triton.jit
def _tile_cols(start, lane, U: tl.constexpr):
    """Columns of the [U, CHUNK] tile of a streamed row at ``start``: start + u·CHUNK + lane
    (U consecutive chunks; every loop step loads all U at once, so U chunk loads are in
    flight per round trip instead of one)."""
    CH: tl.constexpr = lane.shape[0]
    return start + tl.arange(0, U)[:, None] * CH + lane[None, :]


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
