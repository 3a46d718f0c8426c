"""The loops of a kernel's SASS, compiled for sm_90 on this machine (no GPU needed).

    python benchmarks/sass_loops.py "attention solve mode 1 gathered output" [--list] [--top 12]

Takes a case of ``tests/_compile_sm90.py`` (the kernels and constexprs the launchers use; the name
is matched as a substring, ``--list`` prints them), compiles it for sm_90 with the pointer
arguments and the row strides marked divisible by 16 (real launches specialise them so: without
it the gathers of candidate rows come out as one 2-byte load per element), disassembles the cubin
with the nvdisasm bundled with Triton, and prints ptxas's registers and spills and every loop
(a backward branch): its address range, static instruction count and most frequent opcodes.

What it measures: *static* counts of the compiled code, a way to compare kernel variants before a
device call (how the 2026-12-06 index-copy experiment was sized: the pass-0 tile loop went from
1279 to 583 instructions).  Not executed counts — a loop body with branches counts every path —
and the local Triton may differ from the device's (3.9 here, 3.6 there): measure on the GPU
before adopting anything.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

_INSTR = re.compile(r"^\s+/\*([0-9a-f]+)\*/\s+(.*?)\s*;")
_BRANCH = re.compile(r"\bBRA\b.*?(?:`\((\.L_x_\d+)\)|(0x[0-9a-f]+))")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")


def _tool(name: str) -> str:
    import _compile_sm90 as C

    return C.nvidia_tool(name)


def compile_case(name: str):
    """(case name, compiled kernel) of the first ``_compile_sm90`` case whose name contains
    ``name`` (compiled as that script does: divisibility-16 pointers and row strides)."""
    os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported
    import _compile_sm90 as C

    for case, kernel, consts, nw, *opts in C.cases():
        if name in case:
            return case, C.compile_sm90(kernel, consts, nw, **(opts[0] if opts else {}))
    raise SystemExit(f"no case of tests/_compile_sm90.py contains {name!r} (see --list)")


def loops(sass: str) -> list:
    """[(start, end, [opcodes])] of every backward branch's range in nvdisasm output."""
    lines = sass.splitlines()
    instr, label_at = [], {}
    pending = []
    for ln in lines:
        lab = _LABEL.match(ln)
        if lab:
            pending.append(lab.group(1))
            continue
        m = _INSTR.match(ln)
        if m:
            addr = int(m.group(1), 16)
            for p in pending:
                label_at[p] = addr
            pending = []
            instr.append((addr, m.group(2)))
    out = []
    for addr, text in instr:
        b = _BRANCH.search(text)
        if not b:
            continue
        target = label_at.get(b.group(1)) if b.group(1) else int(b.group(2), 16)
        if target is not None and target < addr:
            ops = [re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0]
                   for a, t in instr if target <= a <= addr]
            out.append((target, addr, ops))
    return out


def resources(ptx: str, maxnreg) -> str:
    """ptxas's one-line summary of registers, stack and spills for ``ptx`` (sm_90a)."""
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        cmd = [_tool("ptxas-blackwell"), "-arch=sm_90a", "-v", str(src), "-o", str(Path(d) / "k.cubin")]
        if maxnreg:
            cmd.insert(1, f"--maxrregcount={maxnreg}")
        res = subprocess.run(cmd, capture_output=True, text=True)
    keep = [ln.split("info    :")[-1].strip() for ln in res.stderr.splitlines()
            if "spill" in ln or "Used" in ln]
    return "; ".join(keep) or res.stderr.strip()[-300:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("case", nargs="?", default="attention solve mode 1 gathered output")
    ap.add_argument("--list", action="store_true", help="print the case names and exit")
    ap.add_argument("--top", type=int, default=10, help="opcodes shown per loop")
    ap.add_argument("--sass", help="also write the whole disassembly (and the PTX beside it) here")
    args = ap.parse_args()
    if args.list:
        import _compile_sm90 as C

        for case, *_ in C.cases():
            print(case)
        return
    case, k = compile_case(args.case)
    import _compile_sm90 as C

    sass = C.disassemble(k)
    if args.sass:
        Path(args.sass).write_text(sass)
        Path(args.sass).with_suffix(".ptx").write_text(k.asm["ptx"])
    total = sum(1 for ln in sass.splitlines() if _INSTR.match(ln))
    print(f"{case}: {total} instructions; {resources(k.asm['ptx'], k.metadata.maxnreg)}")
    for start, end, ops in loops(sass):
        top = ", ".join(f"{op} {n}" for op, n in collections.Counter(ops).most_common(args.top))
        print(f"  loop {start:#07x}-{end:#07x}: {len(ops):5d} instructions  ({top})")


if __name__ == "__main__":
    main()
