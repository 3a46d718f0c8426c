"""CPU backends the tests parametrize over (``numba`` skipped only if it cannot be imported)."""

from __future__ import annotations

import importlib

import pytest

try:
    importlib.import_module("sparsemap_tools.solvers.numba_backend")
    HAS_NUMBA = True
except ImportError:
    HAS_NUMBA = False

BACKENDS = [
    "numpy",
    pytest.param("numba", marks=pytest.mark.skipif(not HAS_NUMBA, reason="numba backend not importable")),
]
