"""Where the public API's time goes on a GPU: ``sparsemap_tools.entmax`` against the bare kernels.

    python benchmarks/gpu_rowwise_api.py [--shapes 16384x1024,1024x16384] [--alpha 1.5]

Per shape (float32 randn rows, α a python float) and per way of calling:

* GPU time: ``triton.testing.do_bench`` median (it waits for the host too, so a call whose host
  work outlasts its kernels shows the host time);
* host time: wall time per call of a loop of 200 calls without synchronisation (the host cost
  alone while the GPU queue is not full), then one synchronisation;

for ``torch.softmax`` (the anchor), the kernels (``rowwise.entmax_forward`` / ``_backward``), the
public ``entmax`` without a graph, with a graph (forward only) and forward+backward through
``torch.autograd.grad``. Then the top host-side operations of five API forward+backward calls from
``torch.profiler``. The table is printed last.
"""
from __future__ import annotations

import argparse
import time

import torch


def host_us(fn, n: int = 200) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    el = time.perf_counter() - t
    torch.cuda.synchronize()
    return el / n * 1e6


def main() -> int:
    import triton

    from sparsemap_tools import entmax
    from sparsemap_tools.gpu import rowwise

    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="16384x1024,1024x16384")
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--label", default="", help="printed in the table (e.g. the code version)")
    args = ap.parse_args()
    a = args.alpha
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    rows = []
    for spec in args.shapes.split(","):
        R, D = (int(v) for v in spec.split("x"))
        x = torch.randn(R, D, device="cuda")
        xg = x.clone().requires_grad_(True)
        dy = torch.randn(R, D, device="cuda")

        def kern_fb():
            r = rowwise.entmax_forward(x, a)
            return rowwise.entmax_backward(r.p, dy, a, False)

        cases = [
            ("torch.softmax fwd", lambda: torch.softmax(x, -1)),
            ("torch.softmax f+b", lambda: torch.autograd.grad(torch.softmax(xg, -1), xg, dy)),
            ("kernels fwd", lambda: rowwise.entmax_forward(x, a)),
            ("kernels f+b", kern_fb),
            ("entmax() fwd, no grad", lambda: entmax(x, a)),
            ("entmax() fwd, graph built", lambda: entmax(xg, a)),
            ("entmax() f+b (autograd.grad)", lambda: torch.autograd.grad(entmax(xg, a), xg, dy)),
        ]
        for name, fn in cases:
            fn()
            gpu = triton.testing.do_bench(fn, warmup=25, rep=args.reps, return_mode="median") * 1e3
            rows.append((spec, name, gpu, host_us(fn)))
            print(f"{spec} {name}: do_bench {gpu:.1f} us, host {rows[-1][3]:.1f} us/call", flush=True)
        if spec == args.shapes.split(",")[0] and not args.no_profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    torch.autograd.grad(entmax(xg, a), xg, dy)
                torch.cuda.synchronize()
            print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))
    print(f"\n| code | shape | call (α = {a}) | do_bench median µs | host µs per call |")
    print("|---|---|---|---|---|")
    for spec, name, gpu, host in rows:
        print(f"| {args.label} | {spec} | {name} | {gpu:.1f} | {host:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
