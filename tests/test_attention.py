"""Tests of fused α-entmax attention (``sparsemap_tools.attention``).

Which is which:
- ``gpu/attention_reference.py``: the dense naive reference (float64 here), itself checked
  against ``entmax``'s row operators, against SDPA at α = 1 and by ``gradcheck`` (incl. ∂/∂α).
- ``gpu/attention*.py``: the fused Triton kernels.  Without CUDA they run on CPU tensors under
  ``TRITON_INTERPRET=1`` (``backend="triton"``), on small shapes; tests marked ``gpu`` run the same
  checks on CUDA at larger shapes.

Tolerances (float32 inputs vs the float64 reference): 2e-5 abs + 1e-4 rel for 1 < α ≤ 2; α > 2
is only Hölder-continuous at the support boundary, so 1e-3 there (documented in docs/attention.md).
"""
from __future__ import annotations

import math
import os
import sys

_TRITON_PREIMPORTED = "triton" in sys.modules
try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _HAS_CUDA = False
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

torch = pytest.importorskip("torch")

from sparsemap_tools.attention import (  # noqa: E402
    entmax_attention,
    entmax_attention_reference,
    entmax_attention_varlen,
)
from sparsemap_tools.gpu.attention_reference import (  # noqa: E402
    entmax_attention_dense,
    entmax_attention_varlen_dense,
    entmax_rows,
)

DEV = "cuda" if _HAS_CUDA else "cpu"
import importlib.util  # noqa: E402

_INTERP_OK = importlib.util.find_spec("triton") is not None and (
    _HAS_CUDA or os.environ.get("TRITON_INTERPRET") == "1")
needs_triton = pytest.mark.skipif(
    not _INTERP_OK or (not _HAS_CUDA and _TRITON_PREIMPORTED and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="Triton kernels need CUDA or TRITON_INTERPRET=1 set before triton is imported",
)
gpu = pytest.mark.gpu


def _triton(fn):
    """Runs the Triton kernels (interpreter on CPU): skipped when they cannot run."""
    return pytest.mark.interpreter(needs_triton(fn))

needs_cuda = pytest.mark.skipif(not _HAS_CUDA, reason="needs CUDA")


def _tol(alpha):
    a = alpha if isinstance(alpha, float) else float(torch.as_tensor(alpha).max())
    return (1e-3, 1e-3) if a > 2 else (2e-5, 1e-4)


def _inputs(B, H, Hkv, Nq, Nk, D, dtype=torch.float32, seed=0, scale=1.0, device=DEV):
    g = torch.Generator().manual_seed(seed)
    q = (scale * torch.randn(B, H, Nq, D, generator=g)).to(device=device, dtype=dtype)
    k = torch.randn(B, Hkv, Nk, D, generator=g).to(device=device, dtype=dtype)
    v = torch.randn(B, Hkv, Nk, D, generator=g).to(device=device, dtype=dtype)
    return [x.requires_grad_() for x in (q, k, v)]


def _ref(q, k, v, alpha, causal, scale=None, do=None):
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    a = alpha.detach().double().requires_grad_() if torch.is_tensor(alpha) else alpha
    out, tau = entmax_attention_dense(qd, kd, vd, alpha=a, is_causal=causal, scale=scale, return_tau=True)
    grads = None
    if do is not None:
        out.backward(do.double())
        grads = (qd.grad, kd.grad, vd.grad, a.grad if torch.is_tensor(a) else None)
    return out.detach(), tau.detach(), grads


def _assert_close(x, ref, atol, rtol, what):
    x = x.detach().double().cpu()
    ref = ref.detach().double().cpu()
    assert torch.isfinite(x).all(), f"{what}: non-finite values"
    torch.testing.assert_close(x, ref, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def _check_against_reference(B, H, Hkv, Nq, Nk, D, causal, alpha, *, seed=0, grads=True, qscale=1.0,
                             dtype=torch.float32, atol=None, rtol=None):
    q, k, v = _inputs(B, H, Hkv, Nq, Nk, D, dtype=dtype, seed=seed, scale=qscale)
    out, st = entmax_attention(q, k, v, alpha=alpha, is_causal=causal, enable_gqa=True,
                               return_stats=True, backend="triton")
    assert out.shape == (B, H, Nq, D) and out.dtype == dtype
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1)).to(out)
    ref, tau_ref, g_ref = _ref(q, k, v, alpha, causal, do=do if grads else None)
    a_tol, r_tol = _tol(alpha)
    a_tol, r_tol = atol or a_tol, rtol or r_tol
    _assert_close(out, ref, a_tol, r_tol, "out")
    # threshold: exact to float32 precision on every row (visible rows), 0 on rows without keys
    _assert_close(st.tau, tau_ref, 5e-5 * max(1.0, qscale**2), 1e-5, "tau")
    if grads:
        out.backward(do)
        for name, x, gr in zip(("dq", "dk", "dv"), (q, k, v), g_ref[:3]):
            _assert_close(x.grad, gr, a_tol * max(1.0, qscale), r_tol * 10, name)
    return out, st


def _row_sums_from_tau(q, k, tau, alpha, causal):
    """Σ_j p_ij in float64 from the kernel's τ (absolute): checks |Σp − 1| of the solver."""
    qd, kd = q.detach().double(), k.detach().double()
    G = qd.shape[1] // kd.shape[1]
    kd = kd.repeat_interleave(G, 1)
    s = qd @ kd.transpose(-1, -2) / math.sqrt(qd.shape[-1])
    if causal:
        Nq, Nk = s.shape[-2:]
        i = torch.arange(Nq, device=s.device)[:, None]
        j = torch.arange(Nk, device=s.device)[None, :]
        s = s.masked_fill(~(j <= i + Nk - Nq), -math.inf)
    z = (alpha - 1.0) * s - tau.double()[..., None]
    return torch.clamp(z, min=0).pow(1.0 / (alpha - 1.0)).sum(-1)


# ---------------------------------------------------------------------------------------------
# argument validation (reference backend: no kernels needed)
# ---------------------------------------------------------------------------------------------


def _qkv(B=1, H=2, Hkv=2, N=8, D=16, dtype=torch.float32):
    return (torch.randn(B, H, N, D, dtype=dtype), torch.randn(B, Hkv, N, D, dtype=dtype),
            torch.randn(B, Hkv, N, D, dtype=dtype))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(alpha=0.5), ValueError, "alpha"),
        (dict(alpha=float("nan")), ValueError, "alpha"),
        (dict(alpha=True), TypeError, "bool"),
        (dict(alpha="1.5"), TypeError, "alpha"),
        (dict(alpha=torch.tensor([1.5, 1.0])), ValueError, "> 1"),
        (dict(alpha=torch.tensor([1.5, 1.5, 1.5])), ValueError, "shape"),
        (dict(alpha=torch.tensor([1, 2])), TypeError, "floating"),
        (dict(scale=-1.0), ValueError, "scale"),
        (dict(scale="x"), TypeError, "scale"),
        (dict(backend="cuda"), ValueError, "backend"),
    ],
)
def test_validation_arguments(kwargs, exc, match):
    q, k, v = _qkv()
    with pytest.raises(exc, match=match):
        entmax_attention(q, k, v, **kwargs)


def test_validation_shapes_dtypes():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="4-D"):
        entmax_attention(q[0], k[0], v[0])
    with pytest.raises(TypeError, match="dtype"):
        entmax_attention(q, k.double(), v)
    with pytest.raises(TypeError, match="not supported"):
        entmax_attention(q.double(), k.double(), v.double(), backend="triton")
    with pytest.raises(TypeError, match="not supported"):
        entmax_attention(q.int(), k.int(), v.int())
    with pytest.raises(ValueError, match="head dim"):
        entmax_attention(q, k[..., :8], v)
    with pytest.raises(ValueError, match="v head dim"):
        entmax_attention(q, k, v[..., :8])
    with pytest.raises(ValueError, match="batch"):
        entmax_attention(q, torch.cat([k, k]), torch.cat([v, v]))
    with pytest.raises(ValueError, match="same heads and length"):
        entmax_attention(q, k, v[:, :, :4])
    with pytest.raises(TypeError, match="torch.Tensor"):
        entmax_attention(q.numpy(), k, v)
    q3, k3, v3 = _qkv(H=3, Hkv=2)
    with pytest.raises(ValueError, match="multiple"):
        entmax_attention(q3, k3, v3, enable_gqa=True)
    q4, k4, v4 = _qkv(H=4, Hkv=2)
    with pytest.raises(ValueError, match="enable_gqa"):
        entmax_attention(q4, k4, v4)
    # float64 is fine for the reference, and for "auto" off CUDA (which picks the reference)
    out = entmax_attention(q.double(), k.double(), v.double(), backend="reference")
    assert out.dtype == torch.float64
    if q.device.type != "cuda":
        torch.testing.assert_close(entmax_attention(q.double(), k.double(), v.double()), out)
    else:
        with pytest.raises(TypeError, match="not supported"):
            entmax_attention(q.double(), k.double(), v.double())


def test_validation_varlen():
    q = torch.randn(10, 2, 16)
    k = torch.randn(10, 2, 16)
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    with pytest.raises(ValueError, match="non-decreasing"):
        entmax_attention_varlen(q, k, k, torch.tensor([0, 6, 4, 10], dtype=torch.int32), torch.tensor([0, 6, 4, 10], dtype=torch.int32), 6, 6)
    with pytest.raises(ValueError, match="does not match"):
        entmax_attention_varlen(q, k, k, torch.tensor([0, 4, 9], dtype=torch.int32), cu, 6, 6)
    with pytest.raises(ValueError, match="max_seqlen"):
        entmax_attention_varlen(q, k, k, cu, cu, 3, 6)
    with pytest.raises(TypeError, match="int32/int64"):
        entmax_attention_varlen(q, k, k, cu.float(), cu, 6, 6)
    with pytest.raises(ValueError, match="same length"):
        entmax_attention_varlen(q, k, k, cu, torch.tensor([0, 10], dtype=torch.int32), 6, 10)
    with pytest.raises(ValueError, match="3-D"):
        entmax_attention_varlen(q[None], k[None], k[None], cu, cu, 6, 6)
    with pytest.raises(TypeError, match="max_seqlen_q"):
        entmax_attention_varlen(q, k, k, cu, cu, 6.0, 6)


# ---------------------------------------------------------------------------------------------
# the reference itself
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.25, 1.5, 2.0, 3.0])
def test_reference_rows_match_entmax_package(alpha):
    entmax = pytest.importorskip("entmax")
    x = torch.randn(50, 33, dtype=torch.float64) * 3
    p, tau = entmax_rows(x, alpha)
    if alpha == 1.5:
        ref = entmax.entmax15(x, dim=-1)
    elif alpha == 2.0:
        ref = entmax.sparsemax(x, dim=-1)
    else:
        ref = entmax.entmax_bisect(x, alpha=alpha, dim=-1, n_iter=100)
    torch.testing.assert_close(p, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(p.sum(-1), torch.ones(50, dtype=torch.float64))
    # τ consistent with p
    torch.testing.assert_close(torch.clamp((alpha - 1) * x - tau[:, None], min=0).pow(1 / (alpha - 1)), p, atol=1e-12, rtol=0)


def test_reference_gradcheck_with_alpha():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 5, 8, dtype=torch.float64, generator=g).requires_grad_()
    k = torch.randn(1, 1, 7, 8, dtype=torch.float64, generator=g).requires_grad_()
    v = torch.randn(1, 1, 7, 8, dtype=torch.float64, generator=g).requires_grad_()
    a = torch.tensor([1.3, 1.8], dtype=torch.float64, requires_grad=True)
    f = lambda q, k, v, a: entmax_attention_dense(q, k, v, alpha=a, is_causal=True)  # noqa: E731
    assert torch.autograd.gradcheck(f, (q, k, v, a), eps=1e-6, atol=1e-6)


def test_reference_alpha_one_is_sdpa_and_zero_rows():
    q, k, v = (x.double() for x in _qkv(N=6))
    out = entmax_attention_reference(q, k, v, alpha=1.0)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v))
    # causal with Nq > Nk: the first Nq − Nk rows see nothing → zero rows (also for α = 1)
    q2 = torch.randn(1, 2, 9, 16, dtype=torch.float64)
    for a in (1.0, 1.5):
        o = entmax_attention(q2, k, v, alpha=a, is_causal=True, backend="reference")
        assert torch.equal(o[:, :, :3], torch.zeros_like(o[:, :, :3]))
        assert o[:, :, 3:].abs().sum() > 0


@pytest.mark.parametrize("alpha", [1.0, 1.5, 3.0])
@pytest.mark.parametrize("causal", [False, True])
def test_no_keys_give_zero_rows_and_zero_gradients(alpha, causal):
    """Nk = 0 (padded) and a varlen sequence with no keys: zero output rows, zero gradients
    (not an error, and not an output cut off from autograd), τ = 0 in the statistics."""
    q = torch.randn(1, 2, 5, 16, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 2, 0, 16, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 0, 16, dtype=torch.float64, requires_grad=True)
    res = entmax_attention(q, k, v, alpha=alpha, is_causal=causal, return_stats=True,
                           backend="reference")
    out, st = res
    assert out.shape == (1, 2, 5, 16) and torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.equal(q.grad, torch.zeros_like(q))
    if alpha != 1.0:
        assert torch.equal(st.tau, torch.zeros(1, 2, 5, dtype=torch.float64))
    else:
        assert st is None
    # varlen: a sequence with queries and no keys, between two ordinary ones
    cq = torch.tensor([0, 3, 7, 9])
    ck = torch.tensor([0, 4, 4, 9])
    qv = torch.randn(9, 2, 16, dtype=torch.float64, requires_grad=True)
    kv = torch.randn(9, 2, 16, dtype=torch.float64)
    vv = torch.randn(9, 2, 16, dtype=torch.float64)
    out, st = entmax_attention_varlen(qv, kv, vv, cq, ck, 4, 5, alpha=alpha, is_causal=causal,
                                      return_stats=True, backend="reference")
    assert torch.equal(out[3:7], torch.zeros_like(out[3:7])) and out[:3].abs().sum() > 0
    out.sum().backward()
    assert torch.equal(qv.grad[3:7], torch.zeros_like(qv.grad[3:7]))
    if alpha != 1.0:
        assert st.tau.shape == (9, 2) and torch.equal(st.tau[3:7], torch.zeros_like(st.tau[3:7]))
        # the other rows' τ is the padded reference's, sequence by sequence
        for a, b, c, d in ((0, 3, 0, 4), (7, 9, 4, 9)):
            _, st1 = entmax_attention(qv[a:b].transpose(0, 1)[None], kv[c:d].transpose(0, 1)[None],
                                      vv[c:d].transpose(0, 1)[None], alpha=alpha, is_causal=causal,
                                      return_stats=True, backend="reference")
            torch.testing.assert_close(st.tau[a:b], st1.tau[0].transpose(0, 1))
        assert bool(torch.isnan(st.tile_sparsity)) and int(st.live_tiles) == -1


def test_reference_alpha_near_two_limits():
    # α = 2 reference: sparsemax attention equals the projection onto the simplex
    q, k, v = (x.double() for x in _qkv(N=5))
    out, tau = entmax_attention_dense(q, k, v, alpha=2.0, return_tau=True)
    s = q @ k.transpose(-1, -2) / 4.0
    p = torch.clamp(s - tau[..., None], min=0)
    torch.testing.assert_close(p.sum(-1), torch.ones_like(tau))
    torch.testing.assert_close(out, p @ v)


# ---------------------------------------------------------------------------------------------
# fused kernels (interpreter on CPU, CUDA when present) against the float64 reference
# ---------------------------------------------------------------------------------------------

# B, H, Hkv, Nq, Nk, D, causal, alpha
CASES = [
    (1, 2, 1, 17, 17, 16, False, 1.5),
    (2, 2, 2, 64, 64, 32, True, 1.5),
    (1, 4, 2, 100, 100, 16, True, 2.0),
    (1, 2, 2, 130, 130, 64, False, 1.25),
    (1, 2, 1, 1, 1, 16, True, 1.5),
    (1, 2, 2, 1, 130, 32, True, 2.0),       # decode: one query row
    (1, 2, 2, 64, 100, 16, True, 1.25),     # Nq < Nk, bottom-right
    (1, 2, 1, 100, 64, 32, True, 1.5),      # Nq > Nk: the first 36 rows see nothing
    (1, 2, 2, 40, 70, 16, False, 3.0),
    (1, 2, 2, 64, 64, 16, True, 3.0),
    (1, 1, 1, 130, 17, 24, False, 1.5),     # D = 24 (padded to 32)
]


@_triton
@pytest.mark.parametrize("B,H,Hkv,Nq,Nk,D,causal,alpha", CASES)
def test_kernels_match_reference(B, H, Hkv, Nq, Nk, D, causal, alpha):
    _check_against_reference(B, H, Hkv, Nq, Nk, D, causal, alpha, seed=Nq + Nk + D)


@_triton
@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.25])
def test_row_sums_and_large_logits(alpha):
    """|Σp − 1| ≤ 1e-5 on every row, also with scores up to |s| ≈ 200 (shift invariance)."""
    q, k, v = _inputs(1, 2, 2, 70, 70, 32, seed=3)
    with torch.no_grad():
        out, st = entmax_attention(q, k, v, alpha=alpha, is_causal=True, return_stats=True, backend="triton")
    sums = _row_sums_from_tau(q, k, st.tau, alpha, True)
    assert (sums - 1).abs().max().item() <= 1e-5
    # large logits (|s| up to ~200): the kernel's own weights sum to 1 (v = 1 gives out = Σp)
    q30 = 30.0 * q.detach()
    ones = torch.ones_like(v)
    with torch.no_grad():
        sums = entmax_attention(q30, k, ones, alpha=alpha, is_causal=True, backend="triton")
        out30 = entmax_attention(q30, k, v, alpha=alpha, is_causal=True, backend="triton")
    assert (sums.double() - 1).abs().max().item() <= 1e-5
    ref, _, _ = _ref(q30, k, v, alpha, True)
    # scores of magnitude 200 carry fp32 rounding of ~1e-5 in s itself
    _assert_close(out30, ref, 1e-3, 1e-3, "out (large logits)")


@_triton
@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.25, "1.25 sweeps"])
def test_rows_shifted_by_1e4(alpha, monkeypatch):
    """Keys moved by one vector w shift each query row's scores by the constant q_i·w/√D (here of
    magnitude ~10⁴), which entmax ignores: the kernel's own weights still sum to 1 within 1e-5
    (τ and the weights come from the same float32 scores: the solve's stored candidates and the
    tile kernels' scores agree bit for bit), and the output stays that of the unshifted scores up
    to the rounding of scores of magnitude 10⁴ (~1e-3 in s).  "1.25 sweeps": every block on the
    sparse sweeps (their Halley steps and certified stops on sums of scores near 10⁴)."""
    if alpha == "1.25 sweeps":
        import sparsemap_tools.gpu.attention as ga

        monkeypatch.setattr(ga, "_SWEEP_LIVE", 0)
        monkeypatch.setattr(ga, "_SWEEP_MIN", 0)
        alpha = 1.25
    q, k, v = _inputs(1, 2, 2, 70, 70, 32, seed=21)
    g = torch.Generator().manual_seed(22)
    w = torch.randn(32, generator=g).to(DEV)
    w = w / w.norm() * 1e4 * 32 ** 0.5 / q.norm(dim=-1).mean()
    ks = k + w
    shift = (q @ w) / 32 ** 0.5
    assert shift.abs().max() > 3e3  # rows really are shifted by thousands
    with torch.no_grad():
        sums = entmax_attention(q, ks, torch.ones_like(v), alpha=alpha, is_causal=True, backend="triton")
        out = entmax_attention(q, ks, v, alpha=alpha, is_causal=True, backend="triton")
    assert torch.isfinite(out).all()
    assert (sums.double() - 1).abs().max().item() <= 1e-5
    ref, _, _ = _ref(q, k, v, alpha, True)
    _assert_close(out, ref, 3e-2, 3e-2, "out (rows shifted by ~1e4)")


@_triton
@pytest.mark.parametrize("alpha,tol", [(2.5, 1e-5), (3.0, 1e-5), (4.0, 3e-3)])
def test_near_uniform_rows_shifted_by_1e4_alpha_above_2(alpha, tol):
    """α > 2 bisects its bracket, whose upper end r − n^{1−α} (r: the row max's own z, the
    rounding residual of m, up to ~5e-4 here) lies within r of the root on near-uniform rows.
    The solve does not know r and brackets with 2⁻²⁴·|m| ≥ |r| instead; with −n^{1−α} (r
    ignored) these rows came out with Σp = 1.004 (α = 3) and 2.0 (α = 4).  (α = 4's bound is
    the Hölder limit, not the solver's tolerance: at |m| ≈ 10³ a float32 score is rounded to
    steps of 6·10⁻⁵, about the support keys' distance d from τ' (~4·10⁻⁵, τ' ≈ −3·10⁻⁴), and
    p = d^{1/3} turns one step of a key's score into ~10⁻² of its weight.  Measured 1.3·10⁻³
    on an AMD EPYC machine under the interpreter, whose float32 arithmetic rounds differently
    by CPU, and below 10⁻⁴ on the machines before; the bug this guards against gave 2.0.)"""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 2, 40, 32, generator=g).to(DEV)
    k = 1e-4 * torch.randn(1, 2, 40, 32, generator=g).to(DEV)
    w = torch.randn(32, generator=g).to(DEV)
    ks = k + w / w.norm() * 1e4 * 32 ** 0.5 / q.norm(dim=-1).mean()
    ones = torch.ones_like(q)
    with torch.no_grad():
        sums = entmax_attention(q, ks, ones, alpha=alpha, is_causal=True, backend="triton")
        base = entmax_attention(q, k, ones, alpha=alpha, is_causal=True, backend="triton")
    assert (base.double() - 1).abs().max().item() <= 1e-5
    assert (sums.double() - 1).abs().max().item() <= tol


@_triton
def test_per_head_alpha_and_alpha_gradient():
    """Per-head α tensor: generic kernel path; fused ∂/∂α (row statistics O3, Σ p log p)."""
    q, k, v = _inputs(1, 3, 3, 33, 33, 16, seed=5)
    alpha = torch.tensor([1.25, 1.5, 2.0], device=DEV, requires_grad=True)
    out = entmax_attention(q, k, v, alpha=alpha, is_causal=True, backend="triton")
    do = torch.randn_like(out)
    out.backward(do)
    ref, _, g = _ref(q, k, v, alpha, True, do=do)
    _assert_close(out, ref, 2e-5, 1e-4, "out")
    for name, x, gr in zip(("dq", "dk", "dv", "dalpha"), (q, k, v, alpha), g):
        _assert_close(x.grad, gr, 5e-5, 1e-3, name)


@_triton
def test_alpha_gradient_varlen_scalar_tensor():
    g = torch.Generator().manual_seed(8)
    cu = torch.tensor([0, 10, 10, 40], dtype=torch.int32)
    q, k, v = (torch.randn(40, 3, 16, generator=g).to(DEV) for _ in range(3))
    a = torch.tensor(1.7, device=DEV, requires_grad=True)
    out = entmax_attention_varlen(q, k, v, cu.to(DEV), cu.to(DEV), 30, 30, alpha=a, is_causal=True, backend="triton")
    do = torch.randn(out.shape, generator=g).to(out)
    out.backward(do)
    ad = a.detach().double().requires_grad_()
    ref = entmax_attention_varlen_dense(q.double(), k.double(), v.double(), cu, cu, alpha=ad.expand(3), is_causal=True)
    ref.backward(do.double())
    _assert_close(a.grad, ad.grad, 1e-4, 1e-4, "dalpha")


@_triton
def test_strided_bnhd_inputs():
    """(B, N, H, D) tensors viewed as (B, H, N, D): strided inputs go to the kernels as they are."""
    g = torch.Generator().manual_seed(12)
    q = torch.randn(2, 33, 4, 16, generator=g).to(DEV).transpose(1, 2).requires_grad_()
    k = torch.randn(2, 40, 2, 16, generator=g).to(DEV).transpose(1, 2).requires_grad_()
    v = torch.randn(2, 40, 2, 16, generator=g).to(DEV).transpose(1, 2).requires_grad_()
    assert not q.is_contiguous()
    out = entmax_attention(q, k, v, alpha=1.5, is_causal=True, enable_gqa=True, backend="triton")
    do = torch.randn(out.shape, generator=g).to(out)
    out.backward(do)
    ref, _, gr = _ref(q, k, v, 1.5, True, do=do)
    _assert_close(out, ref, 2e-5, 1e-4, "out")
    for name, x, r in zip(("dq", "dk", "dv"), (q, k, v), gr):
        _assert_close(x.grad, r, 2e-5, 1e-3, name)


@_triton
def test_alpha_one_is_softmax_sdpa():
    q, k, v = _inputs(1, 2, 2, 20, 20, 16, seed=1)
    out = entmax_attention(q, k, v, alpha=1.0, is_causal=True, backend="triton")
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    _assert_close(out, ref, 1e-6, 1e-6, "out")


@_triton
def test_custom_scale_and_inference_path():
    """Custom scale; the no-grad forward (no O2) gives bitwise the same output; deterministic."""
    q, k, v = _inputs(1, 2, 2, 50, 50, 16, seed=9)
    with torch.no_grad():
        o_inf = entmax_attention(q, k, v, alpha=1.5, scale=0.5, backend="triton")
    o_tr = entmax_attention(q, k, v, alpha=1.5, scale=0.5, backend="triton")
    assert torch.equal(o_inf, o_tr.detach())
    ref, _, _ = _ref(q, k, v, 1.5, False, scale=0.5)
    _assert_close(o_tr, ref, 2e-5, 1e-4, "out")
    do = torch.randn_like(o_tr)
    o_tr.backward(do)
    g1 = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    entmax_attention(q, k, v, alpha=1.5, scale=0.5, backend="triton").backward(do)
    assert all(torch.equal(a, x.grad) for a, x in zip(g1, (q, k, v)))


@_triton
def test_inference_skips_o2(monkeypatch):
    """Under torch.no_grad (or with no input requiring grad) the forward computes no O2."""
    import sparsemap_tools.gpu.attention as ga

    seen = []
    real = ga.entmax_attention_fwd

    def spy(*args, **kwargs):
        seen.append(args[7])  # need_o2
        return real(*args, **kwargs)

    monkeypatch.setattr(ga, "entmax_attention_fwd", spy)
    q, k, v = _inputs(1, 2, 2, 20, 20, 16, seed=2)
    with torch.no_grad():
        entmax_attention(q, k, v, backend="triton")
    entmax_attention(q.detach(), k.detach(), v.detach(), backend="triton")
    entmax_attention(q, k, v, backend="triton")
    assert seen == [False, False, True]


@_triton
def test_block_sparse_inputs_skip_tiles_exactly():
    """Segment-topic inputs: many tiles are skipped, results still exact."""
    g = torch.Generator().manual_seed(0)
    N, D, seg = 128, 32, 32
    t = 3.0 * torch.randn(1, 2, N // seg, D, generator=g)
    tt = t.repeat_interleave(seg, 2)
    q = (tt + torch.randn(1, 2, N, D, generator=g)).to(DEV).requires_grad_()
    k = (tt + torch.randn(1, 2, N, D, generator=g)).to(DEV).requires_grad_()
    v = torch.randn(1, 2, N, D, generator=g).to(DEV).requires_grad_()
    out, st = entmax_attention(q, k, v, alpha=2.0, is_causal=False, return_stats=True, backend="triton")
    assert st.tile_sparsity.item() > 0.3, st
    do = torch.randn_like(out)
    out.backward(do)
    ref, _, gr = _ref(q, k, v, 2.0, False, do=do)
    # scores reach |s| ~ 50 here: float32 rounding of s itself is ~4e-6
    _assert_close(out, ref, 1e-4, 1e-3, "out")
    for name, x, r in zip(("dq", "dk", "dv"), (q, k, v), gr):
        _assert_close(x.grad, r, 2e-4, 1e-3, name)


@_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    q, k, v = _inputs(1, 2, 1, 64, 64, 32, dtype=dtype, seed=4)
    out = entmax_attention(q, k, v, alpha=1.5, is_causal=True, enable_gqa=True, backend="triton")
    assert out.dtype == dtype
    do = torch.randn_like(out)
    out.backward(do)
    ref, _, g = _ref(q, k, v, 1.5, True, do=do)
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    _assert_close(out, ref, tol, tol, "out")
    for name, x, r in zip(("dq", "dk", "dv"), (q, k, v), g[:3]):
        _assert_close(x.grad, r, 4 * tol, 4 * tol, name)


@_triton
def test_half_precision_alpha_above_two_near_threshold():
    """float16, α = 4: a key just above the threshold (d ≈ 2·10⁻⁸) has u = d^{Q−1} ≈ 1.4·10⁵,
    past float16's range; the O2 = Σ u v / Σ u product must not overflow (it made every dq and dk
    entry NaN while the output was finite).  8 tied keys, one near the threshold, 3 below.

    d is a few hundred float32 steps of τ' (the scale puts the float64 root 2·10⁻⁸ below the
    key), so the key is in the kernel's support whatever the last bits of its τ; the gradients
    are compared with the float64 backward at the kernel's own τ (the backward is a smooth
    function of τ, the solve is checked on its own: τ against the float64 root)."""
    alpha, n_tied, d_target = 4.0, 8, 2e-8
    Q = 1.0 / (alpha - 1.0)
    k = torch.zeros(1, 1, 12, 16, dtype=torch.float16)
    k[..., 8, 0] = -0.000650882721
    k[..., 9:, 0] = -1.0
    s8 = float(k[0, 0, 8, 0])
    # the root t = −τ' solves n_tied·t^Q + d^Q = 1 with d = z8 + t: choose z8 = c·s8 for d_target
    t = ((1.0 - d_target ** Q) / n_tied) ** (1.0 / Q)
    scale = (d_target - t) / ((alpha - 1.0) * s8)
    q = torch.zeros(1, 1, 1, 16, dtype=torch.float16)
    q[..., 0] = 1.0
    v = torch.randn(1, 1, 12, 16, generator=torch.Generator().manual_seed(0)).to(torch.float16)
    q, k, v = (x.to(DEV).requires_grad_() for x in (q, k, v))
    out, st = entmax_attention(q, k, v, alpha=alpha, scale=scale, backend="triton", return_stats=True)
    do = torch.ones_like(out)
    out.backward(do)
    ref, tau_ref, _ = _ref(q, k, v, alpha, False, scale=scale, do=do)
    _assert_close(out, ref, 4e-3, 4e-3, "out")
    _assert_close(st.tau, tau_ref, 1e-8, 0.0, "tau")
    # the float64 backward at the kernel's τ, on the kernel's scores z = fl32(c·s) (m = 0 here)
    c32 = torch.tensor((alpha - 1.0) * scale, dtype=torch.float32)
    s = (q.detach().float() @ k.detach().float().transpose(-1, -2))[0, 0, 0]
    z = (c32 * s).double()
    d = z - float(st.tau.reshape(-1)[0])
    assert 0 < float(d[8]) < 1e-7 and float(d[8]) ** (Q - 1.0) > 65504  # u₈ past float16's range
    pos = d > 0
    p = torch.where(pos, d.clamp(min=1e-300) ** Q, 0.0)
    u = torch.where(pos, d.clamp(min=1e-300) ** (Q - 1.0), 0.0)
    vd, dod = v.detach().double()[0, 0], do.double()[0, 0, 0]
    g = vd @ dod
    dS = u * (g - (u * g).sum() / u.sum())   # u ⊙ (dO·vᵀ − δ), δ = dO·O2
    # ∂p/∂z = Q·u and ∂z/∂s = c = (α − 1)·scale, so the score gradient is scale·dS
    want = (scale * dS @ k.detach().double()[0, 0],                        # dq
            scale * dS[:, None] * q.detach().double()[0, 0, 0][None, :],   # dk
            p[:, None] * dod[None, :])                                      # dv
    for name, x, r in zip(("dq", "dk", "dv"), (q, k, v), want):
        _assert_close(x.grad[0, 0].reshape(r.shape), r, 2e-2 * float(r.abs().max()), 2e-2, name)


@_triton
def test_varlen_with_empty_sequence_and_gqa():
    g = torch.Generator().manual_seed(2)
    lens_q = [17, 0, 40, 1]
    lens_k = [17, 5, 33, 20]
    cq = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32)
    ck = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32)
    q = torch.randn(int(cq[-1]), 4, 16, generator=g).to(DEV).requires_grad_()
    k = torch.randn(int(ck[-1]), 2, 16, generator=g).to(DEV).requires_grad_()
    v = torch.randn(int(ck[-1]), 2, 16, generator=g).to(DEV).requires_grad_()
    for causal in (True, False):
        for x in (q, k, v):
            x.grad = None
        out = entmax_attention_varlen(q, k, v, cq.to(DEV), ck.to(DEV), max(lens_q), max(lens_k),
                                      alpha=1.5, is_causal=causal, backend="triton")
        do = torch.randn(out.shape, generator=g).to(out)
        out.backward(do)
        qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
        ref = entmax_attention_varlen_dense(qd, kd, vd, cq, ck, alpha=1.5, is_causal=causal)
        ref.backward(do.double())
        _assert_close(out, ref, 2e-5, 1e-4, "out")
        for name, x, r in zip(("dq", "dk", "dv"), (q, k, v), (qd, kd, vd)):
            _assert_close(x.grad, r.grad, 2e-5, 1e-3, name)


@_triton
@pytest.mark.parametrize("tiles", ["BM=16,BN=32", "BM=32,BN=16"])
@pytest.mark.parametrize("causal,alpha,Nq,Nk", [(True, 1.5, 70, 90), (False, 2.0, 45, 33),
                                                (True, 1.25, 50, 50)])
def test_non_square_tiles(monkeypatch, tiles, causal, alpha, Nq, Nk):
    """The tuned tile table may pick BLOCK_M ≠ BLOCK_N: diagonal tiles, tile lists and the
    backward's transposed lists must hold for either shape (GQA, Nq ≠ Nk, gradients)."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_TILES_ENV", ga._parse_tiles(tiles))
    assert ga._config(16, torch.float32)[:2] == tuple(int(t.split("=")[1]) for t in tiles.split(","))
    _check_against_reference(1, 4, 2, Nq, Nk, 16, causal, alpha, seed=Nq + Nk)


@_triton
@pytest.mark.parametrize("causal,alpha,Nq,Nk,D", [(True, 1.5, 70, 90, 16), (False, 2.0, 45, 33, 32),
                                                  (True, 1.25, 100, 60, 24), (True, 3.0, 17, 17, 16)])
def test_scan_tma_key_tiles(monkeypatch, causal, alpha, Nq, Nk, D):
    """SPARSEMAP_ATTN_SCAN_TMA=1: the scan loads its key tiles through a tensor descriptor (zero
    fill past the keys and, at D = 24, past the head dim; GQA; Nq ≠ Nk); outputs and gradients
    match the reference, and so does a varlen batch with an empty sequence (a 3-D descriptor
    whose tiles run into the next sequence's keys, masked).  A layout TMA cannot take (a head
    dim whose row stride is not 16-byte aligned) falls back to pointer loads."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_SCAN_TMA", True)
    used = []
    real = ga._scan_tma
    monkeypatch.setattr(ga, "_scan_tma", lambda *a: used.append(real(*a)) or used[-1])
    _check_against_reference(1, 4, 2, Nq, Nk, D, causal, alpha, seed=Nq + Nk)
    assert used and all(d is not None for d in used)
    if alpha == 1.5:
        test_varlen_with_empty_sequence_and_gqa()
        assert used[-1] is not None
        assert ga._scan_tma(torch.randn(1, 1, 8, 6), False, 16, 8) is None  # 24-byte rows


def test_tile_spec_parsing_and_table():
    import sparsemap_tools.gpu.attention as ga

    t = ga._parse_tiles("BM=128, BN=64,nw=8,scan.ns=4,dq.nw=4")
    assert t == {"BM": 128, "BN": 64, "nw": 8, "scan.ns": 4, "dq.nw": 4}
    for bad in ("BM=48", "BM=8", "BN", "solve.warps=4", "xx.nw=4", "nw=four"):
        with pytest.raises(ValueError, match="SPARSEMAP_ATTN_TILES"):
            ga._parse_tiles(bad)
    # every head dim 16 … 256 and dtype has an entry; every kernel gets warps and stages
    for kind in ("16", "f32"):
        for D in (16, 24, 64, 65, 128, 200, 256):
            bucket = min(b for b, k_ in ga._TILES if k_ == kind and b >= D)
            entry = ga._TILES[(bucket, kind)]
            assert {"BM", "BN", "nw", "ns"} <= set(entry) | {"nw", "ns"}
            for kern in ga._KERNELS:
                assert entry.get(f"{kern}.nw", entry.get("nw")) in (1, 2, 4, 8, 16)
                assert entry.get(f"{kern}.ns", entry.get("ns")) >= 1


@_triton
@pytest.mark.parametrize("alpha", [1.5, 1.25, 3.0])
def test_candidate_buffer_overflow_falls_back_to_sweeps(monkeypatch, alpha):
    """Rows with more candidates than the solve kernel's buffer finish with sparse sweeps."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_cand_cap", lambda mode, rows: 2)
    _, st = _check_against_reference(1, 2, 2, 70, 90, 16, True, alpha, seed=11, grads=False)
    assert int(st.solve_iters) > 1


@_triton
@pytest.mark.parametrize("alpha", [1.5, 2.0])
@pytest.mark.parametrize("ties", [False, True])
def test_many_candidates_per_tile_and_ties(alpha, ties):
    """Flat scores (q scaled by 0.05: most keys of a tile are candidates of a row) and, with
    ``ties``, keys repeating with period 5 (every score occurs ≥ 5 times, exactly): the solve's
    pass 0 copies tiles with more than two candidates per row by repeated extraction, which must
    keep every tied copy."""
    q, k, v = _inputs(1, 2, 2, 70, 90, 16, seed=21, scale=0.05)
    if ties:
        with torch.no_grad():
            k.copy_(k[:, :, torch.arange(90) % 5])
    out, st = entmax_attention(q, k, v, alpha=alpha, is_causal=True, return_stats=True, backend="triton")
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(22)).to(out)
    ref, tau_ref, g_ref = _ref(q, k, v, alpha, True, do=do)
    _assert_close(out, ref, *_tol(alpha), "out")
    _assert_close(st.tau, tau_ref, 5e-5, 1e-5, "tau")
    rs = _row_sums_from_tau(q, k, st.tau, alpha, True)
    assert (rs - 1).abs().max() <= 1e-5
    out.backward(do)
    for name, x, gr in zip(("dq", "dk", "dv"), (q, k, v), g_ref[:3]):
        _assert_close(x.grad, gr, 2e-5, 1e-3, name)


@_triton
@pytest.mark.parametrize("diag,cap", [(8, None), (8, 40)])
@pytest.mark.parametrize("ties", [False, True])
def test_alternative_copies_are_exact(monkeypatch, diag, cap, ties):
    """The solve's experimental copy path (``_SOLVE_DIAG`` 8: prefix sum for α = 1.5, with a
    buffer that holds everything or one that overflows) gives the same exact results."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_SOLVE_DIAG", diag)
    if cap is not None:
        monkeypatch.setattr(ga, "_cand_cap", lambda mode, rows: cap)
    test_many_candidates_per_tile_and_ties(1.5, ties)


@_triton
@pytest.mark.parametrize("alpha", [1.25, 3.0])
@pytest.mark.parametrize("causal", [False, True])
def test_scan_top2_subset_bound(monkeypatch, alpha, causal):
    """The scan's optional two-scores-per-column-class subset (``SPARSEMAP_ATTN_SCAN_TOP2``):
    its lower bound τ₁ stays below the exact τ′ on every row, admits no more candidates in all
    than the one-score subset (fewer on these rows), and the attention stays exact."""
    import sparsemap_tools.gpu.attention as ga

    q, k, v = _inputs(1, 2, 2, 40, 300, 16, seed=5, scale=0.7)
    al = torch.full((2,), alpha)
    mode = ga.alpha_mode(alpha)
    bounds = {}
    for top2 in (False, True):
        monkeypatch.setattr(ga, "_SCAN_TOP2", top2)
        monkeypatch.setattr(ga, "_PROFILE_STAGES", 1)
        r = ga.entmax_attention_fwd(q.detach(), k.detach(), v.detach(), al, mode, 0.25, causal, False)
        monkeypatch.setattr(ga, "_PROFILE_STAGES", 3)
        z = (alpha - 1) * 0.25 * (q.detach().double() @ k.detach().double().transpose(-1, -2))
        z = z - r["m"].double()[..., None]
        if causal:
            z = z.masked_fill(~torch.ones(40, 300, dtype=torch.bool).tril(260), float("-inf"))
        # (bound on τ′ relative to the row max, in absolute terms, candidates above it)
        bounds[top2] = (r["tau"].double() + r["m"].double(),
                        int((z > r["tau"].double()[..., None]).sum()))
        out, st = entmax_attention(q, k, v, alpha=alpha, is_causal=causal, return_stats=True,
                                   backend="triton")
        ref, tau_ref, _ = _ref(q, k, v, alpha, causal)
        _assert_close(out, ref, *_tol(alpha), f"out (top2={top2})")
    for top2 in (False, True):  # a lower bound of the exact (absolute) τ on every row
        assert (bounds[top2][0] <= tau_ref + 1e-6).all(), top2
    assert (bounds[True][0] >= bounds[False][0] - 1e-5).float().mean() > 0.9  # tighter (mostly)
    assert bounds[True][1] < bounds[False][1], (bounds[True][1], bounds[False][1])


@_triton
@pytest.mark.parametrize("where", ["q nan", "q +inf", "k nan", "k -inf"])
@pytest.mark.parametrize("causal", [True, False])
def test_nonfinite_inputs_give_nan_rows(where, causal):
    """Non-finite q or k: exactly the query rows whose visible scores hold NaN or ±inf get NaN
    outputs and τ (the same rows as in the dense reference); every other output row equals the
    dense float64 reference on the same inputs (a −inf score is a zero weight).  Gradients: dq of
    those rows and dK/dV of every key they see are NaN; NaN may reach a few more entries (a
    key in a tile the kernels visit for such a row, a row sharing the causal diagonal tile with a
    non-finite key: 0·NaN in the tile products) but every finite entry is exact."""
    B, H, N, D = 1, 2, 70, 16
    q, k, v = _inputs(B, H, H, N, N, D, seed=31)
    qb, kb = q.detach().clone(), k.detach().clone()
    r = 41
    val = {"nan": float("nan"), "+inf": float("inf"), "-inf": -float("inf")}[where.split()[1]]
    (qb if where.startswith("q") else kb)[0, 1, r, 3] = val
    # the rows whose visible scores hold NaN or +inf (a −inf score is just a zero weight)
    sc = qb.double() @ kb.double().transpose(-1, -2)
    vis = torch.ones(N, N, dtype=torch.bool).tril() if causal else torch.ones(N, N, dtype=torch.bool)
    bad = ((torch.isnan(sc) | (sc == math.inf)) & vis).any(-1)
    assert bad.any() and not bad.all()
    qb.requires_grad_()
    kb.requires_grad_()
    out, st = entmax_attention(qb, kb, v, alpha=1.5, is_causal=causal, return_stats=True, backend="triton")
    nan_rows = torch.isnan(out).all(-1)
    assert torch.equal(nan_rows, bad), (nan_rows.nonzero().tolist(), bad.nonzero().tolist())
    assert torch.equal(torch.isnan(st.tau), bad)
    # the dense float64 reference on the same (non-finite) inputs: the same NaN rows, and every
    # other row equal
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (qb, kb, v))
    ref = entmax_attention(qd, kd, vd, alpha=1.5, is_causal=causal, backend="reference")
    assert torch.equal(torch.isnan(ref).all(-1), bad)
    _assert_close(out[~bad], ref[~bad], 2e-5, 1e-4, "out (finite rows)")
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(32)).to(out)
    out.backward(do)
    ref.backward(do.double())
    seen = (bad[..., :, None] & vis).any(-2)                                   # (B, H, N) keys
    for name, g, gr, must in (("dq", qb.grad, qd.grad, bad), ("dk", kb.grad, kd.grad, seen),
                              ("dv", v.grad, vd.grad, seen)):
        assert torch.isnan(g[must]).all(), name
        # every finite entry is exact (the reference's own backward carries 0·inf NaNs of its
        # own: entries compared where both are finite, and those must be most of the rest)
        both = torch.isfinite(g) & torch.isfinite(gr)
        assert both[~must].float().mean() > 0.5, name
        _assert_close(g[both], gr[both], 2e-5, 1e-3, name)


@_triton
def test_nonfinite_row_makes_its_heads_alpha_gradient_nan():
    """Per-head α requiring grad, a NaN in one query row of head 1: ∂L/∂α of head 1 is NaN, the
    other heads' are exact (the NaN row's head sums a NaN row statistic)."""
    q, k, v = _inputs(1, 3, 3, 33, 33, 16, seed=35)
    with torch.no_grad():
        q[0, 1, 20, 2] = float("nan")
    alpha = torch.tensor([1.25, 1.5, 2.0], device=DEV, requires_grad=True)
    out = entmax_attention(q, k, v, alpha=alpha, is_causal=True, backend="triton")
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(36)).to(out)
    out.backward(do)
    assert torch.isnan(alpha.grad[1]) and torch.isfinite(alpha.grad[[0, 2]]).all()
    ref, _, g = _ref(q, k, v, alpha, True, do=do)
    _assert_close(alpha.grad[[0, 2]], g[3][[0, 2]], 5e-5, 1e-3, "dalpha (heads 0, 2)")


@_triton
def test_nonfinite_varlen_stays_in_its_sequence():
    """A NaN in one packed sequence's keys (GQA, causal) makes NaN only that sequence's rows and
    keys; the other sequences' outputs and gradients are exact."""
    g = torch.Generator().manual_seed(33)
    lens = [30, 0, 45, 20]
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32)
    T, H, Hkv, D = int(cu[-1]), 4, 2, 16
    q = torch.randn(T, H, D, generator=g).requires_grad_()
    k = torch.randn(T, Hkv, D, generator=g)
    v = torch.randn(T, Hkv, D, generator=g).requires_grad_()
    k[30 + 10, 1, 0] = float("nan")  # sequence 2 (tokens 30 … 74), key 10, kv head 1
    k.requires_grad_()
    out = entmax_attention_varlen(q, k, v, cu, cu, 45, 45, alpha=1.5, is_causal=True, backend="triton")
    in2 = torch.zeros(T, dtype=torch.bool)
    in2[30:75] = True
    local = torch.arange(T) - 30
    bad = torch.zeros(T, H, dtype=torch.bool)
    bad[:, 2:] = (in2 & (local >= 10))[:, None]          # query heads 2, 3 use kv head 1
    assert torch.equal(torch.isnan(out).all(-1), bad)
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(34))
    out.backward(do)
    k0 = k.detach().clone()
    k0[~torch.isfinite(k0)] = 0.0
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k0, v))
    ref = entmax_attention_varlen_dense(qd, kd, vd, cu, cu, alpha=1.5, is_causal=True)
    ref.backward(do.double())
    _assert_close(out[~bad], ref[~bad], 2e-5, 1e-4, "out")
    seen = torch.zeros(T, Hkv, dtype=torch.bool)
    seen[30:75, 1] = True                                 # row 74 of sequence 2 sees all its keys
    other = torch.ones(T, dtype=torch.bool)
    other[30:75] = False                                  # the other sequences: untouched
    for name, g, gr, must in (("dq", q.grad, qd.grad, bad), ("dk", k.grad, kd.grad, seen),
                              ("dv", v.grad, vd.grad, seen)):
        assert torch.isnan(g[must]).all(), name
        assert torch.isfinite(g[other]).all(), name
        fin = torch.isfinite(g)
        _assert_close(g[fin], gr[fin], 2e-5, 1e-3, name)


@_triton
@pytest.mark.parametrize("alpha", [3.0, 6.0])
def test_equal_scores_large_alpha(alpha):
    """q = 0: every visible score equal, so p is uniform over the visible keys and τ' = −n^{1−α}
    (tiny for large α). The α > 2 solve converges (the φ-Newton fallback) well within
    max_iter and matches the float64 reference, values and gradients."""
    g = torch.Generator().manual_seed(2)
    q = torch.zeros(1, 2, 40, 16).to(DEV).requires_grad_()
    k = torch.randn(1, 2, 50, 16, generator=g).to(DEV).requires_grad_()
    v = torch.randn(1, 2, 50, 16, generator=g).to(DEV).requires_grad_()
    out, st = entmax_attention(q, k, v, alpha=alpha, is_causal=True, return_stats=True, backend="triton")
    assert int(st.solve_iters) < 64
    vis = torch.ones(40, 50, dtype=torch.bool).tril(10)
    mean_v = (vis.double() @ v.detach().double()[0]) / vis.sum(1, keepdim=True)
    _assert_close(out[0], mean_v, 1e-5, 1e-5, "out = mean of the visible values")
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out)
    out.backward(do)
    ref, _, gr = _ref(q, k, v, alpha, True, do=do)
    _assert_close(out, ref, 1e-5, 1e-5, "out")
    # u = p^{2−α} is large here (p ≈ 1/50: u ≈ 6e6 at α = 6): relative tolerance
    for name, x, r in zip(("dq", "dk", "dv"), (q, k, v), gr):
        _assert_close(x.grad, r, *_tol(alpha), name)


def test_candidate_buffer_size_rule():
    """128 floats for α ∈ {1.5, 2}; more for other α, within 1 GiB over all buffer rows, at
    least 256: 4096 for the persistent solve's slots on an H100 (132 SMs × 3 programs × 64 rows),
    1024 for one slot per query block at N = 16k, H = 16."""
    import sparsemap_tools.gpu.attention as ga

    assert ga._cand_cap(ga.MODE_15, 10**6) == ga._cand_cap(ga.MODE_2, 10) == ga._CAND_CAP
    for mode in (ga.MODE_125, ga.MODE_GENERIC):
        assert ga._cand_cap(mode, 132 * 3 * 64) == 32 * ga._CAND_CAP
        assert ga._cand_cap(mode, 132 * 8 * 64) == 16 * ga._CAND_CAP
        assert ga._cand_cap(mode, 16 * 16384) == 8 * ga._CAND_CAP
        assert ga._cand_cap(mode, 16 * 32768) == 4 * ga._CAND_CAP
        assert ga._cand_cap(mode, 16 * 131072) == 2 * ga._CAND_CAP
        for rows in (1, 132 * 3 * 64, 16 * 16384, 16 * 32768):
            assert rows * ga._cand_cap(mode, rows) * 4 <= 2**30


def test_persistent_solve_programs(monkeypatch):
    """The persistent solve's program count: SMs × resident blocks per SM from the register cap
    and warps (H100: 132 SMs; 4 warps at 128 registers: 4 per SM, at 168: 3), at most the
    number of query blocks; by default persistent for α other than 1.5 / 2 and for head dims
    ≤ 64 (``SPARSEMAP_ATTN_SOLVE_PERSIST`` 1 / 0: always / never)."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "INTERPRET", False)
    monkeypatch.setattr(ga, "_MAXNREG", {})
    monkeypatch.setitem(ga._SM_COUNT, ("cuda", 0), 132)
    dev = torch.device("cuda", 0)
    t4 = {"solve.nw": 4}
    assert ga._solve_programs(10**6, dev, t4, ga.MODE_15) == 132 * 4
    assert ga._solve_programs(10**6, dev, t4, ga.MODE_125) == 132 * 3
    assert ga._solve_programs(10**6, dev, {"solve.nw": 8}, ga.MODE_2) == 132 * 2
    assert ga._solve_programs(100, dev, t4, ga.MODE_15) == 100
    monkeypatch.setattr(ga, "_MAXNREG", {"solve": 0})          # uncapped: assume 255 registers
    assert ga._solve_programs(10**6, dev, t4, ga.MODE_15) == 132 * 2
    monkeypatch.setattr(ga, "_SOLVE_PERSIST", "")
    for mode in (ga.MODE_15, ga.MODE_2, ga.MODE_125, ga.MODE_GENERIC):
        assert ga._solve_persist(mode, 64) and ga._solve_persist(mode, 16)
        assert ga._solve_persist(mode, 128) is (mode not in (ga.MODE_15, ga.MODE_2))
    for flag, want in (("1", True), ("0", False)):
        monkeypatch.setattr(ga, "_SOLVE_PERSIST", flag)
        for mode in (ga.MODE_15, ga.MODE_2, ga.MODE_125, ga.MODE_GENERIC):
            for d in (64, 128, 256):
                assert ga._solve_persist(mode, d) is want


@_triton
@pytest.mark.parametrize("persist", ["0", "1"])
@pytest.mark.parametrize("alpha", [1.5, 1.25])
def test_solve_grid_one_block_per_program_or_persistent(monkeypatch, persist, alpha):
    """Both launch forms of the solve give the reference answer; the persistent one runs two
    programs under the interpreter, so each solves several query blocks of several heads in one
    candidate slot (here 3 query blocks × 4 heads = 12 blocks), with a 12-float buffer that
    rows overflow (they then take sparse sweeps: more than one solve pass)."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_SOLVE_PERSIST", persist)
    assert ga._solve_programs(12, torch.device("cpu"), {"solve.nw": 4}, ga.MODE_15) == 2
    monkeypatch.setattr(ga, "_cand_cap", lambda mode, rows: 12)
    _, st = _check_against_reference(2, 2, 1, 90, 70, 16, True, alpha, seed=31, grads=False)
    assert int(st.solve_iters) > 1
    _, st = _check_against_reference(1, 2, 2, 70, 90, 16, False, alpha, seed=32, grads=False)
    assert int(st.solve_iters) > 1


@_triton
@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.25])
def test_solve_by_sweeps_only(monkeypatch, alpha):
    """Profiling mode 6 of the solve kernel (no candidate buffer, sparse QKᵀ sweeps until
    converged) is a complete solver too: it must give the reference answer."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_SOLVE_DIAG", 6)
    _, st = _check_against_reference(1, 2, 2, 70, 90, 16, True, alpha, seed=12, grads=False)
    assert int(st.solve_iters) > 1


@_triton
@pytest.mark.parametrize("alpha", [1.25, "mixed"])
def test_dense_blocks_skip_the_copy(monkeypatch, alpha):
    """Blocks of α ≤ 1.3 whose tiles are mostly live skip the candidate copy and solve by sparse
    sweeps (rule forced on for every block here): still the reference answer; with per-head α
    (1.2 / 1.5 / 1.25 / 2) the heads above 1.3 keep their buffers in the same launch."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_SWEEP_LIVE", 0)
    monkeypatch.setattr(ga, "_SWEEP_MIN", 0)
    al = torch.tensor([1.2, 1.5, 1.25, 2.0]) if alpha == "mixed" else alpha
    _, st = _check_against_reference(1, 4, 2, 70, 90, 16, True, al, seed=41, grads=False)
    assert int(st.solve_iters) > 1
    assert ga._sweep_rule(ga.MODE_15, 64)["SWEEP_LIVE"] == 101      # never for α = 1.5 / 2
    assert ga._sweep_rule(ga.MODE_125, 256)["SWEEP_LIVE"] == 101    # nor head dims > 128
    assert ga._sweep_rule(ga.MODE_125, 64)["SWEEP_LIVE"] == 0
    monkeypatch.setattr(ga, "_SWEEP_LIVE", 101)
    assert ga._sweep_rule(ga.MODE_125, 64)["SWEEP_LIVE"] == 101


@_triton
@pytest.mark.parametrize("inputs", ["ties", "equal", "flat"])
def test_alpha_125_sweeps_on_ties_and_equal_scores(monkeypatch, inputs):
    """α = 1.25 blocks solved by sparse sweeps (rule forced on; Halley steps on φ − 1): keys
    repeating with period 5 (every score ≥ 5 times), all scores equal (q = 0: F·H = G², the step
    is Newton's, exact: uniform weights), and flat scores (q scaled by 0.05)."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_SWEEP_LIVE", 0)
    monkeypatch.setattr(ga, "_SWEEP_MIN", 0)
    q, k, v = _inputs(1, 2, 2, 70, 90, 16, seed=23, scale=0.05 if inputs == "flat" else 1.0)
    with torch.no_grad():
        if inputs == "ties":
            k.copy_(k[:, :, torch.arange(90) % 5])
        if inputs == "equal":
            q.zero_()
    out, st = entmax_attention(q, k, v, alpha=1.25, is_causal=True, return_stats=True, backend="triton")
    ref, tau_ref, _ = _ref(q, k, v, 1.25, True)
    _assert_close(out, ref, *_tol(1.25), "out")
    _assert_close(st.tau, tau_ref, 5e-5, 1e-5, "tau")
    assert (_row_sums_from_tau(q, k, st.tau, 1.25, True) - 1).abs().max() <= 1e-5
    if inputs == "equal":  # uniform weights over the visible keys: the mean of their values
        vis = torch.arange(90)[None, :] <= torch.arange(70)[:, None] + 20
        mean_v = (vis.double() @ v.double()[0]) / vis.sum(1, keepdim=True)
        _assert_close(out[0], mean_v, 1e-5, 1e-5, "uniform")


_CERT_KERNEL = []


def _certificate_kernel():
    """A one-program Triton kernel that applies ``_quartic_certificate`` to rows of sums
    (F, G, H, S = Σ[d]_+, NV: five blocks of BLOCK floats) and stores (step, certified).  Defined on
    first use, at module level (the interpreter resolves the kernel's names in its module)."""
    if not _CERT_KERNEL:
        import triton
        import triton.language as tl

        global _quartic_certificate
        from sparsemap_tools.gpu.attention_solve import _quartic_certificate

        @triton.jit
        def kernel(S, OUT, TOL, BLOCK: tl.constexpr):
            offs = tl.arange(0, BLOCK)
            F = tl.load(S + 0 * BLOCK + offs)
            G = tl.load(S + 1 * BLOCK + offs)
            H = tl.load(S + 2 * BLOCK + offs)
            S1 = tl.load(S + 3 * BLOCK + offs)
            NV = tl.load(S + 4 * BLOCK + offs)
            step, cert = _quartic_certificate(F, G, H, S1, NV, TOL)
            tl.store(OUT + offs, step)
            tl.store(OUT + BLOCK + offs, cert.to(tl.float32))

        _CERT_KERNEL.append(kernel)
    return _CERT_KERNEL[0]


@_triton
def test_alpha_125_certified_steps_save_a_sweep(monkeypatch):
    """α = 1.25 sparse sweeps with the quartic certificate (``_SWEEP_CERT``, default) stop a
    sweep earlier than without it (where the last sweep only confirms |F − 1| ≤ TOL), and give
    the reference answer with |Σp − 1| ≤ 1e-5 on every row; a sweep that does not test the tile
    bounds (``_SWEEP_SKIP`` off) gives bitwise the same result (the skipped tiles add zeros)."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_SWEEP_LIVE", 0)
    monkeypatch.setattr(ga, "_SWEEP_MIN", 0)
    q, k, v = _inputs(1, 2, 2, 90, 130, 32, seed=61)
    ref, tau_ref, _ = _ref(q, k, v, 1.25, True)
    res = {}
    for cert in (False, True):
        for skip in (True, False):
            monkeypatch.setattr(ga, "_SWEEP_CERT", cert)
            monkeypatch.setattr(ga, "_SWEEP_SKIP", skip)
            out, st = entmax_attention(q, k, v, alpha=1.25, is_causal=True, return_stats=True,
                                       backend="triton")
            _assert_close(out, ref, *_tol(1.25), "out")
            _assert_close(st.tau, tau_ref, 5e-5, 1e-5, "tau")
            assert (_row_sums_from_tau(q, k, st.tau, 1.25, True) - 1).abs().max() <= 1e-5
            res[cert, skip] = out, int(st.solve_iters)
        assert torch.equal(res[cert, True][0], res[cert, False][0])
    assert res[True, True][1] < res[False, True][1]


@_triton
def test_quartic_certificate_bounds_the_sum():
    """``_quartic_certificate`` (α = 1.25): wherever it certifies a step δ from τ, the exact
    F(τ + δ) = Σ_j [z_j − τ − δ]_+⁴ (float64) is within its tolerance of 1, for thresholds
    below the root (δ ≥ 0) and above it (δ < 0, where keys re-enter the support); and it does
    certify once τ is close to the root.  Rows drawn by hypothesis: Gaussian, heavy-tailed,
    tied and flat scores."""
    hyp = pytest.importorskip("hypothesis")
    hst = hyp.strategies
    import numpy as np

    kernel = _certificate_kernel()

    def sums(z, t):
        d = z - t
        d = d[d > 0]
        return [np.sum(d**4), np.sum(d**3), np.sum(d**2), np.sum(d)]

    tol = 2e-6

    @hyp.settings(max_examples=25, deadline=None, derandomize=True)
    @hyp.given(n=hst.integers(2, 3000), kind=hst.sampled_from(["normal", "cauchy", "tied", "flat"]),
               seed=hst.integers(0, 10**6))
    def run(n, kind, seed):
        rng = np.random.default_rng(seed)
        x = {"normal": lambda: rng.standard_normal(n), "cauchy": lambda: rng.standard_cauchy(n),
             "tied": lambda: rng.integers(0, 4, n) * 0.5,
             "flat": lambda: 0.01 * rng.standard_normal(n)}[kind]()
        z = 0.25 * (x - x.max())
        # the exact root by bisection on F(t) − 1 (decreasing) in [−1, 0]
        lo, hi = -1.0, 0.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if sums(z, mid)[0] >= 1 else (lo, mid)
        root = lo
        # thresholds below and above the root, from far (1e-1) to very close (1e-7)
        offs = np.array([-1e-1, -1e-2, -1e-3, -1e-4, -1e-5, -1e-7, 1e-7, 1e-5, 1e-4, 1e-3])
        taus = root + offs * max(abs(root), 1e-3)
        B = 16
        S = np.zeros((5, B))
        for i, t in enumerate(taus):
            S[:4, i] = sums(z, t)
            S[4, i] = n
        S[:, len(taus):] = S[:, :1]
        s32 = torch.tensor(S, dtype=torch.float32).contiguous()
        out = torch.zeros(2, B, dtype=torch.float32)
        kernel[(1,)](s32, out, tol, BLOCK=B)
        step, cert = out[0].double().numpy(), out[1].numpy() > 0
        for i, t in enumerate(taus):
            if cert[i]:
                f = sums(z, t + step[i])[0]
                # the float32 sums round F − 1 by a few 1e-7
                assert abs(f - 1) <= tol + 1e-6, (kind, n, offs[i], f)
        # a threshold 1e-7 (relative) from the root, on either side, is certified
        assert cert[5] and cert[6], (kind, n)

    run()


@_triton
def test_cubic_certificate_reaches_further():
    """``_quartic_certificate``'s cubic model: 3000 Gaussian keys, thresholds 0.004 below and
    above the root — beyond the quadratic model's reach ((TOL/4S)^{1/3} ≈ 0.002 here), within
    the cubic one's ((TOL/NV)^{1/4} ≈ 0.005) — are certified, and the step lands within TOL
    (float64 sums of the step's threshold)."""
    import numpy as np

    kernel = _certificate_kernel()
    rng = np.random.default_rng(7)
    x = rng.standard_normal(3000)
    z = 0.25 * (x - x.max())

    def sums(t):
        d = z - t
        d = d[d > 0]
        return [np.sum(d**4), np.sum(d**3), np.sum(d**2), np.sum(d)]

    lo, hi = -1.0, 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if sums(mid)[0] >= 1 else (lo, mid)
    S = np.zeros((5, 2))
    for i, off in enumerate((-0.004, 0.004)):
        S[:4, i] = sums(lo + off)
        S[4, i] = z.size
    assert (2e-6 / (4 * S[3, 0])) ** (1 / 3) < 0.003        # out of the quadratic model's reach
    out = torch.zeros(2, 2, dtype=torch.float32)
    kernel[(1,)](torch.tensor(S, dtype=torch.float32), out, 2e-6, BLOCK=2)
    for i, off in enumerate((-0.004, 0.004)):
        assert out[1, i] > 0, off
        f = sums(lo + off + float(out[0, i]))[0]
        assert abs(f - 1) <= 2e-6, (off, f)


@_triton
def test_hypothesis_alpha_125_sweeps():
    """Property: α = 1.25 blocks solved by sparse sweeps only (rule forced on: Halley steps and
    the certified stop of ``_quartic_certificate``) give the reference answer with
    |Σp − 1| ≤ 1e-5 on every row, for any shape, causal or not, with normal, flat (q·0.05),
    sharp (q·3), tied (keys repeating with period 3), heavy-tailed (keys scaled by Student-t(2)
    draws) or block-sparse (queries and keys of 8-token segments share a topic vector)
    scores."""
    hyp = pytest.importorskip("hypothesis")
    hst = hyp.strategies

    @hyp.settings(max_examples=6, deadline=None, derandomize=True)
    @hyp.given(nq=hst.integers(1, 80), nk=hst.integers(1, 80), d=hst.sampled_from([16, 32]),
               causal=hst.booleans(),
               kind=hst.sampled_from(["normal", "flat", "sharp", "tied", "heavy", "segments"]),
               seed=hst.integers(0, 1000))
    @hyp.example(nq=80, nk=80, d=16, causal=True, kind="heavy", seed=5)
    @hyp.example(nq=80, nk=80, d=16, causal=False, kind="segments", seed=6)
    @hyp.example(nq=47, nk=14, d=32, causal=False, kind="segments", seed=484)
    def run(nq, nk, d, causal, kind, seed):
        import sparsemap_tools.gpu.attention as ga

        old = ga._SWEEP_LIVE, ga._SWEEP_MIN
        ga._SWEEP_LIVE, ga._SWEEP_MIN = 0, 0
        try:
            scale = {"flat": 0.05, "sharp": 3.0}.get(kind, 1.0)
            q, k, v = _inputs(1, 2, 2, nq, nk, d, seed=seed, scale=scale)
            g = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                if kind == "tied":
                    k.copy_(k[:, :, torch.arange(nk) % 3])
                elif kind == "heavy":
                    # Student-t(2) = N(0, 1) / √(χ²₂ / 2), χ²₂ / 2 = −ln U
                    u = torch.rand(1, 2, nk, 1, generator=g).clamp_min(1e-12)
                    t = torch.randn(1, 2, nk, 1, generator=g) / (-u.log()).sqrt()
                    k.mul_(t.clamp(-30, 30).to(k.device))
                elif kind == "segments":
                    topics = 3.0 * torch.randn(-(-max(nq, nk) // 8), d, generator=g).to(q.device)
                    q.add_(topics.repeat_interleave(8, 0)[:nq])
                    k.add_(topics.repeat_interleave(8, 0)[:nk])
            out, st = entmax_attention(q, k, v, alpha=1.25, is_causal=causal, return_stats=True,
                                       backend="triton")
            ref, tau_ref, _ = _ref(q, k, v, 1.25, causal)
            _assert_close(out, ref, *_tol(1.25), "out")
            _assert_close(st.tau, tau_ref, 5e-5 * max(1.0, scale**2), 1e-5, "tau")
            # Σp of the kernel's own weights (v = 1: out = Σp), as issue 5 states it.  The
            # float64 sum at the kernel's τ is off by more on block-sparse rows: their scores
            # reach ~100 and float32 rounds them by ~10⁻⁵ (z), which p = d⁴ turns into up to
            # 1.4·10⁻⁵ of Σp (found by a 60-example run: nq 47, nk 14, d 32, seed 484)
            with torch.no_grad():
                own = entmax_attention(q, k, torch.ones_like(v), alpha=1.25, is_causal=causal,
                                       backend="triton")[..., 0].double()
            visible = _row_sums_from_tau(q, k, tau_ref, 1.25, causal) > 0  # (rows with no key: 0)
            assert (own[visible] - 1).abs().max() <= 1e-5
            assert (own[~visible] == 0).all()
        finally:
            ga._SWEEP_LIVE, ga._SWEEP_MIN = old

    run()


@_triton
def test_hypothesis_random_shapes():
    hyp = pytest.importorskip("hypothesis")
    st = hyp.strategies

    @hyp.settings(max_examples=8, deadline=None, derandomize=True)
    @hyp.given(nq=st.integers(1, 80), nk=st.integers(1, 80), d=st.sampled_from([16, 32]),
               g=st.sampled_from([1, 2]), causal=st.booleans(),
               alpha=st.sampled_from([1.25, 1.5, 2.0, 1.75]), seed=st.integers(0, 1000),
               gather=st.sampled_from([0.0, 1.0, 1e9]))
    def run(nq, nk, d, g, causal, alpha, seed, gather):
        import sparsemap_tools.gpu.attention as ga

        # the gathered output off / default / forced (for every power mode)
        old = ga._GATHER_RATIO, ga._GATHER_MODES
        ga._GATHER_RATIO, ga._GATHER_MODES = gather, (0, 1, 2, 3)
        try:
            _check_against_reference(1, 2, 2 // g, nq, nk, d, causal, alpha, seed=seed, grads=False)
        finally:
            ga._GATHER_RATIO, ga._GATHER_MODES = old

    run()


@_triton
def test_hypothesis_shifted_rows_sum_to_one():
    """Property: keys moved by one vector shift each row's scores by a constant (here 10² to
    3·10⁴), which entmax ignores: for any shape, α (also > 2) and spread of the scores (random,
    near-uniform, or equal keys: uniform rows, whose threshold r − n^{1−α} sits at the bracket's
    end, r the rounding residual of the row max), the kernels' own weights sum to one (v = 1
    gives out = Σp)."""
    hyp = pytest.importorskip("hypothesis")
    st = hyp.strategies

    @hyp.settings(max_examples=16, deadline=None, derandomize=True,
                  phases=[hyp.Phase.explicit, hyp.Phase.generate])
    @hyp.given(nq=st.integers(1, 48), nk=st.integers(1, 48), causal=st.booleans(),
               alpha=st.sampled_from([3.0, 2.5, 1.25, 1.5, 2.0]), spread=st.sampled_from([0.0, 1e-4, 1.0]),
               shift=st.floats(3.0, 4.5), seed=st.integers(0, 1000))
    def run(nq, nk, causal, alpha, spread, shift, seed):
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(1, 2, nq, 16, generator=g)
        k = spread * torch.randn(1, 2, nk, 16, generator=g)
        w = torch.randn(16, generator=g)
        k = (k + w / w.norm() * 10 ** shift * 4 / q.norm(dim=-1).mean()).to(DEV)
        with torch.no_grad():
            sums = entmax_attention(q.to(DEV), k, torch.ones(1, 2, nk, 16).to(DEV), alpha=alpha,
                                    is_causal=causal, backend="triton")
        vis = torch.ones(nq, nk, dtype=torch.bool)
        if causal:
            vis = torch.arange(nk)[None, :] <= torch.arange(nq)[:, None] + (nk - nq)
        rows = vis.any(-1)  # rows with no visible key get a zero output row
        err = (sums[..., rows, :].double() - 1).abs().max().item() if rows.any() else 0.0
        # α > 2: p = d^{1/(α−1)} is Hölder at d = 0, so one key within a float32 step (~6e-8) of
        # τ' moves Σp by up to ~(6e-8)^{1/(α−1)} (2.4e-4 at α = 3) whatever the solver; the
        # bracket bug this guards against gave 4e-3 (α = 3) and 1.0 (α = 4)
        assert err <= (1e-5 if alpha <= 2 else 5e-4), (err, alpha, spread, shift)
        assert (sums[..., ~rows, :] == 0).all()

    run()


@_triton
def test_hypothesis_nonfinite_positions():
    """Property: one non-finite entry (NaN, +inf or −inf) anywhere in q or k, any shape, GQA,
    causal or not, any α: the NaN output rows are exactly the rows whose visible scores hold NaN
    or +inf, and every other row matches the float64 reference on the same inputs."""
    hyp = pytest.importorskip("hypothesis")
    st = hyp.strategies

    @hyp.settings(max_examples=8, deadline=None, derandomize=True)
    @hyp.given(nq=st.integers(1, 70), nk=st.integers(1, 70), g=st.sampled_from([1, 2]),
               causal=st.booleans(), alpha=st.sampled_from([1.25, 1.5, 2.0, 3.0]),
               in_q=st.booleans(), val=st.sampled_from([math.nan, math.inf, -math.inf]),
               pos=st.tuples(st.integers(0, 1), st.integers(0, 10**6), st.integers(0, 15)),
               seed=st.integers(0, 1000))
    def run(nq, nk, g, causal, alpha, in_q, val, pos, seed):
        q, k, v = (x.detach() for x in _inputs(1, 2, 2 // g, nq, nk, 16, seed=seed))
        x = q if in_q else k
        x[0, pos[0] % x.shape[1], pos[1] % x.shape[2], pos[2]] = val
        out = entmax_attention(q, k, v, alpha=alpha, is_causal=causal, enable_gqa=True, backend="triton")
        ref = entmax_attention(q.double(), k.double(), v.double(), alpha=alpha, is_causal=causal,
                               enable_gqa=True, backend="reference")
        sc = q.double() @ k.double().repeat_interleave(g, 1).transpose(-1, -2)
        vis = torch.ones(nq, nk, dtype=torch.bool)
        if causal:
            vis = torch.arange(nk)[None, :] <= torch.arange(nq)[:, None] + (nk - nq)
        bad = ((torch.isnan(sc) | (sc == math.inf)) & vis).any(-1)
        bad = bad | (((sc == -math.inf) | ~vis).all(-1) & vis.any(-1))
        assert torch.equal(torch.isnan(out).all(-1), bad)
        assert torch.equal(torch.isnan(ref).all(-1), bad)
        assert torch.isfinite(out[~bad]).all()
        _assert_close(out[~bad], ref[~bad], *_tol(alpha), "out (finite rows)")

    run()


# ---------------------------------------------------------------------------------------------
# GPU-size variants
# ---------------------------------------------------------------------------------------------


@gpu
@needs_cuda
@pytest.mark.parametrize("Nq,Nk,D,causal,alpha,Hkv", [
    (1024, 1024, 64, True, 1.5, 4), (777, 1500, 128, True, 2.0, 2), (2048, 2048, 64, False, 1.25, 1),
    (513, 513, 256, True, 3.0, 4), (1, 4000, 64, True, 1.5, 4),
])
def test_gpu_large_shapes(Nq, Nk, D, causal, alpha, Hkv):
    if alpha <= 2:
        _check_against_reference(2, 4, Hkv, Nq, Nk, D, causal, alpha, seed=Nq)
        return
    # α > 2: u = p^{2−α} diverges at the support's edge, and a float32 τ is rounded at ~1e-7·|τ|,
    # so the few entries (6 of 1M dq entries here) whose score lies within that rounding of τ get
    # u — and their gradient terms — with O(1) relative error.  Elementwise, only out and τ are
    # well conditioned; the gradients are compared in norm.
    q, k, v = _inputs(2, 4, Hkv, Nq, Nk, D, seed=Nq)
    out, st = entmax_attention(q, k, v, alpha=alpha, is_causal=causal, enable_gqa=True,
                               return_stats=True, backend="triton")
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(Nq + 1)).to(out)
    ref, tau_ref, g_ref = _ref(q, k, v, alpha, causal, do=do)
    _assert_close(out, ref, *_tol(alpha), "out")
    _assert_close(st.tau, tau_ref, 5e-5, 1e-5, "tau")
    out.backward(do)
    for name, x, gr in zip(("dq", "dk", "dv"), (q, k, v), g_ref[:3]):
        rel = ((x.grad.double().cpu() - gr.cpu()).norm() / gr.norm()).item()
        assert rel < 2e-3, f"{name}: relative L2 error {rel:.2e}"


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("D", [64, 128, 256])
def test_gpu_half_precision_large(dtype, D):
    """Each head-dim bucket of the tile table (``_TILES``) in 16-bit, forward and gradients."""
    q, k, v = _inputs(2, 8, 2, 2048, 2048, D, dtype=dtype, seed=1)
    out = entmax_attention(q, k, v, alpha=1.5, is_causal=True, enable_gqa=True)
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(out)
    ref, _, g_ref = _ref(q, k, v, 1.5, True, do=do)
    rel = ((out.double() - ref).norm() / ref.norm()).item()
    assert rel < 1e-2
    out.backward(do)
    for name, x, gr in zip(("dq", "dk", "dv"), (q, k, v), g_ref[:3]):
        rel = ((x.grad.double() - gr).norm() / gr.norm()).item()
        assert rel < 2e-2, (name, rel)


def _visible_key_tiles(start_m, BM, BN, lq, lk, causal):
    """Key tiles the forward visits for the query block starting at ``start_m`` (the kernels'
    ``_kend``), as a count from tile 0."""
    if start_m >= lq:
        return 0
    ke = min(lk, start_m + BM + (lk - lq)) if causal else lk
    return -(-max(ke, 0) // BN)


@_triton
@pytest.mark.parametrize("causal,Nq,Nk,H,Hkv,alpha", [
    (True, 100, 130, 2, 1, 1.5),
    (False, 70, 64, 2, 2, 2.0),
    (True, 130, 97, 4, 2, 1.25),
])
def test_tile_lists_are_the_live_tiles_and_hold_the_support(causal, Nq, Nk, H, Hkv, alpha):
    """The compacted lists the sparse kernels loop over: row-major lists hold exactly the visited
    key tiles with tile max above the block's threshold, in increasing order; the transposed
    (backward) lists hold exactly the same tiles per key block; and every tile that carries a
    positive weight of the float64 reference is listed (no mass can be dropped)."""
    from sparsemap_tools.gpu import attention as GA

    g = torch.Generator().manual_seed(3)
    seg = 16
    t = 3.0 * torch.randn(1, H, -(-max(Nq, Nk) // seg), 16, generator=g).repeat_interleave(seg, 2)
    q = (t[:, :, :Nq] + torch.randn(1, H, Nq, 16, generator=g)).to(DEV)
    kv_t = t[:, ::H // Hkv, :Nk]
    k = (kv_t + torch.randn(1, Hkv, Nk, 16, generator=g)).to(DEV)
    v = torch.randn(1, Hkv, Nk, 16, generator=g).to(DEV)
    alpha_h = torch.full((H,), alpha, dtype=torch.float32, device=DEV)
    scale = 16 ** -0.5
    fwd = GA.entmax_attention_fwd(q, k, v, alpha_h, GA.alpha_mode(alpha), scale, causal, True)
    BM, BN, NQB, NKB = fwd["cfg"][0], fwd["cfg"][1], fwd["cfg"][5], fwd["cfg"][6]
    tmax, tmin = fwd["tmax"].cpu(), fwd["tmin"].cpu()
    lst, cnt = fwd["lst"].cpu(), fwd["lcnt"].cpu()
    lst_t, cnt_t = (x.cpu() for x in GA.tile_lists(fwd["tmax"], fwd["tmin"], True, fwd["cfg"], causal))
    # reference weights → which tiles carry mass
    kr = k.double().repeat_interleave(H // Hkv, 1)
    s = scale * q.double() @ kr.transpose(-1, -2)
    if causal:
        vis = torch.ones(Nq, Nk, dtype=torch.bool).tril(Nk - Nq).to(DEV)
        s = s.masked_fill(~vis, float("-inf"))
    p, _ = entmax_rows(s, alpha)
    p = p.cpu()
    n_live = 0
    for h in range(H):
        expect_t = {kb: [] for kb in range(NKB)}
        for mb in range(NQB):
            nt = _visible_key_tiles(mb * BM, BM, BN, Nq, Nk, causal)
            expect = [kb for kb in range(nt) if tmax[h, mb, kb] > tmin[h, mb]]
            for kb in expect:
                expect_t[kb].append(mb)
            got = lst[h, mb, : int(cnt[h, mb])].tolist()
            assert got == expect, (h, mb, got, expect)
            n_live += len(expect)
            # every tile holding a positive weight is listed
            for kb in range(NKB):
                blk = p[0, h, mb * BM:(mb + 1) * BM, kb * BN:(kb + 1) * BN]
                if (blk > 0).any():
                    assert kb in expect, (h, mb, kb)
        for kb in range(NKB):
            assert lst_t[h, kb, : int(cnt_t[h, kb])].tolist() == expect_t[kb], (h, kb)
    # the inputs are block-sparse: the lists really skip tiles
    n_vis = sum(_visible_key_tiles(mb * BM, BM, BN, Nq, Nk, causal) for mb in range(NQB)) * H
    assert n_live < n_vis


@_triton
def test_block_sparse_varlen_causal_gqa_exact():
    """Packed sequences (one empty) with segment topics, causal, GQA: tiles are skipped through
    the compacted lists in the forward and both backward kernels, results stay exact."""
    g = torch.Generator().manual_seed(5)
    lens = [70, 0, 100]
    H, Hkv, D, seg = 4, 2, 16, 16
    T = sum(lens)
    t = 3.0 * torch.randn(-(-T // seg), H, D, generator=g).repeat_interleave(seg, 0)[:T]
    q = (t + torch.randn(T, H, D, generator=g)).to(DEV).requires_grad_()
    k = (t[:, ::2] + torch.randn(T, Hkv, D, generator=g)).to(DEV).requires_grad_()
    v = torch.randn(T, Hkv, D, generator=g).to(DEV).requires_grad_()
    cu = torch.tensor([0, 70, 70, 170], dtype=torch.int32, device=DEV)
    out = entmax_attention_varlen(q, k, v, cu, cu, max(lens), max(lens), alpha=1.5, is_causal=True,
                                  backend="triton")
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(6)).to(out)
    out.backward(do)
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = entmax_attention_varlen_dense(qd, kd, vd, cu, cu, alpha=1.5, is_causal=True)
    ref.backward(do.double())
    _assert_close(out, ref, 1e-4, 1e-3, "out")
    for name, x, r in zip(("dq", "dk", "dv"), (q, k, v), (qd.grad, kd.grad, vd.grad)):
        _assert_close(x.grad, r, 2e-4, 1e-3, name)


#: shapes of the gathered-output tests (α = 3 is added where the output gather is tested)
_GATHER_CASES = [
    (1, 2, 1, 100, 100, 32, True, 1.5),
    (2, 2, 2, 70, 130, 16, False, 2.0),
    (1, 2, 2, 130, 64, 64, True, 1.25),    # causal Nq > Nk: rows without keys
    (1, 4, 2, 1, 100, 16, False, 1.5),     # decode
]


def _gathered_count(g):
    return None if g is None else int(g.sum())


def _spy_gathered(monkeypatch, all_modes=True, record=_gathered_count):
    """Record ``record`` of each forward's ``gathered`` flags (query blocks whose output the
    solve wrote; by default their number, None when the gather is off); with ``all_modes`` the
    gather is enabled for every power mode (by default only α ∈ {1.5, 2})."""
    import sparsemap_tools.gpu.attention as ga

    if all_modes:
        monkeypatch.setattr(ga, "_GATHER_MODES", (ga.MODE_GENERIC, ga.MODE_15, ga.MODE_2, ga.MODE_125))

    seen = []
    real = ga.entmax_attention_fwd

    def spy(*args, **kwargs):
        res = real(*args, **kwargs)
        seen.append(record(res["gathered"]))
        return res

    monkeypatch.setattr(ga, "entmax_attention_fwd", spy)
    return seen


@_triton
@pytest.mark.parametrize("ratio", [0.0, 1e9])
@pytest.mark.parametrize("B,H,Hkv,Nq,Nk,D,causal,alpha", _GATHER_CASES + [(1, 2, 1, 64, 100, 24, True, 3.0)])
def test_gathered_output_matches_reference(monkeypatch, ratio, B, H, Hkv, Nq, Nk, D, causal, alpha):
    """The solve kernel's gathered output (``_gather_out``: out and O2 from the candidate buffers
    and their key indices) forced on for every block that kept its candidates (ratio 1e9), or off
    (0: the output pass does every block): out, τ and the three gradients match the float64
    reference either way, and the flag really switches the path."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_GATHER_RATIO", ratio)
    seen = _spy_gathered(monkeypatch)
    _, st = _check_against_reference(B, H, Hkv, Nq, Nk, D, causal, alpha, seed=Nq + D)
    assert len(seen) == 1
    assert (seen[0] > 0) if ratio > 0 else (seen[0] is None)
    # the stats report the fraction of query blocks (with visible keys) that were gathered
    assert 0.0 < float(st.gathered) <= 1.0 if ratio > 0 else float(st.gathered) == 0.0


@_triton
@pytest.mark.parametrize("ratio", [0.0, 1e9])
def test_gathered_output_per_head_alpha_varlen_halfprec(monkeypatch, ratio):
    """Per-head α (the kernels' generic powers), varlen with an empty sequence and GQA, bfloat16:
    the gathered and the tile-pass outputs both match the reference."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_GATHER_RATIO", ratio)
    seen = _spy_gathered(monkeypatch)
    _check_against_reference(1, 2, 2, 70, 70, 16, True, torch.tensor([1.7, 2.0]), seed=7)
    test_varlen_with_empty_sequence_and_gqa()
    test_half_precision(torch.bfloat16)
    assert all((s > 0) if ratio > 0 else (s is None) for s in seen), seen


@_triton
def test_gathered_output_not_used_when_a_row_overflows(monkeypatch):
    """A block with a row whose candidates overflowed its buffer is left to the output pass
    (its buffer misses keys): with a 2-float buffer no block is gathered, results stay exact."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_GATHER_RATIO", 1e9)
    monkeypatch.setattr(ga, "_cand_cap", lambda mode, rows: 2)
    seen = _spy_gathered(monkeypatch)
    _check_against_reference(1, 2, 2, 70, 90, 16, True, 1.5, seed=11, qscale=0.3)
    assert seen == [0]


@_triton
def test_gathered_output_nonfinite_rows(monkeypatch):
    """NaN rows stay NaN and the other rows exact when their blocks are gathered."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_GATHER_RATIO", 1e9)
    seen = _spy_gathered(monkeypatch)
    q, k, v = _inputs(1, 2, 2, 40, 40, 16, seed=9)
    with torch.no_grad():
        q[0, 0, 5] = float("nan")
    out = entmax_attention(q.detach(), k.detach(), v.detach(), alpha=1.5, backend="triton")
    assert torch.isnan(out[0, 0, 5]).all()
    ref, _, _ = _ref(q, k, v, 1.5, False)
    keep = torch.ones(out.shape[:3], dtype=torch.bool)
    keep[0, 0, 5] = False
    _assert_close(out[keep], ref[keep], *_tol(1.5), "out (finite rows)")
    assert seen[0] > 0


@gpu
@needs_cuda
@pytest.mark.parametrize("ratio", [0.0, 1.0, 1e9])
@pytest.mark.parametrize("D,alpha", [(64, 1.5), (128, 2.0), (64, 1.25)])
def test_gpu_gathered_output(monkeypatch, ratio, D, alpha):
    """GPU sizes: the gathered output off, at the default rule and forced for every block that
    kept its candidates; the forward+backward matches the float64 reference in each case."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_GATHER_RATIO", ratio)
    seen = _spy_gathered(monkeypatch)
    _check_against_reference(1, 4, 2, 1500, 1500, D, True, alpha, seed=D)
    assert (seen[0] is None) if ratio == 0 else (ratio < 1e9 or seen[0] > 0)


@_triton
@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_gathered_output_ties(monkeypatch, alpha):
    """Tied scores (keys repeating with period 5) and flat rows with the gathered output forced
    on: the top-two copy's second column (column sum less the first) must name the other tied
    key, the extraction rounds every tied copy."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_GATHER_RATIO", 1e9)
    seen = _spy_gathered(monkeypatch)
    test_many_candidates_per_tile_and_ties(alpha, True)
    q, k, v = _inputs(1, 2, 2, 64, 96, 16, seed=23)
    with torch.no_grad():
        k.copy_(k[:, :, torch.arange(96) // 2 * 2])   # pairs of equal keys: ties of two
    out = entmax_attention(q.detach(), k.detach(), v.detach(), alpha=alpha, backend="triton")
    ref, _, _ = _ref(q, k, v, alpha, False)
    _assert_close(out, ref, *_tol(alpha), "out (pairs of tied keys)")
    assert all(s > 0 for s in seen), seen


@_triton
@pytest.mark.parametrize("gather", [0.0, 1.0])
def test_solve_goes_persistent_when_buffers_exceed_budget(monkeypatch, gather):
    """α = 1.5 at head dim 128 solves one block per program, unless the per-block candidate
    buffers (twice as wide with the gathered output) would exceed the budget: then the
    persistent grid, with the same exact results."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_GATHER_RATIO", gather)
    calls = []
    real = ga._solve_programs

    def spy(*a, **kw):
        calls.append(a[0])
        return real(*a, **kw)

    monkeypatch.setattr(ga, "_solve_programs", spy)
    _check_against_reference(1, 2, 2, 40, 40, 128, True, 1.5, seed=4)
    assert calls == []
    monkeypatch.setattr(ga, "_CAND_BUDGET", 4096)
    _check_against_reference(1, 2, 2, 40, 40, 128, True, 1.5, seed=4)
    assert len(calls) == 1


@_triton
def test_gathered_output_modes_by_default(monkeypatch):
    """By default only α ∈ {1.5, 2} copy key indices (the gather was measured there): α = 1.25 and
    per-head α tensors (the generic powers) run without it, α = 2 with it."""
    seen = _spy_gathered(monkeypatch, all_modes=False, record=lambda g: g is not None)
    q, k, v = _inputs(1, 2, 2, 40, 40, 16, seed=3)
    with torch.no_grad():
        for a in (1.25, torch.tensor([1.5, 2.0]), 2.0, 1.5):
            entmax_attention(q, k, v, alpha=a, backend="triton")
    assert seen == [False, False, True, True]


@_triton
@pytest.mark.parametrize("keep", [64, 2])
@pytest.mark.parametrize("B,H,Hkv,Nq,Nk,D,causal,alpha", _GATHER_CASES)
def test_gathered_dq_matches_reference(monkeypatch, keep, B, H, Hkv, Nq, Nk, D, causal, alpha):
    """The gathered dQ (``_DQ_GATHER``, on by default): gathered blocks of a training
    forward keep their rows' supports and the dQ kernel sums over them instead of the live
    tiles.  With room for every support (64) the blocks take that path, with 2 per row they fall
    back to the tiles; out and the three gradients match the float64 reference either way."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_GATHER_RATIO", 1e9)
    monkeypatch.setattr(ga, "_DQ_GATHER", True)
    monkeypatch.setattr(ga, "_KEEP_SUPPORT", keep)
    flags = _spy_gathered(monkeypatch, record=lambda g: g.flatten().tolist())
    _check_against_reference(B, H, Hkv, Nq, Nk, D, causal, alpha, seed=Nq + D)
    kept = sum(f == 2 for f in flags[0])
    assert kept > 0 if keep == 64 else kept < len(flags[0])


@_triton
def test_asm_stores_on_for_compiled_launches(monkeypatch):
    """The solve's inline-PTX candidate stores are the default where kernels are compiled for
    NVIDIA GPUs, and never used under the interpreter (no inline assembly) or with a ROCm torch
    (no PTX); the switch turns them off."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "INTERPRET", False)
    monkeypatch.setattr(ga, "_HIP", False)
    assert ga._asm_stores() is True
    monkeypatch.setattr(ga, "_ASM_STORE", False)
    assert ga._asm_stores() is False
    monkeypatch.setattr(ga, "_ASM_STORE", True)
    monkeypatch.setattr(ga, "_HIP", True)  # ROCm: no PTX
    assert ga._asm_stores() is False
    monkeypatch.setattr(ga, "_HIP", False)
    monkeypatch.setattr(ga, "INTERPRET", True)
    assert ga._asm_stores() is False


def test_gathered_dq_on_by_default(monkeypatch):
    """Without any switch, a training forward of α ∈ {1.5, 2} whose blocks gather keeps their
    supports for the dQ kernel; inference and α = 1.25 (no gathered output) keep none."""
    import sparsemap_tools.gpu.attention as ga

    monkeypatch.setattr(ga, "_GATHER_RATIO", 1e9)
    kept = _spy_gathered(monkeypatch, all_modes=False,
                         record=lambda g: None if g is None else int((g == 2).sum()))
    q, k, v = _inputs(1, 2, 2, 70, 70, 16, seed=13)
    for alpha in (1.5, 2.0, 1.25):
        entmax_attention(q, k, v, alpha=alpha, is_causal=True, backend="triton").sum().backward()
    with torch.no_grad():
        entmax_attention(q, k, v, alpha=1.5, is_causal=True, backend="triton")
    assert kept[0] > 0 and kept[1] > 0 and kept[2] is None and kept[3] == 0, kept
