"""``benchmarks/sim_alpha125_sweeps.py``: the float64 replay of the α = 1.25 solve's sweeps.
Its start points must keep the solver's invariants (the lower bound stays below the root, so the
candidates above it hold the support) and its table must come out whole.  No GPU needed."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import sim_alpha125_sweeps as S  # noqa: E402


def test_row_counts_keep_the_support_and_converge():
    rng = np.random.default_rng(3)
    keys = rng.standard_normal((3000, 64))
    for n in (70, 1000, 2999):
        z = 0.25 / 8 * (keys[:n] @ rng.standard_normal(64))
        zs = z - z.max()
        root = S.subset_root(zs, iters=60)
        F = (np.maximum(zs - root, 0) ** 4).sum()
        assert abs(F - 1) < 1e-9                             # the reference root is the root
        support = int((zs > root).sum())
        out = S.row_counts(z, n, [4, 16])
        assert set(out) == {"subset", "sums 4", "sums 16", "subset, cubic", "sums 4, cubic",
                            "sums 16, cubic"}
        for name, (sweeps, cand) in out.items():
            assert cand >= support, (name, cand, support)    # a lower bound: no key dropped
            assert 0 <= sweeps < 30, (name, sweeps)          # converged before the limit
        assert out["sums 16"][1] <= out["subset"][1]        # a tighter bound than the subset's


def test_main_prints_and_writes_the_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["sim", "--lengths", "256", "--blocks", "1", "--guess", "8",
                                      "--out", str(tmp_path)])
    S.main()
    text = capsys.readouterr().out
    rows = [ln for ln in text.splitlines() if ln.startswith("| 256 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["subset", "subset, cubic", "sums 8",
                                                      "sums 8, cubic"]
    assert (tmp_path / "sim_alpha125_sweeps.md").read_text().strip() == text.strip()
