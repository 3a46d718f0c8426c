"""Plain dense PyTorch float64 reference for the row-wise entmax kernels in ``rowwise.py``.

Same math and conventions as the Triton kernels, written for clarity, not speed. Works on
any device. The tests compare the kernels against it ("reference" = this file, "kernel" =
``rowwise.py``).

Math (rows of length d, α > 1, q = 1/(α−1)):

    zs = (α−1)(x − max x)                        (prepared row, max zs = 0)
    p_i = [zs_i − τ]_+^q,   Σ_i p_i = 1,   τ ∈ [−1, −d_eff^{1−α}]

τ is found by bisection on the bracket (f(τ) = Σ[zs−τ]_+^q − 1 is decreasing), to float64
resolution (``n_iter=80`` halvings of a bracket narrower than 1). The result is then made
differentiable by one Newton step from the detached root,

    τ̃ = τ* + f(τ*) / (q Σ_S d^{q−1}),

whose derivative at the fixed point f(τ*) = 0 is the implicit-function derivative of τ*, so
``torch.autograd`` through :func:`entmax_reference` gives the exact Jacobian and ∂p/∂α.

Row conventions: −inf entries get p = 0; a row that is all −inf, or holds a NaN or +inf,
gives an all-NaN row.
"""
from __future__ import annotations

import torch

__all__ = ["entmax_reference", "tau_reference", "entmax_backward_reference"]


def _bad_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows that produce NaN: any NaN, any +inf, or no finite entry."""
    return torch.isnan(x).any(-1) | torch.isposinf(x).any(-1) | torch.isneginf(x).all(-1)


def _prepare(x: torch.Tensor, alpha: torch.Tensor):
    """Return zs = (α−1)(x − rowmax) in float64 (bad rows zeroed), the bad-row mask, d_eff."""
    x = x.to(torch.float64)
    a = alpha.to(torch.float64).reshape(-1, 1)
    bad = _bad_rows(x)
    xs = torch.where(bad[:, None], torch.zeros_like(x), x)
    m = xs.max(dim=-1, keepdim=True).values.detach()
    fin = torch.isfinite(xs)
    # −inf entries stay −inf without (α−1)·(−inf) in the graph (its α-gradient would be NaN)
    zs = torch.where(fin, (a - 1.0) * torch.where(fin, xs - m, torch.zeros_like(xs)),
                     torch.full_like(xs, -float("inf")))
    d_eff = torch.isfinite(xs).sum(-1).clamp_min(1).to(torch.float64)
    return zs, bad, d_eff


def _f(zs: torch.Tensor, tau: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """f(τ) = Σ [zs − τ]_+^q − 1, per row."""
    d = torch.clamp(zs - tau[:, None], min=0.0)
    return (d ** q[:, None]).sum(-1) - 1.0


@torch.no_grad()
def tau_reference(x: torch.Tensor, alpha: torch.Tensor, n_iter: int = 80) -> torch.Tensor:
    """τ* in the prepared space by bisection on [−1, −d_eff^{1−α}] (float64, detached)."""
    zs, bad, d_eff = _prepare(x, alpha)
    a = alpha.to(torch.float64).reshape(-1)
    q = 1.0 / (a - 1.0)
    lo = torch.full_like(d_eff, -1.0)
    hi = -(d_eff ** (1.0 - a))
    for _ in range(n_iter):
        mid = 0.5 * (lo + hi)
        pos = _f(zs, mid, q) >= 0
        lo = torch.where(pos, mid, lo)
        hi = torch.where(pos, hi, mid)
    tau = 0.5 * (lo + hi)
    return torch.where(bad, torch.full_like(tau, float("nan")), tau)


def entmax_reference(x: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """Differentiable float64 α-entmax over the last axis of a 2-D tensor ``x`` (R, d).

    ``alpha`` is a float or an (R,) tensor (> 1); gradients flow to ``x`` and ``alpha``.
    Returns p in float64.
    """
    if not torch.is_tensor(alpha):
        alpha = torch.full((x.shape[0],), float(alpha), dtype=torch.float64, device=x.device)
    a = alpha.to(torch.float64).reshape(-1)
    zs, bad, _ = _prepare(x, a)
    q = 1.0 / (a - 1.0)
    tau0 = tau_reference(x.detach(), a.detach())
    tau0 = torch.where(bad, torch.zeros_like(tau0), tau0)
    # One Newton step from the detached root: value τ*, derivative = implicit derivative.
    d0 = torch.clamp(zs - tau0[:, None], min=0.0)
    pos = d0 > 0
    f0 = torch.where(pos, d0, torch.zeros_like(d0)).pow(q[:, None]).sum(-1) - 1.0
    dq1 = torch.where(pos, torch.where(pos, d0, torch.ones_like(d0)) ** (q[:, None] - 1.0),
                      torch.zeros_like(d0)).sum(-1)
    tau = tau0 + f0 / (q * dq1)
    d = torch.clamp(zs - tau[:, None], min=0.0)
    safe = torch.where(d > 0, d, torch.ones_like(d))
    p = torch.where(d > 0, safe ** q[:, None], torch.zeros_like(d))
    return torch.where(bad[:, None], torch.full_like(p, float("nan")), p)


def entmax_backward_reference(p: torch.Tensor, dy: torch.Tensor, alpha: torch.Tensor):
    """Closed-form backward (float64): dx = u⊙dy − u⟨u,dy⟩/Σu, u = p^{2−α} on the support;
    dα = ⟨∂p/∂α, dy⟩ with ∂p/∂α = (p − s)/(α−1)² − (h − sΣh)/(α−1), s = u/Σu, h = p log p."""
    p = p.to(torch.float64)
    dy = dy.to(torch.float64)
    a = alpha.to(torch.float64).reshape(-1, 1)
    pos = p > 0
    ps = torch.where(pos, p, torch.ones_like(p))
    u = torch.where(pos, ps ** (2.0 - a), torch.zeros_like(p))
    su = u.sum(-1, keepdim=True)
    dx = u * dy - u * (u * dy).sum(-1, keepdim=True) / su
    s = u / su
    h = torch.where(pos, p * torch.log(ps), torch.zeros_like(p))
    dpda = (p - s) / (a - 1.0) ** 2 - (h - s * h.sum(-1, keepdim=True)) / (a - 1.0)
    return dx, (dpda * dy).sum(-1)
