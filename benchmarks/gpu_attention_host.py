"""Host time per forward call of the fused attention, and its GPU time with and without launches.

    python benchmarks/gpu_attention_host.py [--tag new] [--N 1024,4096] [--alpha 1.5]

16k tokens per batch (B = 16384 // N), H = 16, D = 64, causal, bfloat16, forward under
``torch.no_grad()``, random and segment-topics inputs (``gpu_attention.gen``). Printed per
configuration: ``host_us``, the host time per call (median of 5 batches of 50 calls queued
without synchronising: what the Python side and the launches cost), ``do_bench_us`` (a loop of
calls: host-bound when host_us is the larger) and ``graph_us`` (the same calls replayed in a CUDA
graph: GPU time alone). Run old and new code in alternating processes: host times vary a lot
between processes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import triton.testing as tt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_attention import gen  # noqa: E402

from sparsemap_tools.attention import entmax_attention  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", default="run")
    ap.add_argument("--N", default="1024,4096")
    ap.add_argument("--alpha", type=float, default=1.5)
    args = ap.parse_args()
    for N in (int(n) for n in args.N.split(",")):
        for kind in ("random", "topics"):
            torch.manual_seed(1)
            q, k, v = gen(kind, max(1, 16384 // N), 16, N, 64, torch.bfloat16, 1.0)

            def f():
                return entmax_attention(q, k, v, alpha=args.alpha, is_causal=True)

            res = {}
            with torch.no_grad():
                for _ in range(3):
                    f()
                torch.cuda.synchronize()
                hs = []
                for _ in range(5):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for _ in range(50):
                        f()
                    hs.append((time.perf_counter() - t0) / 50 * 1e6)
                    torch.cuda.synchronize()
                res["host_us"] = sorted(hs)[2]
                res["do_bench_us"] = tt.do_bench(f, warmup=10, rep=50, return_mode="median") * 1e3
                res["graph_us"] = tt.do_bench_cudagraph(f, rep=50, return_mode="median") * 1e3
            print(f"{args.tag:4s} N={N:5d} {kind:7s} " + " ".join(f"{k_} {v_:7.1f}" for k_, v_ in res.items()),
                  flush=True)


if __name__ == "__main__":
    main()
