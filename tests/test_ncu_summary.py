"""``benchmarks/ncu_summary.py`` on small exports in Nsight Compute's CSV layouts (the device
run that produces real ones is ``benchmarks/ncu_profile.sh``).  No GPU needed."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ncu_summary as S  # noqa: E402

RAW = '''==PROF== Connected to process 1
"ID","Kernel Name","Grid Size","Block Size","gpu__time_duration.sum","dram__throughput.avg.pct_of_peak_sustained_elapsed","smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio","smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio","smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio"
"","","","","us","%","inst","inst","inst"
"0","_fwd_solve_kernel","(396, 1, 1)","(128, 1, 1)","2,612.50","41.3","1.5","6.0","0"
'''

SOURCE = '''"Address","Source","Warp Stall Sampling (All Samples)","Warp Stall Sampling (Not-issued Samples)"
"0x10","LDG.E R2, desc[UR4][R4.64]","30","29"
"0x20","BAR.SYNC.DEFER_BLOCKING 0x0","60","60"
"0x30","FFMA R1, R2, R3, R4","10","2"
'''


def test_kernel_table_and_stall_reasons(tmp_path):
    p = tmp_path / "raw.csv"
    p.write_text(RAW)
    text = S.kernel_tables(str(p))
    assert "## _fwd_solve_kernel  grid (396, 1, 1) block (128, 1, 1)" in text
    assert "2,612.50 us" in text and "41.3 %" in text
    # reasons largest first, as shares of their total (7.5 cycles per issued instruction)
    lines = [ln.split() for ln in text.splitlines() if ln.startswith("    ")]
    assert [ln[0] for ln in lines] == ["long_scoreboard", "barrier"]        # the zero one is left out
    assert float(lines[0][2]) == pytest.approx(80.0) and float(lines[1][2]) == pytest.approx(20.0)


def test_source_top_sorts_by_all_samples(tmp_path):
    p = tmp_path / "source.csv"
    p.write_text(SOURCE)
    text = S.source_top(str(p), top=2)
    rows = text.splitlines()[1:]
    assert len(rows) == 2
    assert "BAR.SYNC" in rows[0] and rows[0].split()[0] == "60.0"
    assert "LDG.E" in rows[1] and rows[1].split()[0] == "30.0"


def test_exports_without_the_expected_content(tmp_path):
    empty = tmp_path / "raw.csv"
    empty.write_text('"ID","Kernel Name"\n')
    with pytest.raises(ValueError, match="no kernel rows"):
        S.kernel_tables(str(empty))
    odd = tmp_path / "source.csv"
    odd.write_text("==ERROR== the report has no source counters\n")
    assert S.source_top(str(odd)).startswith("(no source table")
