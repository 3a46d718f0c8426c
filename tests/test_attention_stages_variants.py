"""The stage benchmark's variants (``benchmarks/gpu_attention_stages.py``) switch the attention
module's experiment globals and put every one back for ``default``: a variant that leaked into
the next one would time the wrong kernel.  No GPU needed."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_attention_stages as S  # noqa: E402

import sparsemap_tools.gpu.attention as GA  # noqa: E402


def _state():
    return (GA._CAND_CAP, GA._CAND_BUDGET, GA._SCAN_TOP2, GA._SOLVE_DIAG, dict(GA._MAXNREG),
            dict(GA._TILES_ENV), GA._SOLVE_PERSIST, GA._NIT, GA._SWEEP_LIVE, GA._SWEEP_MAX_D,
            GA._SWEEP_CERT, GA._SWEEP_SKIP)


@pytest.mark.parametrize("name, want", [
    ("persist", dict(persist="1")),
    ("nit4", dict(nit=4)),
    ("sweepoff", dict(sweep=101)),
    ("sweepd128", dict(sweep_d=128)),
    ("nopersist4g", dict(persist="0", budget=2**32)),
    ("scantop2", dict(top2=True)),
    ("cap256", dict(cap=256, budget=2**32)),
    ("scantop2cap256", dict(top2=True, cap=256, budget=2**32)),
    ("persist168", dict(persist="1", maxnreg={"solve": 168})),
    ("prefix168", dict(diag=8, maxnreg={"solve": 168})),
    ("nocopy", dict(diag=1)),
    ("solve=0:output=168", dict(maxnreg={"solve": 0, "output": 168})),
    ("tiles/nw=8/scan.nw=8", dict(tiles={"nw": 8, "scan.nw": 8})),
    ("nocert", dict(cert=False)),
    ("noskip", dict(skip=False)),
    ("nocertnoskip", dict(cert=False, skip=False)),
    ("skip", dict(skip=True)),
    ("nocertskip", dict(cert=False, skip=True)),
])
def test_variant_sets_its_globals_and_default_restores(name, want):
    S.apply_variant("default")
    base = _state()
    try:
        S.apply_variant(name)
        cap, budget, top2, diag, maxnreg, tiles, persist, nit, sweep, sweep_d, cert, skip = _state()
        assert cert == want.get("cert", base[10])
        assert skip == want.get("skip", base[11])
        assert persist == want.get("persist", base[6])
        assert nit == want.get("nit", base[7])
        assert sweep == want.get("sweep", base[8])
        assert sweep_d == want.get("sweep_d", base[9])
        assert cap == want.get("cap", base[0])
        assert budget == want.get("budget", base[1])
        assert top2 == want.get("top2", base[2])
        assert diag == want.get("diag", 0)
        assert maxnreg == want.get("maxnreg", {})
        assert tiles == {**base[5], **want.get("tiles", {})}
        if "tiles" in want:
            assert GA._tiles(64, torch.bfloat16)["scan.nw"] == 8     # reaches the launches
    finally:
        S.apply_variant("default")
    assert _state() == base


def test_bad_tile_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="SPARSEMAP_ATTN_TILES"):
        S.apply_variant("tiles/warps=8")
    S.apply_variant("default")


def test_environment_settings_are_checked(monkeypatch):
    """The SPARSEMAP_ATTN_* settings (read when the module is imported, ``_env``): a value that
    does not parse is a ValueError naming the variable, for each kind of setting."""
    monkeypatch.setenv("SPARSEMAP_ATTN_X", "12")
    assert GA._env("SPARSEMAP_ATTN_X", "3") == 12
    assert GA._env("SPARSEMAP_ATTN_UNSET_X", "3") == 3
    for value, kind, want in (("1k", int, "an integer"), ("fast", float, "a number"),
                              ("true", bool, '"0" or "1"'), ("2", str, 'unset, "0" or "1"')):
        monkeypatch.setenv("SPARSEMAP_ATTN_X", value)
        with pytest.raises(ValueError, match=f"SPARSEMAP_ATTN_X must be {want}"):
            GA._env("SPARSEMAP_ATTN_X", "0", kind)
    monkeypatch.setenv("SPARSEMAP_ATTN_X", "0")
    assert GA._env("SPARSEMAP_ATTN_X", "1", bool) is False
    assert GA._env("SPARSEMAP_ATTN_X", "", str) == "0"
    assert GA._parse_maxnreg("solve=168,dq=0") == {"solve": 168, "dq": 0}
    for bad in ("solve", "solve=lots", "solv=128"):
        with pytest.raises(ValueError, match="SPARSEMAP_ATTN_MAXNREG"):
            GA._parse_maxnreg(bad)
