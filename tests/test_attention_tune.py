"""The tile tuner's choice (``benchmarks/gpu_attention_tune.py``), on recorded-style timings: no
GPU needed.  The choice logic once picked the output kernel's warps from its inference run
alone, which at D = 256 chose a variant whose run with O2 (under grad) was 4× slower."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_attention_tune as T  # noqa: E402


def _kind(scan, solve, out_inf, out_grad, bwd, err=0.0):
    return dict(scan=scan, solve=solve, output=out_inf + out_grad, output_inf=out_inf,
                bwd=bwd, err=err)


def _res(**kw):
    return {kd: _kind(**kw) for kd in T.KINDS}


def test_choose_scores_the_output_kernel_with_and_without_o2():
    per = {
        (4, 2): _res(scan=3.2, solve=4.9, out_inf=6.0, out_grad=40.0, bwd=30.0),
        (8, 2): _res(scan=3.7, solve=5.6, out_inf=7.1, out_grad=8.0, bwd=34.0),
    }
    choice, est = T.choose(per)
    assert choice["scan"] == (4, 2) and choice["solve"] == (4, 2)
    assert choice["output"] == (8, 2)           # 7.1 + 8.0 beats 6.0 + 40.0
    assert choice["dkdv"] == choice["dq"] == (4, 2)
    want = sum(2 * 3.2 + 2 * 4.9 + (7.1 + 8.0) + 30.0 for _ in T.KINDS)
    assert est == pytest.approx(want)


def test_choose_skips_failed_or_wrong_variants():
    per = {
        (4, 2): _res(scan=1.0, solve=1.0, out_inf=1.0, out_grad=1.0, bwd=1.0, err=0.5),  # wrong
        (4, 3): {kd: dict(error="OutOfResources") for kd in T.KINDS},                      # no launch
        (8, 2): _res(scan=2.0, solve=2.0, out_inf=2.0, out_grad=2.0, bwd=2.0),
    }
    choice, _ = T.choose(per)
    assert set(choice.values()) == {(8, 2)}
    assert T.choose({k: v for k, v in per.items() if k != (8, 2)}) is None


def test_spec_is_a_valid_tile_override():
    import sparsemap_tools.gpu.attention as ga

    spec = T.spec(128, 64, {"scan": (8, 3), "dq": (4, 2)})
    text = ",".join(f"{k}={v}" for k, v in spec.items())
    assert ga._parse_tiles(text) == spec
