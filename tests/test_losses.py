"""Fenchel-Young entmax loss: value against an independent formula built on the reference
entmax, special cases (alpha = 1 is cross-entropy), the entmax package's losses, gradients
(p - y, gradcheck for x and alpha) and -inf scores (entmax package issue #9)."""

from __future__ import annotations

import os
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _reference import entmax_ref
from sparsemap_tools import entmax, entmax_loss

torch = pytest.importorskip("torch")

HYP = settings(max_examples=int(os.environ.get("HYP_EXAMPLES", 25)), deadline=None)


def tsallis(p, alpha):
    p = np.asarray(p, np.float64)
    if alpha == 1.0:
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(-1)
    return (1.0 - (np.where(p > 0, p, 0.0) ** alpha).sum(-1)) / (alpha * (alpha - 1.0))


def fy_loss_ref(x, y, alpha):
    """Omega(y) + Omega*(x) - <x, y> with Omega = -H_alpha and Omega*(x) = <p*, x> + H(p*)."""
    p = entmax_ref(x, alpha)
    inner = lambda a, b: np.where(a != 0, a * np.where(a != 0, b, 0.0), 0.0).sum(-1)  # noqa: E731
    return -tsallis(y, alpha) + inner(p, x) + tsallis(p, alpha) - inner(y, x)


def one_hot(t, d):
    return (np.arange(d) == np.asarray(t)[..., None]).astype(np.float64)


ALPHAS = [1.0, 1.25, 1.5, 2.0, 3.0]


@pytest.mark.parametrize("alpha", ALPHAS)
def test_value_indices_and_distributions(alpha):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 9)) * 2
    t = rng.integers(0, 9, size=6)
    L = entmax_loss(x, t, alpha)
    assert L.shape == (6,) and L.dtype == np.float64
    np.testing.assert_allclose(L, fy_loss_ref(x, one_hot(t, 9), alpha), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(entmax_loss(x, one_hot(t, 9), alpha), L, rtol=1e-12, atol=1e-14)
    y = rng.dirichlet(np.ones(9) * 0.5, size=6)
    np.testing.assert_allclose(entmax_loss(x, y, alpha), fy_loss_ref(x, y, alpha), rtol=1e-10, atol=1e-12)
    assert (entmax_loss(x, y, alpha) >= -1e-12).all()


def test_alpha1_is_cross_entropy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 7))
    t = rng.integers(0, 7, size=5)
    ce = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(t), reduction="none").numpy()
    np.testing.assert_allclose(entmax_loss(x, t, 1.0), ce, rtol=1e-12)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_zero_at_own_prediction(alpha):
    x = np.random.default_rng(2).standard_normal((4, 8)) * 3
    p = entmax(x, alpha)
    np.testing.assert_allclose(entmax_loss(x, p, alpha), 0.0, atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_axis_and_dim(axis):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5, 6))
    d = x.shape[axis]
    tshape = tuple(s for i, s in enumerate(x.shape) if i != axis % 3)
    t = rng.integers(0, d, size=tshape)
    L = entmax_loss(x, t, 1.5, axis=axis)
    assert L.shape == tshape
    xm = np.moveaxis(x, axis, -1)
    np.testing.assert_allclose(L, fy_loss_ref(xm, one_hot(t, d), 1.5), rtol=1e-12, atol=1e-13)
    y = np.moveaxis(one_hot(t, d), -1, axis)  # a distribution in x's layout
    np.testing.assert_allclose(entmax_loss(x, y, 1.5, axis=axis), L, rtol=1e-12, atol=1e-14)
    Lt = entmax_loss(torch.tensor(x), torch.tensor(t), 1.5, dim=axis)
    np.testing.assert_allclose(Lt.numpy(), L, rtol=1e-12, atol=1e-14)


@HYP
@given(
    x=hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(2, 8)), elements=st.floats(-20, 20)),
    alpha=st.sampled_from(ALPHAS + [1.75]),
    data=st.data(),
)
def test_prop_nonnegative_and_zero_iff_match(x, alpha, data):
    w = data.draw(hnp.arrays(np.float64, x.shape, elements=st.floats(0, 1)))
    w = w + 1e-3
    y = w / w.sum(-1, keepdims=True)
    L = entmax_loss(x, y, alpha)
    assert (L >= -1e-9).all(), L
    L0 = entmax_loss(x, entmax(x, alpha), alpha)
    np.testing.assert_allclose(L0, 0.0, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# torch: gradients
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", ALPHAS)
def test_grad_is_p_minus_y(alpha):
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(5, 8, generator=g, dtype=torch.float64) * 2).requires_grad_()
    t = torch.randint(0, 8, (5,), generator=g)
    L = entmax_loss(x, t, alpha)
    assert L.shape == (5,) and L.dtype == torch.float64
    np.testing.assert_allclose(L.detach().numpy(), entmax_loss(x.detach().numpy(), t.numpy(), alpha), rtol=1e-12)
    w = torch.rand(5, generator=g, dtype=torch.float64)
    (L * w).sum().backward()
    p = entmax(x.detach(), alpha)
    y = torch.nn.functional.one_hot(t, 8).double()
    torch.testing.assert_close(x.grad, (p - y) * w[:, None], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("alpha", [1.25, 1.5, 2.0, 2.5])
def test_gradcheck_x(alpha):
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(3, 6, generator=g, dtype=torch.float64) * 1.5).requires_grad_()
    y = torch.softmax(torch.randn(3, 6, generator=g, dtype=torch.float64), -1)
    t = torch.tensor([0, 5, 2])
    assert torch.autograd.gradcheck(lambda z: entmax_loss(z, y, alpha), (x,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda z: entmax_loss(z, t, alpha), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("alpha0", [1.2, 1.5, 2.0, 2.4])
def test_gradcheck_alpha(alpha0):
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(3, 6, generator=g, dtype=torch.float64) * 1.5).requires_grad_()
    y = torch.softmax(torch.randn(3, 6, generator=g, dtype=torch.float64), -1)
    a = torch.tensor(alpha0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z, s: entmax_loss(z, y, s), (x, a), eps=1e-6, atol=1e-6)
    ar = torch.tensor([[1.3], [alpha0], [2.2]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: entmax_loss(x.detach(), y, s), (ar,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0, 1.25])
def test_minus_inf_scores(alpha):
    """entmax package issue #9: -inf scores gave 0 * inf = NaN in the loss."""
    x = torch.tensor([[1.0, float("-inf"), 0.5, float("-inf")], [0.2, 0.1, float("-inf"), 3.0]],
                     dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 3])
    L = entmax_loss(x, t, alpha)
    assert torch.isfinite(L).all() and (L >= 0).all()
    L.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[torch.isinf(x)] == 0).all()
    xn = x.detach().numpy()
    Ln = entmax_loss(xn, t.numpy(), alpha)
    assert np.isfinite(Ln).all()
    np.testing.assert_allclose(L.detach().numpy(), Ln, rtol=1e-12)
    xf = np.where(np.isinf(xn), -1e4, xn)  # a very negative finite score gives the same loss
    np.testing.assert_allclose(Ln, entmax_loss(xf, t.numpy(), alpha), rtol=1e-12, atol=1e-12)
    # a target putting mass on a -inf score costs +inf (documented), not NaN
    Linf = entmax_loss(xn, np.array([1, 3]), alpha)
    assert np.isposinf(Linf[0]) and np.isfinite(Linf[1])


def test_float32_loss():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 10, generator=g).requires_grad_()
    t = torch.randint(0, 10, (4,), generator=g)
    L = entmax_loss(x, t, 1.5)
    assert L.dtype == torch.float32
    L.sum().backward()
    assert x.grad.dtype == torch.float32
    ref = entmax_loss(x.detach().double(), t, 1.5)
    torch.testing.assert_close(L.double(), ref, rtol=1e-5, atol=1e-6)


def test_agrees_with_entmax_package_losses():
    E = pytest.importorskip("entmax")
    g = torch.Generator().manual_seed(8)
    x = torch.randn(6, 9, generator=g, dtype=torch.float64) * 2
    t = torch.randint(0, 9, (6,), generator=g)
    torch.testing.assert_close(entmax_loss(x, t, 2.0), E.sparsemax_loss(x, t), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(entmax_loss(x, t, 1.5), E.entmax15_loss(x, t), rtol=1e-12, atol=1e-12)
    for a in (1.25, 1.75):
        torch.testing.assert_close(entmax_loss(x, t, a), E.entmax_bisect_loss(x, t, a, n_iter=60),
                                   rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize(
    "target, exc, match",
    [
        (np.array([0, 1, 9]), ValueError, "target"),  # index out of range
        (np.array([0, -1, 2]), ValueError, "target"),
        (np.array([0, 1]), ValueError, "target"),  # wrong shape
        (np.zeros((3, 5)), ValueError, "target"),
        (np.zeros((3, 4), dtype=np.int64), TypeError, "target"),  # int with x's shape
    ],
)
def test_bad_target(target, exc, match):
    x = np.random.default_rng(9).standard_normal((3, 4))
    with pytest.raises(exc, match=match):
        entmax_loss(x, target, 1.5)


def test_bad_alpha_and_axis():
    x = np.random.default_rng(9).standard_normal((3, 4))
    t = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="alpha"):
        entmax_loss(x, t, 0.5)
    with pytest.raises(ValueError, match="axis"):
        entmax_loss(x, t, 1.5, axis=3)
    with pytest.raises(ValueError, match="solver"):
        entmax_loss(x, t, 1.5, solver="nope")
    with pytest.raises(ValueError, match="alpha"):
        entmax_loss(torch.tensor(x), torch.tensor(t), 0.5)


def test_negative_distribution_target_rejected():
    x = np.random.default_rng(10).standard_normal((4, 3))
    with pytest.raises(ValueError, match="target"):
        entmax_loss(x, np.full((4, 3), -1.0), 1.5)


@pytest.mark.parametrize("alpha", [1.1, 1.3, 1.7])
def test_torch_float64_loss_keeps_alpha_in_float64(alpha):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 6, generator=g, dtype=torch.float64)
    y = torch.softmax(torch.randn(3, 6, generator=g, dtype=torch.float64), -1)
    Lt = entmax_loss(x, y, alpha)
    Ln = entmax_loss(x.numpy(), y.numpy(), alpha)
    np.testing.assert_allclose(Lt.numpy(), Ln, rtol=0, atol=1e-12)


def test_dloss_dalpha_matches_finite_difference():
    """Envelope theorem: dL/dalpha = dH(p*)/dalpha - dH(y)/dalpha (central FD on the NumPy loss)."""
    g = torch.Generator().manual_seed(12)
    x = torch.randn(3, 6, generator=g, dtype=torch.float64)
    y = torch.softmax(torch.randn(3, 6, generator=g, dtype=torch.float64), -1)
    for a0 in (1.01, 1.1, 1.3, 1.7, 2.5):
        a = torch.tensor(a0, dtype=torch.float64, requires_grad=True)
        (ga,) = torch.autograd.grad(entmax_loss(x, y, a).sum(), a)
        h = 1e-6
        fd = (entmax_loss(x.numpy(), y.numpy(), a0 + h).sum()
              - entmax_loss(x.numpy(), y.numpy(), a0 - h).sum()) / (2 * h)
        assert abs(ga.item() - fd) <= 1e-6 * max(1.0, abs(fd)), (a0, ga.item(), fd)


def test_dloss_dalpha_at_one():
    g = torch.Generator().manual_seed(12)
    x = torch.randn(3, 6, generator=g, dtype=torch.float64)
    y = torch.softmax(torch.randn(3, 6, generator=g, dtype=torch.float64), -1)
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    (ga,) = torch.autograd.grad(entmax_loss(x, y, a).sum(), a)
    h = 1e-5
    L = lambda s: entmax_loss(x.numpy(), y.numpy(), s).sum()  # noqa: E731
    fd = (-3 * L(1.0) + 4 * L(1.0 + h) - L(1.0 + 2 * h)) / (2 * h)  # one-sided, 2nd order
    assert abs(ga.item() - fd) <= 1e-3 * abs(fd), (ga.item(), fd)


def test_per_row_alpha_loss():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 5))
    t = np.array([0, 1, 2, 4])
    alphas = [1.5, 2.0, 1.0, 3.0]
    a = np.array(alphas)[:, None]
    L = entmax_loss(x, t, a)
    for i, ai in enumerate(alphas):
        np.testing.assert_allclose(L[i], fy_loss_ref(x[i], one_hot(t[i], 5), ai), rtol=1e-12, atol=1e-13)
    Lt = entmax_loss(torch.tensor(x), torch.tensor(t), torch.tensor(a))
    np.testing.assert_allclose(Lt.numpy(), L, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["numpy", "list"])
def test_torch_scores_with_array_or_list_alpha(kind):
    """A torch x takes α as a NumPy array or a list, as entmax does (was a TypeError from
    float(alpha)), with the same loss as a tensor α and no warning."""
    rng = np.random.default_rng(14)
    x = torch.tensor(rng.standard_normal((3, 5)))
    t = torch.tensor([0, 3, 4])
    a = np.array([[1.5], [1.2], [2.0]])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L = entmax_loss(x, t, a if kind == "numpy" else a.tolist())
    ref = entmax_loss(x, t, torch.tensor(a))
    np.testing.assert_allclose(L.numpy(), ref.numpy(), rtol=1e-12, atol=1e-14)
    for i in range(3):
        np.testing.assert_allclose(float(L[i]), fy_loss_ref(x[i].numpy(), one_hot(int(t[i]), 5), a[i, 0]),
                                   rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------------------------------------
# alpha just above 1: the loss and dL/dalpha must be continuous at alpha = 1
# ------------------------------------------------------------------------------------------------


def _near_one_data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((3, 6)), rng.dirichlet(np.ones(6), size=3)


@pytest.mark.parametrize("am1", [1e-9, 1e-7, 1e-5])
def test_loss_continuous_at_one(am1):
    x, y = _near_one_data()
    np.testing.assert_allclose(entmax_loss(x, y, 1.0 + am1), entmax_loss(x, y, 1.0), rtol=0,
                               atol=1e-6 + 10 * am1)


@pytest.mark.parametrize("am1", [1e-12, 1e-15])
def test_loss_continuous_at_one_tiny(am1):
    x, y = _near_one_data()
    np.testing.assert_allclose(entmax_loss(x, y, 1.0 + am1), entmax_loss(x, y, 1.0), rtol=0, atol=1e-6)


def _dloss_dalpha(x, y, a0):
    a = torch.tensor(a0, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(entmax_loss(torch.tensor(x), torch.tensor(y), a).sum(), a)
    return g.item()


@pytest.mark.parametrize("am1", [1e-5, 1e-4])
def test_dloss_dalpha_continuous_at_one(am1):
    x, y = _near_one_data()
    g1 = _dloss_dalpha(x, y, 1.0)
    assert abs(_dloss_dalpha(x, y, 1.0 + am1) - g1) <= 1e-3 * max(1.0, abs(g1)) + 10 * am1


@pytest.mark.parametrize("am1", [1e-7, 1e-9, 1e-12])
def test_dloss_dalpha_continuous_at_one_tiny(am1):
    x, y = _near_one_data()
    g1 = _dloss_dalpha(x, y, 1.0)
    assert abs(_dloss_dalpha(x, y, 1.0 + am1) - g1) <= 1e-3 * max(1.0, abs(g1)) + 10 * am1


def test_torch_loss_accepts_list_target():
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    L = entmax_loss(x, [0, 1, 2], 1.5)
    torch.testing.assert_close(L, entmax_loss(x, torch.tensor([0, 1, 2]), 1.5))
