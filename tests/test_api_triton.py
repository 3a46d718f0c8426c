"""The public API dispatching to the Triton kernels (``backend="triton"``).

Without a GPU these run the real kernels under ``TRITON_INTERPRET=1`` on CPU tensors (small
shapes); on a CUDA machine the ``gpu`` variants run on the device. The kernels themselves are
tested in ``test_gpu_rowwise.py``; here: dispatch, layout (any dim, non-contiguous), dtypes,
autograd through ``entmax`` for x and a tensor alpha, ``threshold`` and argument errors.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from sparsemap_tools import entmax, entmax15, sparsemax, threshold  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _backend(device: str) -> str:
    return "triton" if device == "cpu" else "auto"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("alpha", [1.25, 1.5, 2.0, 3.0])
def test_matches_cpu_reference_any_dim(device, alpha):
    g = torch.Generator().manual_seed(int(alpha * 100))
    x = torch.randn(3, 19, 4, generator=g, dtype=torch.float64)
    x[0, 3:7, 1] = -torch.inf
    p = entmax(x.to(device), alpha, dim=1, backend=_backend(device)).cpu()
    ref = entmax(x.numpy(), alpha, axis=1, backend="numpy")
    tol = 1e-12 if alpha <= 2 else 1e-7
    np.testing.assert_allclose(p.numpy(), ref, rtol=0, atol=tol)
    np.testing.assert_allclose(p.sum(1).numpy(), 1.0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_and_low_precision(device):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(40, 6, generator=g)
    x = base.t()  # non-contiguous (6, 40) view
    assert not x.is_contiguous()
    for dtype, tol in [(torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)]:
        xd = x.to(device=device, dtype=dtype)
        p = entmax15(xd, backend=_backend(device))
        assert p.dtype == dtype and p.shape == x.shape
        ref = entmax15(xd.float().cpu().double().numpy(), backend="numpy")
        np.testing.assert_allclose(p.float().cpu().numpy(), ref, rtol=0, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_x_and_per_row_alpha(device):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 9, generator=g, dtype=torch.float64).to(device).requires_grad_()
    a = torch.tensor([[1.3], [1.5], [1.8], [2.0]], dtype=torch.float64).to(device).requires_grad_()
    fn = lambda x, a: entmax(x, a, backend=_backend(device))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, a), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_threshold_reproduces_p(device):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 23, generator=g, dtype=torch.float64)
    r = threshold(x.to(device), 1.5, backend=_backend(device))
    p = torch.clamp(0.5 * x - r.tau.cpu()[:, None], min=0) ** 2
    np.testing.assert_allclose(p.sum(1).numpy(), 1.0, atol=1e-10)
    np.testing.assert_array_equal(r.support_size.cpu().numpy(), (p > 0).sum(1).numpy())
    assert bool(r.converged.all())


def test_row_conventions_and_errors():
    x = torch.randn(4, 8, dtype=torch.float64)
    x[1, 2] = torch.nan
    x[2, :] = -torch.inf
    x[3, 0] = torch.inf
    p = sparsemax(x, backend="triton")
    assert torch.isnan(p[1:]).all() and not torch.isnan(p[0]).any()
    with pytest.raises(ValueError, match="solver"):
        entmax(x, 1.5, solver="sort", backend="triton")
    with pytest.raises(ValueError, match="alpha"):
        entmax(x, 0.5, backend="triton")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d", [7, 40])
def test_alpha_one_is_softmax(device, d):
    """α = 1 (float or per-row tensor, also mixed with entmax rows) gives softmax on the Triton
    path, on chip and streamed (d = 40 > max_onchip there), with the CPU path's threshold."""
    from sparsemap_tools.gpu import rowwise

    g = torch.Generator().manual_seed(21)
    x = torch.randn(4, d, generator=g, dtype=torch.float64)
    x[2, :3] = -torch.inf
    for dtype, tol in [(torch.float64, 1e-13), (torch.float32, 1e-6)]:
        xd = x.to(device=device, dtype=dtype)
        kw = dict(max_onchip=32, chunk=16) if d > 32 else {}
        res = rowwise.entmax_forward(xd, 1.0, **kw)
        np.testing.assert_allclose(res.p.double().cpu().numpy(), torch.softmax(x, 1).numpy(), atol=tol, rtol=0)
        assert bool(res.converged.all()) and int(res.iterations.max()) == 0
        lse = torch.logsumexp(x - x.max(1, keepdim=True).values, 1)
        np.testing.assert_allclose(res.tau.double().cpu().numpy(), lse.numpy(), atol=1e-6)
        al = torch.tensor([1.0, 1.5, 1.0 + 1e-12, 2.0], dtype=dtype, device=device)
        res = rowwise.entmax_forward(xd, al, **kw)
        ref = np.stack([torch.softmax(x[0], 0).numpy(), entmax(x[1].numpy(), 1.5, backend="numpy"),
                        torch.softmax(x[2], 0).numpy(), entmax(x[3].numpy(), 2.0, backend="numpy")])
        np.testing.assert_allclose(res.p.double().cpu().numpy(), ref, atol=tol, rtol=0)
    # public API and threshold (paper convention: p = exp(x − τ) for softmax rows)
    p = entmax(x.to(device), 1.0, backend=_backend(device)).cpu()
    np.testing.assert_allclose(p.numpy(), torch.softmax(x, 1).numpy(), atol=1e-13)
    r = threshold(x.to(device), 1.0, backend=_backend(device))
    np.testing.assert_allclose(r.tau.cpu().numpy(), torch.logsumexp(x, 1).numpy(), atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_alpha_at_one(device):
    """∂/∂α at α = 1 on the Triton path is the limit (p/2)(Σ p log²p − log²p): finite, equal to
    the CPU path's, and to a one-sided finite difference (float64 NumPy path at α = 1 + h)."""
    g = torch.Generator().manual_seed(22)
    x = torch.randn(3, 9, generator=g, dtype=torch.float64)
    dy = torch.randn(3, 9, generator=g, dtype=torch.float64)
    grads = []
    for dev, be in [(device, _backend(device)), ("cpu", "numpy")]:
        xr = x.clone().to(dev).requires_grad_()
        a = torch.ones(3, 1, dtype=torch.float64, device=dev).requires_grad_()
        p = entmax(xr, a, backend=be)
        grads.append([t.cpu() for t in torch.autograd.grad(p, (xr, a), dy.to(dev))])
    (gx, ga), (cx, ca) = grads
    assert torch.isfinite(ga).all()
    np.testing.assert_allclose(gx.numpy(), cx.numpy(), atol=1e-10)
    np.testing.assert_allclose(ga.numpy(), ca.numpy(), atol=1e-8)
    h = 1e-6
    fd = ((entmax(x.numpy(), 1.0 + h, backend="numpy") - entmax(x.numpy(), 1.0, backend="numpy"))
          * dy.numpy()).sum(1) / h
    np.testing.assert_allclose(ga.numpy().ravel(), fd, atol=1e-4 * max(1.0, np.abs(fd).max()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("alpha", [1.25, 1.5, 2.0, 1.7])
@pytest.mark.parametrize("layout", ["2d", "dim1", "transposed"])
def test_python_alpha_float32_forward_and_grad(device, alpha, layout, monkeypatch):
    """A python-float α in float32 reaches the kernels as a scalar (no per-row α tensor is
    built: ``torch.full`` is never called on the way, forward or backward), on every layout the
    API reshapes differently, and p and dx match the float64 NumPy path."""
    g = torch.Generator().manual_seed(int(alpha * 10) + len(layout))
    base = torch.randn(5, 6, 33, generator=g, dtype=torch.float64)
    if layout == "2d":
        x64, dim = base[0], -1
    elif layout == "dim1":
        x64, dim = base, 1
    else:
        x64, dim = base[0].t(), 0  # non-contiguous, reduced along its first axis
    dy64 = torch.randn(x64.shape, generator=g, dtype=torch.float64)
    x = x64.float().to(device).requires_grad_()
    calls = []
    real_full = torch.full
    monkeypatch.setattr(torch, "full", lambda *a, **k: calls.append(a) or real_full(*a, **k))
    p = entmax(x, alpha, dim=dim, backend=_backend(device))
    (gx,) = torch.autograd.grad(p, x, dy64.float().to(device))
    monkeypatch.undo()
    assert calls == []
    assert p.dtype == torch.float32 and p.shape == x64.shape
    xr = x64.clone().requires_grad_()
    pr = entmax(xr, alpha, dim=dim, backend="numpy")
    (gr,) = torch.autograd.grad(pr, xr, dy64)
    np.testing.assert_allclose(p.detach().double().cpu().numpy(), pr.detach().numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(gx.double().cpu().numpy(), gr.numpy(), rtol=0, atol=2e-5)
