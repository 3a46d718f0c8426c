r"""PyTorch entry point: CPU tensors run the Numba (or NumPy) kernels on zero-copy views, CUDA
tensors (and CPU tensors with ``backend="triton"`` under ``TRITON_INTERPRET=1``) run the Triton
kernels of :mod:`sparsemap_tools.gpu.rowwise`. Autograd through :class:`EntmaxFunction`.

Backward (no solver needed): with ``u = p^(2-alpha)`` on the support and 0 elsewhere,

.. math:: dx = u \odot dp - u \, \langle u, dp\rangle / \textstyle\sum u

and, for a tensor ``alpha`` that requires grad, with ``s = u/\sum u`` and ``h = p \log p``,

.. math:: \partial p/\partial\alpha = (p - s)/(\alpha-1)^2 - (h - s \textstyle\sum h)/(\alpha-1).
"""

from __future__ import annotations

import warnings

from typing import Any

import numpy as np
import torch

from . import _ops
from . import _validate as V
from ._numpy_api import paper_tau, rows_backend, solve_rows, user_stacklevel, warn_unconverged
from .solvers.result import TauResult


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype == torch.float64:
        return torch.float64
    if dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.float32
    raise TypeError(f"x must be a real floating or integer tensor, got dtype {dtype}")


def prepare(x: torch.Tensor, alpha: Any, axis: int, need_rows: bool = True,
            alpha_f64: bool = False):
    """Validate and flatten: returns (x2d in compute dtype, alpha_rows tensor (R,), axis,
    moved shape, output dtype). ``alpha_rows`` stays differentiable w.r.t. a tensor alpha.
    With ``need_rows=False`` a python-number alpha gives ``alpha_rows=None`` (the Triton
    kernels take it as a scalar).  ``alpha_rows`` is float64 for float64 x and with
    ``alpha_f64`` (the CPU backends, which compute in float64: a float32 α would be another α),
    else float32 (the Triton kernels' compute dtype). The common layout (reduce the last axis
    of a contiguous tensor) takes no movedim and, for 2-D input, no reshape: each is an
    autograd node."""
    if x.layout != torch.strided:
        raise TypeError(f"x must be a dense (strided) tensor, got layout {x.layout}")
    if x.dtype.is_complex:
        raise TypeError(f"x must be real, got dtype {x.dtype}")
    if not x.dtype.is_floating_point:
        x = x.to(torch.float64)
    out_dtype = x.dtype
    comp = _compute_dtype(x.dtype)
    ax = V.check_axis(axis, x.dim())
    if x.shape[ax] == 0:
        raise ValueError(f"axis {axis} of x has length 0: entmax needs at least one entry")
    moved = x if ax == x.dim() - 1 else x.movedim(ax, -1)
    x2d = moved if moved.dim() == 2 else moved.reshape(-1, x.shape[ax])
    if x2d.dtype != comp:
        x2d = x2d.to(comp)
    if not x2d.is_contiguous():
        x2d = x2d.contiguous()
    rows = x2d.shape[0]
    adt = torch.float64 if (comp == torch.float64 or alpha_f64) else torch.float32
    if isinstance(alpha, torch.Tensor):
        if alpha.dtype.is_complex or alpha.dtype == torch.bool:
            raise TypeError(f"alpha must be a real tensor, got dtype {alpha.dtype}")
        if alpha.device != x.device and alpha.dim() > 0:
            raise ValueError(f"alpha is on {alpha.device} but x is on {x.device}")
        V.check_alpha_values(alpha.detach().to("cpu", torch.float64).numpy())
        a = alpha.to(device=x.device, dtype=adt)
        if a.dim() == 0:
            a_rows = a.expand(rows)
        else:
            V.alpha_shape_for_rows(tuple(a.shape), tuple(x.shape), ax)
            target = list(x.shape)
            target[ax] = 1
            a = a.reshape((1,) * (x.dim() - a.dim()) + tuple(a.shape)).expand(target)
            a_rows = a.movedim(ax, -1).reshape(-1)
    elif isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        # a python number: checked on the host, filled on x's device (no host-to-device copy,
        # which would also synchronise with the device)
        V.check_alpha_scalar(float(alpha))
        a_rows = torch.full((rows,), float(alpha), device=x.device, dtype=adt) if need_rows else None
    else:
        a_np = V.alpha_rows_numpy(alpha, tuple(x.shape), ax)
        # (a copy: a_np may be a read-only broadcast view, which torch.from_numpy warns about)
        a_rows = torch.tensor(a_np, dtype=adt, device=x.device)
    return x2d, a_rows, ax, moved.shape, out_dtype


def _use_triton(x: torch.Tensor, backend: str) -> bool:
    if backend == "triton":
        return True
    if x.device.type == "cuda":
        if backend in ("numpy", "numba"):
            raise ValueError(
                f"backend={backend!r} runs on the CPU; x is on {x.device} (use 'auto' or 'triton')"
            )
        return True
    if x.device.type != "cpu":
        raise NotImplementedError(f"no entmax backend for device {x.device}")
    return False


def forward_rows(
    x2d: torch.Tensor, alpha_rows: torch.Tensor, solver: str, backend: str, tol, max_iter,
    alpha_value: float | None = None,
) -> tuple[torch.Tensor, TauResult | Any]:
    """p (R, d) in the compute dtype, plus the per-row result record.

    ``alpha_value``: the python float every row's α equals, when the caller knows it (the
    Triton kernels then specialise their power branch at compile time); ``alpha_rows`` may
    then be None on the Triton path (``prepare(..., need_rows=False)``)."""
    if _use_triton(x2d, backend):
        from .gpu import rowwise

        if solver not in rowwise.SOLVERS:
            raise ValueError(
                f"solver={solver!r} is not available on the Triton backend (one of {rowwise.SOLVERS})"
            )
        a = alpha_rows.detach() if alpha_value is None else alpha_value
        r = rowwise.entmax_forward(x2d, a, solver, tol=tol, max_iter=max_iter)
        if max_iter is not None:
            # a caller's cap on the passes can stop rows early: said as on the CPU (one host
            # synchronisation, only then: with the default cap every solver converges)
            bad = ~r.converged & torch.isfinite(r.tau)
            if bool(bad.any()):
                warnings.warn(
                    f"{int(bad.sum())} row(s) did not converge within max_iter (solver={solver!r}, "
                    "triton); their output is normalised but may be inexact "
                    "(see threshold(...).converged)", RuntimeWarning, stacklevel=user_stacklevel())
        return r.p, r
    fn = rows_backend(backend)
    a_np = V.snap_to_softmax(alpha_rows.detach().to(torch.float64).cpu().numpy())
    p2d, res = solve_rows(fn, x2d.detach().numpy(), a_np, solver, tol, max_iter)
    warn_unconverged(res)
    return torch.from_numpy(p2d), res


def backward_rows(
    p: torch.Tensor, dp: torch.Tensor, alpha: torch.Tensor, need_alpha: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Entmax Jacobian-vector products (any device, vectorised torch ops)."""
    a = alpha.to(p.dtype).unsqueeze(1)
    dp = dp.to(p.dtype)
    pos = p > 0
    safe = torch.where(pos, p, torch.ones_like(p))
    u = torch.where(pos, safe ** (2.0 - a), torch.zeros_like(p))
    su = u.sum(dim=1, keepdim=True)
    s = u / su
    dx = u * dp - s * (u * dp).sum(dim=1, keepdim=True)
    if not need_alpha:
        return dx, None
    logp = torch.log(safe)
    h = torch.where(pos, p * logp, torch.zeros_like(p))
    am1 = a - 1.0
    # The two terms below diverge like (alpha-1)^-2 and cancel; within (eps)^(1/3) of alpha = 1
    # use their limit instead (expand u = p^(1-(alpha-1)) in alpha-1):
    #   dp/dalpha -> (p/2) (sum_j p_j log^2 p_j - log^2 p)      (the right derivative at 1)
    near = am1 < torch.finfo(p.dtype).eps ** (1.0 / 3.0)
    am1s = torch.where(near, torch.ones_like(am1), am1)
    dpda = (p - s) / am1s**2 - (h - s * h.sum(dim=1, keepdim=True)) / am1s
    l2 = torch.where(pos, logp * logp, torch.zeros_like(p))
    limit = 0.5 * p * ((p * l2).sum(dim=1, keepdim=True) - l2)
    dpda = torch.where(near, limit, dpda)
    return dx, (dpda * dp).sum(dim=1)


def _forward_p(x2d: torch.Tensor, alpha_rows: torch.Tensor | None, solver: str, backend: str,
               tol, max_iter, alpha_value: float | None) -> torch.Tensor:
    """p (R, d) in x2d's dtype: :func:`forward_rows`, or under ``torch.compile`` the custom
    operator wrapping it (:mod:`sparsemap_tools._ops`)."""
    if _ops.OPS is not None and _ops.compiling():
        return _ops.OPS[0](x2d, alpha_rows, solver, backend, tol, max_iter, alpha_value)
    p = forward_rows(x2d, alpha_rows, solver, backend, tol, max_iter, alpha_value)[0]
    return p if p.dtype == x2d.dtype else p.to(x2d.dtype)


def backward_kernels(p: torch.Tensor, dp: torch.Tensor, alpha_rows: torch.Tensor | None,
                     alpha_value: float | None, need_alpha: bool,
                     triton: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dx, dα or None) for rows p of the forward: the Triton kernel for Triton forwards
    (python-number α passed as such unless dα is needed), :func:`backward_rows` otherwise (the
    CPU paths always have a per-row α tensor from :func:`prepare`).  dα in alpha_rows' dtype."""
    if triton:
        from .gpu import rowwise

        a = alpha_rows if (need_alpha or alpha_value is None) else alpha_value
        dx, da = rowwise.entmax_backward(p, dp.contiguous(), a, need_alpha)
    else:
        dx, da = backward_rows(p, dp, alpha_rows, need_alpha)
    if da is not None:
        da = da.to(alpha_rows.dtype)
    return dx, da


class EntmaxFunction(torch.autograd.Function):
    """Row-wise alpha-entmax on (R, d) rows with per-row alpha (R,).  Under ``torch.compile``
    both passes go through the custom operators of :mod:`sparsemap_tools._ops`."""

    @staticmethod
    def forward(ctx, x2d, alpha_rows, solver, backend, tol, max_iter, alpha_value=None):  # type: ignore[override]
        p = _forward_p(x2d, alpha_rows, solver, backend, tol, max_iter, alpha_value)
        ctx.triton = _use_triton(x2d, backend)
        ctx.alpha_value = alpha_value
        if alpha_rows is None:  # a python-number α (then alpha_value holds it)
            ctx.save_for_backward(p)
        else:
            ctx.save_for_backward(p, alpha_rows.detach())
        return p

    @staticmethod
    def backward(ctx, dp):  # type: ignore[override]
        # a tensor α is saved (and needed for dα); a python-number α is ctx.alpha_value
        p, *rest = ctx.saved_tensors
        a_rows = rest[0] if rest else None
        need_alpha = bool(ctx.needs_input_grad[1])
        if _ops.OPS is not None and _ops.compiling():
            dx, da = _ops.OPS[1](p, dp, a_rows, ctx.alpha_value, need_alpha, ctx.triton)
            da = da if need_alpha else None
        else:
            dx, da = backward_kernels(p, dp, a_rows, ctx.alpha_value, need_alpha, ctx.triton)
        return dx, da, None, None, None, None, None


def _python_alpha(alpha: Any) -> float | None:
    """α as a python float when it is one (a compile-time hint for the Triton kernels)."""
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and float(alpha) > 1.0:
        return float(alpha)
    return None


def entmax(x: torch.Tensor, alpha: Any, axis: int, solver: str, backend: str, tol, max_iter):
    V.check_solver(solver)
    V.check_backend(backend)
    tol, max_iter = V.check_tol(tol), V.check_max_iter(max_iter)
    hint = _python_alpha(alpha)
    tri = _use_triton(x, backend)
    # the Triton kernels take a python-number α as a scalar: no per-row α tensor then
    x2d, a_rows, ax, moved_shape, out_dtype = prepare(
        x, alpha, axis, need_rows=hint is None or not tri, alpha_f64=not tri)
    grad_alpha = a_rows is not None and a_rows.requires_grad
    if torch.is_grad_enabled() and (x2d.requires_grad or grad_alpha):
        p2d = EntmaxFunction.apply(x2d, a_rows, solver, backend, tol, max_iter, hint)
    else:  # no autograd graph to build: skip the Function's bookkeeping (~20 µs a call)
        p2d = _forward_p(x2d, a_rows, solver, backend, tol, max_iter, hint)
    out = p2d if p2d.shape == moved_shape else p2d.reshape(moved_shape)
    if ax != x.dim() - 1:
        out = out.movedim(-1, ax)
    return out if out.dtype == out_dtype else out.to(out_dtype)


def threshold(x: torch.Tensor, alpha: Any, axis: int, solver: str, backend: str, tol, max_iter):
    """(paper-convention tau, result record, batch shape) for a tensor (no autograd)."""
    V.check_solver(solver)
    V.check_backend(backend)
    tol, max_iter = V.check_tol(tol), V.check_max_iter(max_iter)
    with torch.no_grad():
        x2d, a_rows, ax, moved_shape, _ = prepare(x, alpha, axis,
                                                  alpha_f64=not _use_triton(x, backend))
        _, res = forward_rows(x2d, a_rows, solver, backend, tol, max_iter)
    return x2d, a_rows, res, tuple(moved_shape[:-1])


def as_numpy_result(res: Any) -> TauResult:
    """Convert a GPU result record (tensors) into a NumPy ``TauResult``."""
    if isinstance(res, TauResult):
        return res
    f = lambda t: t.detach().cpu().numpy()  # noqa: E731
    tau = f(res.tau).astype(np.float64)
    return TauResult(
        tau=tau,
        support_size=f(res.support_size).astype(np.int64),
        iterations=f(res.iterations).astype(np.int64),
        converged=f(res.converged).astype(bool),
        certified=np.zeros_like(tau, dtype=bool),
        residual=np.full_like(tau, np.nan),
        solver="triton",
    )


__all__ = ["EntmaxFunction", "entmax", "threshold", "backward_kernels", "backward_rows", "forward_rows",
           "paper_tau"]
