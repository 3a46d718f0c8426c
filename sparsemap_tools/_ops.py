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

The fused attention likewise (``ATTN``), its autograd registered on the forward operator:

* ``sparsemap_tools::entmax_attention_fwd(q, k, v, alpha_h, cu_q, cu_k, mode, scale, causal,
  need_grad, need_dalpha, max_q, max_k)`` → the forward's state as a list of tensors
  (``ATTN_STATE`` names them; o first, in q's dtype; the ones a call does not compute are empty).
  Its fake builds the same buffers from :func:`sparsemap_tools.gpu.attention.forward_state`.
* ``sparsemap_tools::entmax_attention_bwd(do, q, k, v, alpha_h, cu_q, cu_k, mode, scale, causal,
  max_q, max_k, state)`` → [dq, dk, dv]; ∂/∂α (a tensor α) from row statistics, in torch ops.

Torch without ``torch.library.custom_op`` (< 2.4) gets ``OPS = ATTN = None``: eager mode only
(the attention then runs eagerly inside compiled code, a graph break).
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
        x2d = x2d.contiguous()  # (a compiled graph may hand over other strides)
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


#: the attention forward's outputs (the keys of ``entmax_attention_fwd``'s dict; support → sup, ns)
ATTN_STATE = ("o", "o2", "o3", "hsum", "m", "tau", "tmax", "tmin", "live", "lst", "lcnt", "gathered",
              "sup", "ns", "iters")
_OPTIONAL = ("o2", "o3", "hsum", "gathered", "sup", "ns")


def _kernel_dtype(q: torch.Tensor) -> torch.dtype:
    return torch.float32 if _gpu_attention().INTERPRET and q.dtype == torch.bfloat16 else q.dtype


def attention_state(outs, q, k, cu_q, max_q: int, max_k: int) -> dict:
    """The forward's dict (as ``entmax_attention_fwd`` returns it) from the operator's list."""
    A = _gpu_attention()
    # absent ones are 1-D placeholders (every real one of these keys has 2 or more dims)
    res = {key: None if key in _OPTIONAL and t.dim() == 1 else t for key, t in zip(ATTN_STATE, outs)}
    sup, ns = res.pop("sup"), res.pop("ns")
    res["support"] = None if ns is None else (sup, ns, A._KEEP_SUPPORT)
    res["cfg"] = A.forward_geometry(q, k, cu_q, max_q, max_k, dtype=_kernel_dtype(q))["cfg"]
    return res


def _gpu_attention():
    """The Triton attention module, imported on first use (importing the toolkit must not import
    Triton: CPU users may not have it)."""
    from .gpu import attention

    return attention


def _define_attention():
    def empty(like):
        return like.new_empty((0,))

    def pack(res: dict) -> list:
        sup = res["support"]
        vals = dict(res, sup=sup[0] if sup is not None else None, ns=sup[1] if sup is not None else None)
        # placeholders: empty and 1-D (see attention_state)
        return [vals[key] if vals[key] is not None else empty(res["m"]) for key in ATTN_STATE]

    @torch.library.custom_op("sparsemap_tools::entmax_attention_fwd", mutates_args=())
    def attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, alpha_h: torch.Tensor,
                      cu_q: Optional[torch.Tensor], cu_k: Optional[torch.Tensor], mode: int,
                      scale: float, causal: bool, need_grad: bool, need_dalpha: bool, max_q: int,
                      max_k: int) -> list[torch.Tensor]:
        q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
        res = _gpu_attention().entmax_attention_fwd(q, k, v, alpha_h.detach(), mode, scale, causal,
                                                    need_grad, cu_q, cu_k, max_q, max_k,
                                                    need_dalpha=need_dalpha)
        outs = pack(res)
        outs[ATTN_STATE.index("iters")] = outs[ATTN_STATE.index("iters")].clone()  # a view
        return outs

    @attention_fwd.register_fake
    def _(q, k, v, alpha_h, cu_q, cu_k, mode, scale, causal, need_grad, need_dalpha, max_q, max_k):
        A, kd = _gpu_attention(), _kernel_dtype(q)
        st = A.forward_state(q.to(kd), k.to(kd), mode, need_grad, need_dalpha, cu_q, max_q, max_k)
        res = A.forward_result(st, torch.empty(q.shape, dtype=q.dtype, device=q.device))
        res["iters"] = res["iters"].clone()
        return pack(res)

    @torch.library.custom_op("sparsemap_tools::entmax_attention_bwd", mutates_args=())
    def attention_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      alpha_h: torch.Tensor, cu_q: Optional[torch.Tensor],
                      cu_k: Optional[torch.Tensor], mode: int, scale: float, causal: bool,
                      max_q: int, max_k: int, state: list[torch.Tensor]) -> list[torch.Tensor]:
        res = attention_state(state, q, k, cu_q, max_q, max_k)
        dq, dk, dv = _gpu_attention().entmax_attention_bwd(do, q, k, v, res["o2"], alpha_h, mode,
                                                           scale, causal, res, cu_q, cu_k)
        return [dq, dk, dv]

    @attention_bwd.register_fake
    def _(do, q, k, v, alpha_h, cu_q, cu_k, mode, scale, causal, max_q, max_k, state):
        return [torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)]

    def setup_context(ctx, inputs, output):
        q, k, v, alpha_h, cu_q, cu_k, mode, scale, causal, need_grad, need_dalpha, max_q, max_k = inputs
        ctx.args = (mode, scale, causal, max_q, max_k, need_dalpha)
        ctx.save_for_backward(q, k, v, alpha_h, cu_q, cu_k, *output)

    def backward(ctx, grads):
        mode, scale, causal, max_q, max_k, need_dalpha = ctx.args
        q, k, v, alpha_h, cu_q, cu_k, *state = ctx.saved_tensors
        do = grads[0]
        dq, dk, dv = attention_bwd(do, q, k, v, alpha_h, cu_q, cu_k, mode, scale, causal, max_q,
                                   max_k, state)
        dalpha = None
        if need_dalpha and ctx.needs_input_grad[3]:
            res = attention_state(state, q, k, cu_q, max_q, max_k)
            dalpha = _gpu_attention().entmax_attention_dalpha(do, alpha_h, res, cu_q is not None)
        return dq, dk, dv, dalpha, None, None, None, None, None, None, None, None, None

    attention_fwd.register_autograd(backward, setup_context=setup_context)
    return attention_fwd, attention_bwd


_HAS_CUSTOM_OP = hasattr(torch.library, "custom_op")
OPS = _define() if _HAS_CUSTOM_OP else None
ATTN = _define_attention() if _HAS_CUSTOM_OP else None


def compiling() -> bool:
    """Whether TorchDynamo is tracing the caller (False on torch without ``torch.compiler``)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_compiling", lambda: False)())
