"""``benchmarks/sim_rowwise_write_first.py``: the write-first certificate's replay must be the
certificate (a certified row's subset root is the row's root) and its subsets the kernel's
(each lane's largest entries).  No GPU needed."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import sim_rowwise_write_first as S  # noqa: E402

from sparsemap_tools import threshold  # noqa: E402


def test_lane_subsets_are_each_lanes_largest_entries():
    x = np.arange(10.0)[None, :]               # lanes of 4: {0, 4, 8}, {1, 5, 9}, {2, 6}, {3, 7}
    assert S.lane_subset(x, 4, False).tolist() == [[8.0, 9.0, 6.0, 7.0]]
    assert sorted(S.lane_subset(x, 4, True)[0].tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    # a tie in a lane counts twice (two entries of the row)
    assert S.lane_subset(np.array([[1.0, 0.0, 1.0, 0.0]]), 2, True)[0].tolist().count(1.0) == 2


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_certified_rows_have_the_subset_root(alpha):
    rng = np.random.default_rng(1)
    x = S.rows("randn", 40, 3000, rng)
    ok = S.certified(x, alpha, 64, False)
    ok2 = S.certified(x, alpha, 64, True)
    supp = S.support_size(x, alpha)
    assert 0 < ok.sum() < len(ok)               # 64 lanes: some rows certify, some do not
    assert (ok2 >= ok).all()                    # two per lane: a superset of the one-per-lane
    tau = threshold(x, alpha, solver="sort", backend="numpy").tau
    tau_g = threshold(S.lane_subset(x, 64, False), alpha, solver="sort", backend="numpy").tau
    assert (tau_g <= tau + 1e-12).all()         # a subset's root is a lower bound
    assert np.allclose(tau_g[ok], tau[ok], rtol=0, atol=1e-12)   # and the root where certified
    # not certified: the row has entries above τ_g that the subset lacks, f(τ_g) > f_sub(τ_g) = 0
    assert (tau_g[~ok] < tau[~ok] - 1e-9).all()
    assert (supp >= 1).all()
