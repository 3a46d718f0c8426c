"""Dense, naive reference for α-entmax attention (any device, float64-capable).

This is the plain PyTorch version that the fused Triton kernels in ``attention.py`` are tested
against.  It materialises the full (Nq × Nk) score matrix, so it is O(N²) in memory: use it for
tests, for small problems and as the fallback for the gradient with respect to α.

Math (α > 1; everything is per query row i, over the keys j that the row may see)::

    s_ij  = scale · q_i · k_j                      (scale defaults to 1/√D)
    p_ij  = [(α−1) s_ij − τ_i]_+^{1/(α−1)},        τ_i chosen so that Σ_j p_ij = 1
    out_i = Σ_j p_ij v_j

τ is found by bisection relative to the row maximum m_i = max_j (α−1)s_ij: with
z_ij = (α−1)s_ij − m_i ≤ 0, the shifted threshold τ'_i = τ_i − m_i lies in [−1, −n_i^{1−α}]
(n_i = number of visible keys), and f(τ') = Σ_j [z_ij − τ']_+^{1/(α−1)} − 1 is decreasing.
Bisection to a bracket of width 2⁻⁶⁰ is exact to float64 precision for every α > 1.

Backward (the entmax Jacobian): with u = p^{2−α} on the support (0 elsewhere),
``ds = u ⊙ (dp − ⟨u, dp⟩/Σu)``; the gradient with respect to α is

    ∂p/∂α = (p − ŝ)/(α−1)² − (h − ŝ Σh)/(α−1),   ŝ = u/Σu,  h = p log p.

Visibility: causal masking is bottom-right aligned (query i sees keys j ≤ i + Nk − Nq, as in
flash-attn and SDPA).  A query row that sees no key gets all-zero weights and a zero output.
α = 1 is softmax attention.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "entmax_rows",
    "causal_visibility",
    "entmax_attention_dense",
    "entmax_attention_varlen_dense",
]

_BISECT_ITERS = 64


def _solve_tau_bisect(z: torch.Tensor, alpha: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Shifted threshold τ' (z ≤ 0 relative to the row max, invisible entries −inf) by bisection."""
    q = 1.0 / (alpha - 1.0)
    n = valid.sum(-1, keepdim=True).clamp_min(1).to(z.dtype)
    lo = torch.full_like(n, -1.0)
    hi = -torch.pow(n, 1.0 - alpha)
    for _ in range(_BISECT_ITERS):
        mid = 0.5 * (lo + hi)
        f = torch.clamp(z - mid, min=0).pow(q).sum(-1, keepdim=True) - 1.0
        pos = f > 0
        lo = torch.where(pos, mid, lo)
        hi = torch.where(pos, hi, mid)
    return 0.5 * (lo + hi)


class _EntmaxRows(torch.autograd.Function):
    """α-entmax over the last axis; −inf entries are invisible; all-invisible rows give zeros."""

    @staticmethod
    def forward(ctx, s: torch.Tensor, alpha: torch.Tensor):  # type: ignore[override]
        valid = torch.isfinite(s)
        any_valid = valid.any(-1, keepdim=True)
        m = torch.where(valid, s, torch.full_like(s, -math.inf)).amax(-1, keepdim=True)
        m = torch.where(any_valid, m, torch.zeros_like(m))
        alpha_b = alpha.to(s.dtype).expand_as(m)
        z = torch.where(valid, (alpha_b - 1.0) * (s - m), torch.full_like(s, -math.inf))
        tau_rel = _solve_tau_bisect(z, alpha_b, valid)
        q = 1.0 / (alpha_b - 1.0)
        p = torch.clamp(z - tau_rel, min=0).pow(q)
        p = p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
        p = torch.where(any_valid, p, torch.zeros_like(p))
        tau_abs = torch.where(any_valid, tau_rel + (alpha_b - 1.0) * m, torch.zeros_like(m))
        ctx.save_for_backward(p, alpha)
        ctx.mark_non_differentiable(tau_abs)
        return p, tau_abs.squeeze(-1)

    @staticmethod
    def backward(ctx, dp: torch.Tensor, _dtau):  # type: ignore[override]
        p, alpha = ctx.saved_tensors
        alpha_b = alpha.to(p.dtype)
        supp = p > 0
        u = torch.where(supp, p.clamp_min(torch.finfo(p.dtype).tiny).pow(2.0 - alpha_b), torch.zeros_like(p))
        su = u.sum(-1, keepdim=True)
        su_safe = torch.where(su > 0, su, torch.ones_like(su))
        delta = (u * dp).sum(-1, keepdim=True) / su_safe
        ds = u * (dp - delta)
        dalpha = None
        if ctx.needs_input_grad[1]:
            shat = u / su_safe
            h = torch.where(supp, p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny)), torch.zeros_like(p))
            am1 = alpha_b - 1.0
            dp_da = (p - shat) / am1**2 - (h - shat * h.sum(-1, keepdim=True)) / am1
            g = (dp * dp_da)
            # sum over every axis along which alpha was broadcast
            dalpha = g.sum(-1, keepdim=True)
            while dalpha.dim() > alpha.dim():
                dalpha = dalpha.sum(0)
            for ax, size in enumerate(alpha.shape):
                if size == 1 and dalpha.shape[ax] != 1:
                    dalpha = dalpha.sum(ax, keepdim=True)
            dalpha = dalpha.to(alpha.dtype)
        return ds, dalpha


def entmax_rows(s: torch.Tensor, alpha: Union[float, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """α-entmax over the last axis of ``s`` (−inf = invisible). Returns (p, τ) with τ absolute.

    ``alpha`` is a float (> 1) or a tensor broadcastable to ``s.shape[:-1] + (1,)``. Rows
    without any finite entry get p = 0 (and τ = 0). Differentiable in ``s`` and ``alpha``.
    """
    if not torch.is_tensor(alpha):
        alpha = torch.tensor(float(alpha), dtype=s.dtype, device=s.device)
    return _EntmaxRows.apply(s, alpha)


def causal_visibility(nq: int, nk: int, device=None) -> torch.Tensor:
    """Bool (nq, nk): query i sees key j iff j ≤ i + nk − nq (bottom-right aligned)."""
    i = torch.arange(nq, device=device)[:, None]
    j = torch.arange(nk, device=device)[None, :]
    return j <= i + (nk - nq)


def entmax_attention_dense(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: Union[float, torch.Tensor] = 1.5,
    is_causal: bool = False,
    scale: Optional[float] = None,
    return_tau: bool = False,
):
    """Dense α-entmax attention, (B, H, Nq, D) × (B, Hkv, Nk, D) → (B, H, Nq, Dv).

    GQA: H must be a multiple of Hkv; query head h uses key/value head h // (H // Hkv).
    ``alpha``: float, or a tensor of shape (H,) (per head). α = 1 (float) is softmax.
    Computes in the dtype of ``q`` (pass float64 tensors for an exact reference).
    Returns ``out`` or ``(out, tau)`` with τ of shape (B, H, Nq) (absolute, see module doc).
    """
    B, H, Nq, D = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    G = H // Hkv
    if G > 1:
        k = k.repeat_interleave(G, dim=1)
        v = v.repeat_interleave(G, dim=1)
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if Nk == 0:  # no keys: zero rows and τ = 0, still part of the autograd graph (zero gradients)
        out = torch.matmul(s.to(v.dtype), v)
        return (out, s.new_zeros(B, H, Nq)) if return_tau else out
    vis = causal_visibility(Nq, Nk, device=q.device) if is_causal else torch.ones(Nq, Nk, dtype=torch.bool, device=q.device)
    # rows whose visible scores hold NaN or +inf, or are all −inf: NaN (the row convention of
    # the rest of the library; a row with no visible key is not one of them: it gives zeros)
    bad = ((torch.isnan(s) | (s == math.inf)) & vis).any(-1, keepdim=True)
    bad = bad | (((s == -math.inf) | ~vis).all(-1, keepdim=True) & vis.any(-1, keepdim=True))
    if is_causal:
        s = s.masked_fill(~vis, -math.inf)
    s = s.masked_fill(bad, 0.0)
    if not torch.is_tensor(alpha) and float(alpha) == 1.0:
        valid = torch.isfinite(s)
        any_valid = valid.any(-1, keepdim=True)
        p = torch.softmax(s.masked_fill(~any_valid, 0.0), dim=-1)
        p = torch.where(any_valid, p, torch.zeros_like(p))
        tau = torch.logsumexp(s, -1)
    else:
        if torch.is_tensor(alpha):
            a = alpha.to(device=q.device)
            a = a.reshape(1, H, 1, 1) if a.numel() == H and a.dim() == 1 else a.reshape(1, 1, 1, 1) if a.dim() == 0 else a
        else:
            a = float(alpha)
        p, tau = entmax_rows(s, a)
    out = torch.matmul(p.to(v.dtype), v)
    out = out.masked_fill(bad, math.nan)
    tau = tau.masked_fill(bad.squeeze(-1), math.nan)
    return (out, tau) if return_tau else out


def entmax_attention_varlen_dense(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: Sequence[int],
    cu_seqlens_k: Sequence[int],
    alpha: Union[float, torch.Tensor] = 1.5,
    is_causal: bool = False,
    scale: Optional[float] = None,
    return_tau: bool = False,
):
    """Packed variable-length version: q (Tq, H, D), k/v (Tk, Hkv, D), one sequence per
    consecutive pair of ``cu_seqlens``; each sequence is attended independently (loop over
    sequences, calling :func:`entmax_attention_dense`).  Returns ``out`` (Tq, H, Dv) or
    ``(out, tau)`` with τ of shape (Tq, H)."""
    cq = [int(x) for x in (cu_seqlens_q.tolist() if torch.is_tensor(cu_seqlens_q) else cu_seqlens_q)]
    ck = [int(x) for x in (cu_seqlens_k.tolist() if torch.is_tensor(cu_seqlens_k) else cu_seqlens_k)]
    outs, taus = [], []
    for b in range(len(cq) - 1):
        qs = q[cq[b]:cq[b + 1]].transpose(0, 1).unsqueeze(0)
        ks = k[ck[b]:ck[b + 1]].transpose(0, 1).unsqueeze(0)
        vs = v[ck[b]:ck[b + 1]].transpose(0, 1).unsqueeze(0)
        if qs.shape[2] == 0:
            continue
        o, t = entmax_attention_dense(qs, ks, vs, alpha=alpha, is_causal=is_causal, scale=scale,
                                      return_tau=True)
        outs.append(o[0].transpose(0, 1))
        taus.append(t[0].transpose(0, 1))
    # (no query rows at all: empty, and still part of the autograd graph)
    out = torch.cat(outs, 0) if outs else q.new_zeros(0, q.shape[1], v.shape[2]) + 0 * q.sum()
    if not return_tau:
        return out
    tau = torch.cat(taus, 0) if taus else q.new_zeros(0, q.shape[1])
    return out, tau
