"""How often the streamed row-wise forward's write-first certificate holds (float64, CPU).

    python benchmarks/sim_rowwise_write_first.py [--rows 400] [--lengths 16384,65536]
        [--lanes 1024,2048,4096] [--alphas 1.25,1.5,2] [--kinds randn,flat,heavy] [--seed 0]

The streaming kernel (``gpu/rowwise_stream.py``, write-first launches) reads a long row once for
its maximum and a *subset*: each lane's largest entry (entry i belongs to lane i mod CHUNK; with
``stream_top2`` each lane's two largest).  It solves the subset's threshold τ_g on chip — a
subset's root lies at or below the row's, f_sub ≤ f — and writes p at τ_g in the second read.
That write is the answer when the row has as many entries above τ_g as the subset: the subset's
entries are row entries, so the two supports are then the same set and τ_g is the row's root
(the support-count certificate).  Otherwise (two support entries of the row share a lane, or
three with ``top2``) the row takes solver passes and a second write.

This script replays that test in float64 on random rows, with the package's exact sort-based
threshold (``threshold(..., solver="sort")``) for the subset, and prints per α, row kind, length
and subset the fraction of rows certified and the median support size.  Birthday arithmetic
predicts it: k support entries spread over L lanes all land in distinct lanes with probability
≈ exp(−k²/2L).  It is arithmetic, not a timing: what the passes cost on a GPU is in
docs/benchmarks_gpu_rowwise.md.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def rows(kind: str, R: int, D: int, rng: np.random.Generator) -> np.ndarray:
    """R float64 rows of length D: "randn", "flat" (0.1·randn) or "heavy" (Student-t, 3 dof)."""
    if kind == "randn":
        return rng.standard_normal((R, D))
    if kind == "flat":
        return 0.1 * rng.standard_normal((R, D))
    if kind == "heavy":
        return rng.standard_t(3.0, (R, D))
    raise ValueError(f"kind must be randn, flat or heavy, got {kind!r}")


def lane_subset(x: np.ndarray, lanes: int, top2: bool) -> np.ndarray:
    """Each lane's largest entry (entry i in lane i mod ``lanes``), or its two largest, per row:
    (R, lanes) or (R, 2·lanes).  Rows shorter than a whole number of lanes are padded with −inf
    (the kernel's masked loads)."""
    R, D = x.shape
    n = -(-D // lanes) * lanes
    xp = np.full((R, n), -np.inf)
    xp[:, :D] = x
    g = xp.reshape(R, n // lanes, lanes)          # [row, chunk, lane]
    if not top2:
        return g.max(axis=1)
    top = np.sort(g, axis=1)[:, -2:, :]
    return top.reshape(R, 2 * lanes)


def certified(x: np.ndarray, alpha: float, lanes: int, top2: bool) -> np.ndarray:
    """Per row, whether the write-first test certifies the subset's root."""
    from sparsemap_tools import threshold

    sub = lane_subset(x, lanes, top2)
    tau_g = threshold(sub, alpha, axis=-1, solver="sort", backend="numpy").tau
    a1 = alpha - 1.0
    k_sub = ((a1 * sub) > tau_g[:, None]).sum(1)
    k_row = ((a1 * x) > tau_g[:, None]).sum(1)
    return k_row == k_sub


def support_size(x: np.ndarray, alpha: float) -> np.ndarray:
    """Per row, the number of entries with p > 0 (exact float64 threshold)."""
    from sparsemap_tools import threshold

    tau = threshold(x, alpha, axis=-1, solver="sort", backend="numpy").tau
    return ((alpha - 1.0) * x > tau[:, None]).sum(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--lengths", default="16384,65536")
    ap.add_argument("--lanes", default="1024,2048,4096")
    ap.add_argument("--alphas", default="1.25,1.5,2")
    ap.add_argument("--kinds", default="randn,flat,heavy")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.rows < 1:
        raise ValueError("--rows must be >= 1")
    rng = np.random.default_rng(a.seed)
    print("| α | row kind | length | lanes | subset | certified | median support | exp(−k²/2L) |")
    print("|---|---|---|---|---|---|---|---|")
    for alpha in (float(v) for v in a.alphas.split(",")):
        for kind in a.kinds.split(","):
            for D in (int(v) for v in a.lengths.split(",")):
                x = rows(kind, a.rows, D, rng)
                k = float(np.median(support_size(x, alpha)))
                for L in (int(v) for v in a.lanes.split(",")):
                    for top2 in (False, True):
                        ok = certified(x, alpha, L, top2)
                        pred = np.exp(-k * k / (2 * L)) if not top2 else float("nan")
                        print(f"| {alpha:g} | {kind} | {D} | {L} | {'top-2' if top2 else 'max'} | "
                              f"{100 * ok.mean():.1f} % | {k:.0f} | "
                              f"{'' if top2 else f'{100 * pred:.0f} %'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
