"""CPU benchmark: every solver x backend vs ``torch.softmax``, ``scipy.special.softmax`` and the
``entmax`` package, on float32 rows (issue 2, item 9).

For each shape and alpha the methods are timed *interleaved* (one call of each per round, after
a warm-up call of each), so slow drifts of a shared machine hit all of them alike; the table
reports the median wall time and the median over rounds of its ratio to the ``torch.softmax``
call of the same round (paired, so load that changes during the run cancels),
and the max abs error of the output against the float64 exact answer (``numpy_backend``
``sort`` on the float32 input upcast; softmax columns against the float64 softmax).

Methods (columns that need a missing optional package are skipped and listed as such):

* ``numba/<solver>``: ``numba_backend.entmax_rows`` on the prepared (R, d) float32 array and a
  per-row alpha array, writing into a preallocated output (the fused fast path of ``entmax``).
* ``numpy/<solver>``: ``numpy_backend.entmax_rows`` (the vectorised reference). It is slow,
  so on large shapes it is timed on a leading block of rows (at most ``numpy_max_elems``
  entries) and the time is scaled linearly to the full shape; the note says so.
* ``sparsemap_tools.entmax``: the public API (NumPy in, NumPy out, ``solver="auto"``), if
  importable.
* ``torch.softmax``, ``scipy.special.softmax`` (alpha-independent baselines), and from the
  ``entmax`` package ``entmax15`` (alpha = 1.5), ``sparsemax`` (alpha = 2) and
  ``entmax_bisect`` (every alpha, default ``n_iter=50``), under ``torch.no_grad()``.

Each timed call is preceded by an untimed call of the same method: torch and Numba each run
their own OpenMP thread pool, and the first call after the *other* library waits for that
library's spinning threads to yield the two cores (measured: up to ~0.1 ms, several x on small
shapes). The second call measures the steady state of a model that calls the same op
repeatedly; the rounds are still interleaved, so drifting load hits every method alike.

``main(argv)`` is the command line (``python benchmarks/cpu.py``, ``sparsemap-tools bench``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SHAPES: tuple[tuple[int, int], ...] = ((4096, 1024), (256, 32768))
QUICK_SHAPES: tuple[tuple[int, int], ...] = ((256, 1024), (16, 8192))
DEFAULT_ALPHAS: tuple[float, ...] = (1.5, 2.0, 1.25)
NUMBA_SOLVERS: tuple[str, ...] = ("newton", "halley", "sort", "bisect")
NUMPY_SOLVERS: tuple[str, ...] = ("newton", "sort", "bisect")
BASELINE = "torch.softmax"


# ----------------------------------------------------------------------------------------------
# optional imports
# ----------------------------------------------------------------------------------------------


def _optional(name: str) -> Any | None:
    try:
        return __import__(name, fromlist=["_"])
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None


def environment(threads: int) -> dict[str, str]:
    """Versions and machine conditions, for the table header."""
    env = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": str(os.cpu_count()),
        "threads": str(threads),
    }
    for mod in ("numba", "torch", "scipy", "entmax"):
        m = _optional(mod)
        env[mod] = getattr(m, "__version__", "installed") if m is not None else "missing"
    try:
        env["loadavg"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        env["loadavg"] = "n/a"
    return env


# ----------------------------------------------------------------------------------------------
# references and methods
# ----------------------------------------------------------------------------------------------


def exact_entmax(x: np.ndarray, alpha: float) -> np.ndarray:
    """Float64 exact alpha-entmax of the rows of ``x`` (sort reference)."""
    from .solvers import numpy_backend as npb

    x64 = np.asarray(x, np.float64)
    a = np.full(x64.shape[0], float(alpha))
    zs = (a - 1.0)[:, None] * (x64 - x64.max(axis=1, keepdims=True))
    res = npb.sort_solve(zs, a)
    return npb.probabilities(zs, res.tau, a)


def exact_softmax(x: np.ndarray) -> np.ndarray:
    x64 = np.asarray(x, np.float64)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Method:
    """A timed callable plus what its output is compared with."""

    def __init__(
        self,
        name: str,
        fn: Callable[[], Any],
        kind: str,
        *,
        scale: float = 1.0,
        rows: int | None = None,
        note: str = "",
    ) -> None:
        self.name = name
        self.fn = fn
        self.kind = kind  # "entmax" or "softmax": which reference
        self.scale = scale  # time multiplier (numpy backend timed on a block of rows)
        self.rows = rows  # rows the output covers (None: all)
        self.note = note
        self.times: list[float] = []
        self.output: np.ndarray | None = None


def _to_numpy(out: Any) -> np.ndarray:
    if isinstance(out, tuple):
        out = out[0]
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    return np.asarray(out)


def build_methods(
    x: np.ndarray,
    alpha: float,
    *,
    numpy_backend: bool = True,
    numpy_max_elems: int = 1 << 18,
    skipped: set[str] | None = None,
) -> list[Method]:
    """All methods available here for one (x, alpha); missing packages go into ``skipped``."""
    skipped = set() if skipped is None else skipped
    rows, d = x.shape
    methods: list[Method] = []
    torch = _optional("torch")
    xt = torch.from_numpy(x) if torch is not None else None
    if torch is not None:
        methods.append(Method(BASELINE, lambda: torch.softmax(xt, dim=-1), "softmax"))
    else:
        skipped.add(BASELINE + " (torch missing: ratios are to scipy.special.softmax)")
    special = _optional("scipy.special")
    if special is not None:
        methods.append(
            Method("scipy.special.softmax", lambda: special.softmax(x, axis=-1), "softmax")
        )
    else:
        skipped.add("scipy.special.softmax (scipy missing)")

    a_rows = np.full(rows, float(alpha))
    nb = _optional("sparsemap_tools.solvers.numba_backend")
    if nb is not None:
        buf = np.empty_like(x)
        for solver in NUMBA_SOLVERS:
            methods.append(
                Method(
                    f"numba/{solver}",
                    lambda s=solver: nb.entmax_rows(x, a_rows, s, out=buf)[0],
                    "entmax",
                )
            )
    else:
        skipped.add("numba backend (numba missing)")
    api = _optional("sparsemap_tools.api")
    if api is not None and hasattr(api, "entmax"):
        methods.append(
            Method("sparsemap_tools.entmax", lambda: api.entmax(x, alpha=alpha), "entmax")
        )
    else:
        skipped.add("sparsemap_tools.entmax (public API not importable)")

    if numpy_backend:
        from .solvers import numpy_backend as npb

        if hasattr(npb, "entmax_rows"):
            r = max(1, min(rows, numpy_max_elems // max(d, 1)))
            xs, a_s = x[:r], a_rows[:r]
            note = "" if r == rows else f"timed on {r} rows, x{rows / r:g}"
            for solver in NUMPY_SOLVERS:
                methods.append(
                    Method(
                        f"numpy/{solver}",
                        lambda s=solver: npb.entmax_rows(xs, a_s, s)[0],
                        "entmax",
                        scale=rows / r,
                        rows=r,
                        note=note,
                    )
                )
        else:
            skipped.add("numpy backend entmax_rows (not present)")

    pkg = _optional("entmax")
    if pkg is not None and torch is not None:

        def _nograd(f: Callable[[], Any]) -> Callable[[], Any]:
            def g() -> Any:
                with torch.no_grad():
                    return f()

            return g

        if alpha == 1.5:
            methods.append(Method("entmax.entmax15", _nograd(lambda: pkg.entmax15(xt, dim=-1)), "entmax"))
        if alpha == 2.0:
            methods.append(Method("entmax.sparsemax", _nograd(lambda: pkg.sparsemax(xt, dim=-1)), "entmax"))
        methods.append(
            Method(
                "entmax.entmax_bisect",
                _nograd(lambda: pkg.entmax_bisect(xt, alpha=alpha, dim=-1)),
                "entmax",
                note="n_iter=50 (default)",
            )
        )
    else:
        skipped.add("entmax package (entmax or torch missing)")
    return methods


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------


def _time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def time_interleaved(methods: Sequence[Method], repeats: int, slow_s: float = 0.25) -> None:
    """Warm up every method once, then ``repeats`` rounds; each round calls every method
    twice in a row and times the second call.

    Methods slower than ``slow_s`` per call join only the first ``max(3, repeats // 3)``
    rounds (their median is still over several runs; the note records the count).
    """
    warm: dict[str, float] = {}
    for m in methods:
        _, out = _time_once(m.fn)  # warm-up: compile, caches, allocator
        m.output = _to_numpy(out)
        warm[m.name], _ = _time_once(m.fn)  # a warm call decides "slow"
    slow_reps = max(3, repeats // 3)
    for k in range(repeats):
        for m in methods:
            if warm[m.name] > slow_s and k >= slow_reps:
                m.times.append(float("nan"))
                continue
            if warm[m.name] <= slow_s:
                m.fn()  # untimed: wakes this library's thread pool (see module docstring)
            dt, _ = _time_once(m.fn)
            m.times.append(dt * m.scale)


def run(
    shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    repeats: int = 15,
    *,
    threads: int = 2,
    numpy_backend: bool = True,
    numpy_max_elems: int = 1 << 18,
    seed: int = 0,
    verbose: bool = True,
) -> list[dict[str, Any]]:
    """Benchmark every method on float32 ``randn`` rows; one dict per (shape, alpha, method).

    Keys: ``shape``, ``alpha``, ``method``, ``ms`` (median), ``ms_min``, ``runs``, ``ratio``
    (median over rounds of the time divided by the ``torch.softmax`` time of the same round;
    ``scipy.special.softmax`` when torch is missing), ``max_err`` (vs float64 exact), ``note``. Sets the torch and numba thread counts to ``threads``.
    """
    torch = _optional("torch")
    numba = _optional("numba")
    if torch is not None:
        torch.set_num_threads(threads)
    if numba is not None:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(seed)
    results: list[dict[str, Any]] = []
    skipped: set[str] = set()
    for shape in shapes:
        x = rng.standard_normal(shape, dtype=np.float32)
        ref_soft = exact_softmax(x)
        for alpha in alphas:
            ref = exact_entmax(x, alpha)
            methods = build_methods(
                x, alpha, numpy_backend=numpy_backend, numpy_max_elems=numpy_max_elems,
                skipped=skipped,
            )
            time_interleaved(methods, repeats)
            base_name = BASELINE if any(m.name == BASELINE for m in methods) else "scipy.special.softmax"
            base = next((m for m in methods if m.name == base_name), None)
            for m in methods:
                target = ref_soft if m.kind == "softmax" else ref
                rows = m.rows if m.rows is not None else shape[0]
                err = float(np.max(np.abs(m.output.astype(np.float64) - target[:rows])))
                times = [t for t in m.times if t == t]
                ms = statistics.median(times) * 1e3
                # paired ratio: each run against the baseline run of the same round (robust
                # to load that drifts during the benchmark), then the median over rounds
                if base is not None:
                    pairs = [t / b for t, b in zip(m.times, base.times) if t == t]
                    ratio = statistics.median(pairs)
                else:
                    ratio = float("nan")
                note = m.note
                if len(times) < repeats:
                    note = (note + "; " if note else "") + f"{len(times)} runs"
                results.append(
                    dict(
                        shape=f"{shape[0]}x{shape[1]}",
                        alpha=alpha,
                        method=m.name,
                        ms=ms,
                        ms_min=min(times) * 1e3,
                        runs=len(times),
                        ratio=ratio,
                        max_err=err,
                        note=note,
                    )
                )
            if verbose:
                print(f"  done {shape} alpha={alpha}", file=sys.stderr, flush=True)
    run.skipped = sorted(skipped)  # type: ignore[attr-defined]
    return results


# ----------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------


def format_table(results: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """One table: rows = (shape, alpha, method), columns ms / ratio / max error / note."""
    head = ["shape", "alpha", "method", "ms (median)", f"x {BASELINE}", "max abs err", "note"]
    lines = []
    rows = [
        [
            r["shape"],
            f"{r['alpha']:g}",
            r["method"],
            f"{r['ms']:.2f}",
            f"{r['ratio']:.2f}",
            f"{r['max_err']:.1e}",
            r["note"],
        ]
        for r in results
    ]
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" for _ in head) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*head))
    lines.append("  ".join("-" * w for w in widths))
    prev = None
    for r in rows:
        key = (r[0], r[1])
        if prev is not None and key != prev:
            lines.append("")
        prev = key
        lines.append(fmt.format(*r))
    return "\n".join(lines)


def write_outputs(results: Sequence[dict[str, Any]], env: dict[str, str], out_dir: Path) -> None:
    """``bench_cpu.csv`` and ``bench_cpu.md`` (environment header + table) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "bench_cpu.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(results[0].keys()) if results else ["shape"])
        w.writeheader()
        w.writerows(results)
    header = ", ".join(f"{k} {v}" for k, v in env.items())
    (out_dir / "bench_cpu.md").write_text(
        f"Conditions: {header}\n\n" + format_table(results, markdown=True) + "\n"
    )


TARGET_RATIO = 2.0  # issue 2: alpha = 1.5 and sparsemax within 2x of torch.softmax


def _merged_order(rows: Sequence[dict[str, Any]], shape: str) -> list[str]:
    """Methods of one shape in table order, merged over the alphas (a method that only some
    alphas have, e.g. ``entmax.sparsemax``, goes before the method that follows it there)."""
    order: list[str] = []
    for alpha in dict.fromkeys(r["alpha"] for r in rows if r["shape"] == shape):
        names = [r["method"] for r in rows if r["shape"] == shape and r["alpha"] == alpha]
        for i, m in enumerate(names):
            if m in order:
                continue
            nxt = next((n for n in names[i + 1:] if n in order), None)
            order.insert(order.index(nxt) if nxt is not None else len(order), m)
    return order


def plot_results(results: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Write a PNG of the ratios to ``torch.softmax``: one subplot per shape, one horizontal
    bar per (method, alpha) on a log axis, with lines at 1 (softmax) and at the 2x target.

    Imports matplotlib lazily (Agg backend); returns ``None`` with a printed note when it is
    missing or there is nothing to draw.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001 - no plot is not an error
        print(f"matplotlib not available ({exc}); plot {path} skipped")
        return None
    rows = [r for r in results if r["method"] != BASELINE and r["ratio"] == r["ratio"]]
    if not rows:
        print(f"no ratios to plot; {path} skipped")
        return None
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    alphas = list(dict.fromkeys(r["alpha"] for r in rows))
    per_shape = {s: _merged_order(rows, s) for s in shapes}
    heights = [max(2.0, 0.32 * len(per_shape[s]) * (0.5 + 0.25 * len(alphas))) for s in shapes]
    fig, axes = plt.subplots(
        len(shapes), 1, figsize=(9, sum(heights) + 1.2), squeeze=False,
        gridspec_kw=dict(height_ratios=heights), sharex=True,
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lo = min(min(r["ratio"] for r in rows), 1.0)  # keep the 1x and 2x lines in view
    hi = max(max(r["ratio"] for r in rows), TARGET_RATIO)
    bar_h = 0.8 / len(alphas)
    for ax, shape in zip(axes[:, 0], shapes):
        methods = per_shape[shape]
        for j, alpha in enumerate(alphas):
            ys, vals = [], []
            for i, m in enumerate(methods):
                r = next((r for r in rows if r["shape"] == shape and r["alpha"] == alpha
                          and r["method"] == m), None)
                if r is not None:
                    ys.append(i - 0.4 + (j + 0.5) * bar_h)
                    vals.append(r["ratio"])
            left = lo / 2  # log axis: bars start at the left edge of the axis
            ax.barh(ys, [v - left for v in vals], height=bar_h * 0.9, left=left,
                    color=colors[j % len(colors)], label=f"α = {alpha:g}")
            for y, v in zip(ys, vals):
                ax.text(v * 1.04, y, f"{v:.2f}" if v < 10 else f"{v:.0f}", va="center", fontsize=7,
                        bbox=dict(facecolor="white", edgecolor="none", pad=0.2, alpha=0.8))
        ax.axvline(1.0, color="black", lw=1)
        ax.axvline(TARGET_RATIO, color="tab:red", lw=1, ls="--")
        ax.set_yticks(range(len(methods)))
        ax.set_yticklabels(methods, fontsize=8)
        ax.set_ylim(len(methods) - 0.5, -0.5)
        ax.set_title(f"{shape} float32 rows", fontsize=10)
        ax.grid(axis="x", which="major", alpha=0.3)
    ax = axes[-1, 0]
    ax.set_xscale("log")
    ax.set_xlim(lo / 2, hi * 2.5)
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
             if lo / 2 <= t <= hi * 2.5]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.set_xlabel(f"time / {BASELINE} (same round, median over rounds; log scale)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="black", lw=1), Line2D([], [], color="tab:red", lw=1, ls="--")]
    labels += [f"{BASELINE} (1×)", f"target {TARGET_RATIO:g}×"]
    fig.legend(handles, labels, fontsize=8, loc="upper center", ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (sum(heights) + 1.2)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _parse_shapes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        r, d = part.lower().split("x")
        out.append((int(r), int(d)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python benchmarks/cpu.py [--quick] [--out DIR] ...``."""
    ap = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, 3 repeats (smoke test)")
    ap.add_argument("--out", type=Path, default=None,
                    help="write bench_cpu.csv, bench_cpu.md and bench_cpu.png here")
    ap.add_argument("--shapes", type=_parse_shapes, default=None, help="e.g. 4096x1024,256x32768")
    ap.add_argument("--alphas", type=lambda s: [float(v) for v in s.split(",")], default=None)
    ap.add_argument("--repeats", type=int, default=None, help="rounds of interleaved runs (15)")
    ap.add_argument("--threads", type=int, default=2, help="torch and numba threads (2)")
    ap.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy backend")
    args = ap.parse_args(argv)
    shapes = args.shapes or (QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
    alphas = args.alphas or DEFAULT_ALPHAS
    repeats = args.repeats or (3 if args.quick else 15)
    env = environment(args.threads)
    results = run(shapes, alphas, repeats, threads=args.threads, numpy_backend=not args.no_numpy)
    env["loadavg_after"] = environment(args.threads)["loadavg"]
    print("Conditions: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    print(f"float32 randn rows; median of {repeats} interleaved rounds after warm-up; ratio = "
          f"median over rounds of time / {BASELINE} time of the same round; error vs float64 exact.")
    print(format_table(results))
    skipped = getattr(run, "skipped", [])
    if skipped:
        print("skipped: " + "; ".join(skipped))
    if args.out is not None:
        write_outputs(results, env, args.out)
        print(f"wrote {args.out / 'bench_cpu.csv'} and {args.out / 'bench_cpu.md'}")
        if plot_results(results, args.out / "bench_cpu.png") is not None:
            print(f"wrote {args.out / 'bench_cpu.png'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
