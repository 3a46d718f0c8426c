"""sparsemap-tools: exact and fast alpha-entmax and sparsemax.

>>> import numpy as np
>>> from sparsemap_tools import entmax
>>> p = entmax(np.array([2.0, 1.0, -1.0]), alpha=1.5)
>>> float(p.sum())
1.0

See README.md and docs/ for the solvers, backends, the convergence analyzer and the GPU kernels.
"""

from .analysis import ConvergenceReport, compare_solvers
from .api import Threshold, entmax, entmax15, sparsemax, threshold
from .losses import entmax_loss
from .solvers import SOLVERS, TauResult, solve_tau

__version__ = "0.1.0"

_ATTENTION = ("entmax_attention", "entmax_attention_varlen", "entmax_attention_reference")


def __getattr__(name: str):
    """Attention entry points load lazily (they import torch)."""
    if name in _ATTENTION:
        from . import attention

        return getattr(attention, name)
    raise AttributeError(f"module 'sparsemap_tools' has no attribute {name!r}")


__all__ = [
    "entmax",
    "sparsemax",
    "entmax15",
    "threshold",
    "entmax_loss",
    "Threshold",
    "TauResult",
    "solve_tau",
    "SOLVERS",
    "compare_solvers",
    "ConvergenceReport",
    *_ATTENTION,
    "__version__",
]
