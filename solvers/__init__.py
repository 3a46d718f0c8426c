"""CPU threshold solvers for alpha-entmax (installed as ``sparsemap_tools.solvers``).

Every solver is a pure function over a 2-D batch of *prepared* rows
``zs = (alpha - 1) * (x - max x)`` returning a :class:`TauResult`. See ``docs/solvers.md``.

==========  =======================================================  =========================
solver      method                                                   exact?
==========  =======================================================  =========================
``sort``    sorted breakpoints + closed form / safeguarded Newton    yes (every alpha)
``bisect``  bisection on ``[-1, -d^(1-alpha)]`` to bracket collapse  to ``tol`` / rounding
``newton``  l_q-Newton, monotone from ``-1`` for alpha <= 2,         certified for 1.5, 2
            safeguarded for alpha > 2; closed-form finish
``halley``  Halley-bisection hybrid with a progress safeguard;       certified for 1.5, 2
            closed-form finish
``auto``    ``newton`` (fewest passes across alpha, measured)         as ``newton``
==========  =======================================================  =========================
"""

from __future__ import annotations

import numpy as np

from . import numpy_backend
from .result import TauResult

SOLVERS = ("auto", "sort", "bisect", "newton", "halley")
BACKENDS = ("auto", "numpy", "numba")


def resolve_solver(solver: str, alpha: np.ndarray | float | None = None) -> str:
    """Map ``"auto"`` to a concrete solver (``newton``: see docs/solvers.md for the measurements)."""
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    return "newton" if solver == "auto" else solver


def solve_tau(
    zs: np.ndarray,
    alpha: np.ndarray | float,
    solver: str = "auto",
    *,
    backend: str = "numpy",
    tol: float | None = None,
    max_iter: int | None = None,
    record_history: bool = False,
) -> TauResult:
    """Solve for the threshold on prepared rows ``zs`` (rows x d, float64, row max 0).

    ``alpha`` is a float or a per-row array (> 1). ``record_history`` (NumPy backend only)
    stores the estimate of tau after every pass, for the convergence analyzer.
    """
    zs = np.ascontiguousarray(zs, dtype=np.float64)
    if zs.ndim != 2:
        raise ValueError(f"zs must be 2-D (rows, d), got shape {zs.shape}")
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (zs.shape[0],)).copy()
    if np.any(~(alpha > 1.0)):
        raise ValueError("alpha must be > 1 for threshold solvers (alpha = 1 is softmax)")
    solver = resolve_solver(solver)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "numba" or (backend == "auto" and not record_history):
        from . import numba_backend

        if record_history:
            raise ValueError("record_history is only supported by backend='numpy'")
        return numba_backend.solve_tau(zs, alpha, solver, tol=tol, max_iter=max_iter)
    if solver == "sort":
        return numpy_backend.sort_solve(zs, alpha, record_history=record_history)
    return numpy_backend.iterate(
        zs, alpha, solver, tol=tol, max_iter=max_iter, record_history=record_history
    )


__all__ = ["SOLVERS", "BACKENDS", "TauResult", "resolve_solver", "solve_tau"]
