"""The result record every threshold solver returns (the role of scipy's ``RootResults``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TauResult:
    """Per-row outcome of a threshold solve on prepared rows ``zs = (alpha-1)(x - max x)``.

    Attributes
    ----------
    tau : (rows,) float array
        Threshold in the prepared space: ``p = [zs - tau]_+^(1/(alpha-1))``. It lies in
        ``[-1, -d_eff^(1-alpha)]``. Add ``(alpha-1) * max(x)`` for the paper's convention.
    support_size : (rows,) int64
        ``|{i : zs_i > tau}|``.
    iterations : (rows,) int64
        Passes over the row the solver used (0 for the closed-form ``sort`` path).
    converged : (rows,) bool
        The stopping rule was met (always True for exact solvers).
    certified : (rows,) bool
        The answer is exact: the support was decided combinatorially or certified after a
        closed-form finish (only alpha in {1.5, 2} and ``sort``).
    residual : (rows,) float64
        ``f(tau) = sum_i [zs_i - tau]_+^q - 1``, evaluated in float64.
    solver : str
        Name of the solver that produced this result.
    history : (rows, K) float64 or None
        When requested: ``history[r, k]`` is the estimate of tau after ``k`` passes over row
        ``r`` (column 0 is the starting point); NaN after the row stopped.
    """

    tau: np.ndarray
    support_size: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    certified: np.ndarray
    residual: np.ndarray
    solver: str
    history: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.tau.shape[0])
