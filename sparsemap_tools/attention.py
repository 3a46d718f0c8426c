"""α-entmax attention: a drop-in for ``scaled_dot_product_attention`` with sparse weights.

    p_ij  = α-entmax_j (s_ij),   s_ij = scale · q_i · k_j   (scale defaults to 1/√D)
          = [(α−1) s_ij − τ_i]_+^{1/(α−1)},   Σ_j p_ij = 1
    out_i = Σ_j p_ij v_j

* ``entmax_attention(q, k, v, alpha=1.5, is_causal=False, scale=None, enable_gqa=False,
  return_stats=False, backend="auto")``: (B, H, Nq, D) layout, like SDPA.
* ``entmax_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
  ...)``: packed (total_tokens, H, D) layout, like flash-attn's varlen API.
* ``entmax_attention_reference(...)``: the dense naive version (O(N²) memory, any device,
  float64-capable): what the fused kernels are tested against.

Semantics: α > 1 is a float or a tensor of shape (H,) (per head); α = 1 (a float) is softmax
attention, computed by ``torch.nn.functional.scaled_dot_product_attention``.  Causal masking with
Nq ≠ Nk is bottom-right aligned (query i sees keys j ≤ i + Nk − Nq).  A query row that sees no
key gets a zero output row.  GQA: H must be a multiple of the key/value heads (pass
``enable_gqa=True`` as with SDPA).

Backends: ``"triton"`` (the fused kernels of ``sparsemap_tools.gpu.attention``; on CPU tensors
this needs ``TRITON_INTERPRET=1`` set before triton is imported), ``"reference"`` (dense),
``"auto"`` (triton on CUDA tensors, reference otherwise).

Gradient with respect to an α tensor that requires grad: fused. The forward's output pass also
accumulates O3 = Σ_j (p log p)_ij v_j and Σ_j (p log p)_ij per row, from which ∂L/∂α follows with
row-wise reductions only (``gpu.attention.entmax_attention_dalpha``).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F

from sparsemap_tools.gpu.attention_reference import (
    entmax_attention_dense,
    entmax_attention_varlen_dense,
)

__all__ = [
    "entmax_attention",
    "entmax_attention_varlen",
    "entmax_attention_reference",
    "AttentionStats",
]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_HEAD_DIM = 256


class AttentionStats(NamedTuple):
    """Statistics of one forward call.

    tau:           per query row threshold τ (absolute: p = [(α−1)s − τ]_+^{1/(α−1)}), float32,
                   shaped like the rows ((B, H, Nq) or (Tq, H)); 0 for rows that see no key.
    tile_sparsity: 0-dim float tensor, fraction of visible (query block × key block) tiles whose
                   weights are provably all zero, skipped by the output pass and the backward
                   (NaN when nothing is visible).
    live_tiles, visible_tiles: 0-dim int64 tensors.
    solve_iters:   max number of sparse solver passes over any query block (0-dim int tensor).
    gathered:      0-dim float tensor, fraction of the query blocks with visible keys whose output
                   the solve kernel gathered from its candidate buffers (each row's support) instead
                   of leaving it to the output pass's tile sweep (0 when the gather is off: α other
                   than 1.5 / 2, or α requiring grad; NaN when nothing is visible).
    """

    tau: torch.Tensor
    tile_sparsity: torch.Tensor
    live_tiles: torch.Tensor
    visible_tiles: torch.Tensor
    solve_iters: torch.Tensor
    gathered: Optional[torch.Tensor] = None


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _check_alpha(alpha, H: int, device) -> Union[float, torch.Tensor]:
    if isinstance(alpha, bool):
        raise TypeError("alpha must be a float or a tensor, not bool")
    if isinstance(alpha, (int, float)):
        a = float(alpha)
        if not -math.inf < a < math.inf or a < 1.0:  # comparisons only: traceable by TorchDynamo
            raise ValueError(f"alpha must be a finite number >= 1, got {alpha!r}")
        return a
    if torch.is_tensor(alpha):
        if alpha.is_complex() or not alpha.is_floating_point():
            raise TypeError(f"alpha tensor must be floating point, got {alpha.dtype}")
        if alpha.dim() == 0:
            alpha = alpha.reshape(1).expand(H)
        if alpha.dim() != 1 or alpha.shape[0] != H:
            raise ValueError(f"alpha tensor must have shape ({H},) (one value per query head) or be a scalar; got {tuple(alpha.shape)}")
        if alpha.device != device and alpha.device.type != "cpu":
            raise ValueError(f"alpha is on {alpha.device} but q is on {device}")
        if alpha.device.type == "cpu":
            if not bool(torch.all(alpha.detach() > 1.0)) or not bool(torch.all(torch.isfinite(alpha.detach()))):
                raise ValueError("every per-head alpha must be finite and > 1 (use a float alpha=1.0 for softmax)")
        else:  # no host synchronisation: a device-side assertion
            torch._assert_async(torch.all(alpha.detach() > 1.0), "every per-head alpha must be > 1")
        return alpha
    raise TypeError(f"alpha must be a float or a tensor, got {type(alpha).__name__}")


def _check_common(q, k, v, scale, backend):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not torch.is_tensor(x):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    # float64: the dense reference's (backend "reference", or "auto" off CUDA, which picks it)
    dense = backend == "reference" or (backend == "auto" and q.device.type != "cuda")
    allowed = _DTYPES + ((torch.float64,) if dense else ())
    if q.dtype not in allowed:
        raise TypeError(f"dtype {q.dtype} is not supported (use float16, bfloat16 or float32"
                        + ("; float64 with backend='reference'" if not dense else "") + ")")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError("scale must be a float or None")
        if not math.isfinite(float(scale)) or float(scale) <= 0:
            raise ValueError(f"scale must be finite and > 0, got {scale!r}")
    if backend not in ("auto", "triton", "reference"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'reference', got {backend!r}")


def _check_heads(H: int, Hkv: int, enable_gqa: bool):
    if Hkv == 0 or H % Hkv != 0:
        raise ValueError(f"the number of query heads ({H}) must be a multiple of the key/value heads ({Hkv})")
    if H != Hkv and not enable_gqa:
        raise ValueError(f"query heads ({H}) != key/value heads ({Hkv}): pass enable_gqa=True for grouped-query attention")


def _check_head_dim(D: int, Dk: int, Dv: int):
    if D != Dk:
        raise ValueError(f"q and k head dims differ: {D} vs {Dk}")
    if Dv != D:
        raise ValueError(f"v head dim ({Dv}) must equal the q/k head dim ({D})")
    if not (1 <= D <= _MAX_HEAD_DIM):
        raise ValueError(f"head dim must be in [1, {_MAX_HEAD_DIM}], got {D}")


def _resolve_backend(backend: str, device) -> str:
    if backend == "auto":
        return "triton" if device.type == "cuda" else "reference"
    return backend


_ALPHA_CACHE: dict = {}


def _alpha_vector(alpha, H: int, device) -> torch.Tensor:
    """α per query head as a float32 device tensor (the kernels read it; never written).  Float
    α: one tensor per (α, H, device), kept, so a call makes no allocation and no fill kernel for
    it (not while a CUDA graph is being captured: its memory belongs to the graph)."""
    if torch.is_tensor(alpha):
        return alpha.detach().to(device=device, dtype=torch.float32).contiguous()
    key = (float(alpha), H, str(device))
    t = _ALPHA_CACHE.get(key)
    if t is None:
        t = torch.full((H,), float(alpha), dtype=torch.float32, device=device)
        capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        if not capturing and len(_ALPHA_CACHE) < 256:
            _ALPHA_CACHE[key] = t
    return t


# ---------------------------------------------------------------------------------------------
# autograd
# ---------------------------------------------------------------------------------------------


class _EntmaxAttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, alpha, scale, causal, cu_q, cu_k, max_q, max_k, holder, need_grad):  # type: ignore[override]
        from sparsemap_tools.gpu.attention import alpha_mode, entmax_attention_fwd

        H = q.shape[-2] if cu_q is not None else q.shape[1]
        alpha_h = _alpha_vector(alpha, H, q.device)
        mode = alpha_mode(alpha)
        # need_grad comes from the caller: inside forward() grad mode is always off, and
        # ctx.needs_input_grad is True under torch.no_grad() too. Inference skips O2.
        need_grad = bool(need_grad) and any(ctx.needs_input_grad[:4])
        qc, kc, vc = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
        need_dalpha = need_grad and ctx.needs_input_grad[3]
        res = entmax_attention_fwd(qc, kc, vc, alpha_h, mode, scale, causal, need_grad,
                                   cu_q, cu_k, max_q, max_k, need_dalpha=need_dalpha)
        ctx.res = res
        ctx.mode = mode
        ctx.scale = scale
        ctx.causal = causal
        ctx.alpha_is_tensor = torch.is_tensor(alpha)
        ctx.save_for_backward(qc, kc, vc, res["o2"] if need_grad else None, alpha_h,
                              alpha if torch.is_tensor(alpha) else None, cu_q, cu_k)
        holder.append(res)
        return res["o"]

    @staticmethod
    def backward(ctx, do):  # type: ignore[override]
        from sparsemap_tools.gpu.attention import entmax_attention_bwd

        q, k, v, o2, alpha_h, alpha_t, cu_q, cu_k = ctx.saved_tensors
        dq = dk = dv = dalpha = None
        if any(ctx.needs_input_grad[:3]):
            dq, dk, dv = entmax_attention_bwd(do, q, k, v, o2, alpha_h, ctx.mode, ctx.scale, ctx.causal,
                                              ctx.res, cu_q, cu_k)
        if ctx.needs_input_grad[3]:
            from sparsemap_tools.gpu.attention import entmax_attention_dalpha

            dalpha = entmax_attention_dalpha(do, alpha_h, ctx.res, cu_q is not None).to(alpha_t.dtype)
        return dq, dk, dv, dalpha, None, None, None, None, None, None, None, None


def _fused(q, k, v, alpha, scale, causal, cu_q, cu_k, max_q, max_k, return_stats):
    """The fused kernels with autograd: out, or (out, AttentionStats).  Under ``torch.compile``
    through the custom operators of :mod:`sparsemap_tools._ops` (no graph break); on torch
    without them, eagerly between compiled graphs (``torch.compiler.disable``: a graph break)."""
    from sparsemap_tools import _ops

    args = (q, k, v, alpha, scale, causal, cu_q, cu_k, max_q, max_k, return_stats)
    if _ops.compiling():
        return _fused_op(*args) if _ops.ATTN is not None else torch.compiler.disable(_fused_eager)(*args)
    return _fused_eager(*args)


def _fused_op(q, k, v, alpha, scale, causal, cu_q, cu_k, max_q, max_k, return_stats):
    """``_fused`` as TorchDynamo traces it: the forward operator, autograd registered on it."""
    from sparsemap_tools import _ops
    from sparsemap_tools.gpu.attention import alpha_mode

    H = q.shape[-2] if cu_q is not None else q.shape[1]
    if torch.is_tensor(alpha):  # differentiable: the operator's backward returns ∂/∂α_h
        alpha_h = alpha.to(device=q.device, dtype=torch.float32)
    else:
        alpha_h = torch.full((H,), float(alpha), dtype=torch.float32, device=q.device)
    need_grad = _grad_needed(q, k, v, alpha)
    need_dalpha = need_grad and torch.is_tensor(alpha) and alpha.requires_grad
    qc, kc, vc = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    outs = _ops.ATTN[0](qc, kc, vc, alpha_h, cu_q, cu_k, alpha_mode(alpha), scale, causal, need_grad,
                        need_dalpha, max_q, max_k)
    if not return_stats:
        return outs[0]
    return outs[0], _make_stats(_ops.attention_state(outs, qc, kc, cu_q, max_q, max_k))


def _fused_eager(q, k, v, alpha, scale, causal, cu_q, cu_k, max_q, max_k, return_stats):
    """``_fused`` in eager mode."""
    holder: list = []
    out = _EntmaxAttentionFn.apply(q, k, v, alpha, scale, causal, cu_q, cu_k, max_q, max_k, holder,
                                   _grad_needed(q, k, v, alpha))
    return (out, _make_stats(holder[0])) if return_stats else out


def _reference_stats(tau: torch.Tensor) -> AttentionStats:
    """The dense reference's statistics: τ, and no tiles (NaN / −1)."""
    nan = torch.tensor(float("nan"))
    return AttentionStats(tau=tau, tile_sparsity=nan, live_tiles=torch.tensor(-1),
                          visible_tiles=torch.tensor(-1), solve_iters=torch.tensor(-1), gathered=nan)


def _make_stats(res) -> AttentionStats:
    # absolute τ = τ' + m (m is already (α−1)·scale·max s); 0 for rows without keys
    m, tau_rel = res["m"], res["tau"]
    tau = tau_rel + m
    live = res["live"].to(torch.int64)
    n_live = live[..., 0].sum()
    n_vis = live[..., 1].sum()
    sparsity = 1.0 - n_live.double() / n_vis.double()
    seen = live[..., 1] > 0  # query blocks with visible keys
    g = res.get("gathered")
    g = torch.zeros_like(seen) if g is None else g.bool()
    gathered = (g & seen).sum().double() / seen.sum().double()
    return AttentionStats(tau=tau, tile_sparsity=sparsity.float(), live_tiles=n_live,
                          visible_tiles=n_vis, solve_iters=res["iters"].max() if res["iters"].numel() else res["iters"].sum(),
                          gathered=gathered.float())


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def entmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: Union[float, torch.Tensor] = 1.5,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
    return_stats: bool = False,
    backend: str = "auto",
):
    """α-entmax attention, (B, H, Nq, D) × (B, Hkv, Nk, D) × (B, Hkv, Nk, D) → (B, H, Nq, D).

    p_ij = [(α−1)·s_ij − τ_i]_+^{1/(α−1)} with s = scale·q·kᵀ and τ_i such that Σ_j p_ij = 1;
    out = p·v.  See the module docstring for α, causal alignment, GQA, zero rows and backends.
    Returns ``out`` or ``(out, AttentionStats)`` when ``return_stats`` (the reference backend
    returns τ with NaN / −1 tile statistics; α = 1, softmax through SDPA, returns ``None``).
    """
    _check_common(q, k, v, scale, backend)
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"expected 4-D (B, H, N, D) tensors, got q{tuple(q.shape)}, k{tuple(k.shape)}, v{tuple(v.shape)}")
    B, H, Nq, D = q.shape
    if k.shape[0] != B or v.shape[0] != B:
        raise ValueError(f"batch sizes differ: q {B}, k {k.shape[0]}, v {v.shape[0]}")
    if k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must have the same heads and length, got k{tuple(k.shape)}, v{tuple(v.shape)}")
    _check_heads(H, k.shape[1], enable_gqa)
    _check_head_dim(D, k.shape[3], v.shape[3])
    alpha = _check_alpha(alpha, H, q.device)
    sc = float(scale) if scale is not None else 1.0 / math.sqrt(D)
    backend = _resolve_backend(backend, q.device)

    if isinstance(alpha, float) and alpha == 1.0:
        out = _softmax_attention(q, k, v, is_causal, sc, H // k.shape[1])
        if return_stats:
            return out, None
        return out
    if backend == "reference":
        out, tau = entmax_attention_dense(q, k, v, alpha=alpha, is_causal=is_causal, scale=sc, return_tau=True)
        return (out, _reference_stats(tau)) if return_stats else out
    if q.device.type != "cuda":
        _require_interpreter()
    return _fused(q, k, v, alpha, sc, bool(is_causal), None, None, 0, 0, return_stats)


def entmax_attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    alpha: Union[float, torch.Tensor] = 1.5,
    is_causal: bool = False,
    scale: Optional[float] = None,
    return_stats: bool = False,
    backend: str = "auto",
    check_cu_seqlens: bool = True,
):
    """Packed variable-length α-entmax attention.

    q: (Tq, H, D), k/v: (Tk, Hkv, D); sequence b occupies rows cu_seqlens[b]:cu_seqlens[b+1]
    (int32 or int64, shape (B+1,), starting at 0, non-decreasing, ending at T).  GQA is implied
    by Hkv < H.  ``check_cu_seqlens`` validates the offsets (one host synchronisation when they
    live on the GPU; pass False inside CUDA graphs).
    """
    _check_common(q, k, v, scale, backend)
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"expected 3-D (total_tokens, H, D) tensors, got q{tuple(q.shape)}, k{tuple(k.shape)}, v{tuple(v.shape)}")
    Tq, H, D = q.shape
    if k.shape[0] != v.shape[0] or k.shape[1] != v.shape[1]:
        raise ValueError(f"k and v must have the same tokens and heads, got k{tuple(k.shape)}, v{tuple(v.shape)}")
    _check_heads(H, k.shape[1], True)
    _check_head_dim(D, k.shape[2], v.shape[2])
    for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if not torch.is_tensor(cu) or cu.dtype not in (torch.int32, torch.int64) or cu.dim() != 1:
            raise TypeError(f"{name} must be a 1-D int32/int64 tensor")
        if cu.numel() < 1:
            raise ValueError(f"{name} must have at least one element")
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError("cu_seqlens_q and cu_seqlens_k must have the same length (B+1)")
    for name, x in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if isinstance(x, bool) or not isinstance(x, int) or x < 0:
            raise TypeError(f"{name} must be a non-negative int")
    if check_cu_seqlens:
        for name, cu, T, mx in (("cu_seqlens_q", cu_seqlens_q, Tq, max_seqlen_q),
                                ("cu_seqlens_k", cu_seqlens_k, k.shape[0], max_seqlen_k)):
            c = cu.detach().to("cpu", torch.int64)
            lens = c[1:] - c[:-1]
            if int(c[0]) != 0 or bool((lens < 0).any()):
                raise ValueError(f"{name} must start at 0 and be non-decreasing, got {c.tolist()[:8]}...")
            if int(c[-1]) != T:
                raise ValueError(f"{name}[-1] = {int(c[-1])} does not match the number of tokens {T}")
            if lens.numel() and int(lens.max()) > mx:
                raise ValueError(f"{name} has a sequence of length {int(lens.max())} > {name.replace('cu_seqlens', 'max_seqlen')} = {mx}")
    alpha = _check_alpha(alpha, H, q.device)
    sc = float(scale) if scale is not None else 1.0 / math.sqrt(D)
    backend = _resolve_backend(backend, q.device)
    if isinstance(alpha, float) and alpha == 1.0:
        out = entmax_attention_varlen_dense(q, k, v, cu_seqlens_q, cu_seqlens_k, alpha=alpha,
                                            is_causal=is_causal, scale=sc)
        return (out, None) if return_stats else out
    if backend == "reference":
        out, tau = entmax_attention_varlen_dense(q, k, v, cu_seqlens_q, cu_seqlens_k, alpha=alpha,
                                                 is_causal=is_causal, scale=sc, return_tau=True)
        return (out, _reference_stats(tau)) if return_stats else out
    if q.device.type != "cuda":
        _require_interpreter()
    cq = cu_seqlens_q.to(device=q.device, dtype=torch.int32).contiguous()
    ck = cu_seqlens_k.to(device=q.device, dtype=torch.int32).contiguous()
    return _fused(q, k, v, alpha, sc, bool(is_causal), cq, ck, int(max_seqlen_q), int(max_seqlen_k),
                  return_stats)


def entmax_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: Union[float, torch.Tensor] = 1.5,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """Dense naive α-entmax attention (O(N²) memory; any device; float64 allowed)."""
    return entmax_attention(q, k, v, alpha=alpha, is_causal=is_causal, scale=scale,
                            enable_gqa=enable_gqa, backend="reference")


def _grad_needed(q, k, v, alpha) -> bool:
    xs = (q, k, v) + ((alpha,) if torch.is_tensor(alpha) else ())
    return torch.is_grad_enabled() and any(x.requires_grad for x in xs)


def _softmax_attention(q, k, v, is_causal, scale, G):
    """α = 1: softmax attention through SDPA, bottom-right causal, zero rows for no keys."""
    Nq, Nk = q.shape[2], k.shape[2]
    if G > 1:
        k = k.repeat_interleave(G, dim=1)
        v = v.repeat_interleave(G, dim=1)
    if is_causal and Nq != Nk:
        i = torch.arange(Nq, device=q.device)[:, None]
        j = torch.arange(Nk, device=q.device)[None, :]
        vis = j <= i + (Nk - Nq)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=vis, scale=scale)
        if Nq > Nk:  # rows with no visible key: zero output (SDPA gives NaN there)
            out = out.masked_fill(~vis.any(-1)[:, None], 0.0)
        return out
    if Nk == 0:  # zero rows, still part of the autograd graph (zero gradients)
        return torch.matmul(torch.matmul(q, k.transpose(-1, -2)), v)
    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)


def _require_interpreter():
    import os

    if os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise RuntimeError("backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported")
