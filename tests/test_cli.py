"""The ``sparsemap-tools`` command line, in-process (``main([...])``) and as a subprocess."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import types
import warnings

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


# ---- fuzzing regressions ---------------------------------------------------------------------
@pytest.mark.parametrize("extra", [
    ["--workload", "gaussian-x10", "--alpha", "1.5", "2"],  # newton/halley median 0 -> no ratio
    ["--alpha", "1.5", "--max-iter", "2"],  # bisect fails every row
])
def test_speedup_line_is_never_nan(extra):
    rc, out, err = run(["converge", "--rows", "30", "--dim", "64", *extra])
    assert rc == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("median iterations to tol")]
    assert len(lines) == 2  # halley and newton
    for ln in lines:
        assert "nan" not in ln.lower()
        assert ln.count("n/a (") == 2  # one per tolerance, each with its reason
    reason = "median is 0 iterations" if "gaussian-x10" in extra else "bisect failed on every row"
    assert reason in out


def test_scores_with_the_same_stem_are_all_kept(tmp_path):
    rng = np.random.default_rng(0)
    for sub, rows in (("d1", 3), ("d2", 5)):
        (tmp_path / sub).mkdir()
        np.save(tmp_path / sub / "s.npy", rng.standard_normal((rows, 16)))
    out_dir = tmp_path / "rep"
    rc, out, err = run(["converge", "--scores", str(tmp_path / "d1" / "s.npy"),
                        str(tmp_path / "d2" / "s.npy"), "--alpha", "2", "--solvers", "newton",
                        "sort", "--out", str(out_dir)])
    assert rc == 0, err
    assert "d1-s 3x16, d2-s 5x16" in out
    npz = np.load(out_dir / "traces.npz")
    assert npz["d1-s/alpha=2/newton/error"].shape[0] == 3
    assert npz["d2-s/alpha=2/newton/error"].shape[0] == 5
    assert (out_dir / "convergence_d1-s.png").exists()
    assert (out_dir / "convergence_d2-s.png").exists()
    assert (out_dir / "summary.md").read_text().count("| d1-s |") == 2
    assert (out_dir / "summary.md").read_text().count("| d2-s |") == 2


def test_score_labels_are_distinct(tmp_path):
    from sparsemap_tools.cli import _score_labels

    a, b = tmp_path / "x" / "d" / "s.npy", tmp_path / "y" / "d" / "s.npy"
    assert _score_labels([str(a), str(b)]) == ["x-d-s", "y-d-s"]
    assert _score_labels([str(a), str(tmp_path / "t.npy")]) == ["s", "t"]
    assert _score_labels([str(a), str(a)]) == ["s", "s-2"]  # the same file twice


def test_close_alphas_and_tols_keep_distinct_labels(tmp_path):
    rc, out, err = run(["converge", "--rows", "4", "--dim", "16", "--solvers", "newton",
                        "--alpha", "1.0000000001", "1.000001", "--tol", "1.5e-7", "1.4e-7",
                        "--out", str(tmp_path), "--no-plot"])
    assert rc == 0, err
    assert "iters to 1.5e-07" in out and "iters to 1.4e-07" in out
    assert "1.0000000001  newton" in out and "1.000001  newton" in out
    npz = np.load(tmp_path / "traces.npz")
    for a in ("1.0000000001", "1.000001"):
        for tl in ("1.5e-07", "1.4e-07"):
            assert npz[f"gaussian/alpha={a}/newton/iters_to_{tl}"].shape == (4,)
    head = (tmp_path / "rows.csv").read_text().splitlines()[0]
    assert head.endswith("iters_to_1.5e-07,iters_to_1.4e-07")
    md = (tmp_path / "summary.md").read_text()
    assert "| 1.0000000001 |" in md and "| 1.000001 |" in md


def _bad_npy(path, kind):
    if kind == "structured":
        np.save(path, np.zeros(3, dtype=[("a", "f8"), ("b", "i4")]))
    elif kind == "complex":
        np.save(path, np.array([[1 + 2j, 3.0]]))
    elif kind == "datetime":
        np.save(path, np.array([["2020-01-01", "2021-01-01"]], dtype="datetime64[D]"))
    elif kind == "strings":
        np.save(path, np.array([["a", "b"]]))
    elif kind == "object":
        np.save(path, np.array([[1, 2]], dtype=object), allow_pickle=True)
    elif kind == "npz":
        with open(path, "wb") as fh:
            np.savez(fh, a=np.zeros((2, 3)))
    else:
        path.write_text("hello")


@pytest.mark.parametrize("kind, why", [
    ("structured", "real numeric array"), ("complex", "got dtype complex128"),
    ("datetime", "got dtype datetime64"), ("strings", "got dtype <U1"),
    ("object", "Python objects"), ("npz", ".npz archive"), ("text", "not a .npy file"),
])
def test_bad_scores_dtype_is_one_line(tmp_path, kind, why):
    path = tmp_path / f"{kind}.npy"
    _bad_npy(path, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no ComplexWarning: complex data is rejected
        rc, _, err = run(["converge", "--scores", str(path), "--alpha", "2"])
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"--scores {path}: " in err and why in err


def test_broken_pipe_exits_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "sparsemap_tools", "converge", "--rows", "5",
                             "--dim", "16", "--alpha", "1.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line is written (like `| head`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == ""


def test_broken_pipe_in_process():
    class Closed(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

    err = io.StringIO()
    assert main(["converge", "--rows", "3", "--dim", "8", "--alpha", "2"], stdout=Closed(),
                stderr=err) == 141
    assert err.getvalue() == ""


@pytest.mark.parametrize("sub", ["", "sub"])
def test_bench_out_is_checked_before_running(monkeypatch, tmp_path, sub):
    calls = []
    fake = types.ModuleType("sparsemap_tools.bench_cpu")
    fake.main = lambda argv=None: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "sparsemap_tools.bench_cpu", fake)
    (tmp_path / "f").write_text("")
    rc, _, err = run(["bench", "--quick", "--cpu-only", "--out", str(tmp_path / "f" / sub)])
    assert rc == 2 and calls == []  # nothing ran
    assert len(err.strip().splitlines()) == 1 and "is a file, not a directory" in err


def test_converge_out_is_checked_before_running(tmp_path):
    (tmp_path / "f").write_text("")
    rc, out, err = run(TINY + ["--out", str(tmp_path / "f")])
    assert rc == 2 and out == "" and "--out" in err and "not a directory" in err


@pytest.mark.parametrize("opt", [["--rows", "5"], ["-n", "5"], ["--dim", "16"], ["-d", "16"],
                                 ["--seed", "3"], ["--seed", "0"]])
def test_workload_options_rejected_with_scores(tmp_path, opt):
    np.save(tmp_path / "good.npy", np.random.default_rng(0).standard_normal((4, 8)))
    rc, out, err = run(["converge", "--scores", str(tmp_path / "good.npy"), *opt])
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    name = {"-n": "--rows", "-d": "--dim"}.get(opt[0], opt[0])
    assert f"{name} applies to built-in workloads, not to --scores" in err


def test_scores_header_has_no_seed(tmp_path):
    np.save(tmp_path / "good.npy", np.random.default_rng(0).standard_normal((4, 8)))
    rc, out, err = run(["converge", "--scores", str(tmp_path / "good.npy"), "--alpha", "2"])
    assert rc == 0, err
    assert "seed" not in out.splitlines()[0] and "good 4x8" in out
