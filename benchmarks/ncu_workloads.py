"""The workloads profiled by ``benchmarks/ncu_profile.sh`` (on the device, under Nsight Compute).

    python3 benchmarks/ncu_workloads.py attn [--alpha 1.5] [--kind random] [--N 16384] [--D 64]
    python3 benchmarks/ncu_workloads.py rowwise [--alpha 1.5] [--shape 1024x16384]

Each runs its forward twice (the first launch compiles; ``ncu --launch-skip 1`` profiles the
second) and prints one line with the ratio the issues track, timed outside the profiler by the
caller.  ``attn``: ``entmax_attention`` at B = 1, H = 16, causal, bfloat16, the issue 5 anchor
(inputs from ``gpu_attention.gen``: "random" or "topics"); ``rowwise``: ``entmax`` on float32
``torch.randn`` rows (issue 4's 1024×16384 shape by default) and ``torch.softmax`` beside it.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def attn(alpha: float, kind: str, N: int, D: int) -> None:
    import torch

    from gpu_attention import gen
    from sparsemap_tools.attention import entmax_attention

    q, k, v = gen(kind, 1, 16, N, D, torch.bfloat16)
    with torch.no_grad():
        for _ in range(2):
            out = entmax_attention(q, k, v, alpha=alpha, is_causal=True)
        torch.cuda.synchronize()
    print(f"attn alpha={alpha} kind={kind} N={N} D={D} finite={bool(torch.isfinite(out).all())}")


def rowwise(alpha: float, shape: str) -> None:
    import torch

    from sparsemap_tools import entmax

    R, D = (int(s) for s in shape.split("x"))
    x = torch.randn(R, D, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    for _ in range(2):
        p = entmax(x, alpha=alpha, dim=-1)
        s = torch.softmax(x, -1)
    torch.cuda.synchronize()
    print(f"rowwise alpha={alpha} shape={shape} max|sum-1|={(p.double().sum(-1) - 1).abs().max().item():.1e} "
          f"softmax ok={bool(torch.isfinite(s).all())}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["attn", "rowwise"])
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--kind", default="random", choices=["random", "topics"])
    ap.add_argument("--N", type=int, default=16384)
    ap.add_argument("--D", type=int, default=64)
    ap.add_argument("--shape", default="1024x16384")
    a = ap.parse_args(argv)
    if a.what == "attn":
        attn(a.alpha, a.kind, a.N, a.D)
    else:
        rowwise(a.alpha, a.shape)
    return 0


if __name__ == "__main__":
    sys.exit(main())
