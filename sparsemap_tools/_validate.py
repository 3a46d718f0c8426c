"""Argument checking shared by the NumPy and PyTorch entry points.

Every check raises ``ValueError`` or ``TypeError`` with the argument's name in the message, so
bad input never reaches a kernel.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

SOLVERS = ("auto", "sort", "bisect", "newton", "halley")
BACKENDS = ("auto", "numpy", "numba", "triton")


def is_torch_tensor(x: Any) -> bool:
    """True for a ``torch.Tensor`` without importing torch when it is not loaded."""
    mod = type(x).__module__
    if not (mod.startswith("torch") or mod == "torch.nn.parameter"):
        return False
    import torch

    return isinstance(x, torch.Tensor)


def check_solver(solver: Any) -> str:
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    return solver


def check_backend(backend: Any) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


class DimAxis:
    """An axis the user passed as ``dim=`` (so that messages name ``dim``).  A plain wrapper,
    not an ``int`` subclass: TorchDynamo (torch 2.11) cannot trace ``int.__new__``, which broke
    ``torch.compile(fullgraph=True)`` of any call with ``dim=``."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"DimAxis({self.value!r})"

    def __str__(self) -> str:  # (messages print the number the user gave)
        return str(self.value)


def check_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    """Normalise ``axis`` to ``0 <= axis < ndim``."""
    if isinstance(axis, DimAxis):
        name = "dim"
        axis = axis.value
    if isinstance(axis, bool) or not isinstance(axis, (numbers.Integral,)):
        raise TypeError(f"{name} must be an int, got {type(axis).__name__}")
    if ndim == 0:
        raise ValueError("x must have at least one dimension (got a 0-d input)")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for x with {ndim} dimension(s)")
    return axis % ndim


def check_tol(tol: Any) -> float | None:
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a real number or None, got {type(tol).__name__}")
    tol = float(tol)
    if not (tol >= 0.0 and np.isfinite(tol)):
        raise ValueError(f"tol must be finite and >= 0, got {tol}")
    return tol


def check_max_iter(max_iter: Any) -> int | None:
    if max_iter is None:
        return None
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral):
        raise TypeError(f"max_iter must be an int or None, got {type(max_iter).__name__}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    return int(max_iter)


def resolve_axis(axis: Any, dim: Any) -> Any:
    """``dim`` is accepted as the PyTorch-style alias of ``axis`` (not both)."""
    if dim is None:
        return axis
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if axis != -1 and axis != dim:
        raise ValueError(f"pass either axis or dim, not both (axis={axis!r}, dim={dim!r})")
    return DimAxis(dim)


def check_alpha_scalar(alpha: float) -> None:
    """The scalar case of :func:`check_alpha_values` without NumPy (hot path of every call;
    comparisons only, so that TorchDynamo can trace it with a symbolic float)."""
    if not -math.inf < alpha < math.inf:  # False for NaN and ±inf
        raise ValueError("alpha must be finite (got NaN or inf)")
    if alpha < 1.0:
        raise ValueError(
            f"alpha must be >= 1 (alpha = 1 is softmax, alpha = 2 sparsemax); got min {alpha}"
        )


def check_alpha_values(alpha: np.ndarray) -> None:
    """alpha must be finite and >= 1."""
    if alpha.size and not np.all(np.isfinite(alpha)):
        raise ValueError("alpha must be finite (got NaN or inf)")
    if alpha.size and np.any(alpha < 1.0):
        raise ValueError(
            f"alpha must be >= 1 (alpha = 1 is softmax, alpha = 2 sparsemax); got min "
            f"{float(np.min(alpha))}"
        )


def alpha_shape_for_rows(alpha_shape: tuple[int, ...], x_shape: tuple[int, ...], axis: int) -> None:
    """alpha must broadcast to x with size 1 along ``axis`` (one value per row)."""
    target = list(x_shape)
    target[axis] = 1
    nd = len(x_shape)
    if len(alpha_shape) > nd:
        raise ValueError(
            f"alpha with shape {tuple(alpha_shape)} has more dimensions than x {tuple(x_shape)}"
        )
    padded = (1,) * (nd - len(alpha_shape)) + tuple(alpha_shape)
    for i, (a, t) in enumerate(zip(padded, target)):
        if i == axis and a != 1:
            raise ValueError(
                f"alpha must have size 1 along axis {axis} (one alpha per row); got alpha shape "
                f"{tuple(alpha_shape)} for x shape {tuple(x_shape)}"
            )
        if a != 1 and a != t:
            raise ValueError(
                f"alpha with shape {tuple(alpha_shape)} does not broadcast to x shape "
                f"{tuple(x_shape)} with size 1 along axis {axis}"
            )


def alpha_rows_numpy(alpha: Any, x_shape: tuple[int, ...], axis: int) -> np.ndarray:
    """alpha (float or array) -> (rows,) float64 in the row order of ``moveaxis(x, axis, -1)``."""
    if isinstance(alpha, bool):
        raise TypeError("alpha must be a real number or an array of them, got bool")
    a = np.asarray(alpha)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"alpha must be a real number or a numeric array, got dtype {a.dtype}")
    a = a.astype(np.float64)
    check_alpha_values(a)
    if a.ndim == 0:
        rows = int(np.prod(x_shape)) // max(x_shape[axis], 1) if x_shape[axis] else 0
        return np.full(rows, float(a))
    alpha_shape_for_rows(a.shape, x_shape, axis)
    target = list(x_shape)
    target[axis] = 1
    full = np.broadcast_to(a.reshape((1,) * (len(x_shape) - a.ndim) + a.shape), target)
    return np.ascontiguousarray(np.moveaxis(full, axis, -1)).reshape(-1)


#: Below this distance to 1, alpha is treated as 1 (softmax) by the CPU paths: the q-th power
#: amplifies rounding by q = 1/(alpha-1) (error ~ eps/(alpha-1)) while alpha-entmax differs from
#: softmax by O(alpha-1); the two meet near 1e-8 in float64 (see docs/solvers.md).
SOFTMAX_BELOW = 1e-9


def snap_to_softmax(alpha_rows: np.ndarray) -> np.ndarray:
    """alpha with ``alpha - 1 < SOFTMAX_BELOW`` replaced by exactly 1."""
    return np.where(alpha_rows - 1.0 < SOFTMAX_BELOW, 1.0, alpha_rows)
