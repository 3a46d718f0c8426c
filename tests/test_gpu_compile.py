"""The Triton kernels compile for an H100 (sm_90) on a machine without a GPU.

The interpreter (``TRITON_INTERPRET=1``, how CI runs the kernels) executes their Python
semantics but not Triton's compiler: a loop-carried value that changes type, a layout the
backend rejects or an unsupported op only shows up when compiling.  ``_compile_sm90.py``
compiles every kernel ahead of time for ``cuda:90`` (no device needed) in the configurations the
launchers use, in a subprocess without the interpreter, so such an error fails CI instead of a
user's first call on a GPU.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
pytest.importorskip("torch")


def test_every_kernel_compiles_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # really compile, no cached binaries
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    script = Path(__file__).with_name("_compile_sm90.py")
    jobs = str(min(2, os.cpu_count() or 1))  # (CI: 2 cores)
    out = subprocess.run([sys.executable, str(script), "--jobs", jobs], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])
    compiled = [ln for ln in out.stdout.splitlines() if ln.startswith("compiled:")]
    total = re.search(r"all (\d+) kernels compiled for sm_90", out.stdout)
    assert total, out.stdout
    # every case of the list compiled, and the list still holds every kernel variant (64 since
    # the inline-PTX candidate stores)
    assert len(compiled) == int(total.group(1)) >= 64, out.stdout


def test_compare_digests_reports_changed_and_missing_kernels(tmp_path, capsys):
    """``--digest`` / ``--compare``: kernels whose SASS digest changed, or that only one file
    has, are listed, and only a changed one makes the comparison fail."""
    sys.path.insert(0, str(Path(__file__).parent))
    import _compile_sm90 as C

    base, new = tmp_path / "base.txt", tmp_path / "new.txt"
    base.write_text("scan\taaaa\nsolve\tbbbb\nold\tcccc\n")
    new.write_text("scan\taaaa\nsolve\tbbbb\nnew\tdddd\n")
    assert C.compare_digests(str(base), str(new)) == 0
    out = capsys.readouterr().out
    assert "only in" in out and ": old" in out and ": new" in out and "2 of 2" in out
    new.write_text("scan\taaaa\nsolve\teeee\n")
    assert C.compare_digests(str(base), str(new)) == 1
    assert "differs: solve" in capsys.readouterr().out
