"""Forward stage times of the fused attention per kernel variant, on one GPU.

    python benchmarks/gpu_attention_stages.py [--kinds random,topics] [--alpha 1.5]
        [--variants default,nocopy,solve=0] [--rounds 2] [--fb] [--N 16384] [--D 64] [--out DIR]

One configuration (default N = 16k, B = 16384 // N, H = 16, D = 64, causal, bfloat16; the inputs of
``gpu_attention.py``). For each variant, the forward (under ``torch.no_grad()``) is timed stage by
stage — scan, scan + solve, everything (``_PROFILE_STAGES`` 1, 2, 3; do_bench medians) — and the
differences printed, with SDPA flash's forward from the same run as the baseline. Variants:

* ``default``: the library as it is;
* ``nocopy``: the solve's pass 0 without the candidate copy (``_SOLVE_DIAG = 1``: a profiling
  mode with wrong results, the cost of the sparse sweep alone);
* ``nobuf``: the copy but no iterations on the buffers (``_SOLVE_DIAG = 2``, wrong results);
* ``count``: the default kernel reporting buffer iterations × 1000 + sweeps in the "passes"
  column (``_SOLVE_DIAG = 3``; the most of any query block);
* ``sweeps``: no candidate buffer, sparse QKᵀ sweeps until converged (``_SOLVE_DIAG = 6``);
* ``top2``: the top two per row and tile always, no block-wide count test (``_SOLVE_DIAG = 7``,
  wrong when a row has more than two candidates in a tile);
* ``prefix``: the prefix-sum copy instead of repeated extraction for α ∈ {1.5, 2}
  (``_SOLVE_DIAG = 8``, correct); ``prefix168`` the same with the solve kernel capped at 168
  registers instead of 128;
* ``scantop2``: the scan keeps two scores per key-column class (``_SCAN_TOP2``; only for α
  other than 1.5 and 2); ``cap256``: base buffer 256 floats with a 4 GiB budget (``_CAND_CAP``,
  ``_CAND_BUDGET``; other α get up to 32× the base); ``scantop2cap256`` both;
* ``nit2`` / ``nit4`` / ``nit6``: the scan's Newton steps on its column-class subset (``_NIT``,
  default 8): fewer cost less per query block (short rows) but give a weaker bound (more
  candidates to copy);
* ``sweepoff`` / ``sweep50`` / ``sweep90``: the solve's blocks for α ≤ 1.3 (D ≤ 128) with ≥ 90 %
  of their tiles live skip the copy and take sparse sweeps (``_SWEEP_LIVE``): never / from 50 % /
  90 % (the default);
  ``sweep90m32`` / ``sweep90m64`` / ``sweep75m64``: 90 % or 75 % and at least 32 or 64 live
  tiles (``_SWEEP_MIN``, default 16); ``sweepd128`` / ``sweepd64``: the rule for head dims
  up to 128 (``_SWEEP_MAX_D``, the default) or 64;
* ``persist`` / ``nopersist``: the solve as a persistent grid or one program per query block
  (``_SOLVE_PERSIST``; by default persistent for α other than 1.5 / 2 and head dims ≤ 64);
  ``nopersist4g``:
  one program per block with a 4 GiB candidate budget (2048 floats per row at N = 16k, H = 16);
  ``persist168``: persistent with the solve capped at 168 registers instead of 128;
* ``gather0`` / ``gather05`` / ``gather1`` / ``gather2`` / ``gather4`` / ``gatherall``: the solve
  kernel writes the output of a query block whose rows kept all their candidates when it has at
  most 0 (never) / 0.5 / 1 / 2 / 4 / any number of candidates per row per live tile
  (``_GATHER_RATIO``, ``SPARSEMAP_ATTN_GATHER``; default 1); ``gatheridx``: the key indices
  copied but no block gathered (ratio −1: the copy's extra cost alone);
  ``dqgather`` / ``dqgather32`` / ``dqgather0``: the gathered dQ (``_DQ_GATHER``: gathered blocks
  keep up to 64 / 32 support keys per row and the dQ kernel sums over them; needs ``--fb``) / off;
* ``asmstore`` / ``asmstore0``: the solve's per-row candidate stores as inline ``st.global``
  (``_ASM_STORE``, ``_store_rows``) / as ``tl.store``; ``asmstore168`` with the solve capped at
  168 registers; ``asmtop2`` with the top two per row and tile always (``_SOLVE_DIAG = 7``,
  profiling only);
* ``tiles/SPEC``: a tile configuration as ``SPARSEMAP_ATTN_TILES`` with ``/`` for ``,``
  (e.g. ``tiles/nw=8/scan.nw=8/solve.nw=8``);
* ``KERNEL=N[:KERNEL=N…]``: register caps (ptxas ``maxnreg``, 0 = the compiler's choice) for
  "solve", "output", "output_o2", "dkdv", "dq" (``attention._MAXNREG``).

``--fb`` adds the forward with grad and forward+backward times (and FA2's forward+backward, the
baseline of their ratio). Rounds alternate the variants;
the table shows the last round. A JSON copy goes to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import triton.testing as tt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_attention import bench_one, forward_stages, gen, sdpa  # noqa: E402

import sparsemap_tools.gpu.attention as GA  # noqa: E402
from sparsemap_tools.attention import entmax_attention  # noqa: E402


_DIAG = {"nocopy": 1, "nobuf": 2, "count": 3, "sweeps": 6, "top2": 7, "prefix": 8}


_DEFAULTS = dict(cap=GA._CAND_CAP, budget=GA._CAND_BUDGET, top2=GA._SCAN_TOP2,
                 tiles=GA._TILES_ENV, persist=GA._SOLVE_PERSIST, nit=GA._NIT,
                 sweep=GA._SWEEP_LIVE, sweep_min=GA._SWEEP_MIN, sweep_d=GA._SWEEP_MAX_D,
                 gather=GA._GATHER_RATIO,
                 dqg=GA._DQ_GATHER, keep=GA._KEEP_SUPPORT, asm=GA._ASM_STORE, scantma=GA._SCAN_TMA,
                 cert=GA._SWEEP_CERT, skip=GA._SWEEP_SKIP)
_OTHER = {"persist": dict(persist="1"), "nopersist": dict(persist="0"),
          "nit2": dict(nit=2), "nit4": dict(nit=4), "nit6": dict(nit=6),
          "sweepoff": dict(sweep=101), "sweep50": dict(sweep=50), "sweep90": dict(sweep=90),
          "sweep90m32": dict(sweep=90, sweep_min=32), "sweep90m64": dict(sweep=90, sweep_min=64),
          "sweep75m64": dict(sweep=75, sweep_min=64), "sweepd128": dict(sweep_d=128),
          "sweepd64": dict(sweep_d=64),
          "nopersist4g": dict(persist="0", budget=2**32),
          "persist168": dict(persist="1", maxnreg={"solve": 168}),
          "scantop2": dict(top2=True), "cap256": dict(cap=256, budget=2**32),
          "scantop2cap256": dict(top2=True, cap=256, budget=2**32),
          "gather0": dict(gather=0.0), "gather05": dict(gather=0.5), "gather1": dict(gather=1.0),
          "gather2": dict(gather=2.0), "gather4": dict(gather=4.0), "gatherall": dict(gather=1e9),
          "gatheridx": dict(gather=-1.0),
          "dqgather": dict(dqg=True), "dqgather32": dict(dqg=True, keep=32), "dqgather0": dict(dqg=False),
          "asmstore": dict(asm=True), "asmstore0": dict(asm=False),
          "asmstore168": dict(asm=True, maxnreg={"solve": 168}),
          "asmtop2": dict(asm=True, diag=7),
          # the profiling copies with the gathered output off (a gather after a copy that broke
          # the buffers' invariants reads unwritten slots: an illegal address at N = 16k)
          "scantma": dict(scantma=True), "scantma0": dict(scantma=False),
          # α = 1.25's sparse sweeps: the quartic certificate off, the per-tile bound test on
          # ("skip"; off by default, so "noskip" is the default kernel, the name of the 2026-12-07
          # records), and "nocertskip" the kernel as it was before both
          "nocert": dict(cert=False), "noskip": dict(skip=False),
          "nocertnoskip": dict(cert=False, skip=False),
          "skip": dict(skip=True), "nocertskip": dict(cert=False, skip=True),
          "nocopyg0": dict(gather=0.0, diag=1), "nobufg0": dict(gather=0.0, diag=2)}


def apply_variant(name: str) -> None:
    o = {**_DEFAULTS, **_OTHER.get(name, {})}
    GA._CAND_CAP, GA._CAND_BUDGET, GA._SCAN_TOP2 = o["cap"], o["budget"], o["top2"]
    GA._SOLVE_PERSIST = o["persist"]
    GA._NIT, GA._SWEEP_LIVE, GA._SWEEP_MIN = o["nit"], o["sweep"], o["sweep_min"]
    GA._SWEEP_MAX_D = o["sweep_d"]
    GA._GATHER_RATIO = o["gather"]
    GA._DQ_GATHER, GA._KEEP_SUPPORT = o["dqg"], o["keep"]
    GA._ASM_STORE = o["asm"]
    GA._SCAN_TMA = o["scantma"]
    GA._SWEEP_CERT, GA._SWEEP_SKIP = o["cert"], o["skip"]
    GA._SOLVE_DIAG = o.get("diag", _DIAG.get(name, 0))
    GA._MAXNREG = dict(o.get("maxnreg", {}))
    GA._TILES_ENV = o["tiles"]
    if name.startswith("tiles/"):
        GA._TILES_ENV = {**o["tiles"], **GA._parse_tiles(name[len("tiles/"):].replace("/", ","))}
        return
    if name in _OTHER:
        return
    if name == "prefix168":  # the prefix-sum copy with the solve kernel capped at 168 registers
        GA._SOLVE_DIAG, GA._MAXNREG = 8, {"solve": 168}
    elif name != "default" and name not in _DIAG:
        GA._MAXNREG = GA._parse_maxnreg(name.replace(":", ","))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default="random,topics")
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--variants", default="default,nocopy")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--fb", action="store_true", help="also time forward with grad and forward+backward")
    ap.add_argument("--N", type=int, default=16384, help="sequence length (batch 16384 // N)")
    ap.add_argument("--D", type=int, default=64)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    N, D, H = args.N, args.D, 16
    B = max(1, 16384 // N)
    rows = []
    for kind in args.kinds.split(","):
        torch.manual_seed(1)
        q, k, v = gen(kind, B, H, N, D, torch.bfloat16, 1.0)

        def f():
            return entmax_attention(q, k, v, alpha=args.alpha, is_causal=True)

        apply_variant("default")
        with torch.no_grad():
            ref = f().float()
            flash = tt.do_bench(sdpa(q, k, v, True, "flash"), warmup=10, rep=40, return_mode="median")
        flash_fb = float("nan")
        if args.fb:  # FA2's forward+backward, the baseline of the f+b column, in the same call
            for x in (q, k, v):
                x.requires_grad_()
            flash_fb = bench_one(sdpa(q, k, v, True, "flash"), [q, k, v], torch.randn_like(q))[1]
            for x in (q, k, v):
                x.requires_grad_(False)
                x.grad = None
        for rnd in range(args.rounds):
            for var in [v_ for v_ in args.variants.split(",") if v_]:
                apply_variant(var)
                try:
                    with torch.no_grad():
                        err = (f().float() - ref).abs().max().item()
                        _, st = entmax_attention(q, k, v, alpha=args.alpha, is_causal=True, return_stats=True)
                except Exception as exc:  # a variant that does not compile here: skip it, keep the rest
                    print(f"variant {var}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
                    continue
                s = forward_stages(f)
                tr = fb = float("nan")
                if args.fb:
                    for x in (q, k, v):
                        x.requires_grad_()
                    tr = tt.do_bench(f, warmup=10, rep=40, return_mode="median")
                    fb = bench_one(f, [q, k, v], torch.randn_like(q))[1]
                    for x in (q, k, v):
                        x.requires_grad_(False)
                        x.grad = None
                row = dict(kind=kind, alpha=args.alpha, variant=var, round=rnd, scan=s[0], solve=s[1],
                           output=s[2], fwd=s[3], flash_fwd=flash, ratio=s[3] / flash, fwd_train=tr,
                           fwd_bwd=fb, flash_fb=flash_fb, fb_ratio=fb / flash_fb, max_diff_vs_default=err,
                           solve_passes=int(st.solve_iters), gathered=float(st.gathered))
                rows.append(row)
                print(json.dumps(row), flush=True)
    apply_variant("default")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_attention_stages.json"), "w") as fh:
        json.dump(dict(gpu=torch.cuda.get_device_name(), rows=rows), fh, indent=1)
    print(f"\n{torch.cuda.get_device_name()}; N={N} B={B} H={H} D={D} causal bf16 alpha={args.alpha}; ms")
    print(f"{'inputs':8s} {'variant':>18s} {'scan':>6s} {'solve':>6s} {'output':>6s} {'fwd':>6s} "
          f"{'FA2':>6s} {'/FA2':>5s} {'passes':>6s} {'fwd tr':>6s} {'f+b':>7s} {'/FA2':>5s} {'diff':>8s} {'gath':>5s}")
    for r in rows:
        if r["round"] == args.rounds - 1:
            print(f"{r['kind']:8s} {r['variant']:>18s} {r['scan']:6.3f} {r['solve']:6.3f} {r['output']:6.3f} "
                  f"{r['fwd']:6.3f} {r['flash_fwd']:6.3f} {r['ratio']:5.2f} {r['solve_passes']:6d} "
                  f"{r['fwd_train']:6.3f} {r['fwd_bwd']:7.3f} {r['fb_ratio']:5.2f} {r['max_diff_vs_default']:8.1e} "
                  f"{r['gathered']:5.2f}")


if __name__ == "__main__":
    main()
