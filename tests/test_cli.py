"""The ``sparsemap-tools`` command line, in-process (``main([...])``) and as a subprocess."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import types

import numpy as np
import pytest

from sparsemap_tools.cli import Progress, main

def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; asserts the signature."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">II", head[16:24])


TINY = ["converge", "--alpha", "1.5", "3", "--rows", "6", "--dim", "32", "--quiet"]
FILES = ["summary.csv", "summary.md", "rows.csv", "traces.npz", "report.json"]


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    rc = main(argv, stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def test_converge_in_process_writes_files(tmp_path):
    rc, out, err = run(TINY[:-1] + ["--workload", "gaussian", "masked", "--out", str(tmp_path)])
    assert rc == 0, err
    assert "iters to 1e-07" in out and "bisect / halley" in out
    for name in FILES + ["convergence_gaussian.png", "convergence_masked.png"]:
        assert (tmp_path / name).stat().st_size > 0, name
    # 2 alphas -> 3 panels in one row of 5x4-inch panels at 100 dpi
    assert png_size(tmp_path / "convergence_gaussian.png") == (1500, 400)
    md = (tmp_path / "summary.md").read_text().splitlines()
    assert len(md) == 2 + 2 * 2 * 4  # header + rule + workloads x alphas x solvers
    npz = np.load(tmp_path / "traces.npz")
    assert npz["masked/alpha=3/bisect/error"].shape[0] == 6


def test_converge_scores_file_and_no_plot(tmp_path):
    np.save(tmp_path / "s.npy", np.random.default_rng(0).standard_normal((3, 2, 16)))
    out_dir = tmp_path / "rep"
    rc, out, err = run(["converge", "--scores", str(tmp_path / "s.npy"), "--alpha", "2",
                        "--solvers", "newton", "sort", "--tol", "1e-9", "--no-plot",
                        "--out", str(out_dir)])
    assert rc == 0, err
    assert "s 6x16" in out
    assert not list(out_dir.glob("*.png"))
    assert (out_dir / "summary.csv").read_text().count("\n") == 1 + 2


def test_converge_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sparsemap_tools", *TINY, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in FILES + ["convergence_gaussian.png"]:
        assert (tmp_path / name).exists(), name
    assert png_size(tmp_path / "convergence_gaussian.png") == (1500, 400)


@pytest.mark.parametrize("argv", [
    ["converge", "--alpha", "1"],
    ["converge", "--alpha", "abc"],
    ["converge", "--workload", "nope"],
    ["converge", "--scores", "/definitely/missing.npy"],
    ["converge", "--rows", "0"],
    ["converge", "--tol", "-1e-7"],
    ["converge", "--solvers", "magic"],
    ["converge", "--seed", "-3"],
    ["converge", "--no-plot"],
    ["converge", "--bogus"],
    ["frobnicate"],
])
def test_bad_arguments_exit_2_one_line(argv):
    rc, out, err = run(argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsemap-tools"), err
    assert "Traceback" not in err


def test_bad_scores_content_is_one_line(tmp_path):
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]]))
    rc, _, err = run(["converge", "--scores", str(tmp_path / "nan.npy")])
    assert rc == 2 and "NaN" in err and len(err.strip().splitlines()) == 1


def test_bad_arguments_subprocess():
    proc = subprocess.run([sys.executable, "-m", "sparsemap_tools", "converge", "--alpha", "0.5"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "alpha must be > 1" in proc.stderr and "Traceback" not in proc.stderr


def test_no_subcommand_prints_help():
    rc, out, _ = run([])
    assert rc == 0 and "converge" in out and "bench" in out


def test_help_exits_zero(capsys):
    assert main(["converge", "--help"]) == 0
    text = capsys.readouterr().out
    for opt in ("--workload", "--scores", "--alpha", "--solvers", "--tol", "--rows", "--dim",
                "--seed", "--max-iter", "--out", "--no-plot", "--quiet"):
        assert opt in text


def test_progress_bar_draws_after_delay():
    buf = io.StringIO()
    bar = Progress(4, stream=buf, delay=0.0, force=True)
    for i in range(4):
        bar.update(f"step {i}")
    bar.close()
    text = buf.getvalue()
    assert "[" in text and "4/4" in text and text.endswith("\r")
    quiet = io.StringIO()
    Progress(4, stream=quiet, delay=0.0).update()  # not a terminal, not forced: silent
    assert quiet.getvalue() == ""


def test_bench_forwards_to_cpu_benchmark(monkeypatch, tmp_path):
    calls = []
    fake = types.ModuleType("sparsemap_tools.bench_cpu")
    fake.main = lambda argv=None: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "sparsemap_tools.bench_cpu", fake)
    rc, _, err = run(["bench", "--quick", "--out", str(tmp_path), "--cpu-only"])
    assert rc == 0, err
    assert calls == [["--quick", "--out", str(tmp_path)]]


def test_bench_missing_module_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "sparsemap_tools.bench_cpu", None)
    rc, _, err = run(["bench", "--cpu-only"])
    assert rc == 1  # nothing could run
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bench_cpu_and_gpu_only_are_exclusive():
    rc, _, err = run(["bench", "--cpu-only", "--gpu-only"])
    assert rc == 2 and len(err.strip().splitlines()) == 1


def test_bench_forwards_to_gpu_benchmark_when_cuda(monkeypatch, tmp_path):
    calls = {}
    cpu = types.ModuleType("sparsemap_tools.bench_cpu")
    cpu.main = lambda argv=None: calls.setdefault("cpu", argv) and 0
    gpu = types.ModuleType("sparsemap_tools.gpu.bench_rowwise")
    gpu.main = lambda argv=None: calls.setdefault("gpu", argv) and 0
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_available=lambda: True)
    monkeypatch.setitem(sys.modules, "sparsemap_tools.bench_cpu", cpu)
    monkeypatch.setitem(sys.modules, "sparsemap_tools.gpu.bench_rowwise", gpu)
    monkeypatch.setitem(sys.modules, "torch", torch)
    rc, _, err = run(["bench", "--out", str(tmp_path)])
    assert rc == 0, err
    assert calls == {"cpu": ["--out", str(tmp_path)], "gpu": ["--out", str(tmp_path / "gpu")]}
    torch.cuda = types.SimpleNamespace(is_available=lambda: False)
    calls.clear()
    rc, _, err = run(["bench", "--quick"])
    assert rc == 0 and calls == {"cpu": ["--quick"]} and "no CUDA device" in err
