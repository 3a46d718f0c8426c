"""Host-side launch arithmetic shared by the Triton launchers.

Plain Python on purpose: ``triton.cdiv`` and ``triton.next_power_of_2`` are constexpr-function
objects in recent Triton (3.9), and calling them from Python costs ~10 µs each, which added up
to a large part of a small row-wise launch's host time.
"""
from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """⌈a / b⌉ for non-negative a and positive b."""
    return -(-int(a) // int(b))


def next_pow2(n: int) -> int:
    """The smallest power of two ≥ n (1 for n ≤ 1)."""
    n = int(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
