"""Sparse sweeps per query block of the α = 1.25 attention solve, simulated in float64 (CPU).

    python benchmarks/sim_alpha125_sweeps.py [--lengths 1024,4096,8192,16320] [--blocks 2]
        [--guess 8,16,32] [--seed 0] [--out DIR]

The fused attention's α = 1.25 blocks with dense rows skip the candidate copy and solve τ' by
sparse QKᵀ sweeps (docs/attention.md): each sweep sums F = Σd⁴, G = Σd³, H = Σd², S = Σd over
d = [z − τ]_+, and a row stops on a certified quadratic step (``_quartic_certificate``) or takes
a Halley step on F^{1/4} − 1 (``_solver_update``).  A block sweeps until all of its rows stop, so
its cost is the *largest* count over its rows.  This script replays that logic on the keys of
the "random" benchmark regime (q, k ~ N(0, 1), D = 64, scale 1/√D; one causal block of 64
consecutive rows ending at each length) for two starts:

- ``subset``: the scan's lower bound, Newton on the subset of the 64 column-class maxima (the
  default kernels);
- ``sums K``: the scan's sums at a guess made after the diagonal tile and max(K, an eighth of
  the row's) interior tiles (the root of the scaled column-maxima subset of what was seen), and
  a Halley step from those sums — the scan option ``SPARSEMAP_ATTN_SCAN_SUMS`` built from this
  replay, timed on an H200 and removed on 2026-12-08 (docs/attention.md; code at 2adc9e4).

Each start is replayed with the quadratic certificate only and with the cubic model's too
(", cubic": ``_quartic_certificate`` since the seventh session of 2026-12-07).  It prints, per
length and start, the sweeps of the worst row of each block (mean and max over the blocks) and
the mean over rows, and the candidates above each start's lower bound (the support size for
reference).  This is arithmetic, not a timing: what a sweep costs on a GPU is
in docs/benchmarks_gpu_attention.md.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

Q = 4.0                # 1 / (α − 1) at α = 1.25
TOL = 2e-6             # the solve's tolerance on |Σp − 1|
BN = 64                # key tile width (the column classes of the scan's subset)


def sums(z: np.ndarray, t: float) -> tuple:
    d = z - t
    d = d[d > 0]
    return (d**4).sum(), (d**3).sum(), (d**2).sum(), d.sum()


def halley(F: float, G: float, H: float, t: float) -> tuple:
    """(Halley step on F^{1/Q} − 1 with the kernels' guards, Newton step on F^{1/Q})."""
    Fs = max(F, 1e-30)
    root = Fs ** (-1.0 / Q)
    phi = t + Fs * (1.0 - root) / max(G, 1e-30)
    a = 1.0 / root
    den = 2.0 * a * G * G - (a - 1.0) * (Q - 1.0) * (F * H - G * G)
    h = t + 2.0 * (a - 1.0) * G * Fs / den if den > 0 else phi
    return (h if den > 0 and h >= phi else phi), phi


def certified(F: float, G: float, H: float, S: float, nv: int, cubic: bool = False) -> bool:
    """``_quartic_certificate``: the quadratic model's step lands within TOL of Σp = 1 (error
    4S|δ|³, + nv·δ⁴ above the root); with ``cubic`` (the kernels since the seventh session of
    2026-12-07) also the cubic model's root x (error nv·x⁴, or 4S·x³ when x > 0, plus its
    residual)."""
    disc = 16 * G * G - 24 * H * (F - 1)
    den = 4 * G + np.sqrt(max(disc, 0.0))
    if S <= 0 or disc < 0 or den <= 0:
        return False
    step = 2 * (F - 1) / den
    err = 4 * S * abs(step) ** 3 + (nv * step**4 if F < 1 else 0.0)
    if err <= TOL or not cubic:
        return err <= TOL
    x = step
    for _ in range(3):  # Newton on the cubic model from the quadratic root
        P = F - 4 * G * x + 6 * H * x * x - 4 * S * x**3 - 1.0
        x -= P / (-4 * G + 12 * H * x - 12 * S * x * x)
    res = abs(F - 4 * G * x + 6 * H * x * x - 4 * S * x**3 - 1.0)
    rem = min(nv * x**4, 4 * S * x**3) if x > 0 else nv * x**4
    return rem + res <= TOL


def sweeps_from(z: np.ndarray, t: float, nv: int, limit: int = 30, cubic: bool = False) -> int:
    for k in range(1, limit + 1):
        F, G, H, S = sums(z, t)
        if abs(F - 1) <= TOL or certified(F, G, H, S, nv, cubic):
            return k
        t = halley(F, G, H, t)[0]
    return limit


def subset_root(v: np.ndarray, w: float = 1.0, iters: int = 8) -> float:
    """Newton on φ of the (scaled) subset sum w·Σ[v − t]_+⁴ from max(v) − 1 (from below)."""
    t = v.max() - 1.0
    for _ in range(iters):
        d = np.maximum(v - t, 0.0)
        F, G = w * (d**4).sum(), w * (d**3).sum()
        t = t + F * (1.0 - F ** (-1.0 / Q)) / G
    return t


def column_maxima(z: np.ndarray) -> np.ndarray:
    pad = np.full(-(-z.size // BN) * BN, -np.inf)
    pad[: z.size] = z
    cm = pad.reshape(-1, BN).max(axis=0)
    return cm[np.isfinite(cm)]


def row_counts(z: np.ndarray, n: int, guesses: list) -> dict:
    """Sweeps and candidates of one row (z: its n visible scaled scores, keys in order)."""
    zs = z - z.max()
    tau = subset_root(column_maxima(zs))
    out = {"subset": (sweeps_from(zs, tau, n), int((zs > tau).sum())),
           "subset, cubic": (sweeps_from(zs, tau, n, cubic=True), int((zs > tau).sum()))}
    for K in guesses:
        # the scan sees the diagonal tile (keys from the row's tile start) and max(K, an eighth
        # of the interior tiles) before it, as the kernel
        lo = max(0, ((n - 1) // BN - max(K, n // BN // 8)) * BN)
        seen = z[lo:n]
        mA = seen.max()
        tg = mA + subset_root(column_maxima(seen - mA), w=n / seen.size, iters=8) - z.max()
        F, G, H, S = sums(zs, tg)
        if F <= 0:
            out[f"sums {K}"] = (1 + sweeps_from(zs, tau, n), int((zs > tau).sum()))
            continue
        start, phi = halley(F, G, H, tg)
        bound = max(tau, phi - (1e-6 + 2e-6 * abs(phi)))
        k = 0 if abs(F - 1) <= TOL or certified(F, G, H, S, n) else sweeps_from(zs, max(start, bound), n)
        out[f"sums {K}"] = (k, int((zs > bound).sum()))
        k = 0 if abs(F - 1) <= TOL or certified(F, G, H, S, n, True) else \
            sweeps_from(zs, max(start, bound), n, cubic=True)
        out[f"sums {K}, cubic"] = (k, int((zs > bound).sum()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="1024,4096,8192,16320")
    ap.add_argument("--blocks", type=int, default=2, help="blocks (fresh queries) per length")
    ap.add_argument("--guess", default="8,16,32", help="interior tiles seen before the guess")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="", help="also write the table here (results.md)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    D = 64
    c = 0.25 / np.sqrt(D)
    guesses = [int(g) for g in args.guess.split(",") if g]
    lengths = [int(n) for n in args.lengths.split(",")]
    keys = rng.standard_normal((max(lengths) + 64, D))
    lines = ["| keys | start | sweeps per block: mean | max | mean over rows | candidates (support) |",
             "|---|---|---|---|---|---|"]
    for L in lengths:
        per = {}
        support = []
        for _ in range(args.blocks):
            q = rng.standard_normal((64, D))
            block = {}
            for r in range(64):
                n = L + r + 1
                z = c * (keys[:n] @ q[r])
                for name, (k, cand) in row_counts(z, n, guesses).items():
                    block.setdefault(name, []).append((k, cand))
                zs = z - z.max()
                support.append(int((zs > subset_root(zs, iters=60)).sum()))
            for name, vals in block.items():
                per.setdefault(name, []).append(vals)
        for name, blocks in per.items():
            worst = [max(k for k, _ in b) for b in blocks]
            rows = [k for b in blocks for k, _ in b]
            cand = [cd for b in blocks for _, cd in b]
            lines.append(f"| {L} | {name} | {np.mean(worst):.2f} | {max(worst)} | {np.mean(rows):.2f} "
                         f"| {np.mean(cand):.0f} ({np.mean(support):.0f}) |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "sim_alpha125_sweeps.md"), "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
