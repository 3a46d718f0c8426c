"""``benchmarks/sass_loops.py``: the loop finder on a hand-written listing, and one real kernel
compiled for sm_90 and disassembled (no GPU needed; slow-ish: one compile)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import sass_loops as S  # noqa: E402

_LISTING = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
        /*0010*/                   FADD R2, R2, R3 ;
        /*0020*/               @P0 FMNMX R4, R4, R2, !PT ;
.L_x_1:
        /*0030*/                   FADD R2, R2, R5 ;
        /*0040*/               @!P1 BRA `(.L_x_1) ;
        /*0050*/                   ISETP.GE.AND P0, PT, R6, R7, PT ;
        /*0060*/               @P0 BRA `(.L_x_0) ;
        /*0070*/                   BRA `(.L_x_2) ;
.L_x_2:
        /*0080*/                   EXIT ;
"""


def test_loops_are_the_backward_branches():
    found = {(a, b): ops for a, b, ops in S.loops(_LISTING)}
    assert set(found) == {(0x30, 0x40), (0x10, 0x60)}          # the forward BRA is no loop
    assert found[(0x30, 0x40)] == ["FADD", "BRA"]
    assert found[(0x10, 0x60)] == ["FADD", "FMNMX", "FADD", "BRA", "ISETP", "BRA"]  # predicates dropped


def test_a_compiled_kernel_has_its_loop(tmp_path):
    """The script on a real kernel, in a subprocess without the interpreter (which this test
    session switches on before triton is imported: ``conftest.py``)."""
    pytest.importorskip("triton")
    pytest.importorskip("torch")
    if not Path(S._tool("nvdisasm")).exists():
        pytest.skip("Triton's bundled nvdisasm is missing")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    script = Path(S.__file__)
    out = subprocess.run([sys.executable, str(script), "rowwise stream mode 1 prefetch 0"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("rowwise stream mode 1 prefetch 0: ") and "registers" in lines[0], lines
    counts = [int(ln.split(":")[1].split()[0]) for ln in lines[1:] if ln.strip().startswith("loop ")]
    assert counts and all(c > 0 for c in counts), lines
