"""Short tables from an Nsight Compute report, as ``benchmarks/ncu_profile.sh`` exports it.

    python3 benchmarks/ncu_summary.py RAW.csv [SOURCE.csv] [--top 25]

``RAW.csv`` is ``ncu --import R.ncu-rep --page raw --csv`` (one row per profiled kernel, one
column per metric, a units row under the header); ``SOURCE.csv`` is ``ncu --import R.ncu-rep
--page source --csv --print-source sass`` (one row per SASS instruction with its warp-state
samples).  Prints per kernel: duration, the speed-of-light percentages, cache hit rates,
occupancy, registers, issue rate, and the warp stall reasons in cycles per issued instruction
(largest first); then the instructions with the most stall samples.  Columns that a report does
not have are skipped (their names change between Nsight Compute versions), so a partial table
is still printed.
"""
from __future__ import annotations

import argparse
import csv
import re
import sys

#: (label, metric) pairs of the per-kernel table, in print order
KEY_METRICS = [
    ("duration", "gpu__time_duration.sum"),
    ("SM % peak", "sm__throughput.avg.pct_of_peak_sustained_elapsed"),
    ("DRAM % peak", "dram__throughput.avg.pct_of_peak_sustained_elapsed"),
    ("L1 % peak", "l1tex__throughput.avg.pct_of_peak_sustained_active"),
    ("L2 % peak", "lts__throughput.avg.pct_of_peak_sustained_elapsed"),
    ("L1 hit %", "l1tex__t_sector_hit_rate.pct"),
    ("L2 hit %", "lts__t_sector_hit_rate.pct"),
    ("DRAM read", "dram__bytes_read.sum"),
    ("DRAM write", "dram__bytes_write.sum"),
    ("occupancy %", "sm__warps_active.avg.pct_of_peak_sustained_active"),
    ("theor. occ. %", "sm__maximum_warps_per_active_cycle_pct"),
    ("registers", "launch__registers_per_thread"),
    ("issue slots %", "sm__inst_issued.avg.pct_of_peak_sustained_active"),
    ("instructions", "smsp__inst_executed.sum"),
    ("cycles/issue", "smsp__average_warp_latency_per_inst_issued.ratio"),
]
_STALL = re.compile(r"^smsp__average_warps?_issue_stalled_(\w+?)_per_issue_active\.ratio$")


def _num(text: str) -> float | None:
    try:
        return float(str(text).replace(",", ""))
    except ValueError:
        return None


def read_raw(path: str) -> tuple[list[str], list[str], list[dict]]:
    """(header, units, rows as dicts) of a ``--page raw --csv`` export (ncu's own messages
    before the header, lines starting with "==", are skipped)."""
    with open(path, newline="") as fh:
        lines = [ln for ln in fh if not ln.startswith("==")]
    table = list(csv.reader(lines))
    if len(table) < 3:
        raise ValueError(f"{path}: no kernel rows (is it ncu --page raw --csv output?)")
    header, units = table[0], table[1]
    return header, units, [dict(zip(header, r)) for r in table[2:] if len(r) == len(header)]


def kernel_tables(path: str) -> str:
    """The per-kernel metrics and stall reasons of a raw export, as text."""
    header, units, rows = read_raw(path)
    unit = dict(zip(header, units))
    out = []
    for r in rows:
        name = r.get("Kernel Name", r.get("kernel_name", "?"))
        out.append(f"## {name}  grid {r.get('Grid Size', '?')} block {r.get('Block Size', '?')}")
        for label, m in KEY_METRICS:
            if m in r and r[m] != "":
                out.append(f"  {label:<14} {r[m]:>14} {unit.get(m, '')}")
        stalls = []
        for m, v in r.items():
            hit = _STALL.match(m)
            val = _num(v)
            if hit and val is not None and val > 0:
                stalls.append((val, hit.group(1)))
        if stalls:
            total = sum(v for v, _ in stalls)
            out.append(f"  stall reasons (cycles per issued instruction, total {total:.2f}):")
            for v, reason in sorted(stalls, reverse=True)[:12]:
                out.append(f"    {reason:<22} {v:8.2f}  {100 * v / total:5.1f} %")
    return "\n".join(out)


def source_top(path: str, top: int = 25) -> str:
    """The ``top`` SASS instructions by warp-state samples of a ``--page source --csv`` export:
    the column whose name has "Sampling (All" (or else "Samples") is the sort key."""
    with open(path, newline="") as fh:
        lines = [ln for ln in fh if not ln.startswith("==")]
    table = list(csv.reader(lines))
    hdr_i = next((i for i, r in enumerate(table) if any("Source" == c.strip() for c in r)), None)
    if hdr_i is None:
        return f"(no source table in {path}: first lines)\n" + "".join(lines[:8])
    header = [c.strip() for c in table[hdr_i]]
    key = next((c for c in header if "Sampling (All" in c), None) or \
        next((c for c in header if "Samples" in c), None)
    if key is None:
        return f"(no sampling column in {path}; columns: {header})"
    rows = [dict(zip(header, r)) for r in table[hdr_i + 1:] if len(r) == len(header)]
    total = sum(_num(r[key]) or 0 for r in rows) or 1.0
    rows.sort(key=lambda r: -(_num(r[key]) or 0))
    addr = next((c for c in header if c.lower() in ("address", "#address")), None)
    out = [f"top {top} instructions by '{key}' (total {total:.0f} samples):"]
    for r in rows[:top]:
        v = _num(r[key]) or 0
        out.append(f"  {100 * v / total:5.1f} %  {r.get(addr, '') if addr else '':>8}  {r['Source'][:110]}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw")
    ap.add_argument("source", nargs="?")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args(argv)
    print(kernel_tables(a.raw))
    if a.source:
        print(source_top(a.source, a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
