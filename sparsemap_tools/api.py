r"""Public functions: :func:`entmax`, :func:`sparsemax`, :func:`entmax15`, :func:`threshold`,
:func:`entmax_loss`.

alpha-entmax (Peters, Niculae & Martins, ACL 2019) maps scores ``x`` to the probability vector

.. math:: p_i = [(\alpha-1) x_i - \tau]_+^{1/(\alpha-1)}, \qquad \tau \text{ such that } \sum_i p_i = 1.

``alpha = 1`` is softmax, ``alpha = 2`` sparsemax (Martins & Astudillo, ICML 2016). NumPy arrays
in give NumPy arrays out; PyTorch tensors give tensors with autograd (also w.r.t. a tensor
``alpha``). torch is imported only when a tensor is passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _numpy_api
from . import _validate as V
from .solvers import TauResult


@dataclass
class Threshold:
    """Per-row threshold report from :func:`threshold` (arrays shaped like ``x`` without ``axis``).

    ``tau`` follows the paper: ``p = [(alpha-1) x - tau]_+^(1/(alpha-1))`` (for alpha = 1 rows,
    the log-sum-exp, ``p = exp(x - tau)``). ``iterations`` counts passes over the row.
    ``certified`` marks answers proven exact (closed form on a certified support, or ``sort``).
    ``residual`` is ``sum p_unnormalised - 1`` at ``tau`` (float64).
    """

    tau: Any
    support_size: Any
    iterations: Any
    converged: Any
    certified: Any
    residual: Any
    solver: str


def entmax(
    x: Any,
    alpha: Any = 1.5,
    axis: int = -1,
    *,
    dim: int | None = None,
    solver: str = "auto",
    backend: str = "auto",
    tol: float | None = None,
    max_iter: int | None = None,
) -> Any:
    """alpha-entmax of ``x`` along ``axis`` (``dim`` is an alias for PyTorch users).

    Parameters
    ----------
    x : array_like or torch.Tensor
        Scores. float64 stays float64; float16/bfloat16 are computed in float32 and returned
        in their dtype; integers become float64. ``-inf`` entries get probability 0; a row that
        is all ``-inf`` or holds a NaN or ``+inf`` gives NaN (softmax's convention).
    alpha : float, array or tensor
        ``>= 1``. A scalar, or an array/tensor broadcastable to ``x`` with size 1 along
        ``axis`` (one alpha per row or per head). A tensor alpha that requires grad gets
        ``d loss / d alpha``.
    solver : {"auto", "sort", "bisect", "newton", "halley"}
        Threshold solver (see ``docs/solvers.md``). ``auto`` is ``newton``: exact (certified
        closed form) for alpha in {1.5, 2}, converged to rounding otherwise.
    backend : {"auto", "numpy", "numba", "triton"}
        ``auto``: Numba for NumPy arrays and CPU tensors, Triton for CUDA tensors.
    tol, max_iter : optional
        Absolute tolerance on tau (in the max-shifted space, where tau is in [-1, 0]) and an
        iteration budget. The defaults run to machine precision.
    """
    axis = V.resolve_axis(axis, dim)
    if V.is_torch_tensor(x):
        from . import _torch_api

        return _torch_api.entmax(x, alpha, axis, solver, backend, tol, max_iter)
    return _numpy_api.entmax(x, alpha, axis, solver, backend, tol, max_iter)


def sparsemax(x: Any, axis: int = -1, *, dim: int | None = None, solver: str = "auto",
              backend: str = "auto") -> Any:
    """Sparsemax = alpha-entmax with alpha = 2: the Euclidean projection onto the simplex."""
    return entmax(x, 2.0, axis, dim=dim, solver=solver, backend=backend)


def entmax15(x: Any, axis: int = -1, *, dim: int | None = None, solver: str = "auto",
             backend: str = "auto") -> Any:
    """1.5-entmax (exact: closed form on a certified support)."""
    return entmax(x, 1.5, axis, dim=dim, solver=solver, backend=backend)


def threshold(
    x: Any,
    alpha: Any = 1.5,
    axis: int = -1,
    *,
    dim: int | None = None,
    solver: str = "auto",
    backend: str = "auto",
    tol: float | None = None,
    max_iter: int | None = None,
) -> Threshold:
    """The threshold tau per row and how it was found (see :class:`Threshold`).

    Fields are NumPy arrays for NumPy input and tensors for tensor input.
    """
    axis = V.resolve_axis(axis, dim)
    if V.is_torch_tensor(x):
        import torch

        from . import _torch_api

        x2d, a_rows, res, batch = _torch_api.threshold(x, alpha, axis, solver, backend, tol, max_iter)
        a_np = a_rows.detach().cpu().to(torch.float64).numpy()
        if not isinstance(res, TauResult):  # Triton kernels: their own softmax-row threshold
            from .gpu.rowwise import softmax_below

            a_np = np.where(a_np - 1.0 <= softmax_below(x2d.dtype), 1.0, a_np)
        res = _torch_api.as_numpy_result(res)
        tau = _numpy_api.paper_tau(res, x2d.detach().cpu().to(torch.float64).numpy(), a_np)

        def t(a: np.ndarray) -> Any:
            return torch.from_numpy(np.ascontiguousarray(a).reshape(batch)).to(x.device)

        return Threshold(t(tau), t(res.support_size), t(res.iterations), t(res.converged),
                         t(res.certified), t(res.residual), res.solver)
    _, res, x2d, batch, a_rows = _numpy_api.run_rows(x, alpha, axis, solver, backend, tol, max_iter)
    tau = _numpy_api.paper_tau(res, x2d, a_rows)

    def r(a: np.ndarray) -> np.ndarray:
        return a.reshape(batch)

    return Threshold(r(tau), r(res.support_size), r(res.iterations), r(res.converged),
                     r(res.certified), r(res.residual), res.solver)
