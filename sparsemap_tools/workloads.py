"""Built-in score workloads for the convergence analyzer, generated from a seed (no downloads).

Every generator returns raw scores ``x`` of shape ``(rows, dim)`` in float64 (the analyzer
prepares ``zs = (alpha - 1) * (x - max x)`` itself). The same ``(name, rows, dim, seed)`` always
gives the same array, and different workloads draw from independent streams.

==================  ============================================================================
name                what the rows look like
==================  ============================================================================
``gaussian``        i.i.d. N(0, 1) scores (temperature 1x)
``gaussian-x0.1``   0.1 * N(0, 1): flat rows, large supports
``gaussian-x10``    10 * N(0, 1): peaked rows, supports of 1-2
``student-t``       Student-t with 3 degrees of freedom (heavy tails)
``attention``       q.k / sqrt(64) for random queries/keys, plus 1-4 strongly matching keys per row
``ties``            scores on a coarse grid (many exact ties), 10 % of rows all equal
``masked``          N(0, 1) with -inf masks: half causal (row i sees a growing prefix), half random
``long``            N(0, 1) rows of length 100 000 (default 8 rows)
==================  ============================================================================
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

Generator = Callable[[np.random.Generator, int, int], np.ndarray]


@dataclass(frozen=True)
class Workload:
    """A named score generator with its default shape."""

    name: str
    description: str
    generate: Generator
    rows: int = 500
    dim: int = 1024


def _gaussian(scale: float) -> Generator:
    def gen(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
        return scale * rng.standard_normal((rows, dim))

    return gen


def _student_t(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    return rng.standard_t(3.0, size=(rows, dim))


def _attention(rng: np.random.Generator, rows: int, dim: int, head_dim: int = 64) -> np.ndarray:
    """One attention head: ``rows`` queries against ``dim`` shared keys, scaled by sqrt(head_dim).

    Each row also gets 1-4 "matching" keys: key j is given a component ``s * q`` (s in [0.5, 1]),
    which adds ``s * |q|^2 / sqrt(head_dim)`` (about 4-8) to that score.
    """
    q = rng.standard_normal((rows, head_dim))
    k = rng.standard_normal((dim, head_dim))
    x = q @ k.T / np.sqrt(head_dim)
    n_match = rng.integers(1, 5, size=rows)
    qq = np.einsum("ij,ij->i", q, q) / np.sqrt(head_dim)
    for r in range(rows):
        cols = rng.choice(dim, size=min(int(n_match[r]), dim), replace=False)
        x[r, cols] += rng.uniform(0.5, 1.0, size=cols.size) * qq[r]
    return x


def _ties(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """Scores on the grid {0, 0.5, 1, 1.5} (exact ties, including at the maximum); 10 % constant."""
    x = 0.5 * rng.integers(0, 4, size=(rows, dim)).astype(np.float64)
    const = rng.random(rows) < 0.1
    x[const] = rng.standard_normal(int(const.sum()))[:, None]
    return x


def _masked(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """Half the rows causal (row r sees the first ceil((r+1) dim / half) entries), half random masks.

    Every row keeps at least one finite entry (an all -inf row has no threshold).
    """
    x = rng.standard_normal((rows, dim))
    half = rows // 2
    for r in range(half):
        keep = max(1, int(np.ceil((r + 1) * dim / max(half, 1))))
        x[r, keep:] = -np.inf
    if rows > half:
        frac = rng.uniform(0.0, 0.95, size=(rows - half, 1))
        mask = rng.random((rows - half, dim)) < frac
        keep = rng.integers(0, dim, size=rows - half)
        mask[np.arange(rows - half), keep] = False
        x[half:][mask] = -np.inf
    return x


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("gaussian", "N(0,1) scores (temperature 1x)", _gaussian(1.0)),
        Workload("gaussian-x0.1", "0.1*N(0,1): flat rows, large supports", _gaussian(0.1)),
        Workload("gaussian-x10", "10*N(0,1): peaked rows, tiny supports", _gaussian(10.0)),
        Workload("student-t", "Student-t, 3 degrees of freedom (heavy tails)", _student_t),
        Workload("attention", "q.k/sqrt(64) with 1-4 strongly matching keys per row", _attention),
        Workload("ties", "grid-valued scores with exact ties; 10% all-equal rows", _ties),
        Workload("masked", "N(0,1) with -inf masks (causal prefix / random)", _masked),
        Workload("long", "N(0,1) rows of length 1e5", _gaussian(1.0), rows=8, dim=100_000),
    )
}


def workload_names() -> list[str]:
    """Names accepted by :func:`make_workload`."""
    return list(WORKLOADS)


def make_workload(
    name: str, rows: int | None = None, dim: int | None = None, seed: int = 0
) -> np.ndarray:
    """Generate workload ``name`` as a ``(rows, dim)`` float64 array (defaults per workload).

    Raises ``ValueError`` for an unknown name or a non-positive shape.
    """
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    w = WORKLOADS[name]
    rows = w.rows if rows is None else int(rows)
    dim = w.dim if dim is None else int(dim)
    if rows < 1 or dim < 1:
        raise ValueError(f"rows and dim must be >= 1, got rows={rows}, dim={dim}")
    # an independent, reproducible stream per (workload, seed)
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
    return np.ascontiguousarray(w.generate(rng, rows, dim), dtype=np.float64)


__all__ = ["Workload", "WORKLOADS", "workload_names", "make_workload"]
