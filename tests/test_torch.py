"""PyTorch front end (CPU tensors): autograd (gradcheck for x and a tensor alpha), dtypes, dim
alias, layouts, threshold() on tensors, and agreement with the ``entmax`` package (a test
dependency only)."""

from __future__ import annotations


import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _reference import entmax_ref  # noqa: E402
from sparsemap_tools import entmax, entmax15, sparsemax, threshold  # noqa: E402

from _backends import BACKENDS, HAS_NUMBA  # noqa: E402
CPU_SOLVERS = ["auto", "sort", "bisect", "newton", "halley"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _x(*shape, seed=0, dtype=torch.float64, scale=1.0):
    return (torch.randn(*shape, generator=_gen(seed), dtype=torch.float64) * scale).to(dtype)


# ------------------------------------------------------------------------------------------------
# forward: types, dtypes, layouts
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alpha", [1.2, "tensor", "array"])
def test_float32_tensor_keeps_alpha_in_float64_on_cpu(backend, alpha):
    """The CPU backends compute float32 input in float64 with the α given (not α rounded to
    float32: 1.2 → 1.2000000477, ~7e-8 off on p): the same p as for the float32 NumPy array."""
    xs = np.random.default_rng(0).standard_normal((20, 100)).astype(np.float32)
    a = {1.2: 1.2, "tensor": torch.full((20, 1), 1.2, dtype=torch.float64),
         "array": np.full((20, 1), 1.2)}[alpha]
    got = entmax(torch.from_numpy(xs), a, backend=backend).numpy()
    want = entmax(xs, np.asarray(a) if alpha != 1.2 else a, backend=backend)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", ["auto"] + BACKENDS)
@pytest.mark.parametrize("solver", CPU_SOLVERS)
@pytest.mark.parametrize("alpha", [1.0, 1.01, 1.25, 1.5, 2.0, 3.0])
def test_forward_matches_reference(alpha, solver, backend):
    x = _x(5, 3, 17, seed=1, scale=2.0)
    p = entmax(x, alpha, dim=1, solver=solver, backend=backend)
    assert isinstance(p, torch.Tensor)
    assert p.dtype == torch.float64 and p.device == x.device and p.shape == x.shape
    ref = entmax_ref(x.numpy(), alpha, axis=1)
    np.testing.assert_allclose(p.numpy(), ref, rtol=0, atol=1e-12 if alpha <= 2 else 1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.25])
def test_low_precision_dtypes(dtype, alpha):
    x = _x(6, 40, seed=2, dtype=dtype, scale=3.0)
    p = entmax(x, alpha)
    assert p.dtype == dtype
    p32 = entmax(x.float(), alpha)
    assert p32.dtype == torch.float32
    tol = {torch.float32: 0.0, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    torch.testing.assert_close(p.float(), p32, rtol=0, atol=tol)
    # float32 within 1e-6 of the exact answer on its (float32) input
    ref = entmax_ref(x.double().numpy(), alpha)
    np.testing.assert_allclose(p32.double().numpy(), ref, rtol=0, atol=1e-6)


def test_bfloat16_large_magnitude_issue30():
    """entmax package issue #30: bf16 rows with max ~ -500 gave NaN; we shift by the max."""
    x = torch.tensor([[-500.0, -501.0, -503.0, -700.0]], dtype=torch.bfloat16)
    for alpha in (1.5, 2.0, 1.25):
        p = entmax(x, alpha)
        assert p.dtype == torch.bfloat16
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p.float().sum(), torch.tensor(1.0), atol=1e-2, rtol=0)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_tensors(dtype):
    x = torch.tensor([[3, 1, 0, 2], [0, 1, 1, 0]]).to(dtype)
    p = entmax(x, 1.5)
    assert p.dtype == torch.float64
    ref = entmax_ref(x.double().numpy(), 1.5)
    np.testing.assert_allclose(p.numpy(), ref, rtol=0, atol=1e-12)


def test_non_contiguous_input():
    x = _x(8, 30, seed=3)
    for xv in (x[:, ::2], x.t(), x[1::2, 3:]):
        assert not xv.is_contiguous()
        p = entmax(xv, 1.5, dim=-1)
        np.testing.assert_allclose(p.numpy(), entmax_ref(xv.numpy(), 1.5), atol=1e-12)
    pt = entmax(x.t(), 1.25, dim=0)
    np.testing.assert_allclose(pt.numpy(), entmax_ref(x.numpy(), 1.25).T, atol=1e-12)
    x4 = _x(2, 3, 4, 5, seed=4).permute(0, 3, 1, 2)
    p4 = entmax(x4, 2.0, dim=2)
    np.testing.assert_allclose(p4.numpy(), entmax_ref(x4.numpy(), 2.0, axis=2), atol=1e-12)


def test_dim_alias_and_axis():
    x = _x(3, 4, 5, seed=5)
    for d in (0, 1, 2, -1, -2):
        torch.testing.assert_close(entmax(x, 1.5, dim=d), entmax(x, 1.5, axis=d), rtol=0, atol=0)
        torch.testing.assert_close(entmax(x, 1.5, d), entmax(x, 1.5, dim=d), rtol=0, atol=0)
        torch.testing.assert_close(sparsemax(x, dim=d).sum(d), torch.ones(()).double().expand_as(x.sum(d)))
    with pytest.raises(ValueError, match="dim"):
        entmax(x, 1.5, axis=0, dim=1)


def test_input_untouched_and_no_grad_leak():
    x = _x(4, 6, seed=6)
    x0 = x.clone()
    p = entmax(x, 1.5)
    assert torch.equal(x, x0)
    assert not p.requires_grad
    xr = x.clone().requires_grad_()
    assert entmax(xr, 1.5).requires_grad
    with torch.no_grad():
        assert not entmax(xr, 1.5).requires_grad


def test_row_policy_torch():
    x = _x(5, 6, seed=7)
    x[1, 2] = float("nan")
    x[2, 0] = float("inf")
    x[3] = float("-inf")
    x[4, ::2] = float("-inf")
    for alpha in (1.0, 1.5, 2.0):
        p = entmax(x, alpha)
        assert torch.isnan(p[1:4]).all()
        assert torch.isfinite(p[[0, 4]]).all()
        assert (p[4, ::2] == 0).all()


def test_tensor_alpha_forward_per_row():
    x = _x(4, 3, 10, seed=8)
    a = torch.tensor([1.0, 1.5, 2.0, 3.0], dtype=torch.float64).view(4, 1, 1)
    p = entmax(x, a, dim=-1)
    for i, ai in enumerate([1.0, 1.5, 2.0, 3.0]):
        np.testing.assert_allclose(p[i].numpy(), entmax_ref(x[i].numpy(), ai), atol=1e-10)
    # 0-d tensor alpha and a float32 alpha on a float64 x
    torch.testing.assert_close(entmax(x, torch.tensor(1.5)), entmax(x, 1.5), rtol=0, atol=0)
    torch.testing.assert_close(entmax(x, torch.tensor([[[1.5]]], dtype=torch.float32)), entmax(x, 1.5))


# ------------------------------------------------------------------------------------------------
# autograd
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0])
@pytest.mark.parametrize("dim", [0, -1])
@pytest.mark.parametrize("solver", ["auto", "sort", "bisect"])
def test_gradcheck_x(alpha, dim, solver):
    x = _x(3, 6, seed=9, scale=1.5).requires_grad_()
    # keep a margin between every entry and the threshold: p is not differentiable at a kink
    f = lambda t: entmax(t, alpha, dim=dim, solver=solver)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_x_masked_and_3d():
    x = _x(2, 5, 4, seed=10).requires_grad_()
    mask = torch.zeros(2, 5, 4, dtype=torch.bool)
    mask[:, 0, :] = True
    f = lambda t: entmax(t.masked_fill(mask, float("-inf")), 1.5, dim=1)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6)
    y = f(x)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[mask] == 0).all()


def test_gradcheck_per_row_alpha_tensor_x_only():
    x = _x(4, 7, seed=11).requires_grad_()
    a = torch.tensor([[1.2], [1.5], [2.0], [2.7]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: entmax(t, a), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("alpha0", [1.15, 1.3, 1.5, 1.8, 2.0, 2.4])
def test_gradcheck_alpha_scalar_tensor(alpha0):
    x = _x(3, 8, seed=12, scale=1.5).requires_grad_()
    a = torch.tensor(alpha0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, s: entmax(t, s), (x, a), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_gradcheck_alpha_per_row():
    x = _x(2, 3, 9, seed=13, scale=1.5).requires_grad_()
    a = torch.tensor([[[1.2], [1.6], [2.3]]], dtype=torch.float64, requires_grad=True)  # (1, 3, 1)
    assert torch.autograd.gradcheck(lambda t, s: entmax(t, s, dim=-1), (x, a), eps=1e-6, atol=1e-5, rtol=1e-3)
    a2 = torch.tensor([1.3, 2.1], dtype=torch.float64, requires_grad=True).view(2, 1, 1)
    assert torch.autograd.gradcheck(lambda s: entmax(x.detach(), s, dim=1), (a2,), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_backward_matches_jacobian_formula():
    """dx = u*dy - u <u, dy>/sum(u), u = p^(2-alpha) on the support (notes 1.5)."""
    x = _x(5, 12, seed=14, scale=2.0).requires_grad_()
    dy = _x(5, 12, seed=15)
    for alpha in (1.25, 1.5, 2.0, 3.0):
        p = entmax(x, alpha)
        (g,) = torch.autograd.grad(p, x, dy)
        pd = p.detach()
        u = torch.where(pd > 0, pd.clamp_min(1e-300) ** (2 - alpha), torch.zeros_like(pd))
        exp = u * dy - u * (u * dy).sum(-1, keepdim=True) / u.sum(-1, keepdim=True)
        torch.testing.assert_close(g, exp, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g.sum(-1), torch.zeros(5, dtype=torch.float64), atol=1e-12, rtol=0)


def test_float32_backward_and_dtype():
    x = _x(3, 10, seed=16, dtype=torch.float32).requires_grad_()
    a = torch.tensor(1.4, requires_grad=True)
    p = entmax(x, a)
    assert p.dtype == torch.float32
    p.pow(2).sum().backward()
    assert x.grad.dtype == torch.float32 and a.grad.dtype == torch.float32
    assert torch.isfinite(x.grad).all() and torch.isfinite(a.grad)
    xh = _x(3, 10, seed=16, dtype=torch.float16).requires_grad_()
    entmax(xh, 1.5).pow(2).sum().backward()
    assert xh.grad.dtype == torch.float16


def test_alpha_grad_at_one_is_finite():
    x = _x(2, 5, seed=17).requires_grad_()
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    entmax(x, a).pow(2).sum().backward()
    assert torch.isfinite(a.grad) and torch.isfinite(x.grad).all()


# ------------------------------------------------------------------------------------------------
# threshold() on tensors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0, 1.25])
def test_threshold_tensor(alpha):
    x = _x(3, 4, 11, seed=18) + 3.0
    th = threshold(x, alpha, dim=-1)
    for f in ("tau", "support_size", "iterations", "converged", "certified", "residual"):
        v = getattr(th, f)
        assert isinstance(v, torch.Tensor), f
        assert tuple(v.shape) == (3, 4), f
        assert v.device == x.device
    assert th.converged.dtype == torch.bool and th.certified.dtype == torch.bool
    p = entmax(x, alpha, dim=-1)
    if alpha == 1.0:
        pt = torch.exp(x - th.tau[..., None])
    else:
        pt = torch.clamp((alpha - 1) * x - th.tau[..., None], min=0) ** (1 / (alpha - 1))
    torch.testing.assert_close(pt, p, rtol=0, atol=1e-12)
    assert torch.equal(th.support_size, (p > 0).sum(-1).to(th.support_size.dtype))
    thn = threshold(x.numpy(), alpha)
    np.testing.assert_allclose(th.tau.numpy(), thn.tau, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# bad input (torch specific)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda x: entmax(x, 0.9), ValueError, "alpha"),
        (lambda x: entmax(x, torch.tensor(float("nan"))), ValueError, "alpha"),
        (lambda x: entmax(x, torch.tensor([[1.5], [float("inf")], [1.5]])), ValueError, "alpha"),
        (lambda x: entmax(x, torch.tensor([[0.5], [1.5], [1.5]])), ValueError, "alpha"),
        (lambda x: entmax(x, torch.full((3, 4), 1.5)), ValueError, "alpha"),
        (lambda x: entmax(x, torch.full((2, 1), 1.5)), ValueError, "alpha"),
        (lambda x: entmax(x, torch.tensor([True])), TypeError, "alpha"),
        (lambda x: entmax(x, torch.tensor(1.5 + 0j)), TypeError, "alpha"),
        (lambda x: entmax(x, 1.5, dim=2), ValueError, "axis|dim"),
        (lambda x: entmax(x, 1.5, dim=0, axis=1), ValueError, "dim"),
        (lambda x: entmax(x, 1.5, solver="brent"), ValueError, "solver"),
        (lambda x: entmax(x, 1.5, backend="cuda"), ValueError, "backend"),
        (lambda x: entmax(x, 1.5, tol=-1.0), ValueError, "tol"),
        (lambda x: entmax(x, 1.5, max_iter=0), ValueError, "max_iter"),
        (lambda x: entmax(x.to(torch.complex128), 1.5), TypeError, "x"),
        (lambda x: entmax(x[:, :0], 1.5), ValueError, "axis"),
        (lambda x: entmax(x[0, 0], 1.5), ValueError, "x"),
        (lambda x: threshold(x, 0.5), ValueError, "alpha"),
        (lambda x: threshold(x, 1.5, solver="x"), ValueError, "solver"),
    ],
)
def test_bad_input_torch(call, exc, match):
    x = _x(3, 4, seed=19)
    with pytest.raises(exc, match=match):
        call(x)


@pytest.mark.skip(reason="alpha on another device needs a second device (CUDA); not testable on CPU")
def test_alpha_on_other_device():  # pragma: no cover
    pass


# ------------------------------------------------------------------------------------------------
# agreement with the entmax package (test dependency)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [-1, 0, 1])
@pytest.mark.parametrize("backend", BACKENDS)
def test_agrees_with_entmax_package(dim, backend):
    E = pytest.importorskip("entmax")
    x = _x(4, 6, 9, seed=20, scale=2.0)
    torch.testing.assert_close(sparsemax(x, dim=dim, backend=backend), E.sparsemax(x, dim=dim),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(entmax15(x, dim=dim, backend=backend), E.entmax15(x, dim=dim),
                               rtol=0, atol=1e-12)
    for alpha in (1.25, 1.5, 1.75, 2.0):
        ours = entmax(x, alpha, dim=dim, solver="newton", backend=backend)
        theirs = E.entmax_bisect(x, alpha, dim=dim, n_iter=60)
        # entmax_bisect renormalises after 60 halvings of a width-1 bracket: ~1e-15 on tau,
        # and does not shift by the max (extra rounding); 1e-9 is its measured accuracy here
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)
    # per-row tensor alpha, as entmax_bisect accepts it
    a = torch.tensor([1.2, 1.5, 1.9, 2.0], dtype=torch.float64).view(4, 1, 1)
    if dim in (-1, 1):
        torch.testing.assert_close(entmax(x, a, dim=dim), E.entmax_bisect(x, a, dim=dim, n_iter=60),
                                   rtol=0, atol=1e-9)


def test_agrees_with_entmax_package_float32_and_gradients():
    E = pytest.importorskip("entmax")
    x = _x(16, 50, seed=21, dtype=torch.float32, scale=3.0)
    torch.testing.assert_close(sparsemax(x), E.sparsemax(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(entmax15(x), E.entmax15(x), rtol=0, atol=1e-6)
    xd = _x(4, 10, seed=22, scale=2.0)
    dy = _x(4, 10, seed=23)
    for ours_fn, theirs_fn in ((sparsemax, E.sparsemax), (entmax15, E.entmax15)):
        a = xd.clone().requires_grad_()
        b = xd.clone().requires_grad_()
        (ga,) = torch.autograd.grad(ours_fn(a), a, dy)
        (gb,) = torch.autograd.grad(theirs_fn(b), b, dy)
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)
    a = torch.tensor(1.6, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(1.6, dtype=torch.float64, requires_grad=True)
    (ga,) = torch.autograd.grad((entmax(xd, a) * dy).sum(), a)
    (gb,) = torch.autograd.grad((E.entmax_bisect(xd, b, n_iter=60) * dy).sum(), b)
    torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-9)


def test_alpha1_is_softmax_not_uniform():
    """entmax package issue #24: entmax_bisect(alpha=1) returns uniform; ours is softmax."""
    x = _x(3, 7, seed=24)
    torch.testing.assert_close(entmax(x, 1.0), torch.softmax(x, -1), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(entmax(x, torch.tensor(1.0)), torch.softmax(x, -1), rtol=1e-13, atol=1e-15)


def test_dp_dalpha_matches_finite_difference_near_one():
    x = _x(3, 6, seed=25)
    dy = _x(3, 6, seed=26)
    for a0 in (1.001, 1.01, 1.1):
        a = torch.tensor(a0, dtype=torch.float64, requires_grad=True)
        (ga,) = torch.autograd.grad((entmax(x, a) * dy).sum(), a)
        h = 1e-6
        fd = ((entmax(x, a0 + h) * dy).sum() - (entmax(x, a0 - h) * dy).sum()).item() / (2 * h)
        assert abs(ga.item() - fd) <= 1e-5 * max(1.0, abs(fd)), (a0, ga.item(), fd)


def test_dp_dalpha_at_one():
    x = _x(3, 6, seed=25)
    dy = _x(3, 6, seed=26)
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    (ga,) = torch.autograd.grad((entmax(x, a) * dy).sum(), a)
    h = 1e-5
    F = lambda s: (entmax(x, s) * dy).sum().item()  # noqa: E731
    fd = (-3 * F(1.0) + 4 * F(1.0 + h) - F(1.0 + 2 * h)) / (2 * h)
    assert abs(ga.item() - fd) <= 1e-3 * abs(fd), (ga.item(), fd)


@pytest.mark.parametrize("am1", [1e-12, 1e-9, 1e-7, 1e-5])
def test_dp_dalpha_continuous_at_one(am1):
    """Both terms of dp/dalpha diverge like (alpha-1)^-2 while their sum stays finite (notes 1.6)."""
    x = _x(3, 6, seed=25)
    dy = _x(3, 6, seed=26)

    def g(a0):
        a = torch.tensor(a0, dtype=torch.float64, requires_grad=True)
        return torch.autograd.grad((entmax(x, a) * dy).sum(), a)[0].item()

    g1 = g(1.0)
    assert abs(g(1.0 + am1) - g1) <= 2e-3 * abs(g1) + 10 * am1, (g(1.0 + am1), g1)


def test_sparse_tensor_rejected_clearly():
    with pytest.raises((TypeError, ValueError), match="x"):
        entmax(_x(3, 4, seed=27).to_sparse(), 1.5)


def test_no_grad_path_matches_autograd_path():
    """Without an autograd graph to build, entmax skips the autograd Function: same values,
    no grad_fn; with grad enabled and x requiring grad, the Function is used."""
    x = _x(5, 37, seed=23).requires_grad_()
    with_graph = entmax(x, 1.5)
    assert with_graph.grad_fn is not None
    with torch.no_grad():
        without = entmax(x, 1.5)
    assert without.grad_fn is None
    torch.testing.assert_close(without, with_graph.detach(), rtol=0, atol=0)
    plain = entmax(x.detach(), 1.25)
    assert plain.grad_fn is None and plain.dtype == x.dtype
