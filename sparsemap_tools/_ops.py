"""The row-wise forward and backward as ``torch.library`` custom operators, for ``torch.compile``.

Under ``torch.compile`` the autograd function :class:`~sparsemap_tools._torch_api.EntmaxFunction`
calls these two operators instead of its kernels: TorchDynamo cannot trace into Numba or into a
Triton launcher with host-side logic, but it can put an opaque operator with a *fake* (shape
only) implementation into its graph.  So ``torch.compile(model, fullgraph=True)`` works on a
model that calls :func:`sparsemap_tools.entmax` with a python-number α; in eager mode nothing
goes through them (a custom operator costs some dispatcher time per call).

* ``sparsemap_tools::entmax_rows(x2d, alpha_rows, solver, backend, tol, max_iter, alpha_value)``
  → p: (R, d) in x2d's dtype; the forward of :func:`~sparsemap_tools._torch_api.forward_rows`.
* ``sparsemap_tools::entmax_rows_backward(p, dp, alpha_rows, alpha_value, need_alpha, triton)``
  → (dx (R, d) in p's dtype, dα (R,) in alpha_rows' dtype, or an empty tensor without
  ``need_alpha``): dx = u⊙dp − u·⟨u, dp⟩/Σu with u = p^{2−α} on the support, and dα (see
  :func:`~sparsemap_tools._torch_api.backward_rows`).

Torch without ``torch.library.custom_op`` (< 2.4) gets ``OPS = None``: eager mode only.
"""
from __future__ import annotations

from typing import Optional

import torch


def _define():
    from . import _torch_api as T

    @torch.library.custom_op("sparsemap_tools::entmax_rows", mutates_args=())
    def entmax_rows(x2d: torch.Tensor, alpha_rows: Optional[torch.Tensor], solver: str,
                    backend: str, tol: Optional[float], max_iter: Optional[int],
                    alpha_value: Optional[float]) -> torch.Tensor:
        p, _ = T.forward_rows(x2d, alpha_rows, solver, backend, tol, max_iter, alpha_value)
        return p.to(x2d.dtype)

    @entmax_rows.register_fake
    def _(x2d, alpha_rows, solver, backend, tol, max_iter, alpha_value):
        return torch.empty_like(x2d)

    @torch.library.custom_op("sparsemap_tools::entmax_rows_backward", mutates_args=())
    def entmax_rows_backward(p: torch.Tensor, dp: torch.Tensor,
                             alpha_rows: Optional[torch.Tensor], alpha_value: Optional[float],
                             need_alpha: bool, triton: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dx, da = T.backward_kernels(p, dp, alpha_rows, alpha_value, need_alpha, triton)
        if da is None:
            da = p.new_empty(0)
        return dx.to(p.dtype), da

    @entmax_rows_backward.register_fake
    def _(p, dp, alpha_rows, alpha_value, need_alpha, triton):
        da = (p.new_empty(p.shape[0], dtype=alpha_rows.dtype) if need_alpha and alpha_rows is not None
              else p.new_empty(0))
        return torch.empty_like(p), da

    return entmax_rows, entmax_rows_backward


OPS = _define() if hasattr(torch.library, "custom_op") else None


def compiling() -> bool:
    """Whether TorchDynamo is tracing the caller (False on torch without ``torch.compiler``)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_compiling", lambda: False)())
