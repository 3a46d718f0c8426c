"""Registers and spills of the attention kernels as compiled on this GPU (diagnostics).

    python benchmarks/gpu_kernel_resources.py [--D 64] [--alpha 1.5] [--N 4096] [--set NAME=VALUE,...]

Runs one forward + backward (causal, bf16, B = 1, H = 4) so that every kernel of that
configuration is compiled, then prints, per compiled variant of each kernel of
``sparsemap_tools.gpu.attention``, ptxas's registers per thread and spilled bytes (``n_regs``,
``n_spills`` of the compiled kernel) with its constexprs.  ``--set`` assigns module attributes of
``sparsemap_tools.gpu.attention`` first (e.g. ``_GATHER_RATIO=0``).
"""
from __future__ import annotations

import argparse

import torch

import sparsemap_tools.gpu.attention as GA
from sparsemap_tools.attention import entmax_attention


def compiled(jit_fn):
    """The compiled kernels of a JITFunction (triton 3.x keeps them per device)."""
    out = []
    caches = getattr(jit_fn, "device_caches", None) or {}
    for entry in caches.values():
        cache = entry[0] if isinstance(entry, tuple) else entry
        out.extend(cache.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--D", type=int, default=64)
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--N", type=int, default=4096)
    ap.add_argument("--set", default="")
    args = ap.parse_args()
    for kv in filter(None, args.set.split(",")):
        name, val = kv.split("=")
        setattr(GA, name, type(getattr(GA, name))(val))
    q, k, v = (torch.randn(1, 4, args.N, args.D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    entmax_attention(q, k, v, alpha=args.alpha, is_causal=True).sum().backward()
    torch.cuda.synchronize()
    for name in ("_fwd_scan_kernel", "_fwd_solve_kernel", "_fwd_output_kernel", "_bwd_dq_kernel",
                 "_bwd_dkdv_kernel"):
        for ck in compiled(getattr(GA, name)):
            try:
                ck._init_handles()
            except Exception:  # noqa: BLE001
                pass
            consts = {k_: v_ for k_, v_ in getattr(ck, "constants", {}).items()
                      if isinstance(k_, str) and k_.isupper()} if hasattr(ck, "constants") else {}
            print(f"{name:20s} regs {getattr(ck, 'n_regs', '?'):>4} spills {getattr(ck, 'n_spills', '?'):>5} "
                  f"warps {ck.metadata.num_warps} stages {ck.metadata.num_stages} {consts}")


if __name__ == "__main__":
    main()
