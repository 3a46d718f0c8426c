"""Tile tuning for the fused attention kernels, on one GPU: picks the ``_TILES`` entries.

    python benchmarks/gpu_attention_tune.py [--dims 64,128] [--tiles 64x64,128x64,...]
        [--launch 4/2,4/3,8/2,8/3] [--alpha 1.5] [--N 16384] [--out DIR]

One tile shape (BLOCK_M × BLOCK_N) serves all kernels of a call (the tile lists are per tile);
warps and pipeline stages (``nw/ns``) are per kernel.  For each head dim, tile shape and launch
variant (applied to every kernel at once) this times, on random and on segment-topics inputs
(N = 16k, B = 1, H = 16, causal, bfloat16, α = 1.5: the inputs of ``gpu_attention.py``):

* the forward stage by stage under ``torch.no_grad()`` (scan, solve, output: do_bench medians of
  the first 1, 2, 3 stages, differenced), and
* forward with grad and forward+backward (their difference: the backward).  The output kernel
  is scored on both its runs: without O2 (inference) plus with O2 (the forward with grad less
  scan and solve), since the two can favour different warps.

Every variant's output and dQ are compared with the current defaults' (relative L2 error; a
variant off by more than 2e-2 is reported as FAILED and never chosen).  Per tile shape each
kernel then takes the launch variant with the smallest summed time over the two input kinds
(the backward's two kernels take one variant together); the tile shape with the smallest
summed forward + forward-and-backward time wins.  Finally the winner and the current defaults
are timed again, alternating, for a same-run ratio.  The table is printed last; the rows go to
``DIR/attention_tune.json``.  The winners become ``_TILES`` in ``gpu/attention.py`` by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import triton.testing as tt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_attention import forward_stages, gen, rel  # noqa: E402

import sparsemap_tools.gpu.attention as GA  # noqa: E402
from sparsemap_tools.attention import entmax_attention  # noqa: E402

KINDS = ("random", "topics")


def spec(bm: int, bn: int, launch: dict) -> dict:
    """A ``_TILES_ENV`` dict: tile shape and per-kernel "kernel.nw" / "kernel.ns"."""
    out = {"BM": bm, "BN": bn}
    for kern, (nw, ns) in launch.items():
        out[f"{kern}.nw"], out[f"{kern}.ns"] = nw, ns
    return out


def measure(inputs: dict, alpha: float, tiles: dict, ref: dict | None, rep: int) -> dict:
    """Stage times (ms) per input kind under the tile spec ``tiles``, and errors against ``ref``."""
    GA._TILES_ENV = dict(tiles)
    res = {}
    for kind, (q, k, v, do) in inputs.items():
        def f():
            return entmax_attention(q, k, v, alpha=alpha, is_causal=True)

        try:
            for x in (q, k, v):
                x.requires_grad_()
                x.grad = None  # do_bench(grad_to_none=...) leaves its last rep's gradients
            o = f()
            o.backward(do)
            got = dict(o=o.detach().float(), dq=q.grad.float())
            for x in (q, k, v):
                x.grad = None
            err = max(rel(got[n], ref[kind][n]) for n in got) if ref else 0.0
            tr = tt.do_bench(f, warmup=10, rep=rep, return_mode="median")

            def fb():
                f().backward(do)
            fbt = tt.do_bench(fb, warmup=10, rep=rep, return_mode="median", grad_to_none=[q, k, v])
            for x in (q, k, v):
                x.requires_grad_(False)
            scan, solve, output, fwd = forward_stages(f, rep=rep)
            # the output kernel runs twice per training step's worth of timing: without O2 in
            # inference, with O2 (for the backward) under grad; "output" counts both
            res[kind] = dict(scan=scan, solve=solve, output=output + max(tr - scan - solve, 0.0),
                             output_inf=output, fwd=fwd, fwd_grad=tr, fb=fbt, bwd=fbt - tr, err=err,
                             out=got if ref is None else None)
        except Exception as e:  # a tile shape the kernels or the GPU cannot take
            for x in (q, k, v):
                x.requires_grad_(False)
                x.grad = None
            res[kind] = dict(error=f"{type(e).__name__}: {str(e)[:200]}")
    GA._TILES_ENV = {}
    return res


def ok(r: dict) -> bool:
    return all("error" not in r[k] and r[k]["err"] <= 2e-2 for k in KINDS)


def choose(per: dict):
    """Per-kernel launch choice for one tile shape from ``per`` = {(nw, ns): measure() result}:
    (choice {kernel: (nw, ns)}, estimated ms of one inference forward plus one forward and
    backward, summed over the input kinds), or None when no variant passed its check.  Scan,
    solve and output are chosen one by one (their times do not depend on each other's warps;
    the output kernel's score counts its run without O2 and its run with O2); the backward's two
    kernels take one variant together."""
    good = {l_: r for l_, r in per.items() if ok(r)}
    if not good:
        return None

    def pick(stage):
        return min(good, key=lambda l_: sum(good[l_][kd][stage] for kd in KINDS))
    choice = {"scan": pick("scan"), "solve": pick("solve"), "output": pick("output")}
    choice["dkdv"] = choice["dq"] = pick("bwd")
    est = sum(2 * good[choice["scan"]][kd]["scan"] + 2 * good[choice["solve"]][kd]["solve"]
              + good[choice["output"]][kd]["output"] + good[choice["dq"]][kd]["bwd"]
              for kd in KINDS)
    return choice, est


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--tiles", default="64x64,128x64,64x128,128x128")
    ap.add_argument("--launch", default="4/2,4/3,8/2,8/3")
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--N", type=int, default=16384)
    ap.add_argument("--rep", type=int, default=30)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    H = 16
    launches = [tuple(int(x) for x in s.split("/")) for s in args.launch.split(",")]
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.tiles.split(",")]
    rows, winners = [], {}
    for D in (int(d) for d in args.dims.split(",")):
        inputs = {}
        for kind in KINDS:
            torch.manual_seed(1)
            q, k, v = gen(kind, 1, H, args.N, D, torch.bfloat16, 1.0)
            inputs[kind] = (q, k, v, torch.randn_like(q))
        base = measure(inputs, args.alpha, {}, None, args.rep)
        ref = {kind: base[kind]["out"] for kind in KINDS}
        best_total, best = float("inf"), None
        for bm, bn in shapes:
            per = {}
            for nw, ns in launches:
                r = measure(inputs, args.alpha, spec(bm, bn, {k_: (nw, ns) for k_ in GA._KERNELS}),
                            ref, args.rep)
                per[(nw, ns)] = r
                row = dict(D=D, BM=bm, BN=bn, nw=nw, ns=ns, ok=ok(r))
                for kind in KINDS:
                    row.update({f"{kind}.{n}": r[kind].get(n) for n in
                                ("scan", "solve", "output_inf", "fwd", "bwd", "fb", "err", "error")})
                rows.append(row)
                print(json.dumps(row), flush=True)
            picked = choose(per)
            if picked is not None and picked[1] < best_total:
                best_total, best = picked[1], (bm, bn, picked[0])
        if best is None:
            print(f"D={D}: no tile shape passed")
            continue
        bm, bn, choice = best
        win = spec(bm, bn, choice)
        # the winner against the current defaults, alternating, same run
        times = {"default": [], "tuned": []}
        for _ in range(2):
            for name, t in (("default", {}), ("tuned", win)):
                r = measure(inputs, args.alpha, t, ref, args.rep)
                times[name].append({kd: (r[kd].get("fwd"), r[kd].get("fb"), r[kd].get("err"))
                                    for kd in KINDS})
        winners[D] = dict(tiles=win, times=times)
    with open(os.path.join(args.out, "attention_tune.json"), "w") as fh:
        json.dump(dict(rows=rows, winners={str(d): w for d, w in winners.items()},
                       device=torch.cuda.get_device_name(), torch=torch.__version__,
                       N=args.N, alpha=args.alpha), fh, indent=1)
    print(f"\n{torch.cuda.get_device_name()}  N={args.N} B=1 H=16 causal bf16 alpha={args.alpha}; "
          "ms (do_bench medians)")
    print(f"{'D':>4} {'tile':>8} {'nw/ns':>6} | " + " | ".join(
        f"{kd[:6]} scan solve out  fwd   bwd    f+b" for kd in KINDS))
    for r in rows:
        cells = []
        for kd in KINDS:
            if r.get(f"{kd}.error") or r.get(f"{kd}.fwd") is None:
                cells.append(f"{'FAILED':>39}")
            else:
                bad = "" if r["ok"] else "!"
                cells.append(f"{bad:>6} {r[f'{kd}.scan']:.2f} {r[f'{kd}.solve']:.2f} "
                             f"{r[f'{kd}.output_inf']:.2f} {r[f'{kd}.fwd']:.2f} {r[f'{kd}.bwd']:.2f} "
                             f"{r[f'{kd}.fb']:6.2f}")
        print(f"{r['D']:>4} {r['BM']:>4}x{r['BN']:<3} {r['nw']}/{r['ns']:<4} | " + " | ".join(cells))
    for D, w in winners.items():
        print(f"\nD={D} winner: {w['tiles']}")
        for name in ("default", "tuned"):
            for kd in KINDS:
                ts = [t[kd] for t in w["times"][name]]
                print(f"  {name:8} {kd:7} fwd " + " ".join(f"{t[0]:.2f}" for t in ts)
                      + "  f+b " + " ".join(f"{t[1]:.2f}" for t in ts)
                      + f"  err {max(t[2] for t in ts):.1e}")


if __name__ == "__main__":
    main()
