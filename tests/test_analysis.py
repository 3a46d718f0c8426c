"""Convergence analyzer (sparsemap_tools.analysis) and built-in workloads.

The analyzer is checked against direct ``solve_tau`` calls on the same prepared rows: it must
report exactly what the solvers return, measured against the ``sort`` reference.
"""

from __future__ import annotations

import csv
import json
import re
import struct

import numpy as np
import pytest

from sparsemap_tools.analysis import (
    ConvergenceReport,
    compare_solvers,
    iterations_to_tol,
    load_scores,
)
from sparsemap_tools.solvers import numpy_backend, solve_tau
from sparsemap_tools.workloads import WORKLOADS, make_workload, workload_names

SOLVERS = ["bisect", "newton", "halley", "sort"]
TOLS = [1e-7, 1e-14]


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; asserts the signature."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def small_report() -> tuple[np.ndarray, ConvergenceReport]:
    x = make_workload("gaussian", rows=40, dim=256, seed=3)
    # chunk_rows=16: the analyzer solves in chunks; results must match one direct call
    return x, compare_solvers(x, alpha=[1.5, 3.0], solvers=SOLVERS, tol=TOLS, chunk_rows=16)


# ---- agreement with direct solver calls ------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.5, 3.0])
@pytest.mark.parametrize("solver", SOLVERS)
def test_traces_match_direct_solver_calls(small_report, alpha, solver):
    x, report = small_report
    zs = (alpha - 1.0) * (x - x.max(axis=1, keepdims=True))
    ref = solve_tau(zs, alpha, "sort", record_history=True)
    direct = solve_tau(zs, alpha, solver, record_history=True)
    t = report.trace(solver, alpha)
    np.testing.assert_array_equal(t.tau_star, ref.tau)
    np.testing.assert_array_equal(t.tau, direct.tau)
    np.testing.assert_array_equal(t.iterations, direct.iterations)
    np.testing.assert_array_equal(t.converged, direct.converged)
    np.testing.assert_array_equal(t.support_size, direct.support_size)
    np.testing.assert_array_equal(t.history, direct.history)  # NaN in the same places
    np.testing.assert_array_equal(t.final_error, np.abs(direct.tau - ref.tau))
    assert t.support_errors == int(np.sum(direct.support_size != ref.support_size))
    # error trace = |history - tau*| with the last value carried forward
    k_last = np.sum(~np.isnan(direct.history), axis=1) - 1
    rows = np.arange(x.shape[0])
    np.testing.assert_array_equal(t.error[rows, -1], np.abs(direct.history[rows, k_last] - ref.tau))
    # the residual trace ends at the solver's own residual
    np.testing.assert_allclose(t.residual[:, -1], np.abs(direct.residual), rtol=1e-9, atol=1e-13)


def test_iterations_to_tol_consistent_with_history(small_report):
    _, report = small_report
    for t in report.traces:
        for tol in TOLS:
            itt = t.iters_to_tol[tol]
            ok = itt >= 0
            if t.final_only:  # sort: its own pass count
                np.testing.assert_array_equal(itt[ok], t.iterations[ok])
                continue
            assert np.all(itt[ok] <= t.iterations[ok])
            rows = np.flatnonzero(ok)
            assert np.all(t.error[rows, itt[rows]] <= tol)
            before = itt[rows] - 1
            has = before >= 0
            assert np.all(t.error[rows[has], before[has]] > tol)


def test_iterations_to_tol_definition():
    err = np.array([
        [1.0, 1e-3, 1e-9, 1e-9],  # reaches 1e-6 at k=2
        [1e-9, 1.0, 1e-9, 1e-9],  # dips early, must *stay* below: k=2
        [1e-9, 1e-9, 1e-9, 1e-9],  # already there at the start: k=0
        [1.0, 1e-9, 1e-9, 1e-3],  # ends above tol: failure
    ])
    np.testing.assert_array_equal(iterations_to_tol(err, 1e-6), [2, 2, 0, -1])


def test_summary_table_numbers(small_report):
    _, report = small_report
    table = report.table()
    assert len(table.rows) == 2 * len(SOLVERS) * len(TOLS)
    for r in table.rows:
        t = report.trace(r["solver"], r["alpha"])
        itt = t.iters_to_tol[r["tol"]]
        ok = itt[itt >= 0]
        assert r["median_iters"] == pytest.approx(np.median(ok))
        assert r["max_iters"] == ok.max()
        assert r["failures"] == int(np.sum(itt < 0))
        assert r["max_final_error"] == pytest.approx(t.final_error.max())
    text = str(table)
    assert "bisect" in text and "iters to 1e-07" in text
    md = table.to_markdown().splitlines()
    assert md[0].startswith("| workload") and md[1].startswith("|---")
    assert len(md) == 2 + 2 * len(SOLVERS)


def test_gaussian_targets_float64():
    """Gaussian rows of 1024, float64, tol 1e-14: bisection ~45, newton/halley <= 4, sort 0."""
    r = compare_solvers("gaussian", alpha=[1.5, 2.0], tol=1e-14, rows=64, dim=1024, seed=0)
    med = {(row["solver"], row["alpha"]): row["median_iters"] for row in r.table().rows}
    for a in (1.5, 2.0):
        assert 44 <= med[("bisect", a)] <= 53
        assert med[("newton", a)] <= 4
        assert med[("halley", a)] <= 4
        assert med[("sort", a)] == 0
    assert all(row["failures"] == 0 for row in r.table().rows)
    assert r.speedup("halley", "bisect", tol=1e-14) > 7


# ---- inputs --------------------------------------------------------------------------------
def test_load_scores_array_npy_and_names(tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 3, 16))
    label, a = load_scores(x)
    assert label == "array" and a.shape == (6, 16)
    np.save(tmp_path / "mine.npy", x)
    label, b = load_scores(tmp_path / "mine.npy")
    assert label == "mine"
    np.testing.assert_array_equal(a, b)
    label, c = load_scores("attention", rows=5, dim=32)
    assert label == "attention" and c.shape == (5, 32)
    for bad in ("no-such-workload", str(tmp_path / "missing.npy"), np.array([[0.0, np.nan]]),
                np.array([[np.inf, 0.0]]), np.zeros((0, 4))):
        with pytest.raises(ValueError):
            load_scores(bad)


def test_all_minus_inf_rows_are_dropped():
    x = np.random.default_rng(1).standard_normal((5, 8))
    x[2] = -np.inf
    x[3, :6] = -np.inf
    r = compare_solvers(x, alpha=1.5, solvers=["newton", "sort"])
    assert r.meta["dropped_rows"] == 1
    assert r.trace("newton", 1.5).tau.shape == (4,)
    assert r.table().rows[0]["failures"] == 0


@pytest.mark.parametrize("kwargs", [
    dict(alpha=1.0), dict(alpha=[1.5, 0.9]), dict(tol=0.0), dict(solvers=["magic"]),
    dict(max_iter=0),
])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        compare_solvers(np.zeros((2, 4)) + np.arange(4), **kwargs)


def test_workloads_deterministic_and_well_formed():
    assert set(workload_names()) >= {"gaussian", "gaussian-x0.1", "gaussian-x10", "student-t",
                                     "attention", "ties", "masked", "long"}
    for name in workload_names():
        w = WORKLOADS[name]
        x = make_workload(name, rows=12, dim=64, seed=7)
        assert x.shape == (12, 64) and x.dtype == np.float64
        np.testing.assert_array_equal(x, make_workload(name, rows=12, dim=64, seed=7))
        assert not np.isnan(x).any() and not np.isposinf(x).any()
        assert np.isfinite(x).any(axis=1).all(), name
        assert w.rows >= 1 and w.dim >= 1
    assert not np.array_equal(make_workload("gaussian", 4, 8, seed=0),
                              make_workload("gaussian", 4, 8, seed=1))
    assert WORKLOADS["long"].dim == 100_000
    ties = make_workload("ties", rows=200, dim=32, seed=0)
    assert np.any(np.ptp(ties, axis=1) == 0)  # some all-equal rows
    masked = make_workload("masked", rows=20, dim=32, seed=0)
    assert np.isinf(masked).any()
    with pytest.raises(ValueError):
        make_workload("gaussian", rows=0)


# ---- outputs -------------------------------------------------------------------------------
def test_plot_png_size(small_report, tmp_path):
    _, report = small_report
    path = tmp_path / "conv.png"
    report.plot(path, dpi=50)
    nrows, ncols = ConvergenceReport.plot_grid(2)
    assert (nrows, ncols) == (1, 3)
    assert png_size(path) == (5 * ncols * 50, 4 * nrows * 50)
    with pytest.raises(ValueError):
        report.plot(tmp_path / "x.png", workload="nope")


def test_exports(small_report, tmp_path):
    _, report = small_report
    paths = report.to_csv(tmp_path)
    assert {p.name for p in paths} == {"summary.csv", "rows.csv"}
    with open(tmp_path / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    assert len(summary) == len(report.table().rows)
    with open(tmp_path / "rows.csv") as fh:
        assert sum(1 for _ in fh) == 1 + 40 * 2 * len(SOLVERS)
    doc = json.loads(report.to_json(tmp_path / "r.json").read_text())
    assert doc["meta"]["dtype"] == "float64" and doc["tols"] == sorted(TOLS, reverse=True)
    npz = np.load(report.save_traces(tmp_path / "t.npz"))
    t = report.trace("halley", 3.0)
    np.testing.assert_array_equal(npz["array/alpha=3/halley/error"], t.error)
    np.testing.assert_array_equal(npz["array/alpha=3/halley/iters_to_1e-14"], t.iters_to_tol[1e-14])


def test_merge_reports():
    a = compare_solvers("gaussian", alpha=2.0, solvers=["newton"], rows=4, dim=16)
    b = compare_solvers("ties", alpha=2.0, solvers=["newton"], rows=4, dim=16)
    m = ConvergenceReport.merge([a, b])
    assert m.workloads == ["gaussian", "ties"] and len(m.table().rows) == 2
    c = compare_solvers("ties", alpha=2.0, solvers=["newton"], rows=4, dim=16, tol=1e-3)
    with pytest.raises(ValueError):
        ConvergenceReport.merge([a, c])


def test_residual_helper_matches_backend():
    from sparsemap_tools.analysis import _f_abs

    x = make_workload("student-t", rows=10, dim=50)
    for alpha in (1.25, 1.5, 2.0, 3.0):
        zs = (alpha - 1) * (x - x.max(1, keepdims=True))
        tau = np.full(10, -0.3)
        np.testing.assert_allclose(
            _f_abs(zs, tau, 1 / (alpha - 1)),
            np.abs(numpy_backend.residual(zs, tau, np.full(10, alpha))), rtol=1e-12)


# ---- fuzzing regressions ---------------------------------------------------------------------
def test_speedup_text_says_why_when_undefined():
    x = make_workload("gaussian-x10", rows=30, dim=64, seed=0)
    r = compare_solvers(x, alpha=2.0, solvers=["bisect", "halley"], tol=1e-7)
    assert np.median(r.trace("halley", 2.0).iters_to_tol[1e-7]) == 0
    assert np.isnan(r.speedup("halley", "bisect"))
    mb = np.median(r.trace("bisect", 2.0).iters_to_tol[1e-7])
    want = f"n/a (halley median is 0 iterations, bisect {mb:g})"
    assert r.speedup_text("halley", "bisect") == want
    failing = compare_solvers(x[:, :16], alpha=1.5, solvers=["bisect", "newton"], max_iter=2)
    assert (failing.trace("bisect", 1.5).iters_to_tol[1e-7] < 0).all()
    assert failing.speedup_text("newton", "bisect") == "n/a (bisect failed on every row)"
    g = compare_solvers("gaussian", alpha=1.5, solvers=["bisect", "halley"], rows=20, dim=128)
    assert g.speedup_text() == f"{g.speedup():.1f}x" and "nan" not in g.speedup_text()


def test_unmeasured_tol_is_a_value_error(small_report, tmp_path):
    _, report = small_report
    for call in (lambda: report.table(tol=1e-5), lambda: report.speedup(tol=1e-5),
                 lambda: report.speedup_text(tol=1e-5),
                 lambda: report.plot(tmp_path / "x.png", tol=1e-5)):
        with pytest.raises(ValueError, match=r"tol 1e-05 was not measured.*1e-07, 1e-14"):
            call()
    assert not (tmp_path / "x.png").exists()
    assert {r["tol"] for r in report.table(tol=1e-14).rows} == {1e-14}


def test_close_alphas_and_tols_keep_distinct_keys(tmp_path):
    from sparsemap_tools.analysis import _fmt_float

    assert [_fmt_float(v) for v in (1.5, 3.0, 1e-7, 1.5e-7, 1.0000000001, 1.000001)] == \
        ["1.5", "3", "1e-07", "1.5e-07", "1.0000000001", "1.000001"]
    x = make_workload("gaussian", rows=5, dim=16)
    r = compare_solvers(x, alpha=[1.0000000001, 1.000001, 1.5, 1.50], solvers=["newton"],
                        tol=[1.5e-7, 1.4e-7])
    assert r.alphas == [1.0000000001, 1.000001, 1.5]  # the repeated 1.5 is measured once
    text = str(r.table())
    assert "iters to 1.5e-07" in text and "iters to 1.4e-07" in text
    assert len(r.table().to_markdown().splitlines()) == 2 + 3
    npz = np.load(r.save_traces(tmp_path / "t.npz"))
    assert len([k for k in npz.files if k.endswith("/error")]) == 3
    for a in (1.0000000001, 1.000001):
        np.testing.assert_array_equal(npz[f"array/alpha={a!r}/newton/iters_to_1.4e-07"],
                                      r.trace("newton", a).iters_to_tol[1.4e-7])


@pytest.mark.parametrize("arr", [
    np.zeros(3, dtype=[("a", "f8"), ("b", "i4")]), np.array([[1 + 2j, 3.0]]),
    np.array([["2020-01-01", "2021-01-01"]], dtype="datetime64[D]"),
    np.array([[1, 2]], dtype="timedelta64[s]"), np.array([["1.5", "2"]]),
    np.array([[1.0, 2.0]], dtype=object),
], ids=["structured", "complex", "datetime", "timedelta", "strings", "object"])
def test_load_scores_rejects_non_real_dtypes(tmp_path, arr):
    with pytest.raises(TypeError, match="real numeric array"):
        load_scores(arr)
    if arr.dtype != object:
        np.save(tmp_path / "bad.npy", arr)
        prefix = re.escape(f"{tmp_path / 'bad.npy'}: scores must be a real")
        with pytest.raises(TypeError, match="^" + prefix):
            load_scores(tmp_path / "bad.npy")


def test_load_scores_unreadable_files_name_the_file(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([[1, 2]], dtype=object), allow_pickle=True)
    with open(tmp_path / "z.npy", "wb") as fh:
        np.savez(fh, a=np.zeros((2, 3)))
    (tmp_path / "text.npy").write_text("1 2 3")
    for name, why in (("obj", "Python objects"), ("z", ".npz archive"),
                      ("text", "not a .npy file")):
        with pytest.raises(ValueError, match=why) as info:
            load_scores(tmp_path / f"{name}.npy")
        assert str(info.value).startswith(f"{tmp_path / name}.npy: ")
    label, x = load_scores(np.array([[True, False, True]]))  # bool and ints are real numbers
    assert x.dtype == np.float64 and x.tolist() == [[1.0, 0.0, 1.0]]


def test_merge_rejects_repeated_labels():
    x = make_workload("gaussian", rows=3, dim=8)
    a = compare_solvers(x, alpha=2.0, solvers=["newton"])
    b = compare_solvers(x[:2], alpha=2.0, solvers=["newton"])
    with pytest.raises(ValueError, match="'array' is in more than one report"):
        ConvergenceReport.merge([a, b])
    b = compare_solvers(x[:2], alpha=2.0, solvers=["newton"], label="other")
    m = ConvergenceReport.merge([a, b])
    assert m.workloads == ["array", "other"] and len(m.table().rows) == 2
