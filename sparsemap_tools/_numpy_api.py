"""NumPy entry point: validate, move ``axis`` last, run a CPU backend on rows, restore."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from . import _validate as V
from .solvers import numpy_backend, resolve_solver
from .solvers.result import TauResult

RowsFn = Callable[..., tuple[np.ndarray, TauResult]]


def rows_backend(backend: str) -> RowsFn:
    """The ``entmax_rows`` of a CPU backend (``auto`` prefers Numba when importable)."""
    if backend in ("auto", "numba"):
        try:
            from .solvers import numba_backend
        except ImportError as exc:  # pragma: no cover - numba is a hard dependency
            if backend == "numba":
                raise ImportError("backend='numba' needs the numba package") from exc
            return numpy_backend.entmax_rows
        return numba_backend.entmax_rows
    if backend == "numpy":
        return numpy_backend.entmax_rows
    raise ValueError(
        f"backend={backend!r} needs a torch tensor; for NumPy arrays use 'auto', 'numpy' or 'numba'"
    )


def solve_rows(fn: RowsFn, x2d: np.ndarray, alpha_rows: np.ndarray, solver: str,
               tol: float | None, max_iter: int | None) -> tuple[np.ndarray, TauResult]:
    """Run a backend's ``entmax_rows`` with ``solver`` resolved.  ``"auto"`` (Newton) re-solves
    any row it leaves unconverged within the default pass cap with the exact ``sort`` solver
    (rows such as α = 50 with entries 10⁻³⁰ apart, where every breakpoint has an unbounded
    slope): ``auto`` always returns converged rows.  A caller's ``max_iter`` is left alone."""
    p2d, res = fn(x2d, alpha_rows, resolve_solver(solver), tol=tol, max_iter=max_iter)
    if solver != "auto" or max_iter is not None:
        return p2d, res
    redo = np.flatnonzero(~res.converged & np.isfinite(res.tau))
    if redo.size:
        p_s, r_s = fn(np.ascontiguousarray(x2d[redo]), np.ascontiguousarray(alpha_rows[redo]),
                      "sort", tol=tol, max_iter=None)
        p2d[redo] = p_s
        for name in ("tau", "support_size", "converged", "certified", "residual"):
            getattr(res, name)[redo] = getattr(r_s, name)
        res.iterations[redo] += r_s.iterations
    return p2d, res


def as_float_array(x: Any) -> tuple[np.ndarray, np.dtype]:
    """(compute array, output dtype). float64 stays, float32 stays, float16 -> float32 compute,
    integers and bool -> float64; anything else is a TypeError."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists etc.
        raise TypeError(f"x must be a numeric array, got {type(x).__name__}") from exc
    kind = arr.dtype.kind
    if kind == "f":
        out = arr.dtype
        comp = arr.astype(np.float32) if arr.dtype.itemsize < 4 else arr
        if arr.dtype.itemsize > 8:
            comp, out = arr.astype(np.float64), np.dtype(np.float64)
        return comp, out
    if kind in "iub":
        return arr.astype(np.float64), np.dtype(np.float64)
    raise TypeError(f"x must be a real numeric array, got dtype {arr.dtype}")


def run_rows(
    x: Any,
    alpha: Any,
    axis: int,
    solver: str,
    backend: str,
    tol: float | None,
    max_iter: int | None,
) -> tuple[np.ndarray, TauResult, np.ndarray, tuple[int, ...], np.ndarray]:
    """Shared body of ``entmax`` / ``threshold`` for NumPy input.

    Returns ``(p, result, x2d, batch_shape, alpha_rows)`` with ``p`` already in ``x``'s layout and
    dtype and the result fields per row (row-major over the batch shape).
    """
    arr, out_dtype = as_float_array(x)
    ax = V.check_axis(axis, arr.ndim)
    if arr.shape[ax] == 0:
        raise ValueError(f"axis {axis} of x has length 0: entmax needs at least one entry")
    V.check_solver(solver)
    V.check_backend(backend)
    tol, max_iter = V.check_tol(tol), V.check_max_iter(max_iter)
    alpha_rows = V.alpha_rows_numpy(alpha, arr.shape, ax)
    moved = np.moveaxis(arr, ax, -1)
    batch_shape = moved.shape[:-1]
    x2d = np.ascontiguousarray(moved.reshape(-1, arr.shape[ax]))
    fn = rows_backend(backend)
    p2d, res = solve_rows(fn, x2d, V.snap_to_softmax(alpha_rows), solver, tol, max_iter)
    warn_unconverged(res)
    p = np.moveaxis(p2d.reshape(moved.shape), -1, ax).astype(out_dtype, copy=False)
    return p, res, x2d, batch_shape, alpha_rows


def user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the caller's line: the first frame outside
    this package and torch (the NumPy and torch paths, autograd included, differ in depth)."""
    import os
    import sys

    pkg = os.path.dirname(os.path.abspath(__file__))
    skip = (pkg, os.path.dirname(pkg) + os.sep + "solvers", os.sep + "torch" + os.sep)
    frame, level = sys._getframe(1), 1
    while frame is not None and any(s in frame.f_code.co_filename for s in skip):
        frame, level = frame.f_back, level + 1
    return level


def warn_unconverged(res: TauResult) -> None:
    """A ``RuntimeWarning`` naming how many (non-NaN) rows stopped at ``max_iter``."""
    bad = ~res.converged & np.isfinite(res.tau)
    if np.any(bad):
        warnings.warn(
            f"{int(bad.sum())} row(s) did not converge within max_iter (solver={res.solver!r}); "
            "their output is normalised but may be inexact (see threshold(...).converged)",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )


def entmax(x: Any, alpha: Any, axis: int, solver: str, backend: str, tol, max_iter) -> np.ndarray:
    return run_rows(x, alpha, axis, solver, backend, tol, max_iter)[0]


def paper_tau(res: TauResult, x2d: np.ndarray, alpha_rows: np.ndarray) -> np.ndarray:
    """Threshold in the paper's convention ``p = [(alpha-1) x - tau]_+^(1/(alpha-1))``.

    Prepared-space ``tau`` plus ``(alpha-1) * max x``; for softmax rows (alpha = 1, and alpha
    within ``SOFTMAX_BELOW`` of 1, which the solvers compute as softmax) the log-sum-exp, so
    that ``p = exp(x - tau)``.
    """
    xf = x2d.astype(np.float64, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):
        rowmax = xf.max(axis=1)
        tau = res.tau + (alpha_rows - 1.0) * rowmax
        soft = V.snap_to_softmax(np.asarray(alpha_rows, np.float64)) == 1.0
        if np.any(soft):
            xs = xf[soft]
            m = rowmax[soft]
            lse = m + np.log(np.exp(xs - m[:, None]).sum(axis=1))
            tau[soft] = np.where(np.isfinite(m) & ~np.isnan(xs).any(axis=1), lse, np.nan)
    return tau
