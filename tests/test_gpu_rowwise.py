"""Tests of the row-wise Triton entmax kernels (``sparsemap_tools.gpu.rowwise``).

"kernel" = ``gpu/rowwise*.py`` (Triton), "reference" = ``gpu/rowwise_reference.py`` (plain
float64 PyTorch: bisection to float64 resolution + one differentiable Newton step).

Without a CUDA device the kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (small
shapes; ``tests/conftest.py`` switches the interpreter on before triton is imported, and so
does the first line below when this module is imported first). With a device the same tests
run on CUDA tensors at larger shapes (marker ``gpu``).
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():  # must happen before triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sparsemap_tools.gpu import rowwise, rowwise_common  # noqa: E402
from sparsemap_tools.gpu.rowwise_reference import (  # noqa: E402
    entmax_backward_reference,
    entmax_reference,
    tau_reference,
)

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_DEVICES = []
if torch.cuda.is_available():
    _DEVICES.append(pytest.param("cuda", marks=pytest.mark.gpu))
if INTERPRET:
    _DEVICES.append(pytest.param("cpu", marks=pytest.mark.interpreter))


@pytest.fixture(params=_DEVICES)
def device(request):
    return request.param


def _cfg(device):
    """Shapes per device: (rows, small lengths, streaming override (max_onchip, chunk))."""
    if device == "cpu":
        return dict(rows=6, lengths=[1, 2, 7, 33, 100], stream=(32, 64),
                    stream_lengths=[63, 64, 65, 200])
    return dict(rows=512, lengths=[1, 2, 7, 33, 100, 1000, 1023, 1024, 1025, 4097, 16384],
                stream=(1024, 1024), stream_lengths=[1023, 1024, 1025, 5000, 70000])


def _rows(kind: str, R: int, D: int, gen: torch.Generator) -> torch.Tensor:
    """Fresh random rows of a given kind (never zeros)."""
    x = torch.randn(R, D, generator=gen, dtype=torch.float64)
    if kind == "flat":
        x = 0.1 * x
    elif kind == "heavy":
        x = x / torch.rand(R, D, generator=gen, dtype=torch.float64).clamp_min(1e-3)
    elif kind == "peaked":
        x = 30.0 * x
    elif kind == "ties":
        x = torch.round(2.0 * x) / 2.0
    return x.float()


def _alpha(a, R, device):
    if a == "mixed":
        vals = torch.tensor([1.25, 1.5, 2.0, 3.0, 1.75, 1.1])
        return vals.repeat(R // len(vals) + 1)[:R].to(device)
    return torch.full((R,), float(a), device=device)


def _tol_p(alpha: torch.Tensor) -> torch.Tensor:
    """Per-row bound on |p − p*| in float32: 1e-6 for α ≤ 2; α > 2 is only Hölder-continuous
    in τ (p error ≈ ulp(τ)^{1/(α−1)}, ~1e-4 in float32), so 5e-4 there."""
    return torch.where(alpha <= 2.0, 1e-6, 5e-4).double()


def _check_forward(x, al, res, tol_p=None, min_iters=1):
    # the reference runs on x's device (dense torch), so GPU-sized cases stay fast
    ref = entmax_reference(x.double(), al.double())
    err = (res.p.double() - ref).abs().amax(-1)
    tol_p = _tol_p(al) if tol_p is None else tol_p
    assert res.p.dtype == x.dtype and res.p.shape == x.shape
    assert bool(res.converged.all()), res.iterations
    assert bool((err <= tol_p).all()), (err.max().item(), al[err.argmax()].item())
    tau_ref = tau_reference(x.double(), al.double())
    assert torch.allclose(res.tau.double(), tau_ref, atol=2e-6, rtol=0, equal_nan=True)
    assert torch.equal(res.support_size.cpu(), (res.p > 0).sum(-1).int().cpu())
    # min_iters 0: streamed rows written first at the subset's root take no solver pass when
    # certified there
    assert bool((res.iterations >= min_iters).all()) and bool((res.iterations <= 100).all())
    return err


# ------------------------------------------------------------------------------- forward


# α as a tensor: power branch picked per program at run time; α as a python float ("f…"): the
# kernel is compiled for that branch (MODE constexpr) -- both must give the reference answer
ALPHAS = [1.25, 1.5, 2.0, 3.0, "mixed", "f1.25", "f1.5", "f2.0", "f3.0"]


def _alpha_arg(a, al):
    """The alpha argument passed to the kernel launcher: a float for the "f…" cases."""
    return float(a[1:]) if isinstance(a, str) and a.startswith("f") else al


@pytest.mark.parametrize("alpha", ALPHAS)
def test_forward_onchip_matches_reference(device, alpha):
    cfg = _cfg(device)
    gen = torch.Generator().manual_seed(1)
    a = alpha[1:] if isinstance(alpha, str) and alpha.startswith("f") else alpha
    for D in cfg["lengths"]:
        for kind in ["randn", "flat", "heavy"]:
            x = _rows(kind, cfg["rows"], D, gen).to(device)
            al = _alpha(a, cfg["rows"], device)
            arg = _alpha_arg(alpha, al)
            # rows longer than MAX_ONCHIP (GPU lengths) are streamed, and a streamed row
            # written first at its subset's root may take no solver pass
            mode = rowwise._mode_of(arg, True, x.dtype) if isinstance(arg, float) else -1
            wf = D > rowwise.MAX_ONCHIP and rowwise._write_first(mode, 0, rowwise.CONFIG, x.shape[0])
            _check_forward(x, al, rowwise.entmax_forward(x, arg), min_iters=0 if wf else 1)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_forward_stream_matches_reference(device, alpha):
    """Rows longer than max_onchip take the streaming kernel; lengths around the chunk."""
    cfg = _cfg(device)
    max_onchip, chunk = cfg["stream"]
    gen = torch.Generator().manual_seed(2)
    a = alpha[1:] if isinstance(alpha, str) and alpha.startswith("f") else alpha
    for D in cfg["stream_lengths"]:
        x = _rows("randn", 4, D, gen).to(device)
        x[1] = 0.1 * x[1]  # flat row: large support
        al = _alpha(a, 4, device)
        arg = _alpha_arg(alpha, al)
        res = rowwise.entmax_forward(x, arg, max_onchip=max_onchip, chunk=chunk)
        mode = rowwise._mode_of(arg, True, x.dtype) if isinstance(arg, float) else -1
        wf = rowwise._write_first(mode, 0, rowwise.CONFIG, x.shape[0])
        # default: α = 2; α = 1.5 above 512 rows, or with the two-per-lane subset (≤ 512 rows)
        assert wf == (isinstance(arg, float) and arg in (2.0, 1.5))
        _check_forward(x, al, res, min_iters=0 if wf else 1)


@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.25])
def test_million_entry_row(device, alpha):
    """Rows of over 10⁶ entries (an odd length) stream with the default chunking and match the
    float64 reference; heavy-tailed so the support is not tiny."""
    gen = torch.Generator().manual_seed(31)
    x = torch.randn(2, 1_000_003, generator=gen)
    x[1] = x[1] * 3.0 + torch.distributions.StudentT(2.0).sample((1_000_003,))
    x = x.to(device)
    res = rowwise.entmax_forward(x, alpha)
    ref = entmax_reference(x.double().cpu(), torch.full((2,), alpha, dtype=torch.float64))
    assert bool(res.converged.all())
    assert (res.p.cpu().double() - ref).abs().max() < 1e-6
    assert bool((res.support_size.cpu() == (ref > 0).sum(1)).all())


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("solver", ["auto", "newton", "halley", "bisect"])
@pytest.mark.parametrize("alpha", [5.0, 20.0])
def test_equal_rows_large_alpha(device, alpha, solver, stream):
    """Rows of equal entries at large α: the root −d^{1−α} (5e-33 at α = 20, d = 50) lies orders
    of magnitude below the bracket's start. The α > 2 step falls back to Newton on
    φ = (f+1)^{1/q} − 1 (linear on such rows) where the f step leaves the bracket; before,
    these rows stopped unconverged at max_iter with p 30 % off. Bisection gets 200 passes."""
    # float32 holds the root −D^{1−α} as a normal number only for D^{α−1} < 2^126
    # (α = 20: D ≤ 98); past that no float32 solver can return p accurately.  So the streamed
    # case forces streaming at a short length on every device (the GPU's usual streaming
    # override, chunk 1024, gave D = 1030: p 0.0096 instead of 1/1030, the float32 limit)
    max_onchip, chunk = (32, 64) if stream else (None, None)
    D = chunk + 6 if stream else 50
    x = torch.zeros(3, D)
    x[1] = 7.5
    x[2, ::2] = -float("inf")
    res = rowwise.entmax_forward(x.to(device), alpha, solver=solver, max_onchip=max_onchip,
                                 chunk=chunk)
    assert bool(res.converged.all()), res.iterations
    p = res.p.cpu().double()
    assert (p[:2] - 1.0 / D).abs().max() < 1e-6
    assert (p[2, 1::2] - 1.0 / (D // 2)).abs().max() < 1e-6
    assert bool((p[2, ::2] == 0).all())
    if solver != "bisect":
        assert int(res.iterations.max()) <= 60, res.iterations


@pytest.mark.parametrize("prefetch,levels,unroll,first", [
    (0, 0, 1, 0), (0, 16, 1, 0), (1, 16, 1, 0), (1, 4, 1, 0), (0, 16, 2, 0),
    (0, 16, 4, 0), (1, 16, 2, 0), (0, 16, 4, 1), (1, 16, 2, 1)])
@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.25, 3.0, "mixed"])
def test_stream_variants_match_reference(device, prefetch, levels, unroll, first, alpha):
    """Every streaming loop form (next tile prefetched or not: chosen by the row count; one
    chunk or U chunks per step, the last step partly past the row's end) and the multi-level
    start of the subset solve (any level count, or none) give the exact answer and the
    support count of the stored p, also on rows with −inf entries, ties, a huge shift and
    NaN/+inf rows.  ``first``: p written at the subset's root and certified by a support count
    (α ∈ {2, 1.5} floats): certified rows take no solver pass, the tie row (equal entries
    sharing lanes: more row entries above the subset's root than the subset holds) falls back to
    the solver passes and a second write."""
    max_onchip, chunk = _cfg(device)["stream"]
    gen = torch.Generator().manual_seed(21)
    D = 3 * chunk + 5
    x = _rows("randn", 7, D, gen)
    x[1, ::3] = -float("inf")
    x[2] = 0.1 * x[2] + 1e4
    # a tie at the top spanning every chunk, three entries in every lane (the rest clamped below
    # it: on the GPU's 3077-wide rows some randn entries exceed 2.5, and the tie would not be
    # the top): neither the one- nor the two-per-lane subset holds it
    x[3] = x[3].clamp(max=2.0)
    x[3, : 3 * chunk] = 2.5
    x[4, 5] = float("nan")
    x[5, D - 1] = float("inf")
    x = x.to(device)
    al = _alpha(alpha, 7, device)
    arg = alpha if isinstance(alpha, float) else al
    res = rowwise.entmax_forward(x, arg, max_onchip=max_onchip, chunk=chunk,
                                 config=dict(stream_prefetch=prefetch, stream_levels=levels,
                                             stream_unroll=unroll, stream_write_first=first))
    p = res.p.cpu()
    for r in (4, 5):
        assert bool(torch.isnan(p[r]).all()) and int(res.support_size[r]) == 0
    good = [0, 1, 2, 3, 6]
    assert torch.equal(res.support_size.cpu()[good], (p[good] > 0).sum(1).to(torch.int32))
    if first and alpha in (1.5, 2.0):
        its = res.iterations.cpu()
        assert int(its[3]) >= 1                       # the tie row: not certified, solved
        if alpha == 2.0:
            assert int(its[0]) == 0 and int(its[6]) == 0   # small supports: certified at write
    ref = entmax_reference(x[good].double().cpu(), al[good].double().cpu())
    assert (p[good].double() - ref).abs().max() < 2e-6
    assert torch.allclose(p[good].double().sum(1), torch.ones(len(good), dtype=torch.float64), atol=1e-5)
    assert bool(res.converged.all())


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_stream_layouts(device, data):
    """Property: every streaming layout (1, 2 or 4 chunks per step, next tile prefetched or not,
    p written first at the lane-maxima subset's root or not;
    α with and without a pow-free branch) returns p within 2e-6 of the float64 answer, Σp = 1,
    the support count of the stored p and a converged flag within 40 passes, on any
    length past the on-chip limit and rows of any kind: random, flat, heavy-tailed, peaked,
    half-integer ties, a grid of four values (massive ties at the top: the subset's count
    check must fail) and shifted by ±10³–10⁴."""
    max_onchip, chunk = _cfg(device)["stream"]
    R = data.draw(st.integers(1, 4), label="R")
    D = data.draw(st.integers(max_onchip + 1, 5 * chunk + 3), label="D")
    kind = data.draw(st.sampled_from(["randn", "flat", "heavy", "peaked", "ties", "grid"]))
    alpha = data.draw(st.sampled_from([1.5, 2.0, 1.25, 1.7, 1.1]), label="alpha")
    cfg = dict(stream_unroll=data.draw(st.sampled_from([1, 2, 4]), label="unroll"),
               stream_prefetch=data.draw(st.sampled_from([0, 1]), label="prefetch"),
               stream_write_first=data.draw(st.sampled_from([-1, 0, 1, 2]), label="write_first"),
               stream_top2=data.draw(st.sampled_from([-1, 0, 1]), label="top2"))
    shift = data.draw(st.sampled_from([0.0, 1e3, -1e4]), label="shift")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    if kind == "grid":
        x = torch.randint(0, 4, (R, D), generator=gen).float()
    else:
        x = _rows(kind, R, D, gen)
    x = (x + shift).to(device)
    res = rowwise.entmax_forward(x, alpha, max_onchip=max_onchip, chunk=chunk, config=cfg)
    ref = entmax_reference(x.double().cpu(), torch.full((R,), alpha, dtype=torch.float64))
    p = res.p.cpu().double()
    assert bool(res.converged.all()) and int(res.iterations.max()) <= 40, res.iterations
    assert (p - ref).abs().max().item() < 2e-6
    assert (p.sum(1) - 1.0).abs().max().item() < 1e-5
    assert torch.equal(res.support_size.cpu(), (res.p.cpu() > 0).sum(1).to(torch.int32))


@pytest.mark.parametrize("alpha", [2.0, 1.5])
@pytest.mark.parametrize("unroll", [1, 4])
def test_stream_top2_subset(device, alpha, unroll):
    """The two-per-lane subset (``stream_top2``): a row whose two support entries share a lane
    (columns j and j + CHUNK) is not certified by the lane maxima (its write is redone after a
    solver pass) but is certified by the lane top two (no solver pass); a lane with a value
    held twice keeps both; both give the exact answer, as do rows of every other kind."""
    max_onchip, chunk = _cfg(device)["stream"]
    gen = torch.Generator().manual_seed(5)
    D = 3 * chunk + 7
    x = 0.01 * _rows("randn", 4, D, gen) - 5.0       # far below the top: outside the support
    x[0, 3], x[0, 3 + chunk] = 1.0, 0.9              # support {3, 3 + CHUNK}: one lane
    x[1, 5] = x[1, 5 + 2 * chunk] = 1.0              # a value held twice in one lane
    x[2] = _rows("randn", 1, D, gen)[0]
    x[3, :] = -float("inf")                          # a lane whose first entry is −inf and
    x[3, 7 + chunk], x[3, 7 + 2 * chunk] = 0.5, 0.25 # two finite ones follow, rest −inf
    x = x.to(device)
    ref = entmax_reference(x.double().cpu(), torch.full((4,), alpha, dtype=torch.float64))
    its = {}
    for top2 in (0, 1):
        res = rowwise.entmax_forward(x, alpha, max_onchip=max_onchip, chunk=chunk,
                                     config=dict(stream_write_first=1, stream_top2=top2,
                                                 stream_unroll=unroll))
        p = res.p.cpu().double()
        assert bool(res.converged.all())
        assert (p - ref).abs().max().item() < 2e-6
        assert torch.equal(res.support_size.cpu(), (res.p.cpu() > 0).sum(1).to(torch.int32))
        its[top2] = res.iterations.cpu()
    for r in (0, 1, 3):
        assert int(its[0][r]) >= 1 and int(its[1][r]) == 0, (r, its)


@pytest.mark.parametrize("group", [0, 2, 4])
def test_onchip_subset_lower_bound(device, group):
    """The on-chip subset start (maxima of `group` consecutive entries) changes the pass
    count, never the answer; with it α ∈ {1.5, 2} rows mostly need one certifying pass."""
    gen = torch.Generator().manual_seed(14)
    R, D = (8, 40) if device == "cpu" else (512, 1000)
    cfg = dict(group=group, group_min_d=16)
    x = _rows("randn", R, D, gen).to(device)
    x[1] = 0.1 * x[1]
    for a in [1.25, 1.5, 2.0, 3.0, "mixed"]:
        al = _alpha(a, R, device)
        res = rowwise.entmax_forward(x, al, config=cfg)
        _check_forward(x, al, res)
        if group and a in (1.5, 2.0):
            assert res.iterations.float().mean() <= 2.0


# a row (513 integers in [−3, 2], one digit each, +3) on which float32 Newton with the generic
# power (α = 1.7) cycled between two iterates 3 ulp apart, each step just above the tolerance,
# for 100 passes (streamed with 32-wide chunks, found by a random sweep of rounded randn rows)
_CYCLE_ROW = (
    "34323242244122233424334524343443433243243251442331335441313332433413423432533233433543"
    "25353223223444314234153232543220324434422334431331432344433223523332223334442341353313"
    "21432222021352443424332224233243321433322523521432424333243233443223434553433324224435"
    "44323132332434433334333332242513234533422423233322345543233333253232423325444443422333"
    "12333235442442244432231132333334434331424242443335234322413134332243433443233444343334"
    "22252442413335253323432443334243323424123334344253323543333435332322313224521242333"
)


@pytest.mark.parametrize("solver", ["auto", "newton", "halley"])
@pytest.mark.parametrize("stream", [False, True])
def test_newton_two_cycle_is_broken(device, solver, stream):
    """A Newton step straight back to the bracket end that the previous Newton iterate set
    (f changed sign in between) is a cycle of rounding noise: the update bisects instead, so
    the row converges (it returned converged = False after 100 passes before)."""
    x = torch.tensor([[float(c) - 3.0 for c in _CYCLE_ROW]], device=device)
    assert x.shape == (1, 513)
    kw = dict(max_onchip=64, chunk=32) if stream else {}
    res = rowwise.entmax_forward(x, 1.7, solver=solver, **kw)
    _check_forward(x, torch.full((1,), 1.7, device=device), res)
    assert int(res.iterations[0]) <= 20, res.iterations


@pytest.mark.parametrize("solver", rowwise.SOLVERS)
def test_every_solver_converges(device, solver):
    gen = torch.Generator().manual_seed(3)
    R = 8 if device == "cpu" else 256
    max_onchip, chunk = _cfg(device)["stream"]
    for D in [50, 3 * chunk // 2]:
        x = _rows("randn", R, D, gen).to(device)
        al = _alpha("mixed", R, device)
        res = rowwise.entmax_forward(x, al, solver=solver, max_onchip=max_onchip, chunk=chunk)
        _check_forward(x, al, res)


def test_auto_is_exact_for_closed_forms(device):
    """α ∈ {1.5, 2}: closed form + certificate: few passes, error at float32 rounding."""
    gen = torch.Generator().manual_seed(4)
    x = _rows("randn", 16, 300, gen).to(device)
    for a in [1.5, 2.0]:
        al = _alpha(a, 16, device)
        res = rowwise.entmax_forward(x, al)
        err = _check_forward(x, al, res)
        assert err.max() < 3e-7
        bis = rowwise.entmax_forward(x, al, solver="bisect")
        assert res.iterations.float().mean() < bis.iterations.float().mean() / 2


def test_shift_invariance(device):
    gen = torch.Generator().manual_seed(5)
    base = _rows("randn", 6, 40, gen)
    for shift in [1e4, -1e4]:
        x = (base.double() + shift).float().to(device)  # the reference sees the same rounded input
        for a in [1.25, 1.5, 2.0]:
            al = _alpha(a, 6, device)
            _check_forward(x, al, rowwise.entmax_forward(x, al))


def test_ties_and_constant_rows(device):
    gen = torch.Generator().manual_seed(6)
    x = _rows("ties", 6, 21, gen).to(device)
    x[0] = 3.0  # all equal: p = 1/d
    for a in [1.25, 1.5, 2.0, 3.0]:
        al = _alpha(a, 6, device)
        res = rowwise.entmax_forward(x, al)
        _check_forward(x, al, res)
        assert torch.allclose(res.p[0].cpu(), torch.full((21,), 1 / 21), atol=1e-7)
        assert int(res.support_size[0]) == 21


def test_one_element_and_peaked(device):
    x = torch.tensor([[0.3], [-7.0]], device=device)
    al = torch.tensor([1.5, 3.0], device=device)
    res = rowwise.entmax_forward(x, al)
    assert torch.equal(res.p.cpu(), torch.ones(2, 1))
    gen = torch.Generator().manual_seed(7)
    x = _rows("peaked", 4, 17, gen).to(device)
    al = _alpha("mixed", 4, device)
    res = rowwise.entmax_forward(x, al)
    _check_forward(x, al, res)


@pytest.mark.parametrize("stream", [False, True])
def test_special_rows(device, stream):
    """−inf → p = 0; all −inf, NaN or +inf rows → NaN; other rows unaffected."""
    max_onchip, chunk = _cfg(device)["stream"] if stream else (None, None)
    D = 70 if stream else 9
    gen = torch.Generator().manual_seed(8)
    x = _rows("randn", 6, D, gen)
    x[1, ::2] = -float("inf")
    x[2] = -float("inf")
    x[3, 4] = float("nan")
    x[4, 1] = float("inf")
    x = x.to(device)
    al = _alpha("mixed", 6, device)
    res = rowwise.entmax_forward(x, al, max_onchip=max_onchip, chunk=chunk)
    p = res.p.cpu()
    for r in (2, 3, 4):
        assert bool(torch.isnan(p[r]).all()) and bool(torch.isnan(res.tau[r]))
        assert int(res.support_size[r]) == 0
    assert bool((p[1, ::2] == 0).all())
    good = [0, 1, 5]
    ref = entmax_reference(x[good].double().cpu(), al[good].double().cpu())
    assert (p[good].double() - ref).abs().max() < 1e-6
    assert not bool(torch.isnan(p[good]).any())
    assert bool(res.converged.all())


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("solver", ["auto", "bisect"])
def test_python_alpha_at_the_softmax_threshold(device, stream, solver):
    """α = 1.0001 (a python float): α − 1 ≤ 10⁻⁴ in float64, the host's decision and the CPU
    paths' — a softmax row — but not in float32 (1.00010002 − 1 > 9.99999975·10⁻⁵), where the
    kernel re-tested it and solved with the softmax stand-in's α = 2 power (uniform rows, sums of
    5 or 40).  Just above the threshold (1.0002) the rows are solved as entmax."""
    max_onchip, chunk = _cfg(device)["stream"] if stream else (None, None)
    D = 70 if stream else 9
    x = _rows("randn", 4, D, torch.Generator().manual_seed(31)).to(device)
    for a, ref in ((1.0001, torch.softmax(x.double().cpu(), -1)),
                   (1.0002, entmax_reference(x.double().cpu(), torch.full((4,), 1.0002, dtype=torch.float64)))):
        res = rowwise.entmax_forward(x, a, solver=solver, max_onchip=max_onchip, chunk=chunk)
        err = (res.p.cpu().double() - ref).abs().max().item()
        # 1.0002: q = 1/(α−1) = 5000 amplifies float32 rounding of the base (~eps·q relative)
        assert err <= (1e-6 if a == 1.0001 else 1e-3), (a, err)
        assert bool(res.converged.all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(device, dtype):
    gen = torch.Generator().manual_seed(9)
    R, D = (5, 37) if device == "cpu" else (256, 3000)
    x = _rows("randn", R, D, gen).to(dtype).to(device)
    al = _alpha("mixed", R, device)
    res = rowwise.entmax_forward(x, al)
    assert res.p.dtype == dtype
    assert res.tau.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    ref = entmax_reference(x.double(), al.double())
    err = (res.p.double() - ref).abs().max().item()
    bound = {torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float64: 1e-12}[dtype]
    if dtype == torch.float64:  # α = 3 rows: Hölder floor ~ ulp^{1/2}
        ok = al <= 2.0
        err = (res.p.double() - ref)[ok].abs().max().item()
    assert err <= bound, err
    assert bool(res.converged.all())


def test_max_iter_reports_unconverged(device):
    gen = torch.Generator().manual_seed(10)
    x = _rows("randn", 8, 64, gen).to(device)
    al = _alpha(1.25, 8, device)
    res = rowwise.entmax_forward(x, al, solver="bisect", max_iter=3)
    assert not bool(res.converged.any())
    assert bool((res.iterations == 3).all())
    full = rowwise.entmax_forward(x, al, solver="bisect")
    assert bool(full.converged.all()) and int(full.iterations.min()) > 3


_NORM_TOL_F32 = float(getattr(rowwise_common.NORM_TOL_F32, "value", rowwise_common.NORM_TOL_F32))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("solver", ["auto", "bisect", "newton"])
def test_float32_sums_within_norm_tol(device, stream, solver):
    """Float32 rows sum to 1 within NORM_TOL_F32 (+ the float64 sum of the stored values):
    where the bound from the solver's last pass (or α < 1.05, α > 2) makes the kernels
    measure Σp, rows off by more are divided.  Near α = 1 one ulp of τ moves Σp by q·eps
    (9e-4 at α = 1.0002 without the division); flat rows (whose closed-form τ loses digits to
    cancellation) and ties included."""
    max_onchip, chunk = _cfg(device)["stream"] if stream else (None, None)
    # streamed bisection (~30 passes a row) on 300-long rows was CI's slowest test (3 min under
    # the interpreter, 2.5 min with 130-long rows, whose cost is per pass, not per entry): 130
    # (two full chunks and a partial one on the CPU) and 3 rows of each kind for it
    slow = solver == "bisect" and device == "cpu" and stream
    D = (130 if slow else 300) if stream else 50
    gen = torch.Generator().manual_seed(43)
    worst = 0.0
    for a in [1.0002, 1.01, 1.1, 1.5, 2.0, 3.0]:
        for kind in ["randn", "flat", "heavy", "ties"]:
            x = _rows(kind, 3 if slow else 6, D, gen)
            if kind == "flat":
                x = 0.1 * x          # (0.01·randn in all)
            x = x.to(device)
            res = rowwise.entmax_forward(x, a, solver=solver, max_onchip=max_onchip, chunk=chunk)
            dev = (res.p.double().sum(-1) - 1).abs().max().item()
            assert dev <= _NORM_TOL_F32 + 1e-6, (a, kind, dev)
            worst = max(worst, dev)
    assert worst > 0.0  # (the check reads real sums)


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_onchip_flat_rows_sum_tightly(device, alpha):
    """On-chip float32 rows whose sum the kernel measures are divided when it is off 1 by more
    than 2 eps (free there: the sum is in registers).  Flat rows from a far start lose digits in
    the closed-form τ (Σp was 7–9e-6 off at α = 1.5, 4–5e-6 at α = 2, under NORM_TOL_F32)."""
    g = torch.Generator().manual_seed(11)
    for scale in [1e-3, 1e-2, 0.1]:
        x = (scale * torch.randn(64, 40, generator=g, dtype=torch.float64)).float().to(device)
        res = rowwise.entmax_forward(x, alpha)
        assert bool(res.converged.all())
        dev = (res.p.double().sum(-1) - 1).abs().max().item()
        assert dev < 1e-6, (scale, dev)


def test_renorm_config_is_checked(device):
    x = torch.randn(2, 5, device=device)
    for key in ("stream_renorm", "onchip_renorm"):
        with pytest.raises(ValueError, match=key):
            rowwise.entmax_forward(x, 1.5, config={key: 2})
    # a key CONFIG does not have (misspelt, or a removed knob) is refused by both launchers
    with pytest.raises(ValueError, match="stream_hold"):
        rowwise.entmax_forward(x, 1.5, config={"stream_hold": 1})
    with pytest.raises(ValueError, match="unknown keys"):
        rowwise.entmax_backward(x.softmax(-1), x, 1.5, False, config={"bwd_unrol": 2})


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rows_are_normalised_where_sum_is_off(device, stream, dtype):
    """Rows whose Σp at the final τ is off 1 by more than NORM_TOL are divided by it, as on the
    CPU: rows stopped at a small max_iter (reported unconverged; the API warns), and α = 10 rows
    whose Σp jumps across 1 between neighbouring floats τ (they summed to 0.988 and 1.158 with
    converged = True).  Other rows are written once, unchanged."""
    import warnings

    import sparsemap_tools as smt

    max_onchip, chunk = _cfg(device)["stream"] if stream else (None, None)
    D = 70 if stream else 9
    x = _rows("randn", 5, D, torch.Generator().manual_seed(41)).to(device=device, dtype=dtype)
    res = rowwise.entmax_forward(x, 1.3, solver="bisect", max_iter=2, max_onchip=max_onchip,
                                 chunk=chunk)
    assert not bool(res.converged.any())
    sums = res.p.double().sum(-1).cpu()
    assert (sums - 1).abs().max() < (1e-5 if dtype == torch.float32 else 1e-12), sums
    # the Hölder case: one entry 0.1 below the top at α = 10 (its p is d^{1/9}, d ~ 1e-18)
    h = torch.full((3, D), -0.4, dtype=dtype, device=device)
    h[:, 0] = 0.0
    h[:, 1] = -0.1
    h[1] += 1e4 if dtype == torch.float32 else 0.0
    h[2, 2] = -0.3
    res = rowwise.entmax_forward(h, 10.0, max_onchip=max_onchip, chunk=chunk)
    sums = res.p.double().sum(-1).cpu()
    assert (sums - 1).abs().max() < (1e-5 if dtype == torch.float32 else 1e-12), sums
    assert bool((res.p >= 0).all())
    # a converged α ≤ 2 row is not rewritten: the same p as the solve's τ gives
    x2 = _rows("randn", 4, D, torch.Generator().manual_seed(42)).to(device=device, dtype=dtype)
    r2 = rowwise.entmax_forward(x2, 1.5, max_onchip=max_onchip, chunk=chunk)
    zs = 0.5 * (x2.double() - x2.double().max(-1, keepdim=True).values)
    want = torch.clamp(zs - r2.tau.double()[:, None], min=0) ** 2
    # (float32: p ≤ 1 is within a few ulp of the formula; the GPU contracts to FMAs, so 1.6e-7
    # was seen on an H100; a division by Σp off 1 by NORM_TOL_F32 = 1e-5 would move p by up
    # to 1e-5 and fail this)
    assert (r2.p.double() - want).abs().max() < (5e-7 if dtype == torch.float32 else 1e-15)
    # the API says when a caller's max_iter stopped rows, as the CPU paths do
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        p = smt.entmax(x, 1.3, solver="bisect", backend="triton", max_iter=2)
    assert any(issubclass(i.category, RuntimeWarning) and "did not converge" in str(i.message)
               for i in w)
    assert (p.double().sum(-1) - 1).abs().max() < 1e-5


def test_bad_arguments(device):
    x = torch.randn(3, 4, device=device)
    with pytest.raises(ValueError):
        rowwise.entmax_forward(x, torch.full((3,), 1.5, device=device), solver="sort")
    with pytest.raises(ValueError):
        rowwise.entmax_forward(x, torch.full((2,), 1.5, device=device))
    with pytest.raises(ValueError):
        rowwise.entmax_forward(x[0], torch.full((3,), 1.5, device=device))
    with pytest.raises(ValueError, match="stream_unroll"):
        rowwise.entmax_forward(torch.randn(2, 40, device=device), 1.5, max_onchip=16, chunk=16,
                               config=dict(stream_unroll=3))
    with pytest.raises(ValueError, match="bwd_unroll"):
        rowwise.entmax_backward(torch.rand(2, 40, device=device), torch.randn(2, 40, device=device),
                                1.5, False, max_onchip=16, chunk=16, config=dict(bwd_unroll=6))
    with pytest.raises(ValueError, match="stream_unroll_generic"):
        rowwise.entmax_forward(torch.randn(2, 40, device=device), 1.7, max_onchip=16, chunk=16,
                               config=dict(stream_unroll_generic=0))
    for wf in (3, -2, True, 1.0):
        with pytest.raises(ValueError, match="stream_write_first"):
            rowwise.entmax_forward(torch.randn(2, 40, device=device), 2.0, max_onchip=16,
                                   chunk=16, config=dict(stream_write_first=wf))


def test_stream_launch_rule():
    """The streaming layout by launch: above 512 rows the fast modes (α ∈ {2, 1.5, 1.25} as a
    python float, float32) take 1024-wide chunks, 4 per step; α tensors, generic powers and
    float64 keep 2048-wide chunks one per step; the step never spans more chunks than the row
    has (rounded up to a power of two)."""
    cfg = rowwise.CONFIG
    fast = [rowwise._fast_mode(m, f64) for m, f64 in ((0, False), (1, False), (3, False),
                                                      (2, False), (-1, False), (1, True))]
    assert fast == [True, True, True, False, False, False]
    assert rowwise._chunk(1024, None, True) == 1024 and rowwise._chunk(1024, None, False) == 2048
    assert rowwise._chunk(256, None, True) == rowwise._chunk(256, None, False) == 4096
    assert rowwise._chunk(1024, 64, True) == 64
    assert rowwise._unroll(16384, 1024, cfg, True) == 4
    assert rowwise._unroll(16384, 2048, cfg, False) == 1
    assert rowwise._unroll(1500, 1024, cfg, True) == 2
    assert rowwise._unroll(3000, 1024, cfg, True) == 4
    # write-first: 1 for α ∈ {2, 1.5} (modes 0, 1), 2 for α = 2 only, −1 (default) α = 2 and
    # α = 1.5 above 512 rows; auto solver only; its launches above 512 rows take 2048-wide chunks
    for wf, t2, R, want in ((0, -1, 1024, [False, False, False]), (1, -1, 256, [True, True, False]),
                            (2, -1, 1024, [True, False, False]), (-1, -1, 1024, [True, True, False]),
                            (-1, -1, 512, [True, True, False]), (-1, 0, 512, [True, False, False])):
        c = dict(cfg, stream_write_first=wf, stream_top2=t2)
        assert [rowwise._write_first(m, 0, c, R) for m in (0, 1, 3)] == want
        assert not rowwise._write_first(0, 1, c, R)
    # the two-per-lane subset: −1 (default) α ∈ {2, 1.5} at ≤ 512 rows, α = 1.25 above; auto
    # solver
    for t2, R, want in ((-1, 512, [True, True, False]), (-1, 513, [False, False, True]),
                        (0, 256, [False, False, False]), (1, 4096, [True, True, True])):
        c = dict(cfg, stream_top2=t2)
        assert [rowwise._top2(m, 0, c, R) for m in (0, 1, 3)] == want
    assert not rowwise._top2(0, 1, cfg, 256)
    with pytest.raises(ValueError, match="stream_top2"):
        rowwise._top2(0, 0, dict(cfg, stream_top2=2), 256)
    assert cfg["stream_write_first"] == -1 and cfg["stream_top2"] == -1
    assert rowwise._chunk(1024, None, True, True) == 2048 and rowwise._chunk(256, None, True, True) == 4096


# ------------------------------------------------------------------------------ backward


@pytest.mark.parametrize("stream,unroll", [(False, 1), (True, 1), (True, 2), (True, 4)])
def test_backward_matches_autograd_reference(device, stream, unroll):
    """dx and dα of the kernel vs torch.autograd through the float64 reference (streamed rows
    also with 2 and 4 chunks per loop step, the last step partly past the row's end)."""
    max_onchip, chunk = _cfg(device)["stream"] if stream else (None, None)
    D = 3 * chunk + 5 if stream else 23   # streamed: 4 chunks, the last one mostly past the end
    gen = torch.Generator().manual_seed(11)
    x64 = torch.randn(6, D, generator=gen, dtype=torch.float64)
    x64[2, :5] = -float("inf")
    al64 = torch.tensor([1.25, 1.5, 2.0, 1.75, 1.5, 1.125], dtype=torch.float64)  # exact in fp32
    dy = torch.randn(6, D, generator=gen, dtype=torch.float64)
    xr = x64.clone().requires_grad_(True)
    ar = al64.clone().requires_grad_(True)
    pr = entmax_reference(xr, ar)
    gx, ga = torch.autograd.grad(pr, (xr, ar), dy)
    gx = torch.nan_to_num(gx, nan=0.0)
    for dtype, tol in [(torch.float64, 1e-9), (torch.float32, 2e-5)]:
        x = x64.to(dtype).to(device)
        al = al64.float().to(device)
        res = rowwise.entmax_forward(x, al, max_onchip=max_onchip, chunk=chunk)
        dx, da = rowwise.entmax_backward(res.p, dy.to(dtype).to(device), al, True,
                                         max_onchip=max_onchip, chunk=chunk,
                                         config=dict(bwd_unroll=unroll))
        assert dx.dtype == dtype
        scale = gx.abs().max().item()
        assert (dx.double().cpu() - gx).abs().max().item() <= tol * max(1.0, scale)
        assert (da.double().cpu() - ga).abs().max().item() <= tol * max(1.0, ga.abs().max().item()) * 10
        dx2, none = rowwise.entmax_backward(res.p, dy.to(dtype).to(device), al, False,
                                            max_onchip=max_onchip, chunk=chunk,
                                            config=dict(bwd_unroll=unroll))
        assert none is None and torch.allclose(dx2, dx)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("alpha", [1.25, 1.5, 2.0, 1.7])
def test_backward_float_alpha(device, stream, alpha):
    """A python-float α compiles the backward for its power branch: same dx as autograd
    through the reference."""
    max_onchip, chunk = _cfg(device)["stream"] if stream else (None, None)
    D = 70 if stream else 23
    gen = torch.Generator().manual_seed(14)
    x = torch.randn(5, D, generator=gen, dtype=torch.float64)
    x[1, :4] = -float("inf")
    dy = torch.randn(5, D, generator=gen, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(entmax_reference(xr, torch.full((5,), alpha, dtype=torch.float64)), xr, dy)
    res = rowwise.entmax_forward(x.float().to(device), alpha, max_onchip=max_onchip, chunk=chunk)
    dx, none = rowwise.entmax_backward(res.p, dy.float().to(device), alpha, False,
                                       max_onchip=max_onchip, chunk=chunk)
    assert none is None
    assert (dx.double().cpu() - torch.nan_to_num(gx, nan=0.0)).abs().max().item() <= 2e-5 * max(1.0, gx.abs().max().item())


def test_backward_closed_form_reference_agrees(device):
    """The closed-form backward of the reference equals autograd through it (checks the
    reference itself, so the kernel test above compares against something right)."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(4, 15, generator=gen, dtype=torch.float64, requires_grad=True)
    a = torch.tensor([1.25, 1.5, 2.0, 1.8], dtype=torch.float64, requires_grad=True)
    dy = torch.randn(4, 15, generator=gen, dtype=torch.float64)
    p = entmax_reference(x, a)
    gx, ga = torch.autograd.grad(p, (x, a), dy)
    dx, da = entmax_backward_reference(p.detach(), dy, a.detach())
    assert torch.allclose(dx, gx, atol=1e-10) and torch.allclose(da, ga, atol=1e-9)


class _KernelEntmax(torch.autograd.Function):
    """Test-only autograd wrapper of the kernels (the public one lives in sparsemap_tools)."""

    @staticmethod
    def forward(ctx, x, alpha):
        res = rowwise.entmax_forward(x, alpha)
        ctx.save_for_backward(res.p, alpha)
        return res.p

    @staticmethod
    def backward(ctx, dy):
        p, alpha = ctx.saved_tensors
        dx, da = rowwise.entmax_backward(p, dy.contiguous(), alpha, ctx.needs_input_grad[1])
        return dx, (None if da is None else da.to(alpha.dtype))


def test_gradcheck_float64(device):
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(3, 6, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)
    # float64 α (the kernel accepts float32 or float64 α), so finite differences in α are exact
    a = torch.tensor([1.25, 1.5, 1.75], dtype=torch.float64, device=device).requires_grad_(True)
    assert torch.autograd.gradcheck(_KernelEntmax.apply, (x, a), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("solver", ["auto", "bisect", "newton"])
@pytest.mark.parametrize("stream", [False, True])
def test_float64_alpha_near_one_exact_and_gradcheck(device, solver, stream):
    """α − 1 = 10⁻⁴ in float64: one ulp of τ moves Σp by ~q·eps (q = 10⁴: 5·10⁻¹³), and ∂p/∂α
    divides p's error by (α−1)²; the rows are divided by their sum (as on the CPU), so p is
    exact to ~1e-16 and gradcheck in α passes (it failed for bisect and newton before)."""
    max_onchip, chunk = _cfg(device)["stream"] if stream else (None, None)
    D = 70 if stream else 7
    x = torch.randn(3, D, generator=torch.Generator().manual_seed(17), dtype=torch.float64).to(device)
    a = torch.full((3,), 1.0001, dtype=torch.float64, device=device)
    res = rowwise.entmax_forward(x, a, solver=solver, max_onchip=max_onchip, chunk=chunk)
    # the CPU's exact sort solver (which divides by the sum too: the plain float64 reference's
    # own τ has the one-ulp floor)
    import sparsemap_tools as smt
    ref = smt.entmax(x.cpu().numpy(), 1.0001, solver="sort", backend="numpy")
    assert (res.p.cpu() - torch.from_numpy(ref)).abs().max() < 1e-15
    assert (res.p.sum(-1) - 1).abs().max() < 1e-15

    class _F(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha):
            r = rowwise.entmax_forward(x, alpha, solver=solver, max_onchip=max_onchip, chunk=chunk)
            ctx.save_for_backward(r.p, alpha)
            return r.p

        @staticmethod
        def backward(ctx, dy):
            p, alpha = ctx.saved_tensors
            return rowwise.entmax_backward(p, dy.contiguous(), alpha, True, max_onchip=max_onchip,
                                           chunk=chunk)

    if stream:  # (gradcheck of streamed rows under the interpreter: minutes; forward only)
        return
    assert torch.autograd.gradcheck(_F.apply, (x.requires_grad_(True), a.clone().requires_grad_(True)),
                                    eps=1e-7, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("stream", [False, True])
def test_support_counts_stored_entries(device, stream):
    """An entry just above τ whose p = d^q underflows in the output dtype is not counted in
    support_size (support_size == number of stored p > 0, also for float16)."""
    max_onchip, chunk = _cfg(device)["stream"] if stream else (None, None)
    D = 70 if stream else 23
    gen = torch.Generator().manual_seed(15)
    x = torch.randn(3, D, generator=gen, dtype=torch.float64)
    al = torch.full((3,), 1.1, dtype=torch.float64)
    x[:, -1] = -1e3                                 # out of the support while τ is computed
    tau = tau_reference(x, al)                      # prepared space: zs = 0.1 (x − max)
    xmax = x.max(1).values
    x[:, -1] = xmax + (tau + 1e-5) / 0.1            # d = 1e-5 → p = 1e-50: underflows
    for dtype in (torch.float32, torch.float16):
        res = rowwise.entmax_forward(x.to(dtype).to(device), 1.1, max_onchip=max_onchip, chunk=chunk)
        assert torch.equal(res.support_size.cpu(), (res.p > 0).sum(-1).int().cpu())
        assert bool((res.p[:, -1] == 0).all())
