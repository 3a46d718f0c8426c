"""A/B timing of the row-wise Triton forward against an older copy of the same kernels.

The old copy is a directory holding ``oldgpu/``, the ``gpu/`` directory of a git commit (the
row-wise kernels are split over ``rowwise*.py`` since 2026-12-08; the relative imports resolve
inside ``oldgpu``), e.g.::

    mkdir -p .old && git archive --prefix=oldgpu/ REV:gpu | tar -x -C .old

Per shape and α, ``torch.softmax``, the old forward and the new forward (plus any ``--configs``
of the new one) are timed with CUDA-graph replays (``triton.testing.do_bench_cudagraph``,
median), in alternating order for ``--rounds`` rounds; each variant's ratio to softmax of the
same round is reported as the median over rounds (min–max).  Both outputs are checked against
each other first (max |Δp|).

Usage (device): ``python3 benchmarks/ab_rowwise.py --old .old --shapes 1024x16384 --alphas 1.5``
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_rowwise import _launch  # noqa: E402  (the --configs split of the paired table)


def _kwargs(cfg: dict | None) -> dict:
    """entmax_forward keyword arguments of a variant (``gpu_rowwise._launch``: ``chunk`` and
    ``max_onchip`` as themselves, the other keys overrides of ``CONFIG``)."""
    return {} if cfg is None else _launch(cfg)


def _parse_configs(text: str) -> list[tuple[str, dict]]:
    """``"name:key=val,key=val;name2:..."`` → [(name, {key: int})]."""
    out = []
    for item in filter(None, text.split(";")):
        name, _, body = item.partition(":")
        cfg = {}
        for kv in filter(None, body.split(",")):
            k, _, v = kv.partition("=")
            cfg[k.strip()] = int(v)
        out.append((name.strip(), cfg))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="directory holding the oldgpu package")
    ap.add_argument("--shapes", default="1024x16384,256x65536,16384x1024")
    ap.add_argument("--alphas", default="1.5,2.0")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=100, help="do_bench_cudagraph rep time (ms)")
    ap.add_argument("--configs", default="", help="extra variants of the new kernels "
                    "(CONFIG keys, and chunk / max_onchip)")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.reps < 1:
        raise ValueError("--rounds and --reps must be >= 1")

    import triton

    sys.path.insert(0, args.old)
    from oldgpu import rowwise as old  # type: ignore[import-not-found]

    from sparsemap_tools.gpu import rowwise as new

    variants = [("old", old.entmax_forward, None), ("new", new.entmax_forward, None)]
    variants += [(n, new.entmax_forward, c) for n, c in _parse_configs(args.configs)]
    rows = []
    for shape in args.shapes.split(","):
        R, D = (int(v) for v in shape.split("x"))
        gen = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(R, D, generator=gen, device="cuda")
        for a in (float(v) for v in args.alphas.split(",")):
            ref = old.entmax_forward(x, a).p.double()
            diffs = {}
            for name, fn, cfg in variants[1:]:
                kw = _kwargs(cfg)
                diffs[name] = (fn(x, a, **kw).p.double() - ref).abs().max().item()
            ratios: dict[str, list[float]] = {n: [] for n, _, _ in variants}
            soft = []
            for r in range(args.rounds):
                order = variants if r % 2 == 0 else variants[::-1]
                t_soft = triton.testing.do_bench_cudagraph(lambda: torch.softmax(x, -1),
                                                           rep=args.reps, return_mode="median")
                soft.append(t_soft)
                for name, fn, cfg in order:
                    kw = _kwargs(cfg)
                    t = triton.testing.do_bench_cudagraph(lambda: fn(x, a, **kw), rep=args.reps,
                                                          return_mode="median")
                    ratios[name].append(t / t_soft)
            for name, _, _ in variants:
                v = ratios[name]
                rows.append((shape, a, name, statistics.median(soft), statistics.median(v),
                             min(v), max(v), diffs.get(name, 0.0)))
    print("| shape | α | variant | softmax ms | ratio median | min | max | max Δp vs old |")
    print("|---|---|---|---|---|---|---|---|")
    for s, a, n, ts, med, lo, hi, d in rows:
        print(f"| {s} | {a:g} | {n} | {ts:.4f} | {med:.3f}× | {lo:.3f} | {hi:.3f} | {d:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
