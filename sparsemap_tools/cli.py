"""The ``sparsemap-tools`` command line (also ``python -m sparsemap_tools``).

Subcommands
-----------
``converge``  run the threshold solvers with history on a workload and report how they converge
              (table in the terminal; with ``--out DIR``: CSV/Markdown tables, raw traces, plots)
``bench``     run the CPU benchmark (and the GPU one when CUDA is available)

Bad arguments print one line ``sparsemap-tools: error: ...`` on stderr and exit with status 2.
When the reader of stdout goes away (``sparsemap-tools converge | head -1``) the command stops
quietly with status 141, as Unix tools killed by SIGPIPE do.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

from .workloads import WORKLOADS

PROG = "sparsemap-tools"
DEFAULT_ALPHAS = (1.25, 1.5, 2.0, 3.0)
DEFAULT_TOLS = (1e-7, 1e-14)


class UsageError(Exception):
    """A bad command-line argument: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that raises :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see --help)")


class Progress:
    """A tiny progress bar on a stream (stderr by default).

    It stays silent for the first ``delay`` seconds (short work shows nothing) and draws only
    on a terminal unless ``force`` is set.
    """

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True,
                 delay: float = 0.5, force: bool = False, width: int = 28) -> None:
        self.total = max(int(total), 1)
        self.stream = sys.stderr if stream is None else stream
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled and (tty or force)
        self.delay = delay
        self.width = width
        self.done = 0
        self.start = time.perf_counter()
        self.drawn = False

    def update(self, message: str = "", step: int = 1) -> None:
        """Advance by ``step`` and redraw (once past the initial delay)."""
        self.done = min(self.done + step, self.total)
        elapsed = time.perf_counter() - self.start
        if not self.enabled or elapsed < self.delay:
            return
        filled = round(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"\r[{bar}] {self.done}/{self.total} {elapsed:5.1f}s {message}"
        self.stream.write(line[:100].ljust(100))
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        """Clear the bar's line."""
        if self.drawn:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()


# --------------------------------------------------------------------------------------------
# argument types (each raises argparse.ArgumentTypeError -> one-line message)
# --------------------------------------------------------------------------------------------
def _alpha(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 1.0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"alpha must be > 1 (alpha = 1 is softmax), got {text}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def _int_at_least(lo: int):
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    return conv


def build_parser() -> argparse.ArgumentParser:
    """The full parser (exposed for documentation and tests)."""
    from .solvers import SOLVERS

    p = _Parser(prog=PROG, description="Exact and fast alpha-entmax threshold solvers: "
                "convergence analysis and benchmarks.",
                epilog=f"Run '{PROG} converge' for the default convergence report.")
    sub = p.add_subparsers(dest="command", metavar="{converge,bench}", parser_class=_Parser)

    c = sub.add_parser(
        "converge", help="measure how the threshold solvers converge (table + plots)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run every solver on every row with history on (NumPy backend, float64) and measure\n"
            "the error |tau_k - tau*| against the exact sort threshold after each pass over the\n"
            "row. Prints, per workload, alpha and solver: median/p90/max iterations to each\n"
            "tolerance, failures (final error above tol), passes used, rows the solver flagged as\n"
            "not converged, rows with a wrong support size, and the largest final error.\n\n"
            "built-in workloads (rows x d by default; --rows/--dim override):\n"
            + "\n".join(f"  {w.name:<14} {w.description} ({w.rows}x{w.dim})"
                        for w in WORKLOADS.values())
            + "\n  all            every workload above"),
        epilog=f"example:\n  {PROG} converge --alpha 1.25 1.5 2 3 --dim 4096 --rows 2000 "
        "--workload attention --out report/\n")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--workload", "-w", nargs="+", metavar="NAME", default=None,
                     help="built-in workload(s) generated from --seed (default: gaussian); "
                     f"one or more of: {', '.join(WORKLOADS)}, or all")
    src.add_argument("--scores", nargs="+", metavar="FILE.npy", default=None,
                     help="your own scores instead: .npy array(s) of real numbers, rows along "
                     "the last axis; -inf marks masked entries. Labelled by file stem (with "
                     "parent folders where stems repeat); --rows/--dim/--seed do not apply")
    c.add_argument("--alpha", "-a", nargs="+", type=_alpha, default=list(DEFAULT_ALPHAS),
                   metavar="A", help="alpha value(s) > 1 (default: %(default)s)")
    c.add_argument("--solvers", "-s", nargs="+", choices=SOLVERS, metavar="NAME",
                   default=["bisect", "newton", "halley", "sort"],
                   help=f"solvers to compare, from {{{','.join(SOLVERS)}}} "
                   "(default: %(default)s)")
    c.add_argument("--tol", "-t", nargs="+", type=_positive_float, default=list(DEFAULT_TOLS),
                   metavar="TOL", help="absolute tolerance(s) on |tau - tau*| in the prepared "
                   "space (tau in [-1, 0)) (default: %(default)s)")
    c.add_argument("--rows", "-n", type=_int_at_least(1), default=None,
                   help="rows per built-in workload (default: the workload's own, 500; long: 8)")
    c.add_argument("--dim", "-d", type=_int_at_least(1), default=None,
                   help="row length d of built-in workloads (default: the workload's own, 1024; "
                   "long: 100000)")
    c.add_argument("--seed", type=_int_at_least(0), default=None,
                   help="seed of the built-in workload generator (default: 0)")
    c.add_argument("--max-iter", type=_int_at_least(1), default=None, metavar="N",
                   help="pass limit for the iterative solvers (default: theirs, 200 for bisect, "
                   "100 otherwise)")
    c.add_argument("--out", "-o", type=Path, default=None, metavar="DIR",
                   help="write summary.csv, summary.md, rows.csv, traces.npz, report.json and "
                   "convergence_<workload>.png into DIR (created if missing)")
    c.add_argument("--no-plot", action="store_true", help="with --out: skip the PNG plots")
    c.add_argument("--show", action="store_true",
                   help="also open the plots in a window (needs an interactive matplotlib backend)")
    c.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar and no table (files are still written)")

    b = sub.add_parser(
        "bench", help="run the CPU benchmark (and the GPU one when CUDA is available)",
        description="Forward to sparsemap_tools.bench_cpu and, when torch sees a CUDA device, "
        "to sparsemap_tools.gpu.bench_rowwise (or, in a source checkout, "
        "benchmarks/gpu_rowwise.py). Exit status 1 when neither benchmark could run.")
    b.add_argument("--quick", action="store_true", help="small shapes, few repetitions")
    b.add_argument("--out", "-o", type=Path, default=None, metavar="DIR",
                   help="directory for the benchmark results (GPU results go to DIR/gpu)")
    which = b.add_mutually_exclusive_group()
    which.add_argument("--cpu-only", action="store_true", help="skip the GPU benchmark")
    which.add_argument("--gpu-only", action="store_true", help="skip the CPU benchmark")
    return p


# --------------------------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------------------------
def _check_out_dir(d: Path, command: str) -> None:
    """Fail before any work when ``--out d`` cannot become a writable directory."""
    existing = d
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is" if existing == d else f"cannot be created: {existing} is"
        raise UsageError(f"{PROG} {command}: --out {d} {what} a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{PROG} {command}: --out {d}: {existing} is not writable")


def _score_labels(paths: Sequence[str]) -> list[str]:
    """Distinct labels for ``--scores`` files (tables, traces.npz keys and plot names).

    The file stem, or where stems repeat, the stem behind as many parent folders as it takes
    to tell the files apart, joined by ``-`` (``d1/s.npy d2/s.npy`` -> ``d1-s``, ``d2-s``); a
    file named twice gets ``-2``, ``-3``.
    """
    resolved = [Path(p).resolve() for p in paths]
    distinct = list(dict.fromkeys(resolved))
    rev = {r: r.with_suffix("").parts[1:][::-1] for r in distinct}  # stem, parent, ...
    labels = []
    for r in resolved:
        parts, depth = rev[r], 1
        while depth < len(parts) and any(rev[o][:depth] == parts[:depth]
                                         for o in distinct if o != r):
            depth += 1
        labels.append("-".join(reversed(parts[:depth])))
    used: set[str] = set()
    for i, lab in enumerate(labels):
        n, new = 1, lab
        while new in used:
            n += 1
            new = f"{lab}-{n}"
        used.add(new)
        labels[i] = new
    return labels


def _converge(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .analysis import ConvergenceReport, _fmt_float, compare_solvers, load_scores

    if args.scores:
        given = [opt for opt, v in (("--rows", args.rows), ("--dim", args.dim),
                                    ("--seed", args.seed)) if v is not None]
        if given:
            raise UsageError(f"{PROG} converge: {given[0]} applies to built-in workloads, "
                             "not to --scores files (they are used whole)")
        for s in args.scores:
            if not Path(s).is_file():
                raise UsageError(f"{PROG} converge: --scores file not found: {s}")
        labels = _score_labels(args.scores)
        sources = []
        for s in args.scores:  # read and check every file before any work
            try:
                sources.append(load_scores(s)[1])
            except (ValueError, TypeError) as exc:  # the message starts with the file's path
                raise UsageError(f"{PROG} converge: --scores {exc}") from None
    else:
        labels = list(dict.fromkeys(args.workload or ["gaussian"]))  # each workload once
        if "all" in labels:
            labels = list(WORKLOADS)
        unknown = [w for w in labels if w not in WORKLOADS]
        if unknown:
            raise UsageError(f"{PROG} converge: unknown workload {unknown[0]!r}; choose from "
                             f"{', '.join(WORKLOADS)}")
        sources = labels
    if args.no_plot and args.out is None:
        raise UsageError(f"{PROG} converge: --no-plot only makes sense with --out DIR")
    if args.out is not None:
        _check_out_dir(args.out, "converge")

    seed = 0 if args.seed is None else args.seed
    total = len(sources) * len(set(args.alpha)) * len(set(args.solvers))  # repeats run once
    bar = Progress(total, stream=err, enabled=not args.quiet)
    t0 = time.perf_counter()
    reports = []
    try:
        for i, (label, s) in enumerate(zip(labels, sources)):
            try:
                reports.append(compare_solvers(
                    s, alpha=args.alpha, solvers=args.solvers, tol=args.tol, rows=args.rows,
                    dim=args.dim, seed=seed, max_iter=args.max_iter, label=label,
                    progress=bar.update))
            except (ValueError, TypeError) as exc:
                where = f"--scores {args.scores[i]}: " if args.scores else ""
                raise UsageError(f"{PROG} converge: {where}{exc}") from None
            if args.scores:
                reports[-1].meta["inputs"][0]["path"] = args.scores[i]
    finally:
        bar.close()
    report = ConvergenceReport.merge(reports)
    report.meta["seconds"] = round(time.perf_counter() - t0, 2)
    table = report.table()

    if not args.quiet:
        shapes = ", ".join(f"{i['label']} {i['rows']}x{i['dim']}" for i in report.meta["inputs"])
        seeded = "" if args.scores else f"seed {seed}; "
        print(f"Convergence of threshold solvers (float64, NumPy backend; error |tau_k - tau*| "
              f"vs exact sort; {seeded}{shapes})", file=out)
        print(table.to_text(), file=out)
        if "bisect" in report.solvers:
            for s in ("halley", "newton"):
                if s in report.solvers:
                    ratios = ", ".join(f"{report.speedup_text(s, 'bisect', tol=tl)} at tol "
                                       f"{_fmt_float(tl)}" for tl in report.tols)
                    print(f"median iterations to tol, bisect / {s} (all rows and alphas "
                          f"pooled): {ratios}", file=out)
        dropped = report.meta.get("dropped_rows", 0)
        if dropped:
            print(f"note: {dropped} all -inf row(s) dropped (no threshold)", file=out)

    if args.out is not None:
        d = args.out
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{PROG} converge: cannot create --out {d}: {exc}") from None
        written = report.to_csv(d)
        (d / "summary.md").write_text(table.to_markdown() + "\n")
        written.append(d / "summary.md")
        written.append(report.save_traces(d / "traces.npz"))
        written.append(report.to_json(d / "report.json"))
        if not args.no_plot:
            for w in report.workloads:
                written.append(d / f"convergence_{w}.png")
                report.plot(written[-1], workload=w)
        if not args.quiet:
            print(f"wrote {len(written)} files to {d}/: "
                  + ", ".join(p.name for p in written), file=out)
    if args.show:
        import matplotlib.pyplot as plt

        for w in report.workloads:
            report.plot(workload=w)
        plt.show()
    return 0


def _gpu_script() -> Path | None:
    """``benchmarks/gpu_rowwise.py`` of a source checkout (editable install), if present."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_rowwise.py"
    return script if script.is_file() else None


def _bench(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """CPU benchmark, then the GPU one when CUDA is there; 1 if nothing could run."""
    import importlib
    import subprocess

    def load(module: str, what: str):
        """Import ``module`` or say in one line why not (returns None then)."""
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            missing = isinstance(exc, ModuleNotFoundError) and exc.name and module.startswith(
                exc.name)
            if not missing:
                print(f"{PROG} bench: the {what} ({module}) failed to import: {exc}", file=err)
            return None

    if args.out is not None:
        _check_out_dir(args.out, "bench")
    fwd: list[str] = ["--quick"] if args.quick else []
    ran, rc = 0, 0
    if not args.gpu_only:
        cpu = load("sparsemap_tools.bench_cpu", "CPU benchmark")
        if cpu is None:
            print(f"{PROG} bench: the CPU benchmark (sparsemap_tools.bench_cpu) is not "
                  "available in this build", file=err)
        else:
            rc = max(rc, int(cpu.main(fwd + (["--out", str(args.out)] if args.out else [])) or 0))
            ran += 1
    if not args.cpu_only:
        try:
            import torch

            cuda = torch.cuda.is_available()
        except ImportError:
            cuda = None
        if not cuda:
            why = "torch is not installed" if cuda is None else "no CUDA device"
            print(f"{PROG} bench: {why}; GPU benchmark skipped", file=err)
        else:
            gpu_out = ["--out", str(args.out / "gpu")] if args.out else []
            gpu = load("sparsemap_tools.gpu.bench_rowwise", "GPU benchmark")
            script = _gpu_script()
            if gpu is not None:
                rc = max(rc, int(gpu.main(fwd + gpu_out) or 0))
                ran += 1
            elif script is not None:  # source checkout: run the benchmark script
                rc = max(rc, subprocess.call([sys.executable, str(script), *fwd, *gpu_out]))
                ran += 1
            else:
                print(f"{PROG} bench: no GPU benchmark in this build "
                      "(sparsemap_tools.gpu.bench_rowwise); skipped", file=err)
    return rc if ran else 1


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Entry point of ``sparsemap-tools``; returns the exit status (0 ok, 2 bad arguments).

    With no subcommand it prints the help and returns 0. A closed stdout (``| head``) ends the
    command quietly with 141 (128 + SIGPIPE).
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        except SystemExit as exc:  # --help / --version
            return int(exc.code or 0)
        if args.command is None:
            parser.print_help(out)
            return 0
        rc = (_converge if args.command == "converge" else _bench)(args, out, err)
        out.flush()  # a closed pipe fails here, not in the interpreter's exit flush
        return rc
    except UsageError as exc:
        print(str(exc).replace("\n", " "), file=err)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=err)
        return 130
    except BrokenPipeError:
        # The reader went away. Point stdout at /dev/null so the exit flush of what is still
        # buffered does not fail again (the recipe of Python's signal module documentation).
        if out is sys.stdout:
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
        return 141


__all__ = ["main", "build_parser", "Progress", "UsageError"]
