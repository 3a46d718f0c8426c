"""Packaging (issue 2, item 1): torch/triton are optional, nothing installs a top-level ``solvers``
or ``gpu`` module, and ``solvers/`` and ``gpu/`` install as ``sparsemap_tools.solvers`` /
``sparsemap_tools.gpu``. Checks run in fresh interpreters (subprocesses) so that the test
session's own imports (conftest imports torch) do not leak in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _py(code: str, cwd: str = "/tmp", env: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; it must print one JSON object on its last line."""
    e = dict(os.environ)
    e.pop("PYTHONPATH", None)
    e.pop("TRITON_INTERPRET", None)
    if env:
        e.update(env)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=e,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_import_does_not_import_torch_or_triton():
    out = _py(
        """
        import json, sys
        import numpy as np
        import sparsemap_tools
        from sparsemap_tools import entmax, threshold, entmax_loss
        after_import = sorted(m for m in ("torch", "triton") if m in sys.modules)
        p = entmax(np.array([[2.0, 1.0, -1.0]]), 1.5, backend="numpy")
        threshold(np.array([2.0, 1.0, -1.0]), 2.0, backend="numpy")
        entmax_loss(np.array([[2.0, 1.0, -1.0]]), np.array([0]), 1.5, backend="numpy")
        after_use = sorted(m for m in ("torch", "triton") if m in sys.modules)
        print(json.dumps(dict(after_import=after_import, after_use=after_use, s=float(p.sum()),
                              file=sparsemap_tools.__file__)))
        """
    )
    assert out["after_import"] == []
    assert out["after_use"] == []
    assert abs(out["s"] - 1.0) < 1e-15


def test_cpu_tensors_do_not_import_triton():
    """The torch path on CPU tensors (forward, backward, the torch.compile operators' module and
    the attention reference) does not import Triton: CPU users may not have it."""
    out = _py(
        """
        import json, sys
        import torch
        from sparsemap_tools import entmax, _ops
        from sparsemap_tools.attention import entmax_attention_reference
        x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
        (entmax(x, 1.5) * torch.arange(5.0, dtype=torch.float64)).sum().backward()
        q = torch.randn(1, 1, 4, 8)
        entmax_attention_reference(q, q, q, alpha=1.5)
        print(json.dumps(dict(triton="triton" in sys.modules, ops=_ops.OPS is not None,
                              g=float(x.grad.abs().sum()))))
        """
    )
    assert out["triton"] is False
    assert out["ops"] is True
    assert out["g"] > 0


def test_works_without_torch_installed():
    """Simulate a NumPy-only environment: importing torch or triton raises ImportError."""
    out = _py(
        """
        import json, sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "triton"):
                    raise ImportError(f"blocked {name}")
                return None
        sys.meta_path.insert(0, Block())
        import numpy as np
        import sparsemap_tools
        from sparsemap_tools import entmax, sparsemax, threshold, entmax_loss, solve_tau
        import sparsemap_tools.solvers
        x = np.array([[0.3, 2.0, -1.0, 1.9]])
        p = entmax(x, 1.5)
        q = sparsemax(x)
        t = threshold(x, 1.25)
        l = entmax_loss(x, np.array([1]), 2.0)
        print(json.dumps(dict(s=float(p.sum()), q=q.tolist(), n=int(t.support_size[0]),
                              l=float(l[0]))))
        """
    )
    assert abs(out["s"] - 1.0) < 1e-15
    assert out["q"][0] == pytest.approx([0.0, 0.55, 0.0, 0.45], abs=1e-15)
    assert out["n"] >= 2 and out["l"] >= 0


def test_no_top_level_solvers_or_gpu_from_installed_location():
    out = _py(
        """
        import json, importlib.util
        res = {n: importlib.util.find_spec(n) is None for n in ("solvers", "gpu")}
        import sparsemap_tools.solvers, sparsemap_tools.gpu
        import sparsemap_tools.solvers.numpy_backend
        res["solvers_pkg"] = sparsemap_tools.solvers.__name__
        res["gpu_pkg"] = sparsemap_tools.gpu.__name__
        res["solve_tau"] = hasattr(sparsemap_tools.solvers, "solve_tau")
        print(json.dumps(res))
        """,
        cwd="/tmp",
    )
    assert out["solvers"] is True, "a top-level 'solvers' module is importable"
    assert out["gpu"] is True, "a top-level 'gpu' module is importable"
    assert out["solvers_pkg"] == "sparsemap_tools.solvers"
    assert out["gpu_pkg"] == "sparsemap_tools.gpu"
    assert out["solve_tau"] is True


def test_subpackages_import_in_process():
    import sparsemap_tools
    import sparsemap_tools.gpu
    import sparsemap_tools.solvers
    from sparsemap_tools.solvers import numpy_backend

    assert sparsemap_tools.solvers.solve_tau is sparsemap_tools.solve_tau
    assert callable(numpy_backend.sort_solve) and callable(numpy_backend.iterate)
    assert sparsemap_tools.__version__
    for name in sparsemap_tools.__all__:
        assert hasattr(sparsemap_tools, name), name


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build a wheel from a copy of the tree (so the build leaves nothing in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for d in ("sparsemap_tools", "solvers", "gpu"):
        shutil.copytree(REPO / d, src / d, ignore=ignore)
    out = tmp_path_factory.mktemp("whl")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel offline here: {r.stderr[-500:]}")
    (whl,) = out.glob("*.whl")
    return whl


def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"sparsemap_tools", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    assert "sparsemap_tools/solvers/numpy_backend.py" in names
    assert "sparsemap_tools/gpu/__init__.py" in names
    meta = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    requires = [ln for ln in text.splitlines() if ln.startswith("Requires-Dist:")]
    hard = [ln for ln in requires if "extra ==" not in ln]
    assert not any("torch" in ln or "triton" in ln for ln in hard), hard
    assert not any(ln.split()[1].lower().startswith("entmax") for ln in hard), hard


def test_installed_wheel_has_no_top_level_modules(wheel, tmp_path):
    target = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = _py(
        """
        import json, sys, importlib.util
        sys.path.insert(0, %r)
        import sparsemap_tools, sparsemap_tools.solvers, sparsemap_tools.gpu
        import numpy as np
        p = sparsemap_tools.entmax(np.array([1.0, 0.0]), 2.0, backend="numpy")
        print(json.dumps(dict(solvers=importlib.util.find_spec("solvers") is None,
                              gpu=importlib.util.find_spec("gpu") is None,
                              file=sparsemap_tools.solvers.__file__, p=p.tolist())))
        """ % str(target)
    )
    assert out["solvers"] and out["gpu"]
    assert out["file"].startswith(str(target))
    assert out["p"] == [1.0, 0.0]
