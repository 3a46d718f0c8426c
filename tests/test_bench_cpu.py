"""The CPU benchmark's outputs: CSV, Markdown and (with matplotlib) the PNG of the ratios."""
import importlib.util
import sys

import pytest

from sparsemap_tools import bench_cpu

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


def _rows():
    rows = []
    for shape in ("64x128", "8x4096"):
        for alpha in (1.5, 2.0):
            methods = ["torch.softmax", "numba/newton", "sparsemap_tools.entmax"]
            methods += ["entmax.entmax15"] if alpha == 1.5 else ["entmax.sparsemax"]
            methods += ["entmax.entmax_bisect"]
            for k, m in enumerate(methods):
                ratio = 1.0 if m == bench_cpu.BASELINE else 1.5 * (k + 1) ** 2
                rows.append(dict(shape=shape, alpha=alpha, method=m, ms=0.1 * ratio, ms_min=0.1,
                                 runs=3, ratio=ratio, max_err=1e-8, note=""))
    return rows


def test_merged_order_keeps_alpha_specific_methods_in_place():
    order = bench_cpu._merged_order(_rows(), "64x128")
    assert order == ["torch.softmax", "numba/newton", "sparsemap_tools.entmax", "entmax.entmax15",
                     "entmax.sparsemax", "entmax.entmax_bisect"]


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib missing")
def test_plot_results_writes_png(tmp_path):
    path = bench_cpu.plot_results(_rows(), tmp_path / "sub" / "bench_cpu.png")
    assert path is not None and path.exists()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_results_without_matplotlib_is_a_note(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert bench_cpu.plot_results(_rows(), tmp_path / "bench_cpu.png") is None
    assert not (tmp_path / "bench_cpu.png").exists()
    assert "matplotlib" in capsys.readouterr().out


def test_main_writes_csv_md_and_png(tmp_path):
    pytest.importorskip("numba")
    rc = bench_cpu.main(["--shapes", "8x64", "--alphas", "1.5", "--repeats", "1", "--no-numpy",
                         "--out", str(tmp_path)])
    assert rc == 0
    assert (tmp_path / "bench_cpu.csv").exists() and (tmp_path / "bench_cpu.md").exists()
    have_baseline = any(importlib.util.find_spec(m) is not None for m in ("torch", "scipy"))
    if HAVE_MPL and have_baseline:  # the ratios need torch.softmax or scipy's softmax
        assert (tmp_path / "bench_cpu.png").exists()
