r"""Fenchel-Young entmax loss (Blondel, Martins & Niculae, AISTATS 2019 / JMLR 2020).

With the Tsallis entropy :math:`H_\alpha(p) = (1 - \sum_j p_j^\alpha) / (\alpha(\alpha-1))`
(Shannon's at alpha = 1) and :math:`p^\star = \mathrm{entmax}_\alpha(x)`,

.. math:: L(x; y) = H_\alpha(p^\star) - H_\alpha(y) + \langle p^\star - y, x\rangle \ge 0,
          \qquad \nabla_x L = p^\star - y.

``y`` is a distribution, or class indices (one-hot, ``H(y) = 0``). The inner product is taken
only over entries where ``p* - y`` is nonzero, so ``-inf`` scores never produce ``0 * inf = NaN``
(the ``entmax`` package's issue #9); a target that puts mass on a ``-inf`` score gives ``+inf``.
By the envelope theorem, ``dL/dalpha = dH_alpha(p*)/dalpha - dH_alpha(y)/dalpha`` at fixed
distributions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _validate as V
from .api import entmax


def _log_moments(p: Any, xp: Any, k: int) -> list:
    """``[sum p log^j p for j = 1..k]`` per row (0 log 0 = 0)."""
    pos = p > 0
    logp = xp.log(xp.where(pos, p, xp.ones_like(p)))
    out, term = [], xp.where(pos, p, xp.zeros_like(p))
    for _ in range(k):
        term = term * logp
        out.append(term.sum(-1))
    return out


def _g_and_dg(p: Any, a: Any, xp: Any) -> tuple[Any, Any]:
    """``g(e) = sum p expm1(e log p) / e`` and ``g'(e)`` with ``e = alpha - 1`` (per row).

    ``H_alpha(p) = -g(e) / alpha``; written with ``expm1`` it has no cancellation near alpha = 1.
    For ``e < 1e-3`` both come from the series ``g = sum_j e^(j-1) H_j / j!`` (error ~e^4).
    """
    e = (a - 1.0)[..., 0]
    pos = p > 0
    logp = xp.log(xp.where(pos, p, xp.ones_like(p)))
    near = e < 1e-3
    es = xp.where(near, xp.ones_like(e), e)[..., None]
    g_direct = xp.where(pos, p * xp.expm1(es * logp), xp.zeros_like(p)).sum(-1) / es[..., 0]
    dg_terms = xp.where(pos, p * (es * logp * xp.exp(es * logp) - xp.expm1(es * logp)), xp.zeros_like(p))
    dg_direct = dg_terms.sum(-1) / es[..., 0] ** 2
    h1, h2, h3, h4 = _log_moments(p, xp, 4)
    g_series = h1 + e * h2 / 2 + e**2 * h3 / 6 + e**3 * h4 / 24
    dg_series = h2 / 2 + e * h3 / 3 + e**2 * h4 / 8
    return xp.where(near, g_series, g_direct), xp.where(near, dg_series, dg_direct)


def _tsallis(p: Any, a: Any, xp: Any) -> Any:
    """H_alpha(p) = (1 - sum p^alpha)/(alpha(alpha-1)) per row (Shannon at alpha = 1).

    Computed as ``-sum p expm1((alpha-1) log p) / (alpha (alpha-1))`` (for ``sum p = 1``), which
    is continuous through alpha = 1 in floating point.
    """
    g, _ = _g_and_dg(p, a, xp)
    return -g / a[..., 0]


def _dtsallis_dalpha(p: Any, a: Any, xp: Any) -> Any:
    """d H_alpha(p) / d alpha at fixed p: ``-(g'(e) alpha - g(e)) / alpha^2`` (finite at 1)."""
    g, dg = _g_and_dg(p, a, xp)
    a0 = a[..., 0]
    return -(dg * a0 - g) / a0**2


def _inner(diff: Any, x: Any, xp: Any) -> Any:
    nz = diff != 0
    return xp.where(nz, diff * xp.where(nz, x, xp.zeros_like(x)), xp.zeros_like(x)).sum(-1)


def _target_dist(target: Any, x_last_shape: tuple[int, ...], d: int, xp: Any, like: Any) -> Any:
    """Distribution (..., d) from indices (...) or a distribution (..., d)."""
    t = target
    tshape = tuple(t.shape)
    if tshape == tuple(x_last_shape[:-1]) and _is_int(t):
        if t.size if xp is np else t.numel():
            if int(t.min()) < 0 or int(t.max()) >= d:
                raise ValueError(f"target class indices must be in [0, {d}), got {int(t.min())}..{int(t.max())}")
        if xp is np:
            return (np.arange(d) == t[..., None]).astype(like.dtype)
        import torch

        return torch.nn.functional.one_hot(t.long(), d).to(like.dtype)
    if tshape == tuple(x_last_shape):
        if _is_int(t):
            raise TypeError("target with the shape of x must be a floating distribution")
        y = t.astype(like.dtype) if xp is np else t.to(like.dtype)
        bad_sum = xp.abs(y.sum(-1) - 1.0) > 1e-6 if y.shape[-1] else y.sum(-1) != 0
        if bool((y < 0).any()) or bool(bad_sum.any()) or not bool(xp.isfinite(y).all()):
            raise ValueError(
                "target distributions must be finite, non-negative and sum to 1 along the class axis"
            )
        return y
    raise ValueError(
        f"target must be class indices of shape {tuple(x_last_shape[:-1])} or a distribution of "
        f"shape {tuple(x_last_shape)} (with the class axis last after moving axis), got {tshape}"
    )


def _is_int(t: Any) -> bool:
    if isinstance(t, np.ndarray):
        return t.dtype.kind in "iu"
    return not t.dtype.is_floating_point and not t.dtype.is_complex


def entmax_loss(
    x: Any,
    target: Any,
    alpha: Any = 1.5,
    axis: int = -1,
    *,
    dim: int | None = None,
    solver: str = "auto",
    backend: str = "auto",
) -> Any:
    """Per-row Fenchel-Young entmax loss (shape of ``x`` without ``axis``); see module doc.

    ``target``: integer class indices shaped like ``x`` without ``axis``, or a distribution
    shaped like ``x``. Differentiable w.r.t. ``x`` (gradient ``p* - y``) and a tensor ``alpha``.
    """
    axis = V.resolve_axis(axis, dim)
    if V.is_torch_tensor(x):
        return _loss_torch(x, target, alpha, axis, solver, backend)
    arr = np.asarray(x)
    ax = V.check_axis(axis, arr.ndim)
    p = entmax(arr, alpha, ax, solver=solver, backend=backend).astype(np.float64)
    xf = np.moveaxis(arr.astype(np.float64), ax, -1)
    p = np.moveaxis(p, ax, -1)
    tgt = np.asarray(target)
    y = _target_dist(np.moveaxis(tgt, ax, -1) if tgt.shape == arr.shape else tgt,
                     xf.shape, xf.shape[-1], np, xf)
    a = np.moveaxis(np.broadcast_to(np.asarray(alpha, np.float64), _alpha_target(arr.shape, ax)), ax, -1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return _tsallis(p, a, np) - _tsallis(y, a, np) + _inner(p - y, xf, np)


def _alpha_target(shape: tuple[int, ...], ax: int) -> tuple[int, ...]:
    t = list(shape)
    t[ax] = 1
    return tuple(t)


def _loss_torch(x: Any, target: Any, alpha: Any, axis: int, solver: str, backend: str) -> Any:
    import torch

    ax = V.check_axis(axis, x.dim())
    xd = x.detach()
    with torch.no_grad():
        p = entmax(xd, alpha.detach() if isinstance(alpha, torch.Tensor) else alpha, ax,
                   solver=solver, backend=backend)
    # a python number, a list or a NumPy array (as entmax takes them; a copy: no read-only view)
    a = alpha if isinstance(alpha, torch.Tensor) else torch.from_numpy(np.array(alpha, dtype=np.float64))
    return _FYLoss.apply(x, a, p, target, ax)


def _make_fy():
    import torch

    class FYLoss(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha, p, target, ax):  # type: ignore[override]
            comp = torch.float64 if x.dtype == torch.float64 else torch.float32
            xf = x.detach().movedim(ax, -1).to(comp)
            pm = p.movedim(ax, -1).to(comp)
            tgt = target
            if not isinstance(tgt, torch.Tensor):
                try:
                    tgt = torch.as_tensor(np.asarray(tgt))
                except Exception as exc:
                    raise TypeError(f"target must be an array or tensor, got {type(target).__name__}") from exc
            tgt = tgt.to(x.device)
            y = _target_dist(tgt.movedim(ax, -1) if tuple(tgt.shape) == tuple(x.shape) else tgt,
                             tuple(xf.shape), xf.shape[-1], torch, xf)
            a = alpha.detach().to(x.device, comp)
            a = a.reshape((1,) * (x.dim() - a.dim()) + tuple(a.shape)).expand(_alpha_target(tuple(x.shape), ax))
            a = a.movedim(ax, -1)
            loss = _tsallis(pm, a, torch) - _tsallis(y, a, torch) + _inner(pm - y, xf, torch)
            ctx.ax = ax
            ctx.alpha_shape = alpha.shape
            ctx.save_for_backward(pm, y, a)
            return loss.to(x.dtype if x.dtype.is_floating_point else torch.float64)

        @staticmethod
        def backward(ctx, g):  # type: ignore[override]
            pm, y, a = ctx.saved_tensors
            gx = ((pm - y) * g.to(pm.dtype)[..., None]).movedim(-1, ctx.ax)
            ga = None
            if ctx.needs_input_grad[1]:
                dh = (_dtsallis_dalpha(pm, a, torch) - _dtsallis_dalpha(y, a, torch)) * g.to(pm.dtype)
                ga = dh.unsqueeze(-1).movedim(-1, ctx.ax)
                # sum over broadcast dims down to alpha's shape
                shape = tuple(ctx.alpha_shape)
                ga = ga.sum_to_size(shape) if len(shape) else ga.sum()
            return gx, ga, None, None, None

    return FYLoss


class _Lazy:
    _fn = None

    def apply(self, *args):
        if _Lazy._fn is None:
            _Lazy._fn = _make_fy()
        return _Lazy._fn.apply(*args)


_FYLoss = _Lazy()
