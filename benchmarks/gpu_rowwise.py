"""Benchmark of the row-wise Triton entmax kernels (``sparsemap_tools.gpu.rowwise``) on a GPU.

One run measures, per shape (float32 by default), median times from
``triton.testing.do_bench(..., return_mode="median")`` of

* ``torch.softmax`` (forward, forward+backward): the anchor, ratios are to it, same run;
* our kernels for α ∈ {1.5, 2, 1.25} (forward; forward+backward = forward + entmax_backward);
* adasplash ``triton_entmax_v1`` (n_iter=10) and ``triton_entmax`` (v2, defaults);
* ``entmax.entmax15``, ``entmax.sparsemax``, ``entmax.entmax_bisect``;

each output first checked against the float64 reference (``gpu/rowwise_reference.py``) on the
same fresh random input (max |p − p*|). A second table checks accuracy only (no timing) on
hard rows: flat (0.1·randn), heavy-tailed (Student t, 2 dof), shifted by ±1e4, with our
per-row convergence flags and iteration counts.

Usage (device): ``python benchmarks/gpu_rowwise.py --out $OUT`` (``--quick`` for a smoke run).
Writes ``gpu_rowwise.csv`` and ``gpu_rowwise.md`` under --out and prints the tables last.
``--paired N`` writes ``gpu_rowwise_paired.csv`` and ``gpu_rowwise_paired.png`` instead;
``--plot-from CSV`` only redraws that PNG (into --out) from such a CSV, without a GPU.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import torch

SHAPES = [(16384, 1024), (1024, 16384), (256, 65536)]
# columns of gpu_rowwise_paired.csv (ratios are medians over rounds of ours / softmax)
PAIRED_FIELDS = ["shape", "alpha", "variant", "rounds", "softmax_fwd_ms", "ours_fwd_ms", "fwd_ratio",
                 "fwd_ratio_min", "fwd_ratio_max", "fwd_ratio_fastest", "softmax_fb_ms",
                 "ours_fb_ms", "fb_ratio", "fb_ratio_min", "fb_ratio_max"]
TARGET_FWD = 1.15  # issue 4: forward <= 1.15x softmax for alpha in {1.5, 2}
TARGET_FB = 1.3  # forward+backward <= 1.3x


#: time with CUDA-graph replays (``--graph``): GPU time only, no host launch cost
GRAPH = False


def _bench(fn, reps: int) -> float:
    import triton

    if GRAPH:
        return triton.testing.do_bench_cudagraph(fn, rep=reps, return_mode="median")
    return triton.testing.do_bench(fn, warmup=25, rep=reps, return_mode="median")


def _fresh(shape, kind: str, gen: torch.Generator, dtype=torch.float32):
    R, D = shape
    if kind == "randn":
        x = torch.randn(R, D, generator=gen, device="cuda")
    elif kind == "flat":
        x = 0.1 * torch.randn(R, D, generator=gen, device="cuda")
    elif kind == "heavy":
        x = torch.distributions.StudentT(2.0).sample((R, D)).cuda()
    elif kind == "shift+1e4":
        x = torch.randn(R, D, generator=gen, device="cuda") + 1e4
    elif kind == "shift-1e4":
        x = torch.randn(R, D, generator=gen, device="cuda") - 1e4
    else:
        raise ValueError(kind)
    return x.to(dtype)


def _launch(cfg: dict) -> dict:
    """entmax_forward/backward keyword arguments of a ``--configs`` variant: max_onchip and
    chunk as themselves, every other key an override of ``rowwise.CONFIG``."""
    return dict(max_onchip=cfg.get("max_onchip"), chunk=cfg.get("chunk"),
                config={k: v for k, v in cfg.items() if k not in ("max_onchip", "chunk", "tensor_alpha")})


def _paired(shapes, alphas, args, gen, rowwise, variants=(("ours (auto)", {}),)) -> list[dict]:
    """Forward and forward+backward, ours vs torch.softmax, in alternating rounds; prints the
    median of the per-round ratios (robust to the clock and neighbour drift seen between runs)
    and returns one dict per (shape, α, variant) with the keys ``PAIRED_FIELDS``.  Each round
    times softmax and then every variant (``--configs``: CONFIG overrides of rowwise)."""
    import statistics

    rows = []

    print("| shape | α | variant | rounds | softmax fwd ms | ours fwd ms | fwd ratio (median, min–max) "
          "| ratio of fastest rounds | softmax f+b ms | ours f+b ms | f+b ratio (median, min–max) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        x = _fresh(shape, "randn", gen)
        xg = x.clone().requires_grad_(True)
        dy = torch.randn(shape, generator=gen, device="cuda")
        ref = None
        for a in alphas:
            if args.check:
                from sparsemap_tools.gpu.rowwise_reference import entmax_reference

                ref = entmax_reference(x.double(), torch.full((shape[0],), a, device="cuda",
                                                              dtype=torch.float64))
            ts, tsb = [], []
            to = {label: [] for label, _ in variants}
            tob = {label: [] for label, _ in variants}
            al = torch.full((shape[0],), a, device="cuda")
            arg_of = {label: (al if cfg.get("tensor_alpha") else a) for label, cfg in variants}
            for label, cfg in variants:
                r = rowwise.entmax_forward(x, arg_of[label], **_launch(cfg))
                if ref is not None:  # every variant's output against the float64 answer first
                    err = (r.p.double() - ref).abs().max().item()
                    ok = bool(r.converged.all())
                    print(f"  check {shape[0]}x{shape[1]} a={a} {label}: max err {err:.1e}, "
                          f"all converged {ok}", flush=True)
                    if not (err <= 1e-6 and ok):
                        raise SystemExit(f"{label} is wrong at {shape}, alpha {a}")
            for _ in range(args.paired):
                ts.append(_bench(lambda: torch.softmax(x, -1), args.reps))
                tsb.append(_bench(lambda: torch.autograd.grad(torch.softmax(xg, -1), xg, dy), args.reps))
                for label, cfg in variants:
                    kw = _launch(cfg)
                    aa = arg_of[label]  # python float, or with tensor_alpha=1 the per-row tensor

                    def ours_fb(kw=kw, aa=aa):
                        rr = rowwise.entmax_forward(x, aa, **kw)
                        return rowwise.entmax_backward(rr.p, dy, aa, False, **kw)

                    to[label].append(_bench(lambda: rowwise.entmax_forward(x, aa, **kw), args.reps))
                    tob[label].append(_bench(ours_fb, args.reps))
            med = statistics.median
            for label, _ in variants:
                rf = [o / s_ for o, s_ in zip(to[label], ts)]
                rb = [o / s_ for o, s_ in zip(tob[label], tsb)]
                print(f"| {shape[0]}×{shape[1]} | {a} | {label} | {args.paired} | {med(ts):.4f} | "
                      f"{med(to[label]):.4f} | {med(rf):.2f}× ({min(rf):.2f}–{max(rf):.2f}) | "
                      f"{min(to[label]) / min(ts):.2f}× | {med(tsb):.4f} | {med(tob[label]):.4f} | "
                      f"{med(rb):.2f}× ({min(rb):.2f}–{max(rb):.2f}) |", flush=True)
                rows.append(dict(shape=f"{shape[0]}x{shape[1]}", alpha=a, variant=label,
                                 rounds=args.paired, softmax_fwd_ms=med(ts),
                                 ours_fwd_ms=med(to[label]), fwd_ratio=med(rf),
                                 fwd_ratio_min=min(rf), fwd_ratio_max=max(rf),
                                 fwd_ratio_fastest=min(to[label]) / min(ts), softmax_fb_ms=med(tsb),
                                 ours_fb_ms=med(tob[label]), fb_ratio=med(rb), fb_ratio_min=min(rb),
                                 fb_ratio_max=max(rb)))
    return rows


def write_paired_csv(rows, path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=PAIRED_FIELDS)
        w.writeheader()
        w.writerows(rows)


def read_paired_csv(path) -> list[dict]:
    """Rows of a ``gpu_rowwise_paired.csv``; numbers as floats, empty cells as None, shape and
    variant as text.  Where the file holds several variants (``--configs``), only the default's
    rows ("ours (auto)") are kept: the plot shows one bar per shape and α."""
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append({k: (v if k in ("shape", "variant") else
                             (float(v) if v not in ("", None) else None))
                         for k, v in r.items()})
    if len({r.get("variant") for r in rows}) > 1:
        rows = [r for r in rows if r.get("variant") == "ours (auto)"]
    return rows


def plot_paired(rows, path) -> str | None:
    """PNG of the paired ratios: forward (top) and forward+backward (bottom) / torch.softmax,
    one group of bars per shape, one bar per α; dashed lines at 1 and at the targets.
    Needs only matplotlib (Agg); returns None with a note when it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        print(f"matplotlib not available ({e}); plot {path} skipped")
        return None
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    alphas = list(dict.fromkeys(float(r["alpha"]) for r in rows))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    w = 0.8 / len(alphas)
    fig, axes = plt.subplots(2, 1, figsize=(8, 7.5), sharex=True)
    panels = [("fwd_ratio", "forward / torch.softmax forward",
               [(TARGET_FWD, "tab:red", f"target {TARGET_FWD}× (α ∈ {{1.5, 2}})"),
                (1.5, "tab:purple", "target 1.5× (α = 1.25)")]),
              ("fb_ratio", "forward+backward / torch.softmax forward+backward",
               [(TARGET_FB, "tab:red", f"target {TARGET_FB}×")])]
    ymax = max(max(r[k] or 0 for r in rows) for k in ("fwd_ratio", "fb_ratio", "fwd_ratio_fastest"))
    for ax, (key, title, targets) in zip(axes, panels):
        for j, a in enumerate(alphas):
            xs, vals, fast = [], [], []
            for i, s in enumerate(shapes):
                r = next((r for r in rows if r["shape"] == s and float(r["alpha"]) == a), None)
                if r is None or r[key] is None:
                    continue
                xs.append(i - 0.4 + (j + 0.5) * w)
                vals.append(r[key])
                fast.append(r.get("fwd_ratio_fastest") if key == "fwd_ratio" else None)
            ax.bar(xs, vals, width=w * 0.9, color=colors[j % len(colors)], label=f"α = {a:g}")
            for x, v in zip(xs, vals):
                ax.text(x, v + 0.025 * ymax, f"{v:.2f}", ha="center", va="bottom", fontsize=8,
                        bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
            fx = [(x, f) for x, f in zip(xs, fast) if f is not None]
            if fx:
                ax.scatter([x for x, _ in fx], [f for _, f in fx], marker="_", s=220, color="black",
                           zorder=3, label="ratio of the two fastest rounds" if j == 0 else None)
        ax.axhline(1.0, color="black", lw=1, ls="--", label="torch.softmax (1×)")
        for t, c, lab in targets:
            ax.axhline(t, color=c, lw=1, ls="--", label=lab)
        ax.set_ylim(0, ymax * 1.15)
        ax.set_ylabel("ratio (median over rounds)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.grid(axis="y", alpha=0.3)
    rounds = sorted({int(r["rounds"]) for r in rows if r.get("rounds")})
    axes[-1].set_xticks(range(len(shapes)))
    axes[-1].set_xticklabels([s.replace("x", "×") + "\n(rows × d)" for s in shapes])
    fig.suptitle("row-wise entmax (Triton), float32: paired ratios to torch.softmax"
                 + (f", {'/'.join(map(str, rounds))} rounds" if rounds else ""), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--alphas", default="1.5,2,1.25")
    ap.add_argument("--reps", type=int, default=200, help="do_bench rep time in ms")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--configs", default="",
                    help="extra launch configs to time: 'label:key=val,key=val;label2:...' with keys "
                         "max_onchip, chunk, tensor_alpha (1: pass α as a per-row tensor) and those "
                         "of rowwise.CONFIG")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--graph", action="store_true",
                    help="time CUDA-graph replays (GPU time without the host's launch cost; on a "
                         "host slower than the kernel, plain timing measures the host)")
    ap.add_argument("--check", action="store_true",
                    help="with --paired: check every variant against the float64 reference first")
    ap.add_argument("--set", default="", help="override rowwise.CONFIG for the whole run: key=val,...")
    ap.add_argument("--shapes", default="", help="only these shapes, e.g. 16384x1024,256x65536")
    ap.add_argument("--paired", type=int, default=0,
                    help="only the paired table: per shape and α, this many alternating rounds of "
                         "torch.softmax and our forward (python-float α), median of the ratios; "
                         "also writes gpu_rowwise_paired.csv and gpu_rowwise_paired.png to --out")
    ap.add_argument("--plot-from", default="", metavar="CSV",
                    help="only draw gpu_rowwise_paired.png (into --out) from a "
                         "gpu_rowwise_paired.csv; needs no GPU")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.plot_from:
        png = plot_paired(read_paired_csv(args.plot_from),
                          os.path.join(args.out, "gpu_rowwise_paired.png"))
        if png:
            print(f"wrote {png}")
        return 0

    import triton
    from sparsemap_tools.gpu import rowwise
    from sparsemap_tools.gpu.rowwise_reference import entmax_reference

    global GRAPH
    GRAPH = args.graph

    dev = torch.cuda.get_device_name()
    print(f"# {dev}, torch {torch.__version__}, triton {triton.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    alphas = [float(a) for a in args.alphas.split(",")]
    shapes = SHAPES if not args.quick else [(4096, 1024), (256, 16384), (64, 65536)]
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    peers = {}
    if not args.no_peers:
        try:
            import adasplash

            peers["adasplash v2"] = lambda x, a: adasplash.triton_entmax(x, alpha=a)
            peers["adasplash v1 (10 it)"] = lambda x, a: adasplash.triton_entmax_v1(x, alpha=a, n_iter=10)
        except Exception as e:  # noqa: BLE001
            print("adasplash unavailable:", e)
        try:
            import entmax

            peers["entmax.entmax15"] = lambda x, a: entmax.entmax15(x, dim=-1) if a == 1.5 else None
            peers["entmax.sparsemax"] = lambda x, a: entmax.sparsemax(x, dim=-1) if a == 2.0 else None
            peers["entmax.entmax_bisect"] = lambda x, a: entmax.entmax_bisect(x, alpha=a, dim=-1)
        except Exception as e:  # noqa: BLE001
            print("entmax unavailable:", e)

    rows = []

    def record(shape, alpha, method, fwd, fb, sm_f, sm_fb, err, extra=""):
        r = dict(shape=f"{shape[0]}x{shape[1]}", alpha=alpha, method=method,
                 fwd_ms=fwd, fwd_ratio=None if fwd is None else fwd / sm_f,
                 fb_ms=fb, fb_ratio=None if fb is None else fb / sm_fb, max_err=err, note=extra)
        rows.append(r)
        f = lambda v, s: "-" if v is None else s.format(v)  # noqa: E731
        print(f"{r['shape']:>12} a={alpha:<5} {method:<26} fwd {f(fwd,'{:.4f}')} ms "
              f"({f(r['fwd_ratio'],'{:.2f}')}x)  f+b {f(fb,'{:.4f}')} ms ({f(r['fb_ratio'],'{:.2f}')}x)"
              f"  err {f(err,'{:.1e}')} {extra}", flush=True)

    variants = [("ours (auto)", {})]
    for spec in [c for c in args.configs.split(";") if c]:
        label, _, kv = spec.partition(":")
        variants.append((label, {k: int(v) for k, v in (p.split("=") for p in kv.split(",") if p)}))
    # warm the GPU up (clocks) before the first timed kernel: the first measurements of a cold
    # run came out 2-16x too slow on the H100
    xw = torch.randn(16384, 1024, device="cuda")
    t_end = time.time() + 2.0
    while time.time() < t_end:
        torch.softmax(xw, -1)
    torch.cuda.synchronize()
    del xw
    for kv in [t for t in args.set.split(",") if t]:
        key, val = kv.split("=")
        rowwise.CONFIG[key] = int(val)
    if args.shapes:
        shapes = [tuple(int(v) for v in t.split("x")) for t in args.shapes.split(",")]
    if args.paired:
        paired = _paired(shapes, alphas, args, gen, rowwise, variants)
        write_paired_csv(paired, os.path.join(args.out, "gpu_rowwise_paired.csv"))
        png = plot_paired([r for r in paired if r["variant"] == variants[0][0]],
                          os.path.join(args.out, "gpu_rowwise_paired.png"))
        print(f"wrote {os.path.join(args.out, 'gpu_rowwise_paired.csv')}" + (f" and {png}" if png else ""))
        return 0
    for shape in shapes:
        x = _fresh(shape, "randn", gen)
        dy = torch.randn(shape, generator=gen, device="cuda")
        xg = x.clone().requires_grad_(True)
        sm_f = _bench(lambda: torch.softmax(x, -1), args.reps)
        sm_fb = _bench(lambda: torch.autograd.grad(torch.softmax(xg, -1), xg, dy), args.reps)
        record(shape, 1.0, "torch.softmax", sm_f, sm_fb, sm_f, sm_fb, None)
        for a in alphas:
            al = torch.full((shape[0],), a, device="cuda")
            ref = entmax_reference(x.double(), al.double())
            for name, v in variants:
                kw = _launch(v)
                # a python float α (what entmax(x, alpha=1.5) passes: kernel specialised for
                # the power), or with tensor_alpha=1 the per-row tensor (run-time branch)
                arg = al if v.get("tensor_alpha") else a
                r = rowwise.entmax_forward(x, arg, **kw)
                err = (r.p.double() - ref).abs().max().item()
                note = (f"conv={bool(r.converged.all())} it<= {int(r.iterations.max())} "
                        f"mean_it={r.iterations.float().mean().item():.2f}")
                t_f = _bench(lambda: rowwise.entmax_forward(x, arg, **kw), args.reps)

                def fb():
                    rr = rowwise.entmax_forward(x, arg, **kw)
                    return rowwise.entmax_backward(rr.p, dy, arg, False, **kw)

                t_fb = _bench(fb, args.reps)
                record(shape, a, name, t_f, t_fb, sm_f, sm_fb, err, note)
                del r
            # the public API (validation, layout, autograd Function) around the same kernels
            from sparsemap_tools import entmax as api_entmax

            out = api_entmax(x, a)
            err = (out.double() - ref).abs().max().item()
            t_f = _bench(lambda: api_entmax(x, a), args.reps)
            t_fb = _bench(lambda: torch.autograd.grad(api_entmax(xg, a), xg, dy), args.reps)
            record(shape, a, "sparsemap_tools.entmax", t_f, t_fb, sm_f, sm_fb, err)
            for name, fn in peers.items():
                try:
                    out = fn(x, a)
                    if out is None:
                        continue
                    err = (out.double() - ref).abs().max().item()
                    t_f = _bench(lambda: fn(x, a), args.reps)
                    t_fb = None
                    try:
                        def pfb():
                            return torch.autograd.grad(fn(xg, a), xg, dy)
                        pfb()
                        t_fb = _bench(pfb, args.reps)
                    except Exception as e:  # noqa: BLE001
                        print("  (no backward:", type(e).__name__, str(e)[:80], ")")
                    record(shape, a, name, t_f, t_fb, sm_f, sm_fb, err)
                except Exception as e:  # noqa: BLE001
                    print(f"  {name} failed: {type(e).__name__}: {str(e)[:200]}")
            del ref
            torch.cuda.empty_cache()

    # ---- accuracy on hard rows (no timing) -------------------------------------------
    acc = []
    acc_shapes = [(4096, 1024), (64, 65536)] if not args.quick else [(512, 1024), (16, 65536)]
    if args.no_accuracy:
        acc_shapes = []
    for shape in acc_shapes:
        for kind in ["randn", "flat", "heavy", "shift+1e4", "shift-1e4"]:
            x = _fresh(shape, kind, gen)
            for a in [1.25, 1.5, 2.0, 3.0]:
                al = torch.full((shape[0],), a, device="cuda")
                ref = entmax_reference(x.double(), al.double())
                r = rowwise.entmax_forward(x, al)
                err = (r.p.double() - ref).abs().max().item()
                sum_err = (r.p.double().sum(-1) - 1).abs().max().item()
                acc.append(dict(shape=f"{shape[0]}x{shape[1]}", rows=kind, alpha=a, max_err=err,
                                sum_err=sum_err, converged=bool(r.converged.all()),
                                it_max=int(r.iterations.max()),
                                it_mean=r.iterations.float().mean().item()))
    # float64 and low-precision smoke checks
    for dt in ([] if args.no_accuracy else [torch.float64, torch.float16, torch.bfloat16]):
        x = _fresh((256, 3000), "randn", gen, dt)
        for a in [1.5, 1.25]:
            al = torch.full((256,), a, device="cuda")
            ref = entmax_reference(x.double(), al.double())
            r = rowwise.entmax_forward(x, al)
            err = (r.p.double() - ref).abs().max().item()
            acc.append(dict(shape="256x3000", rows=f"randn {str(dt)[6:]}", alpha=a, max_err=err,
                            sum_err=(r.p.double().sum(-1) - 1).abs().max().item(),
                            converged=bool(r.converged.all()), it_max=int(r.iterations.max()),
                            it_mean=r.iterations.float().mean().item()))

    with open(os.path.join(args.out, "gpu_rowwise.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    if acc:
        with open(os.path.join(args.out, "gpu_rowwise_accuracy.csv"), "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(acc[0].keys()))
            w.writeheader()
            w.writerows(acc)

    def fmt(v, s):
        return "–" if v is None else s.format(v)

    lines = [f"GPU: {dev}; torch {torch.__version__}; triton {triton.__version__}; "
             f"float32; do_bench median (rep {args.reps} ms)", "",
             "| shape | α | method | fwd ms | fwd / softmax | fwd+bwd ms | f+b / softmax f+b | max err | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['alpha']} | {r['method']} | {fmt(r['fwd_ms'], '{:.4f}')} | "
                     f"{fmt(r['fwd_ratio'], '{:.2f}×')} | {fmt(r['fb_ms'], '{:.4f}')} | "
                     f"{fmt(r['fb_ratio'], '{:.2f}×')} | {fmt(r['max_err'], '{:.1e}')} | {r['note']} |")
    lines += ["", "| shape | rows | α | max abs err p | max abs(Σp−1) | all converged | iterations max / mean |",
              "|---|---|---|---|---|---|---|"]
    for r in acc:
        lines.append(f"| {r['shape']} | {r['rows']} | {r['alpha']} | {r['max_err']:.1e} | {r['sum_err']:.1e} | "
                     f"{r['converged']} | {r['it_max']} / {r['it_mean']:.2f} |")
    md = "\n".join(lines)
    with open(os.path.join(args.out, "gpu_rowwise.md"), "w") as fh:
        fh.write(md + "\n")
    print()
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
