"""The row-wise backward kernel: dx = u ⊙ dy − u·⟨u, dy⟩/Σu with u = p^{2−α}, and ∂/∂α for
a per-row α tensor that requires grad (see ``gpu/rowwise.py``)."""
from __future__ import annotations

import triton
import triton.language as tl

from .rowwise_common import _fold_sum, _load_alpha, _pow_pos, _row_mode, _sqrt, _tile_cols


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
def _load_p_dy(P, DY, r64, cols, m2, stride_p, stride_dy, like):
    """The p and dy tiles of rows ``r64`` at columns ``cols`` (0 where not ``m2``), in the
    compute dtype of ``like``."""
    p = tl.load(P + r64[:, None] * stride_p + cols, mask=m2, other=0.0).to(like.dtype)
    dy = tl.load(DY + r64[:, None] * stride_dy + cols, mask=m2, other=0.0).to(like.dtype)
    return p, dy


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
        p, dy = _load_p_dy(P, DY, r64, cols0[None, :], m2, stride_p, stride_dy, zero2)
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
            p, dy = _load_p_dy(P, DY, r64, cols, m2, stride_p, stride_dy, zero2)
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
            p, dy = _load_p_dy(P, DY, r64, cols, m2, stride_p, stride_dy, zero2)
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
