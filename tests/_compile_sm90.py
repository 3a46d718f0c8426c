"""Compile every Triton kernel of the package for sm_90 ahead of time (no GPU needed).

Run as a script (``python tests/_compile_sm90.py``) in a process without
``TRITON_INTERPRET=1`` (the interpreter replaces the kernels by interpreted functions); prints
one line per compiled kernel and exits non-zero on the first compile error.  Used by
``test_gpu_compile.py``.
"""
from __future__ import annotations

import inspect
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sparsemap_tools.gpu import attention as A
from sparsemap_tools.gpu import rowwise as R

_INTS = {"H", "GROUP", "NQB", "NKB", "MAX_ITER", "N_WORK", "R", "D", "Nq", "Nk", "max_iter"}
_FLOATS = {"scale", "tol", "soft_below", "TOL", "near_one", "alpha_s", "GRATIO"}
_TYPED = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "O": "*bf16", "DO": "*bf16", "X": "*fp32",
          "P": "*fp32", "SUPP": "*i32", "ITERS": "*i32", "CONV": "*i8", "LIST": "*i32",
          "LCNT": "*i32", "LIVE": "*i32", "WORK": "*i32", "GDONE": "*i32", "SUP": "*i32", "NS": "*i32", "LIM": "*i32", "CU_Q": "*i32", "CU_K": "*i32"}


def signature(kernel, constexprs):
    """Argument types by name (the kernels' convention: capitals are pointers)."""
    sig = {}
    for name in inspect.signature(kernel.fn).parameters:
        if name in constexprs:
            continue
        if name in _INTS or name.startswith("stride"):
            sig[name] = "i32"
        elif name in _FLOATS:
            sig[name] = "fp32"
        elif name == "KD":  # the scan's key-tile descriptor (TMA), else unused
            sig[name] = f"tensordesc<bf16[1,1,{constexprs['BLOCK_N']},{constexprs['BLOCK_D']}]>" \
                if constexprs.get("TMA") else "*bf16"
        else:
            sig[name] = _TYPED.get(name, "*fp32")
    return sig


def with_defaults(kernel, constexprs):
    """``constexprs`` plus the defaults of the kernel's constexpr parameters not given (as a
    launch that omits them would use)."""
    out = dict(constexprs)
    for name, par in inspect.signature(kernel.fn).parameters.items():
        if name not in out and par.default is not inspect.Parameter.empty and "constexpr" in str(par.annotation):
            out[name] = par.default
    return out


# strides of the tensors (rows, heads, batches): multiples of 16 for the usual head dims and row
# lengths, and so specialised as such by real launches (as are 16-byte aligned pointers); those the
# kernels declare unspecialised (``do_not_specialize``) and the per-row statistics' row stride
# (1 in the launches) are not marked
_UNMARKED = set(A._NOSPEC_T) | {"stride_sn"}


def divisibility(kernel, sig):
    """Triton's ``attrs``: the pointers and strides marked divisible by 16, as a launch with
    aligned tensors and head dims that are multiples of 16 specialises them (vectorised loads:
    with only the row strides marked, a base offset b·stride_b + h·stride_h of unknown alignment
    left every K/V tile load as 2-byte loads)."""
    params = list(inspect.signature(kernel.fn).parameters)
    return {(params.index(p),): [["tt.divisibility", 16]] for p, t in sig.items()
            if t.startswith("*") or (p.startswith("stride") and p not in _UNMARKED)}


def compile_sm90(kernel, constexprs, num_warps=4, **options):
    """Compile for sm_90 as a launch with aligned tensors would (``divisibility``); ``options``
    are further launch options (e.g. ``maxnreg``, as the launchers pass them: the register caps go
    through ptxas here too; ``num_stages``, default 3)."""
    constexprs = with_defaults(kernel, constexprs)
    sig = signature(kernel, constexprs)
    src = ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=divisibility(kernel, sig))
    out = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                         options=dict(num_warps=num_warps, **{"num_stages": 3, **options}))
    assert out.asm["cubin"]
    return out


ATT = dict(HEAD_DIM=64, BLOCK_D=64, BLOCK_M=64, BLOCK_N=64, CAUSAL=True, VARLEN=False, PREC="tf32")


def cases():
    for mode in (A.MODE_GENERIC, A.MODE_15, A.MODE_2, A.MODE_125):
        yield (f"attention scan mode {mode}", A._fwd_scan_kernel,
               dict(ATT, MODE=mode, NIT=8, DIAG=0, TOP2=False), 4)
        if mode in (A.MODE_15, A.MODE_2):
            # key tiles through a tensor descriptor (SPARSEMAP_ATTN_SCAN_TMA=1)
            yield (f"attention scan mode {mode} tma", A._fwd_scan_kernel,
                   dict(ATT, MODE=mode, NIT=8, DIAG=0, TOP2=False, TMA=True), 4)
        if mode in (A.MODE_GENERIC, A.MODE_125):
            yield (f"attention scan mode {mode} top2", A._fwd_scan_kernel,
                   dict(ATT, MODE=mode, NIT=8, DIAG=0, TOP2=True), 4)
        yield (f"attention solve mode {mode}", A._fwd_solve_kernel,
               dict(ATT, MODE=mode, CAP=256, CHUNK=64, DIAG=0, PERSIST=A._solve_persist(mode, 64),
                    **A._sweep_rule(mode, 64)), 4,
               A._regs("solve", mode))
        # the default: candidate key indices copied, gathered output with O2 (training)
        yield (f"attention solve mode {mode} gathered output", A._fwd_solve_kernel,
               dict(ATT, MODE=mode, CAP=256, CHUNK=64, DIAG=0, PERSIST=A._solve_persist(mode, 64),
                    GATHER=True, NEED_O2=True, **A._sweep_rule(mode, 64)), 4,
               A._regs("solve", mode))
        if mode in A._GATHER_MODES:  # the candidate stores as inline st.global (_store_rows)
            yield (f"attention solve mode {mode} gathered output asm stores", A._fwd_solve_kernel,
                   dict(ATT, MODE=mode, CAP=128, CHUNK=64, DIAG=0, PERSIST=A._solve_persist(mode, 64),
                        GATHER=True, NEED_O2=True, ASM=True, **A._sweep_rule(mode, 64)), 4,
                   A._regs("solve", mode))
            # the same for an inference forward (no O2): the configuration the benchmarks time
            yield (f"attention solve mode {mode} gathered output asm stores no grad", A._fwd_solve_kernel,
                   dict(ATT, MODE=mode, CAP=128, CHUNK=64, DIAG=0, PERSIST=A._solve_persist(mode, 64),
                        GATHER=True, NEED_O2=False, ASM=True, **A._sweep_rule(mode, 64)), 4,
                   A._regs("solve", mode))
        else:  # (the prefix-sum copy's scatter, _copy_all, as inline stores)
            yield (f"attention solve mode {mode} asm stores", A._fwd_solve_kernel,
                   dict(ATT, MODE=mode, CAP=256, CHUNK=64, DIAG=0, PERSIST=A._solve_persist(mode, 64),
                        ASM=True, **A._sweep_rule(mode, 64)), 4,
                   A._regs("solve", mode))
        if mode == A.MODE_125:  # sparse sweeps that test each tile's bound (SPARSEMAP_ATTN_SWEEP_SKIP=1)
            yield (f"attention solve mode {mode} sweeps with tile tests", A._fwd_solve_kernel,
                   dict(ATT, MODE=mode, CAP=256, CHUNK=64, DIAG=0, PERSIST=A._solve_persist(mode, 64),
                        ASM=True, **dict(A._sweep_rule(mode, 64), SWEEP_SKIP=True)), 4,
                   A._regs("solve", mode))
        if mode == A.MODE_15:  # one program per query block (SPARSEMAP_ATTN_SOLVE_PERSIST=0)
            yield (f"attention solve mode {mode} one block per program", A._fwd_solve_kernel,
                   dict(ATT, MODE=mode, CAP=128, CHUNK=64, DIAG=0, PERSIST=False, **A._sweep_rule(mode, 64)), 4,
                   A._regs("solve", mode))
        yield (f"attention output mode {mode}", A._fwd_output_kernel,
               dict(ATT, MODE=mode, NEED_O2=True, NEED_DALPHA=mode == A.MODE_GENERIC,
                    GATHER=mode != A.MODE_GENERIC), 4)
        if mode == A.MODE_GENERIC:  # Σ u v on float32 operands (float16 inputs, generic α)
            yield (f"attention output mode {mode} wide u", A._fwd_output_kernel,
                   dict(ATT, MODE=mode, NEED_O2=True, NEED_DALPHA=False, WIDE_U=True), 4)
        yield f"attention dq mode {mode}", A._bwd_dq_kernel, dict(ATT, MODE=mode), 4
        if mode in A._GATHER_MODES:  # the gathered dQ (on by default for these modes)
            yield (f"attention dq mode {mode} gathered", A._bwd_dq_kernel,
                   dict(ATT, MODE=mode, DQG=True, S=A._KEEP_SUPPORT), 4)
            yield (f"attention solve mode {mode} keeping supports", A._fwd_solve_kernel,
                   dict(ATT, MODE=mode, CAP=128, CHUNK=64, DIAG=0, PERSIST=A._solve_persist(mode, 64),
                        GATHER=True, NEED_O2=True, KEEP=True, S=A._KEEP_SUPPORT, ASM=True,
                        **A._sweep_rule(mode, 64)), 4,
                   A._regs("solve", mode))
        yield f"attention dkdv mode {mode}", A._bwd_dkdv_kernel, dict(ATT, MODE=mode, SUB_M=64), 4
    # the tile table's D = 256 entry (the largest tiles per thread), bf16, α = 1.5, with its
    # per-kernel warps and stages as the launchers pass them
    t = A._tiles(256, torch.bfloat16)
    big = dict(ATT, HEAD_DIM=256, BLOCK_D=256, BLOCK_M=t["BM"], BLOCK_N=t["BN"], MODE=A.MODE_15)
    for kern, fn, extra in (("scan", A._fwd_scan_kernel, dict(NIT=8, DIAG=0, TOP2=False)),
                            ("solve", A._fwd_solve_kernel,
                             dict(CAP=128, CHUNK=64, DIAG=0, PERSIST=A._solve_persist(A.MODE_15, 256),
                                  GATHER=True, NEED_O2=True, **A._sweep_rule(A.MODE_15, 256))),
                            ("output", A._fwd_output_kernel, dict(NEED_O2=True, NEED_DALPHA=False,
                                                                  GATHER=True)),
                            ("dq", A._bwd_dq_kernel, {}),
                            ("dkdv", A._bwd_dkdv_kernel, dict(SUB_M=t["BM"]))):
        opts = dict(A._regs(kern, A.MODE_15), num_stages=t[f"{kern}.ns"])
        yield f"attention {kern} D=256 table", fn, dict(big, **extra), t[f"{kern}.nw"], opts
    for trans in (False, True):
        yield (f"tile lists trans={trans}", A._tile_list_kernel,
               dict(BLOCK_M=64, BLOCK_N=64, CAUSAL=True, VARLEN=True, TRANS=trans, CH=256), 4)
    for mode in (-1, 0, 1, 2, 3):
        scalar = mode >= 0  # a python-float alpha (compile-time mode) comes as a scalar argument
        yield (f"rowwise onchip mode {mode}", R._fwd_onchip_kernel,
               dict(BLOCK_R=1, BLOCK_D=1024, SOLVER=0, F64=False, GROUP=0, MODE=mode,
                    SCALAR_ALPHA=scalar), 1)
        for pf in (0, 1):
            yield (f"rowwise stream mode {mode} prefetch {pf}", R._fwd_stream_kernel,
                   dict(CHUNK=2048, SOLVER=0, F64=False, MODE=mode, PF=pf, LEV=16,
                        SCALAR_ALPHA=scalar), 8,
                   R._maxnreg(R.CONFIG["stream_maxnreg"]))
        fast = R._fast_mode(mode, False)
        for ch, u, pf, nw in ((1024, 4, 0, 4), (2048, 4, 0, 8), (4096, 4, 1, 16),
                              (2048, 2, 0, 8)) if fast else ():
            if mode != 1 and u == 2:
                continue
            if mode in (0, 1) and u == 4:
                yield (f"rowwise stream mode {mode} chunk {ch} unroll {u} prefetch {pf} write first",
                       R._fwd_stream_kernel,
                       dict(CHUNK=ch, SOLVER=0, F64=False, MODE=mode, PF=pf, LEV=16,
                            SCALAR_ALPHA=scalar, U=u, WRITE_FIRST=True), nw,
                       R._maxnreg(R.CONFIG["stream_maxnreg"]))
                # the two-per-lane subset (CONFIG stream_top2)
                yield (f"rowwise stream mode {mode} chunk {ch} unroll {u} prefetch {pf} write first top2",
                       R._fwd_stream_kernel,
                       dict(CHUNK=ch, SOLVER=0, F64=False, MODE=mode, PF=pf, LEV=16,
                            SCALAR_ALPHA=scalar, U=u, WRITE_FIRST=True, TOP2=True), nw,
                       R._maxnreg(R.CONFIG["stream_maxnreg"]))
            if mode == 3 and ch == 1024:
                # α = 1.25 above 512 rows: the two-per-lane subset, no write-first (the default)
                yield (f"rowwise stream mode {mode} chunk {ch} unroll {u} prefetch {pf} top2",
                       R._fwd_stream_kernel,
                       dict(CHUNK=ch, SOLVER=0, F64=False, MODE=mode, PF=pf, LEV=16,
                            SCALAR_ALPHA=scalar, U=u, TOP2=True), nw,
                       R._maxnreg(R.CONFIG["stream_maxnreg"]))
            # the fast modes' defaults (more than 512 rows / at most 512), one other unroll
            yield (f"rowwise stream mode {mode} chunk {ch} unroll {u} prefetch {pf}",
                   R._fwd_stream_kernel,
                   dict(CHUNK=ch, SOLVER=0, F64=False, MODE=mode, PF=pf, LEV=16,
                        SCALAR_ALPHA=scalar, U=u), nw,
                   R._maxnreg(R.CONFIG["stream_maxnreg"]))
        yield (f"rowwise backward mode {mode}", R._bwd_kernel,
               dict(BLOCK_R=1, BLOCK_D=1024, ONE_PASS=True, NEED_ALPHA=not scalar, F64=False,
                    MODE=mode, SCALAR_ALPHA=scalar), 1)
        if mode == 1:
            yield ("rowwise backward streamed unroll 4", R._bwd_kernel,
                   dict(BLOCK_R=1, BLOCK_D=1024, ONE_PASS=False, NEED_ALPHA=False, F64=False,
                        MODE=mode, SCALAR_ALPHA=scalar, U=4), 4)
    yield ("rowwise stream float64", R._fwd_stream_kernel,
           dict(CHUNK=1024, SOLVER=0, F64=True, MODE=-1, PF=0, LEV=16), 8)
    yield ("rowwise onchip bisect", R._fwd_onchip_kernel,
           dict(BLOCK_R=4, BLOCK_D=256, SOLVER=1, F64=False, GROUP=0, MODE=-1), 1)


_CASES: list = []  # ``cases()``, listed once by ``main`` (forked workers inherit it)
_DIGEST: list = []  # [True] when ``main`` reports each case's SASS digest


def nvidia_tool(name: str) -> str:
    """Path of a CUDA tool bundled with Triton (``nvdisasm``, ``ptxas-blackwell``, ...)."""
    from pathlib import Path

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def disassemble(compiled) -> str:
    """A compiled kernel's SASS as the bundled nvdisasm prints it (``-c``: no line info)."""
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        cubin = Path(d) / "k.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        return subprocess.run([nvidia_tool("nvdisasm"), "-c", str(cubin)], capture_output=True,
                              text=True, check=True).stdout


def sass_digest(compiled) -> str:
    """SHA-256 (first 16 hex digits) of a compiled kernel's sm_90 instructions (``disassemble``,
    comments dropped): equal digests, the same machine code — how a refactoring that should not
    change the kernels is checked."""
    import hashlib

    sass = disassemble(compiled)
    body = "\n".join(ln for ln in sass.splitlines() if not ln.lstrip().startswith("//"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _compile_case(i: int) -> str:
    """Compile case ``i`` of ``_CASES`` (in a worker process); returns its name (and, with
    ``--digest``, its SASS digest after a tab)."""
    name, kernel, consts, nw, *opts = _CASES[i]
    out = compile_sm90(kernel, consts, nw, **(opts[0] if opts else {}))
    return f"{name}\t{sass_digest(out)}" if _DIGEST else name


def main(jobs: int, digest: str | None = None, compare: str | None = None) -> int:
    """Compile every case, ``jobs`` at a time (worker processes: the compiles are CPU-bound
    and independent; CI has 2 cores).  Prints a line per kernel; non-zero on any error.  With
    ``digest`` a path, also writes "case<TAB>SASS digest" lines there (``sass_digest``), and with
    ``compare`` another such file, reports the kernels whose code changed (``compare_digests``:
    non-zero when any did)."""
    _CASES[:] = cases()
    _DIGEST[:] = [True] if digest else []
    n_cases = len(_CASES)
    lines = []
    if jobs <= 1:
        for i in range(n_cases):
            lines.append(_compile_case(i))
            print("compiled:", lines[-1], flush=True)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as ex:
            for name in ex.map(_compile_case, range(n_cases)):  # re-raises a worker's error
                lines.append(name)
                print("compiled:", name, flush=True)
    if digest:
        with open(digest, "w") as fh:
            fh.write("".join(ln + "\n" for ln in lines))
    print(f"all {n_cases} kernels compiled for sm_90 with triton {triton.__version__}")
    if digest and compare:
        return compare_digests(compare, digest)
    return 0


def compare_digests(base: str, new: str) -> int:
    """Print the cases whose SASS digest differs between two ``--digest`` files (and those only
    in one of them); 0 when every common case is the same machine code, else 1."""
    def load(path: str) -> dict:
        with open(path) as fh:
            return dict(ln.rstrip("\n").split("\t") for ln in fh if "\t" in ln)
    a, b = load(base), load(new)
    differ = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
    for k in sorted(a.keys() - b.keys()):
        print("only in", base + ":", k)
    for k in sorted(b.keys() - a.keys()):
        print("only in", new + ":", k)
    for k in differ:
        print("differs:", k)
    print(f"{len(a.keys() & b.keys()) - len(differ)} of {len(a.keys() & b.keys())} common kernels "
          "have the same SASS")
    return 1 if differ else 0


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="compile every kernel for sm_90")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--digest", help="write each case's SASS digest to this file")
    ap.add_argument("--compare", help="with --digest: an earlier digest file to compare with")
    args = ap.parse_args()
    if args.compare and not args.digest:
        ap.error("--compare needs --digest")
    sys.exit(main(args.jobs, args.digest, args.compare))
