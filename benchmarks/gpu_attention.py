"""Benchmark + correctness check of fused α-entmax attention on one GPU.

    python benchmarks/gpu_attention.py [--check] [--bench] [--quick] [--out DIR]

--check: fused kernels (fp32 and bf16) against the float64 dense reference on the GPU: relative
         errors of out, dq, dk, dv, |τ − τ_ref|, determinism (bitwise, two runs).
--bench: forward (inference, no grad), forward with grad, forward+backward, in ms (median of
         ``triton.testing.do_bench``), for ours, SDPA flash (FA2), SDPA cuDNN, adasplash v2 (causal
         α = 1.5 only) and adasplash v1 (shortest N only, it is slow), on two input regimes:
         - random:  q, k, v ~ N(0, 1)  (no zero tiles)
         - topics(s): segments of 256 tokens, each with a topic vector t ~ s·N(0, I) per (b, h);
           q_i = t_seg(i) + n, k_j = t_seg(j) + n', v ~ N(0, 1)   (anchors.md; the strength s is the
           block-sparsity knob; the measured fraction of skipped tiles is printed).
The table is printed last; a JSON copy goes to --out, and with --bench a plot (gpu_attention.png).
TFLOP/s columns are "dense-attention equivalent": 4·B·H·Nq·Nk·D FLOPs for the forward (half of it
when causal), 2.5× that for the backward (3.5× for forward+backward), divided by each method's time,
so skipped tiles count as if computed.

    python benchmarks/gpu_attention.py --plot-from ROWS.json [--out DIR]

only draws DIR/gpu_attention.png from a JSON list of the bench row dicts (or a gpu_attention.json).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

from sparsemap_tools.attention import entmax_attention, entmax_attention_varlen
from sparsemap_tools.gpu.attention_reference import entmax_attention_dense, entmax_attention_varlen_dense


def gen(kind: str, B: int, H: int, N: int, D: int, dtype, strength: float = 1.0, seg: int = 256, Hkv=None):
    Hkv = Hkv or H
    dev = "cuda"
    if kind == "random":
        q = torch.randn(B, H, N, D, device=dev)
        k = torch.randn(B, Hkv, N, D, device=dev)
    else:
        # one topic per segment and key/value head; the query heads of a GQA group share it
        nseg = (N + seg - 1) // seg
        t = strength * torch.randn(B, Hkv, nseg, D, device=dev)
        tt = t.repeat_interleave(seg, dim=2)[:, :, :N]
        q = tt.repeat_interleave(H // Hkv, dim=1) + torch.randn(B, H, N, D, device=dev)
        k = tt + torch.randn(B, Hkv, N, D, device=dev)
    v = torch.randn(B, Hkv, N, D, device=dev)
    return [x.to(dtype) for x in (q, k, v)]


def attention_flops(row, phase: str = "fwd") -> float:
    """Dense-attention FLOPs of one row's problem: 4·B·H·N²·D forward (halved when causal),
    backward 2.5× the forward, so ``phase="fb"`` (forward+backward) is 3.5×."""
    f = 4.0 * row["B"] * row["H"] * row["N"] * row["N"] * row["D"]
    if row["causal"]:
        f /= 2
    return f * (3.5 if phase == "fb" else 1.0)


def add_tflops(row) -> dict:
    """Set ``{ours,flash,cudnn}_{fwd,fb}_tflops`` (TFLOP/s equivalent) from the times in ms."""
    for m in ("ours", "flash", "cudnn"):
        for ph in ("fwd", "fb"):
            ms = row.get(f"{m}_{ph}", float("nan"))
            row[f"{m}_{ph}_tflops"] = (attention_flops(row, ph) / (ms * 1e-3) / 1e12
                                       if ms == ms and ms > 0 else float("nan"))
    return row


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


# ----------------------------------------------------------------------------------------------


def check(log):
    rows = []
    torch.manual_seed(0)
    cases = [
        # B, H, Hkv, Nq, Nk, D, causal, alpha, dtype, kind
        (2, 4, 4, 512, 512, 64, True, 1.5, torch.float32, "random"),
        (2, 4, 2, 333, 333, 64, False, 2.0, torch.float32, "random"),
        (1, 4, 1, 200, 700, 128, True, 1.25, torch.float32, "random"),
        (1, 2, 2, 300, 300, 32, False, 3.0, torch.float32, "random"),
        (2, 4, 4, 1024, 1024, 64, True, 1.5, torch.float32, "topics"),
        (2, 4, 4, 1024, 1024, 64, True, 1.5, torch.bfloat16, "random"),
        (2, 4, 4, 1024, 1024, 128, False, 2.0, torch.bfloat16, "topics"),
        (1, 4, 2, 777, 777, 96, True, 1.5, torch.float16, "random"),
        (1, 2, 2, 512, 512, 256, True, 1.5, torch.bfloat16, "random"),
        (1, 4, 4, 1, 1000, 64, True, 1.5, torch.float32, "random"),
        (1, 2, 2, 4096, 4096, 64, True, 1.5, torch.float32, "random"),
    ]
    for (B, H, Hkv, Nq, Nk, D, causal, alpha, dtype, kind) in cases:
        q = torch.randn(B, H, Nq, D, device="cuda") * (1.0 if kind == "random" else 1.0)
        k = torch.randn(B, Hkv, Nk, D, device="cuda")
        v = torch.randn(B, Hkv, Nk, D, device="cuda")
        if kind == "topics" and Nq == Nk:
            q, k, v = gen("topics", B, H, Nq, D, torch.float32, 1.0, Hkv=Hkv)
        q, k, v = (x.to(dtype).requires_grad_() for x in (q, k, v))
        out, st = entmax_attention(q, k, v, alpha=alpha, is_causal=causal, enable_gqa=True, return_stats=True)
        do = torch.randn_like(out)
        out.backward(do)
        g1 = [x.grad.clone() for x in (q, k, v)]
        o1 = out.detach().clone()
        for x in (q, k, v):
            x.grad = None
        out2 = entmax_attention(q, k, v, alpha=alpha, is_causal=causal, enable_gqa=True)
        out2.backward(do)
        det = torch.equal(o1, out2.detach()) and all(torch.equal(a, b.grad) for a, b in zip(g1, (q, k, v)))
        qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
        ref, tau = entmax_attention_dense(qd, kd, vd, alpha, causal, return_tau=True)
        ref.backward(do.double())
        e = dict(case=f"B{B} H{H}/{Hkv} {Nq}x{Nk} D{D} {'causal' if causal else 'full'} a{alpha} {str(dtype)[6:]} {kind}",
                 out=rel(o1, ref), dq=rel(g1[0], qd.grad), dk=rel(g1[1], kd.grad), dv=rel(g1[2], vd.grad),
                 tau=(st.tau.double() - tau).abs().max().item(), det=det,
                 skip=st.tile_sparsity.item(), iters=int(st.solve_iters))
        rows.append(e)
        log(json.dumps(e))
    # varlen with an empty sequence
    cu = torch.tensor([0, 100, 100, 356, 1000], device="cuda", dtype=torch.int32)
    q = torch.randn(1000, 4, 64, device="cuda", requires_grad=True)
    k = torch.randn(1000, 2, 64, device="cuda", requires_grad=True)
    v = torch.randn(1000, 2, 64, device="cuda", requires_grad=True)
    out = entmax_attention_varlen(q, k, v, cu, cu, 644, 644, alpha=1.5, is_causal=True)
    do = torch.randn_like(out)
    out.backward(do)
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = entmax_attention_varlen_dense(qd, kd, vd, cu.cpu(), cu.cpu(), alpha=1.5, is_causal=True)
    ref.backward(do.double())
    e = dict(case="varlen [100,0,256,644] H4/2 D64 causal a1.5 fp32", out=rel(out, ref), dq=rel(q.grad, qd.grad),
             dk=rel(k.grad, kd.grad), dv=rel(v.grad, vd.grad), tau=float("nan"), det=True, skip=float("nan"), iters=-1)
    rows.append(e)
    log(json.dumps(e))
    return rows


# ----------------------------------------------------------------------------------------------


def bench_one(fn, grad_inputs=None, do=None, reps=50):
    import triton.testing as tt

    def fwd():
        with torch.no_grad():
            return fn()

    t_inf = tt.do_bench(fwd, warmup=25, rep=reps, return_mode="median")
    t_fb = float("nan")
    if grad_inputs is not None:
        def fb():
            o = fn()
            o.backward(do)
        t_fb = tt.do_bench(fb, warmup=25, rep=reps, return_mode="median", grad_to_none=grad_inputs)
    return t_inf, t_fb


def forward_stages(f, rep: int = 40) -> list:
    """[scan, solve, output, total] ms of the attention forward ``f`` under ``torch.no_grad()``:
    do_bench medians of the first 1, 2 and 3 stages (``attention._PROFILE_STAGES``), differenced."""
    import triton.testing as tt

    import sparsemap_tools.gpu.attention as GA

    cum = []
    for stage in (1, 2, 3):
        GA._PROFILE_STAGES = stage
        with torch.no_grad():
            cum.append(tt.do_bench(f, warmup=10, rep=rep, return_mode="median"))
    GA._PROFILE_STAGES = 3
    return [cum[0], cum[1] - cum[0], cum[2] - cum[1], cum[2]]


def sdpa(q, k, v, causal, backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    be = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]

    def f():
        with sdpa_kernel(be):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return f


def bench(log, quick: bool, only=None, profile: bool = False, main_set: bool = False,
          max_seconds: float = 1e9, on_row=None, issue_set: bool = False):
    results = []
    tokens, H = 16384, 16
    configs = []
    Ns = [1024, 4096, 16384] if not quick else [4096]
    for D in (64, 128):
        for N in Ns:
            configs.append((N, D, True, 1.5, "random", 0.0))
            configs.append((N, D, True, 1.5, "topics", 1.0))
    if not quick:
        configs += [(16384, 64, False, 1.5, "random", 0.0), (16384, 64, False, 1.5, "topics", 1.0),
                    (16384, 64, True, 2.0, "random", 0.0), (16384, 64, True, 2.0, "topics", 1.0),
                    (16384, 64, True, 1.25, "topics", 1.0)]
        for s in (0.5, 0.75, 1.5, 2.0):
            configs.append((16384, 64, True, 1.5, "topics", s))
    if main_set:
        configs = [(16384, 64, True, 1.5, "random", 0.0), (16384, 64, True, 1.5, "topics", 1.0),
                   (16384, 128, True, 1.5, "random", 0.0), (16384, 128, True, 1.5, "topics", 1.0),
                   (4096, 64, True, 1.5, "random", 0.0), (4096, 64, True, 1.5, "topics", 1.0),
                   (16384, 64, False, 1.5, "random", 0.0), (16384, 64, False, 1.5, "topics", 1.0),
                   (16384, 64, True, 2.0, "topics", 1.0), (16384, 64, True, 1.25, "topics", 1.0),
                   (16384, 64, True, 1.5, "topics", 0.5), (16384, 64, True, 1.5, "topics", 0.75),
                   (16384, 64, True, 1.5, "topics", 1.5)]
    if issue_set:
        # the issue-5 grid: α = 1.5 over N ∈ {1k, 4k, 16k, 32k} × D ∈ {64, 128} × causal or not ×
        # both regimes; α ∈ {2, 1.25} at N = 16k; N = 128k (B = 1, D = 128) for time and memory
        configs = [(N, D, causal, 1.5, kind, s_)
                   for N in (1024, 4096, 16384, 32768) for D in (64, 128) for causal in (True, False)
                   for kind, s_ in (("random", 0.0), ("topics", 1.0))]
        configs += [(16384, D, causal, a, kind, s_) for a in (2.0, 1.25) for D in (64, 128)
                    for causal in (True, False) for kind, s_ in (("random", 0.0), ("topics", 1.0))]
        configs += [(131072, 128, True, 1.5, "random", 0.0), (131072, 128, True, 1.5, "topics", 1.0)]
    if only:
        configs = [c for c in configs if only(c)]
    try:
        import adasplash
        have_ada = True
    except Exception as ex:  # pragma: no cover
        log(f"adasplash not importable: {ex}")
        have_ada = False
    t_start = time.time()
    for (N, D, causal, alpha, kind, strength) in configs:
        if time.time() - t_start > max_seconds:
            log(f"time budget of {max_seconds:.0f} s reached: skipping the remaining configurations")
            break
        B = max(1, tokens // N)
        torch.manual_seed(1)
        q, k, v = gen(kind, B, H, N, D, torch.bfloat16, strength)
        for x in (q, k, v):
            x.requires_grad_()
        do = torch.randn_like(q)
        row = dict(N=N, D=D, B=B, H=H, causal=causal, alpha=alpha, kind=f"{kind}({strength})" if kind == "topics" else kind)
        # stats + correctness of ours vs a float32 SDPA-free check (row sums via tau) at this size
        with torch.no_grad():
            _, st = entmax_attention(q, k, v, alpha=alpha, is_causal=causal, return_stats=True)
        row["skip"] = round(st.tile_sparsity.item(), 4)
        row["iters"] = int(st.solve_iters)
        row["gathered"] = round(float(st.gathered), 4)  # query blocks written by the solve's gather
        ours = lambda: entmax_attention(q, k, v, alpha=alpha, is_causal=causal)
        t0 = time.time()
        row["ours_fwd"], row["ours_fb"] = bench_one(ours, [q, k, v], do)
        import triton.testing as tt
        def fwd_train():
            return entmax_attention(q, k, v, alpha=alpha, is_causal=causal)
        row["ours_fwd_train"] = tt.do_bench(fwd_train, warmup=25, rep=50, return_mode="median")
        row["ours_s"] = round(time.time() - t0, 1)
        if profile:
            row["stages_ms"] = [round(t, 3) for t in forward_stages(ours, rep=30)[:3]]
        for x in (q, k, v):
            x.grad = None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        o = entmax_attention(q, k, v, alpha=alpha, is_causal=causal)
        o.backward(do)
        torch.cuda.synchronize()
        # above what was allocated before (inputs and anything a baseline library keeps cached)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
        # a negative difference was seen once (N = 32k, full, topics, after the 16k rows): the
        # allocator's counters are not trustworthy then; say so instead of printing it
        row["ours_peak_GiB"] = peak if peak >= 0 else float("nan")
        if peak < 0:
            log(f"peak memory reading below the baseline ({peak:.2f} GiB): not recorded")
        del o
        for be in ("flash", "cudnn"):
            try:
                row[f"{be}_fwd"], row[f"{be}_fb"] = bench_one(sdpa(q, k, v, causal, be), [q, k, v], do)
            except Exception as ex:
                log(f"sdpa {be} failed: {ex}")
                row[f"{be}_fwd"] = row[f"{be}_fb"] = float("nan")
        row["ada2_fwd"] = row["ada2_fb"] = float("nan")
        if have_ada and causal and alpha == 1.5:
            try:
                from adasplash import adasplash_v2
                qc, kc, vc = (x.detach().contiguous().requires_grad_() for x in (q, k, v))
                t0 = time.time()
                row["ada2_fwd"], row["ada2_fb"] = bench_one(lambda: adasplash_v2(qc, kc, vc), [qc, kc, vc], do)
                row["ada2_s"] = round(time.time() - t0, 1)
            except Exception as ex:
                log(f"adasplash v2 failed: {str(ex)[:200]}")
        row["ada1_fwd"] = row["ada1_fb"] = float("nan")
        if have_ada and N <= 1024 and alpha in (1.5, 2.0, 1.25):
            try:
                from adasplash import adasplash_v1
                qc, kc, vc = (x.detach().contiguous().requires_grad_() for x in (q, k, v))
                row["ada1_fwd"], row["ada1_fb"] = bench_one(lambda: adasplash_v1(qc, kc, vc, alpha=alpha, is_causal=causal), [qc, kc, vc], do, reps=20)
            except Exception as ex:
                log(f"adasplash v1 failed: {str(ex)[:200]}")
        add_tflops(row)
        results.append(row)
        log(json.dumps(row))
        if on_row is not None:
            on_row(results)
    return results


def memory_run(log, N: int, D: int, kind: str, strength: float, causal: bool = True,
               alpha: float = 1.5, H: int = 16):
    """One configuration (B = 1) in a process of its own: times and the peak memory *above the
    inputs* (q, k, v, dO) of our forward (inference) and forward+backward, and of SDPA flash's
    forward+backward; nothing else is alive, so the peaks are ours alone."""
    import triton.testing as tt

    torch.manual_seed(1)
    q, k, v = gen(kind, 1, H, N, D, torch.bfloat16, strength)
    for x in (q, k, v):
        x.requires_grad_()
    do = torch.randn_like(q)
    row = dict(N=N, D=D, B=1, H=H, causal=causal, alpha=alpha,
               kind=f"{kind}({strength})" if kind == "topics" else kind)
    fns = {"ours": lambda: entmax_attention(q, k, v, alpha=alpha, is_causal=causal),
           "flash": sdpa(q, k, v, causal, "flash")}
    for name, fn in fns.items():
        o = fn()
        o.backward(do)  # compile / warm up
        del o
        for x in (q, k, v):
            x.grad = None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            o = fn()
        torch.cuda.synchronize()
        row[f"{name}_fwd_peak_GiB"] = (torch.cuda.max_memory_allocated() - base) / 2**30
        del o
        torch.cuda.reset_peak_memory_stats()
        o = fn()
        o.backward(do)
        torch.cuda.synchronize()
        row[f"{name}_fb_peak_GiB"] = (torch.cuda.max_memory_allocated() - base) / 2**30
        del o
        for x in (q, k, v):
            x.grad = None
        row[f"{name}_fwd"], row[f"{name}_fb"] = bench_one(fn, [q, k, v], do, reps=20)
    row["inputs_GiB"] = 4 * q.numel() * q.element_size() / 2**30
    with torch.no_grad():
        _, st = entmax_attention(q, k, v, alpha=alpha, is_causal=causal, return_stats=True)
    row["skip"] = round(st.tile_sparsity.item(), 4)
    log(json.dumps(row))
    log(f"N={N} D={D} {'causal' if causal else 'full'} a={alpha} {row['kind']}: skip {row['skip']:.2f}; "
        f"ours fwd {row['ours_fwd']:.2f} ms (+{row['ours_fwd_peak_GiB']:.2f} GiB), f+b {row['ours_fb']:.2f} ms "
        f"(+{row['ours_fb_peak_GiB']:.2f} GiB); FA2 fwd {row['flash_fwd']:.2f} ms, f+b {row['flash_fb']:.2f} ms "
        f"(+{row['flash_fb_peak_GiB']:.2f} GiB); inputs q,k,v,dO {row['inputs_GiB']:.2f} GiB")
    return row


def extras(log):
    """What the grid does not cover: first-call compile time (this must be a fresh process),
    that a new sequence length does not recompile, and GQA / varlen against the same work as
    plain multi-head padded attention (N = 16k tokens, D = 64, causal, α = 1.5)."""
    import triton.testing as tt

    out = {}
    q, k, v = gen("random", 1, 16, 4096, 64, torch.bfloat16)
    for x in (q, k, v):
        x.requires_grad_()
    for label, n in (("first call (compiles)", 4096), ("second call", 4096), ("new length 5000", 5000),
                     ("new length 3001", 3001)):
        qs, ks, vs = (x[:, :, :n].detach().requires_grad_() for x in (q, k, v))
        torch.cuda.synchronize()
        t0 = time.time()
        o = entmax_attention(qs, ks, vs, alpha=1.5, is_causal=True)
        o.backward(torch.ones_like(o))
        torch.cuda.synchronize()
        out[label] = time.time() - t0
        log(f"compile: {label}: fwd+bwd {out[label]:.2f} s")
    rows = []
    for kind in ("random", "topics"):
        torch.manual_seed(1)
        res = {}
        q, k, v = gen(kind, 1, 16, 16384, 64, torch.bfloat16, 1.0)
        qg, kg, vg = gen(kind, 1, 16, 16384, 64, torch.bfloat16, 1.0, Hkv=4)
        do = torch.randn_like(q)
        # varlen: the same 16k tokens as 4 sequences of 4096, against padded B = 4, N = 4096
        qp, kp, vp = gen(kind, 4, 16, 4096, 64, torch.bfloat16, 1.0)
        pack = lambda x: x.transpose(1, 2).reshape(-1, x.shape[1], x.shape[3]).contiguous()  # noqa: E731
        qv, kv, vv = pack(qp), pack(kp), pack(vp)
        cu = torch.arange(0, 16384 + 1, 4096, device="cuda", dtype=torch.int32)
        cases = {
            "MHA B=1 N=16k": (lambda: entmax_attention(q, k, v, alpha=1.5, is_causal=True), [q, k, v], do),
            "GQA 16/4 B=1 N=16k": (lambda: entmax_attention(qg, kg, vg, alpha=1.5, is_causal=True,
                                                             enable_gqa=True), [qg, kg, vg], do),
            "padded B=4 N=4096": (lambda: entmax_attention(qp, kp, vp, alpha=1.5, is_causal=True),
                                  [qp, kp, vp], torch.randn_like(qp)),
            "varlen 4×4096": (lambda: entmax_attention_varlen(qv, kv, vv, cu, cu, 4096, 4096, alpha=1.5,
                                                               is_causal=True), [qv, kv, vv],
                              torch.randn_like(qv)),
            # the default validates cu_seqlens on the host (one synchronisation per call)
            "varlen 4×4096 unchecked": (lambda: entmax_attention_varlen(qv, kv, vv, cu, cu, 4096, 4096,
                                                                         alpha=1.5, is_causal=True,
                                                                         check_cu_seqlens=False),
                                        [qv, kv, vv], torch.randn_like(qv)),
        }
        for name, (fn, inputs, d) in cases.items():
            for x in inputs:
                x.requires_grad_()
            res[name] = bench_one(fn, inputs, d)
            log(f"{kind}: {name}: fwd {res[name][0]:.3f} ms, fwd+bwd {res[name][1]:.3f} ms")
        rows.append((kind, res))
    for kind, res in rows:
        g, m = res["GQA 16/4 B=1 N=16k"], res["MHA B=1 N=16k"]
        vl, pd = res["varlen 4×4096"], res["padded B=4 N=4096"]
        vu = res["varlen 4×4096 unchecked"]
        log(f"{kind}: GQA / MHA fwd {g[0] / m[0]:.2f}, f+b {g[1] / m[1]:.2f}; "
            f"varlen / padded fwd {vl[0] / pd[0]:.2f}, f+b {vl[1] / pd[1]:.2f}; "
            f"unchecked varlen / padded fwd {vu[0] / pd[0]:.2f}, f+b {vu[1] / pd[1]:.2f}")
    return out, rows


def table(check_rows, bench_rows):
    lines = []
    if check_rows:
        lines.append("correctness vs float64 reference (relative L2 errors; tau: max abs; det: bitwise repeat)")
        lines.append(f"{'case':58s} {'out':>8s} {'dq':>8s} {'dk':>8s} {'dv':>8s} {'tau':>8s} det skip  it")
        for r in check_rows:
            lines.append(f"{r['case']:58s} {r['out']:8.1e} {r['dq']:8.1e} {r['dk']:8.1e} {r['dv']:8.1e} {r['tau']:8.1e} {str(r['det'])[0]}  {r['skip']:.2f} {r['iters']:3d}")
    if bench_rows:
        lines.append("")
        lines.append("times in ms (median), bf16, B*N=16384, H=16; ratios = ours / baseline (same run)")
        if any("stages_ms" in r for r in bench_rows):
            lines.append("forward stages (ms, inference): scan | solve | output")
            for r in bench_rows:
                if "stages_ms" in r:
                    lines.append(f"  N={r['N']} D={r['D']} {r['kind']}: " + " | ".join(f"{x:.3f}" for x in r["stages_ms"]))
        lines.append("TF/s o/F/c: dense-attention-equivalent TFLOP/s of ours / FA2 / cuDNN "
                     "(4·B·H·N²·D fwd, halved if causal; f+b 3.5×)")
        lines.append(f"{'N':>6s} {'D':>4s} {'mask':6s} {'a':>4s} {'inputs':12s} {'skip':>5s} {'it':>3s} | {'ours fwd':>8s} {'fwdtr':>6s} {'FA2':>6s} {'cuDNN':>6s} {'ada2':>6s} {'/FA2':>5s} {'/ada2':>5s} {'TF/s o/F/c':>11s} | {'ours f+b':>8s} {'FA2':>6s} {'cuDNN':>6s} {'ada2':>6s} {'/FA2':>5s} {'/cuDNN':>6s} {'/ada2':>5s} {'TF/s o/F/c':>11s} {'GiB':>5s}")

        def tf(r, ph):
            if f"ours_{ph}_tflops" not in r:
                add_tflops(r)
            return "/".join(f"{r[f'{m}_{ph}_tflops']:.0f}" for m in ("ours", "flash", "cudnn"))

        for r in bench_rows:
            lines.append(
                f"{r['N']:6d} {r['D']:4d} {'causal' if r['causal'] else 'full':6s} {r['alpha']:4.2f} {r['kind']:12s} {r['skip']:5.2f} {r['iters']:3d} | "
                f"{r['ours_fwd']:8.3f} {r['ours_fwd_train']:6.3f} {r['flash_fwd']:6.3f} {r['cudnn_fwd']:6.3f} {r['ada2_fwd']:6.3f} "
                f"{r['ours_fwd'] / r['flash_fwd']:5.2f} {r['ours_fwd'] / r['ada2_fwd']:5.2f} {tf(r, 'fwd'):>11s} | "
                f"{r['ours_fb']:8.3f} {r['flash_fb']:6.3f} {r['cudnn_fb']:6.3f} {r['ada2_fb']:6.3f} "
                f"{r['ours_fb'] / r['flash_fb']:5.2f} {r['ours_fb'] / r['cudnn_fb']:6.2f} {r['ours_fb'] / r['ada2_fb']:5.2f} {tf(r, 'fb'):>11s} {r.get('ours_peak_GiB', float('nan')):5.2f}")
    return "\n".join(lines)


def _config_label(r, varying) -> str:
    parts = []
    if "N" in varying:
        parts.append(f"N {r['N']}")
    if "B" in varying:
        parts.append(f"B {r['B']}")
    if "D" in varying:
        parts.append(f"D {r['D']}")
    if "H" in varying:
        parts.append(f"H {r['H']}")
    if "causal" in varying:
        parts.append("causal" if r["causal"] else "full")
    if "alpha" in varying:
        parts.append(f"α {r['alpha']:g}")
    head = " ".join(parts)
    return (head + "\n" if head else "") + f"{r['kind']}\nskip {r['skip']:.0%}"


def plot_bench(bench_rows, path):
    """PNG of forward and forward+backward times (ms, log axis) of ours, FA2, cuDNN (and
    adasplash v2 where measured) per configuration, with the measured fraction of skipped
    tiles under each group and ours / FA2 over our bars. Returns None (with a note) when
    matplotlib is missing or there are no rows."""
    rows = [r for r in bench_rows if "ours_fwd" in r]
    if not rows:
        print(f"no benchmark rows; plot {path} skipped")
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        print(f"matplotlib not available ({e}); plot {path} skipped")
        return None
    rows = sorted(rows, key=lambda r: (r["N"], r["D"], not r["causal"], r["alpha"], r["skip"]))
    varying = [k for k in ("N", "B", "H", "D", "causal", "alpha") if len({r[k] for r in rows}) > 1]
    fixed = [k for k in ("N", "D", "B", "H", "causal", "alpha") if k not in varying]
    fixed_txt = ", ".join(("causal" if rows[0][k] else "full") if k == "causal"
                          else f"{'α' if k == 'alpha' else k} = {rows[0][k]:g}" for k in fixed)
    ok = lambda v: v == v and v is not None  # noqa: E731  (NaN: not measured)
    methods = [("ours", "ours (entmax)", "tab:blue"), ("flash", "FA2 (SDPA flash, softmax)", "tab:gray"),
               ("cudnn", "cuDNN (SDPA, softmax)", "tab:olive")]
    if any(ok(r.get(f"ada2_{ph}", float("nan"))) for r in rows for ph in ("fwd", "fb")):
        methods.append(("ada2", "adasplash v2", "tab:orange"))
    w = 0.8 / len(methods)
    fig, axes = plt.subplots(2, 1, figsize=(max(7.0, 1.3 * len(rows) + 2.5), 8), sharex=True)
    for ax, (ph, title) in zip(axes, [("fwd", "forward (inference, no grad)"),
                                       ("fb", "forward + backward")]):
        for j, (m, label, color) in enumerate(methods):
            xs = [i - 0.4 + (j + 0.5) * w for i in range(len(rows))]
            vals = [r.get(f"{m}_{ph}", float("nan")) for r in rows]
            ax.bar([x for x, v in zip(xs, vals) if ok(v)], [v for v in vals if ok(v)],
                   width=w * 0.9, color=color, label=label)
            if m == "ours":
                for x, r in zip(xs, rows):
                    if ok(r[f"ours_{ph}"]) and ok(r.get(f"flash_{ph}", float("nan"))):
                        ax.text(x, r[f"ours_{ph}"] * 1.08, f"{r[f'ours_{ph}'] / r[f'flash_{ph}']:.2f}×",
                                ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_yscale("log")
        vals = [r.get(f"{m}_{ph}", float("nan")) for r in rows for m, _, _ in methods]
        vals = [v for v in vals if ok(v)]
        ax.set_ylim(min(vals) / 1.6, max(vals) * 2.2)
        ax.set_ylabel("ms (median, log scale)")
        ax.set_title(f"{title}; number over our bar: ours / FA2", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    from matplotlib.ticker import FuncFormatter

    for ax in axes:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
    from matplotlib.patches import Patch

    axes[0].legend([Patch(color=c) for _, _, c in methods], [lab for _, lab, _ in methods],
                   fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes[-1].set_xticks(range(len(rows)))
    axes[-1].set_xticklabels([_config_label(r, varying) for r in rows], fontsize=8)
    fig.suptitle(f"fused α-entmax attention vs softmax attention, bf16\n"
                 f"{fixed_txt}; skip = measured fraction of tiles skipped", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def load_rows(path):
    """Bench row dicts from a JSON list of them, or from a gpu_attention.json ({"bench": [...]})."""
    with open(path) as fh:
        data = json.load(fh)
    return data["bench"] if isinstance(data, dict) else data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--main", action="store_true", help="the configuration set recorded in docs/benchmarks_gpu_attention.md")
    ap.add_argument("--memory", default="", metavar="N,D,KIND,S",
                    help="only time one configuration (B = 1, H = 16, causal, alpha 1.5) and measure "
                         "peak memory above the inputs, ours and SDPA flash, e.g. 131072,128,topics,1.0")
    ap.add_argument("--extras", action="store_true",
                    help="first-call compile time (run it in a fresh process), new lengths without "
                         "recompiling, GQA and varlen against plain padded attention")
    ap.add_argument("--issue", action="store_true",
                    help="the issue-5 grid (N 1k-32k, D 64/128, causal or not, alpha 1.5/2/1.25, both "
                         "regimes) and N = 128k")
    ap.add_argument("--profile", action="store_true", help="time the forward's three stages (scan, solve, output) separately")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--max-seconds", type=float, default=1e9,
                    help="start no new benchmark configuration after this many seconds")
    ap.add_argument("--only", default="", help="comma list of N=..,D=..,kind=..,alpha=..,causal=True|False filters, "
                    "alternatives with |, e.g. N=4096|16384,D=64")
    ap.add_argument("--plot-from", default="", metavar="JSON",
                    help="only draw gpu_attention.png (into --out) from a JSON list of bench rows "
                         "or a gpu_attention.json; needs no GPU")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.plot_from:
        rows = [add_tflops(r) if "ours_fwd_tflops" not in r else r for r in load_rows(args.plot_from)]
        keep = dict(kv.split("=") for kv in args.only.split(",") if kv)  # N, D, alpha, causal, kind
        rows = [r for r in rows if all(str(r.get(k_)) == v_ for k_, v_ in keep.items())]
        png = plot_bench(rows, os.path.join(args.out, "gpu_attention.png"))
        if png:
            print(f"wrote {png}")
        print(table([], rows))
        return
    logf = open(os.path.join(args.out, "gpu_attention.log"), "a")

    def log(s):
        print(s, flush=True)
        logf.write(s + "\n")
        logf.flush()

    import triton
    log(f"GPU {torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}")
    if args.extras:
        extras(log)
        return
    if args.memory:
        N, D, kind, strength = args.memory.split(",")
        memory_run(log, int(N), int(D), kind, float(strength))
        return
    c = check(log) if args.check else []
    filt = dict(kv.split("=") for kv in args.only.split(",") if kv)

    def only(cfg):
        N, D, causal, alpha, kind, strength = cfg
        return all(str({"N": N, "D": D, "kind": kind, "alpha": alpha, "causal": causal,
                        "s": strength}[k_]) in v_.split("|")
                   for k_, v_ in filt.items())

    def on_row(rows):  # the table so far, so that a run cut short still leaves one
        with open(os.path.join(args.out, "gpu_attention_table.txt"), "w") as f:
            f.write(table(c, rows) + "\n")

    b = bench(log, args.quick, only=only if filt else None, profile=args.profile, main_set=args.main,
              max_seconds=args.max_seconds, on_row=on_row, issue_set=args.issue) if args.bench else []
    json.dump(dict(check=c, bench=b, gpu=torch.cuda.get_device_name()), open(os.path.join(args.out, "gpu_attention.json"), "w"), indent=1)
    if b:
        png = plot_bench(b, os.path.join(args.out, "gpu_attention.png"))
        if png:
            log(f"wrote {png}")
    print("\n" + table(c, b))


if __name__ == "__main__":
    main()
