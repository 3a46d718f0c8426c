"""``torch.compile`` on code that calls the toolkit: the same values and gradients as eager.

The row-wise entmax goes through the custom operators of ``sparsemap_tools._ops`` (so a python-
number α compiles with ``fullgraph=True``: no graph break); an α tensor validates its values on the
host (a graph break, still correct); the fused attention likewise goes through operators (its
autograd registered on the forward one).  Without a GPU the Triton paths run under ``TRITON_INTERPRET=1``
(small shapes); with one, the ``gpu``-marked cases run on CUDA tensors.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():  # must happen before triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from sparsemap_tools import entmax, entmax_loss  # noqa: E402
from sparsemap_tools._ops import OPS  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_TRITON_DEVICES = []
if torch.cuda.is_available():
    _TRITON_DEVICES.append(pytest.param("cuda", marks=pytest.mark.gpu))
if INTERPRET:
    _TRITON_DEVICES.append(pytest.param("cpu", marks=pytest.mark.interpreter))

pytestmark = pytest.mark.skipif(OPS is None, reason="torch without torch.library.custom_op")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class _Block(torch.nn.Module):
    """A linear map over the last axis, entmax over dim 1 (9 entries, not the last axis) of a
    3-D tensor (B, 9, 5), a weighted sum."""

    def __init__(self, alpha, backend: str, dtype: torch.dtype, device: str):
        super().__init__()
        self.alpha, self.backend = alpha, backend
        self.lin = torch.nn.Linear(5, 5, dtype=dtype, device=device)

    def forward(self, x):
        p = entmax(self.lin(x), alpha=self.alpha, dim=1, backend=self.backend)
        return (p * torch.linspace(-1.0, 2.0, 9, dtype=x.dtype, device=x.device)[:, None]).sum(), p


def _eager_and_compiled(module, x, compile_kw):
    """(loss, p, x.grad, params' grads) eager, then compiled (same module and input)."""
    out = []
    for fn in (module, torch.compile(module, **compile_kw)):
        xx = x.detach().clone().requires_grad_(True)
        module.zero_grad(set_to_none=True)
        alpha = module.alpha if torch.is_tensor(module.alpha) else None
        if alpha is not None:
            alpha.grad = None
        loss, p = fn(xx)
        loss.backward()
        grads = [xx.grad] + [q.grad for q in module.parameters()]
        if alpha is not None:
            grads.append(alpha.grad.clone())
        out.append((loss.detach(), p.detach(), grads))
    return out


def _assert_same(eager, compiled, rtol, atol):
    (l0, p0, g0), (l1, p1, g1) = eager, compiled
    torch.testing.assert_close(l1, l0, rtol=rtol, atol=atol)
    torch.testing.assert_close(p1, p0, rtol=rtol, atol=atol)
    assert len(g0) == len(g1)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a, rtol=rtol, atol=atol)
    s = p1.sum(dim=1)
    torch.testing.assert_close(s, torch.ones_like(s), rtol=0, atol=1e-5)
    assert bool((p1 >= 0).all()) and bool((p1 == 0).any())  # sparse, so entmax (not softmax)


@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.25, 1.7])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_fullgraph_python_alpha(alpha, dtype):
    """Numba backend inside a fullgraph compile (aot_eager: the traced forward and backward
    graphs, without code generation): values and gradients as in eager."""
    torch.manual_seed(0)
    m = _Block(alpha, "auto", dtype, "cpu")
    x = 3.0 * torch.randn(4, 9, 5, dtype=dtype)
    eager, compiled = _eager_and_compiled(m, x, dict(backend="aot_eager", fullgraph=True))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    _assert_same(eager, compiled, tol, tol)


def test_cpu_inductor_default_backend():
    """The default compile backend (Inductor generating C++ around our operator)."""
    torch.manual_seed(1)
    m = _Block(1.5, "auto", torch.float64, "cpu")
    x = 3.0 * torch.randn(3, 9, 5, dtype=torch.float64)
    eager, compiled = _eager_and_compiled(m, x, dict(fullgraph=True))
    _assert_same(eager, compiled, 1e-12, 1e-12)


def test_cpu_alpha_tensor_learnable():
    """A learnable per-row α tensor (host-validated: a graph break, not an error): ∂/∂α too."""
    torch.manual_seed(2)
    m = _Block(None, "auto", torch.float64, "cpu")
    m.alpha = torch.nn.Parameter(torch.tensor([[[1.3]], [[1.6]], [[2.2]]], dtype=torch.float64))
    x = 3.0 * torch.randn(3, 9, 5, dtype=torch.float64)
    eager, compiled = _eager_and_compiled(m, x, dict(backend="aot_eager"))
    _assert_same(eager, compiled, 1e-12, 1e-12)
    assert eager[2][-1].abs().sum() > 0  # the α gradient is really there


def test_cpu_inference_and_loss():
    """No-grad inference and the Fenchel–Young loss inside compiled functions."""
    torch.manual_seed(3)
    x = 2.0 * torch.randn(6, 11, dtype=torch.float64)
    y = torch.tensor([0, 3, 10, 2, 2, 7])

    def infer(x):
        with torch.no_grad():
            return entmax(x, alpha=1.5) * 2.0

    torch.testing.assert_close(torch.compile(infer, backend="aot_eager", fullgraph=True)(x), infer(x),
                               rtol=0, atol=0)

    def loss(x):
        return entmax_loss(x, y, alpha=1.5).sum()

    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    vals = [f(xx) for f, xx in zip((loss, torch.compile(loss, backend="aot_eager")), xs)]
    for v in vals:
        v.backward()
    torch.testing.assert_close(vals[1], vals[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", _TRITON_DEVICES)
@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.3])
def test_triton_fullgraph(device, alpha):
    """The Triton kernels (compiled on CUDA, interpreted on CPU) inside a fullgraph compile."""
    torch.manual_seed(4)
    m = _Block(alpha, "triton", torch.float32, device)
    x = 3.0 * torch.randn(4, 9, 5, device=device)
    eager, compiled = _eager_and_compiled(m, x, dict(backend="aot_eager", fullgraph=True))
    _assert_same(eager, compiled, 1e-6, 1e-6)


def _attn_run(fn, inputs, backward=True):
    """(outputs..., grads of the float inputs) of fn(*inputs) (leaf copies; (o·o).sum() as loss)."""
    xs = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    outs = fn(*xs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    if backward:
        (outs[0] * outs[0]).sum().backward()
    return [o.detach() for o in outs] + [t.grad for t in xs if t.requires_grad]


def _close_all(a, b, tol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(y, x, rtol=tol, atol=tol, equal_nan=True)


@pytest.mark.parametrize("device", _TRITON_DEVICES)
@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.25])
def test_attention_fullgraph(device, alpha):
    """The fused attention inside a fullgraph compile (the forward and backward operators of
    ``sparsemap_tools._ops``): GQA, causal with Nq < Nk, scaled q; output and dq, dk, dv as in
    eager, the output as the float64 dense reference; no-grad inference too."""
    from sparsemap_tools.attention import entmax_attention, entmax_attention_reference

    gen = torch.Generator().manual_seed(5)
    q = torch.randn(1, 4, 17, 16, generator=gen).to(device).requires_grad_(True)
    k, v = (torch.randn(1, 2, 21, 16, generator=gen).to(device).requires_grad_(True) for _ in range(2))

    def f(q, k, v):
        return 2.0 * entmax_attention(q * 1.5, k, v, alpha=alpha, is_causal=True, enable_gqa=True,
                                      backend="triton")

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    eager = _attn_run(f, (q, k, v))
    _close_all(eager, _attn_run(compiled, (q, k, v)), 1e-6)
    ref = 2.0 * entmax_attention_reference(1.5 * q.double(), k.double(), v.double(), alpha=alpha,
                                           is_causal=True, enable_gqa=True)
    torch.testing.assert_close(eager[0].double(), ref, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(compiled(q, k, v), eager[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", _TRITON_DEVICES)
def test_attention_alpha_tensor_and_varlen(device):
    """A learnable per-head α (validated on the host: a graph break; ∂/∂α from the operator's
    backward), and the packed variable-length layout with an empty sequence and statistics in a
    fullgraph compile: the same values and gradients as eager."""
    from sparsemap_tools.attention import entmax_attention, entmax_attention_varlen

    gen = torch.Generator().manual_seed(6)
    alpha = torch.tensor([1.3, 1.5, 2.0, 1.7]).to(device).requires_grad_(True)
    q = torch.randn(2, 4, 9, 16, generator=gen).to(device).requires_grad_(True)
    k, v = (torch.randn(2, 2, 12, 16, generator=gen).to(device).requires_grad_(True) for _ in range(2))

    def f(q, k, v, a):
        return entmax_attention(q, k, v, alpha=a, enable_gqa=True, backend="triton")

    eager = _attn_run(f, (q, k, v, alpha))
    assert eager[-1].abs().sum() > 0
    _close_all(eager, _attn_run(torch.compile(f, backend="aot_eager"), (q, k, v, alpha)), 1e-5)

    cu = torch.tensor([0, 5, 5, 17], dtype=torch.int32, device=device)
    qv = torch.randn(17, 4, 16, generator=gen).to(device).requires_grad_(True)
    kv, vv = (torch.randn(17, 2, 16, generator=gen).to(device).requires_grad_(True) for _ in range(2))

    def g(q, k, v):
        o, st = entmax_attention_varlen(q, k, v, cu, cu, 12, 12, alpha=1.25, is_causal=True,
                                        backend="triton", return_stats=True, check_cu_seqlens=False)
        return o, st.tau, st.live_tiles, st.visible_tiles

    eager = _attn_run(g, (qv, kv, vv))
    _close_all(eager, _attn_run(torch.compile(g, backend="aot_eager", fullgraph=True), (qv, kv, vv)), 1e-5)


@pytest.mark.parametrize("device", _TRITON_DEVICES)
def test_export(device):
    """``torch.export``: the exported programs hold the custom operators and give eager's values
    (row-wise on the CPU backend and on Triton, and the fused attention)."""
    from sparsemap_tools.attention import entmax_attention

    class Rows(torch.nn.Module):
        def __init__(self, backend):
            super().__init__()
            self.backend = backend

        def forward(self, x):
            return entmax(2.0 * x, alpha=1.5, dim=0, backend=self.backend)

    class Attn(torch.nn.Module):
        def forward(self, q, k, v):
            return entmax_attention(q, k, v, alpha=2.0, is_causal=True, backend="triton")

    gen = torch.Generator().manual_seed(7)
    x = torch.randn(7, 3, generator=gen)
    q, k, v = (torch.randn(1, 2, 9, 16, generator=gen).to(device) for _ in range(3))
    cases = [(Rows("auto"), (x,), "entmax_rows"), (Rows("triton"), (x.to(device),), "entmax_rows"),
             (Attn(), (q, k, v), "entmax_attention_fwd")]
    for module, args, op in cases:
        ep = torch.export.export(module, args)
        targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
        assert any(f"sparsemap_tools.{op}" in t for t in targets), targets
        torch.testing.assert_close(ep.module()(*args), module(*args), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", _TRITON_DEVICES)
def test_alpha_changing_between_calls(device):
    """α as a python number that changes from call to call (an annealing schedule): TorchDynamo
    recompiles with α as a symbolic float, which the argument checks must trace (they did not
    with ``math.isfinite``); every value gives eager's result, row-wise and in the attention."""
    from sparsemap_tools.attention import entmax_attention

    def rows(x, a):
        return entmax(x, alpha=a, dim=-1, backend="triton")

    def attn(q, k, v, a):
        return entmax_attention(q, k, v, alpha=a, is_causal=True, backend="triton")

    gen = torch.Generator().manual_seed(8)
    x = 3.0 * torch.randn(5, 11, generator=gen).to(device)
    q, k, v = (torch.randn(1, 2, 9, 16, generator=gen).to(device) for _ in range(3))
    c_rows = torch.compile(rows, backend="aot_eager", fullgraph=True)
    c_attn = torch.compile(attn, backend="aot_eager", fullgraph=True)
    for a in (1.5, 1.6, 1.75, 2.0, 1.3):
        torch.testing.assert_close(c_rows(x, a), rows(x, a), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(c_attn(q, k, v, a), attn(q, k, v, a), rtol=1e-6, atol=1e-6)
