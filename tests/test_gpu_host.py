"""The launchers' host-side integer helpers (``gpu/_host.py``) against their definitions."""
from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from sparsemap_tools.gpu._host import cdiv, next_pow2


@given(st.integers(0, 2**40), st.integers(1, 2**20))
def test_cdiv_is_the_ceiling(a, b):
    c = cdiv(a, b)
    assert c * b >= a and (c - 1) * b < a or (a == 0 and c == 0)
    assert c == -(-a // b) == math.ceil(Fraction(a, b))


@given(st.integers(-5, 2**40))
def test_next_pow2_is_the_smallest_power_at_or_above(n):
    p = next_pow2(n)
    assert p >= 1 and p & (p - 1) == 0
    assert p >= n and (p == 1 or p // 2 < n)
