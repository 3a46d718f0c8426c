#!/usr/bin/env bash
# The device call behind the 2026-12-01 H200 records (docs/benchmarks*.md): GPU tests of the
# changed row-wise code, the public API's host cost old vs new (alternating), the paired row-wise
# table timed with CUDA graphs, and attention with adasplash v2 at the anchor configuration.
# A second call, `bash benchmarks/h200_session.sh attention`, times attention with adasplash v2;
# `bash benchmarks/h200_session.sh gather`: the gathered dQ against the default (2026-12-06 call);
# `... asm`: the inline-asm candidate stores (check, GPU tests, stages);
# `... final`: GPU tests and the N = 16k causal grid rows (run on 2026-12-06, evening);
# `... prefix`: validation and the prefix-sum copy (2026-12-06, night);
# `... breakdown`: the alpha > 2 bracket's validation, the scan with two query blocks per program
# (since removed), the solve's breakdown; `... unroll`: the row-wise streaming tile sweep
# (run 2026-12-06 late); `... unroll2`: its follow-up (write-first, bwd_unroll, on-chip register
# caps, row-wise GPU tests; run 2026-12-07 on an H100); next, not yet run (no device time):
# `... wfdefault`: the write-first default against the previous one and the row-wise GPU tests
# with it; `... generic`: generic and tensor alpha with U 4; `... table`: the full paired table;
# `... breakdown stages2`: the TMA scan option, the N = 16k
# breakdown and 32-wide tiles at N = 1k (written 2026-12-06 night); (`hold`, the held-row
# option's call of 2026-12-07, went with the option on 2026-12-08); `... cert`:
# alpha = 1.25's certified sweeps and the sweeps without tile tests (2026-12-07, fifth session);
# the modes `sums` and `fuse` (alpha = 1.25's scan sums and output from the last sweep, run
# 2026-12-08) went with those options (removed 2026-12-08, ninth session; code at 2adc9e4).
# Next (written 2026-12-08, not yet run): `... next` (GPU tests, float64 check, the anchor after
# the module splits) and `... ncu` (benchmarks/ncu_profile.sh).
# Run from the repository root on the device with .whl (adasplash, entmax) and .old (the package
# before the host-overhead change: git archive of the previous commit) carried.
source benchmarks/device_setup.sh
set -o pipefail
O=${OUT:-/tmp/out}
check_attn() {  # TAG: the float64 check of the attention kernels and a one-line summary
  timeout 120 python3 benchmarks/gpu_attention.py --check --out /tmp/ck > "$O/check_$1.txt" 2>&1
  echo "check rc $?"
  python3 - "$O/check_$1.txt" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("cases", len(rows), "max rel out/dq/dk/dv (fp32, alpha<=2):",
      ["%.1e" % max(r[k] for r in rows if ("float32" in r["case"] or "fp32" in r["case"]) and " a3" not in r["case"]) for k in ("out", "dq", "dk", "dv")],
      "all det:", all(r["det"] for r in rows))
PY
}
paired() {  # TIMEOUT TAG SHAPES ALPHAS CONFIGS: paired row-wise timings (3 rounds), table printed
  timeout $1 python3 benchmarks/gpu_rowwise.py --paired 3 --reps 100 --graph --check --alphas $4 \
    --shapes $3 --out /tmp/p_$2 --configs "$5" > "$O/rowwise_$2.txt" 2>&1; echo "$2 rc $?"
  grep "^|" "$O/rowwise_$2.txt" | cut -d'|' -f2-8,12
}
rowwise_tests() {  # TIMEOUT: the row-wise GPU-marked tests (not the attention ones), 8 workers
  timeout $1 bash -c "$(declare -f run_gpu_tests); REPO=$REPO; run_gpu_tests -q -n 8 -k 'not attention'" \
    > "$O/pytest_gpu.txt" 2>&1; echo "pytest (row-wise) rc $?"; tail -n 3 "$O/pytest_gpu.txt"
}
gpu_tests() {  # TIMEOUT: every GPU-marked test (attention and row-wise), 8 workers
  timeout $1 bash -c "$(declare -f run_gpu_tests); REPO=$REPO; run_gpu_tests -q -n 8" \
    > "$O/pytest_gpu.txt" 2>&1; echo "pytest rc $?"; tail -n 3 "$O/pytest_gpu.txt"
}
if [ "${1:-}" = next ]; then
  # (written 2026-12-08, ninth session, for the next device call) after the module splits and
  # removals of that session (the same SASS for every kernel, checked on the CPU): every
  # GPU-marked test, the float64 check, and the issue 5 anchor (N = 16k, D = 64, causal, bf16,
  # alpha 1.5 and 1.25, random and topics, 2 rounds, forward+backward) against the last records
  gpu_tests 240
  check_attn next
  for a in 1.5 1.25; do
    timeout 150 python3 benchmarks/gpu_attention_stages.py --D 64 --alpha $a --kinds random,topics \
      --variants default --rounds 2 --fb --out /tmp/s_next_$a > "$O/stages_next_$a.txt" 2>&1
    echo "stages alpha=$a rc $?"; grep -v "^{" "$O/stages_next_$a.txt" | tail -n 6 | cut -c1-150
  done
  exit 0
fi
if [ "${1:-}" = ncu ]; then
  # (written 2026-12-08) Nsight Compute counters of the kernels behind the missed targets
  # (benchmarks/ncu_profile.sh: the attention solve and scan at the anchor, the streamed
  # row-wise forward at 1024x16384 and softmax); Firecracker machines only
  bash benchmarks/ncu_profile.sh all
  exit 0
fi
if [ "${1:-}" = gather ]; then
  # the gathered dQ (written on 2026-12-01, run on 2026-12-06): float64 check with it on, then
  # default / dqgather / gather0 (the gathered output off) at three configurations, forward and
  # forward+backward, FA2's from the same call (one call: about 5 minutes)
  SPARSEMAP_ATTN_DQ_GATHER=1 timeout 120 python3 benchmarks/gpu_attention.py --check --out /tmp/ck \
    > "$O/check_dq_gather.txt" 2>&1; echo "check (gathered dQ on) rc $?"; grep -c '"det": true' "$O/check_dq_gather.txt"
  python3 - "$O/check_dq_gather.txt" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("cases", len(rows), "max rel out/dq/dk/dv (fp32 cases):",
      ["%.1e" % max(r[k] for r in rows if "float32" in r["case"] or "fp32" in r["case"]) for k in ("out", "dq", "dk", "dv")],
      "all det:", all(r["det"] for r in rows))
PY
  for cfg in "64 1.5" "128 1.5" "64 2.0"; do
    set -- $cfg
    timeout 150 python3 benchmarks/gpu_attention_stages.py --D $1 --alpha $2 --variants default,dqgather,gather0 \
      --rounds 2 --fb --out /tmp/s_$1_$2 > "$O/stages_$1_$2.txt" 2>&1; echo "stages D=$1 a=$2 rc $?"
    cp /tmp/s_$1_$2/gpu_attention_stages.json "$O/stages_$1_$2.json" 2>/dev/null
    tail -n 7 "$O/stages_$1_$2.txt" | cut -c1-140
  done
  exit 0
fi
if [ "${1:-}" = cert ]; then
  # alpha = 1.25's sparse sweeps (2026-12-07, fifth session): the quartic certificate and the
  # sweeps without per-tile bound tests.  Forward stages at N = 16k D = 64 causal (random and
  # topics, 2 rounds), the GPU tests of attention, D = 128 random, then the float64 check
  timeout 200 python3 benchmarks/gpu_attention_stages.py --D 64 --alpha 1.25 \
    --variants default,nocert,noskip,nocertnoskip --rounds 2 --out /tmp/sc > "$O/stages_cert_d64.txt" 2>&1
  echo "stages D=64 rc $?"; cp /tmp/sc/gpu_attention_stages.json "$O/stages_cert_d64.json" 2>/dev/null
  grep -v "^{" "$O/stages_cert_d64.txt" | tail -n 10 | cut -c1-150
  timeout 150 bash -c "$(declare -f run_gpu_tests); REPO=$REPO; run_gpu_tests -q -n 8 -k attention" \
    > "$O/pytest_gpu.txt" 2>&1; echo "pytest (attention) rc $?"; tail -n 3 "$O/pytest_gpu.txt"
  timeout 100 python3 benchmarks/gpu_attention_stages.py --D 128 --alpha 1.25 --kinds random \
    --variants default,nocertnoskip --rounds 1 --out /tmp/sc2 > "$O/stages_cert_d128.txt" 2>&1
  echo "stages D=128 rc $?"; grep -v "^{" "$O/stages_cert_d128.txt" | tail -n 4 | cut -c1-150
  check_attn cert
  exit 0
fi
if [ "${1:-}" = a125 ]; then
  # the prefix-sum copy's scatter (generic alpha, 1.25) as inline stores: the float64 check, then
  # alpha 1.25 forward with the asm stores on / off (one round)
  timeout 80 python3 benchmarks/gpu_attention.py --check --out /tmp/ck > "$O/check_a125.txt" 2>&1
  echo "check rc $?"; grep -c '"det": true' "$O/check_a125.txt"
  grep -o '"case": "[^"]*a1.25[^"]*", "out": [0-9.e-]*, "dq": [0-9.e-]*' "$O/check_a125.txt"
  grep -o '"case": "[^"]*a3.0[^"]*", "out": [0-9.e-]*, "dq": [0-9.e-]*' "$O/check_a125.txt"
  timeout 90 python3 benchmarks/gpu_attention_stages.py --D 64 --alpha 1.25 --variants default,asmstore0 \
    --rounds 1 --out /tmp/s125 > "$O/stages_a125.txt" 2>&1; echo "stages rc $?"
  grep -v "^{" "$O/stages_a125.txt" | tail -n 6 | cut -c1-150
  exit 0
fi
if [ "${1:-}" = pf ]; then
  # (2026-12-06 evening) with the asm stores on by default: the tl.store copy again, the
  # pipelined gather of the output (gatherpf) and the top-two-always probe (asmtop2)
  for cfg in "64 1.5 asmstore0,gatherpf,asmtop2" "64 2.0 gatherpf" "128 1.5 gatherpf"; do
    set -- $cfg
    timeout 170 python3 benchmarks/gpu_attention_stages.py --D $1 --alpha $2 --variants default,$3 \
      --rounds 2 --fb --out /tmp/s_$1_$2 > "$O/stages_pf_$1_$2.txt" 2>&1; echo "stages D=$1 a=$2 rc $?"
    cp /tmp/s_$1_$2/gpu_attention_stages.json "$O/stages_pf_$1_$2.json" 2>/dev/null
    grep -v "^{" "$O/stages_pf_$1_$2.txt" | tail -n 10 | cut -c1-150
  done
  exit 0
fi
if [ "${1:-}" = asm ]; then
  # the solve's candidate stores as inline st.global (2026-12-06 evening): float64 check and the
  # GPU tests with it on, then default / asmstore (/ asmstore168) forward and forward+backward
  SPARSEMAP_ATTN_ASM_STORE=1 timeout 120 python3 benchmarks/gpu_attention.py --check --out /tmp/ck \
    > "$O/check_asm.txt" 2>&1; echo "check (asm stores) rc $?"
  python3 - "$O/check_asm.txt" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("cases", len(rows), "max rel out/dq/dk/dv (fp32 cases):",
      ["%.1e" % max(r[k] for r in rows if "float32" in r["case"] or "fp32" in r["case"]) for k in ("out", "dq", "dk", "dv")],
      "all det:", all(r["det"] for r in rows))
PY
  for cfg in "16384 64 1.5 asmstore168,asmtop2" "16384 64 2.0" "16384 128 1.5" "1024 64 1.5"; do
    set -- $cfg
    fb=--fb; [ $1 = 1024 ] && fb=
    timeout $([ $1 = 1024 ] && echo 60 || echo 150) python3 benchmarks/gpu_attention_stages.py --N $1 --D $2 --alpha $3 \
      --variants default,asmstore${4:+,$4} --rounds 2 $fb --out /tmp/s_$1_$2_$3 > "$O/stages_asm_$1_$2_$3.txt" 2>&1
    echo "stages N=$1 D=$2 a=$3 rc $?"
    cp /tmp/s_$1_$2_$3/gpu_attention_stages.json "$O/stages_asm_$1_$2_$3.json" 2>/dev/null
    tail -n 7 "$O/stages_asm_$1_$2_$3.txt" | cut -c1-150
  done
  SPARSEMAP_ATTN_ASM_STORE=1 timeout $(( SECONDS < 500 ? 570 - SECONDS : 60 )) bash -c "$(declare -f run_gpu_tests); REPO=$REPO; run_gpu_tests -q -n 8" \
    > "$O/pytest_gpu_asm.txt" 2>&1; echo "pytest (asm stores, all gpu tests) rc $?"; tail -n 3 "$O/pytest_gpu_asm.txt"
  exit 0
fi
if [ "${1:-}" = unroll ]; then
  # (2026-12-06, late) the streaming row-wise kernel loading U chunks per loop step (U chunk
  # loads in flight per round trip; hypothesis: 1024x16384 is bound by the chain of 8 dependent
  # chunk loads per pass with two 8-warp programs per SM, not by HBM): paired table with every
  # variant checked against float64 first; then every GPU-marked test and the attention check
  # (also validating the scan launch's KD=k argument of commit 0ed1b9b)
  timeout 230 python3 benchmarks/gpu_rowwise.py --paired 5 --reps 100 --graph --check \
    --shapes 1024x16384,256x65536 --out /tmp/pu \
    --configs "u2:stream_unroll=2;u4:stream_unroll=4;u2pf:stream_unroll=2,stream_prefetch=1;u4pf:stream_unroll=4,stream_prefetch=1;u8r0:stream_unroll=8,stream_maxnreg=0" \
    > "$O/rowwise_unroll.txt" 2>&1; echo "paired rc $?"; cp /tmp/pu/gpu_rowwise_paired.csv "$O/" 2>/dev/null
  echo "checks passed: $(grep -c 'all converged True' "$O/rowwise_unroll.txt"); max err $(grep -o 'max err [0-9.e+-]*' "$O/rowwise_unroll.txt" | sort -k3 -g | tail -1)"
  grep -i "error\|wrong\|Traceback" "$O/rowwise_unroll.txt" | head -3
  gpu_tests 180
  check_attn unroll
  grep "^|" "$O/rowwise_unroll.txt" | cut -d'|' -f2-8
  exit 0
fi
if [ "${1:-}" = unroll2 ]; then
  # (written 2026-12-06 late; run 2026-12-07 on an H100, about 5 minutes, with write-first still
  # off by default) the backward's streamed passes with 4 chunks per step (CONFIG bwd_unroll;
  # f+b columns) and the forward writing p at the lane-maxima subset's root first
  # (stream_write_first), also with 2048-wide chunks
  paired 150 bwd 1024x16384,256x65536 1.5,2.0 \
    "b4:bwd_unroll=4;wf:stream_write_first=1;wf2k:stream_write_first=1,chunk=2048"
  # the on-chip kernel (rows <= 1024) with a register cap: 112-120 registers give 18 one-warp
  # programs per SM; 96 / 80 give 21 / 25 (sm_90 ptxas, triton 3.6: alpha = 2 no spill at 96,
  # 12 B at 80; alpha = 1.5 56 / 120 B)
  paired 90 onchip_regs 16384x1024 1.5,2.0 "r96:onchip_maxnreg=96;r80:onchip_maxnreg=80"
  # the row-wise GPU-marked tests with the new streaming defaults (CHUNK 1024 / U 4 for the fast
  # modes; the attention code has not changed since its last GPU run)
  rowwise_tests 150
  exit 0
fi
if [ "${1:-}" = wfdefault ]; then
  # (2026-12-07) write-first as the default (alpha = 2, and alpha = 1.5 above 512 rows, with
  # 2048-wide chunks above 512 rows) against the previous default (old), the two-per-lane subset
  # (t2; t2c1k with 1024-wide chunks), write-first for alpha = 1.5 at <= 512 rows too (wf1),
  # then the row-wise GPU tests (about 4 minutes)
  paired 150 wfdefault 1024x16384,256x65536 1.5,2.0 \
    "old:stream_write_first=0;t2:stream_top2=1;t2c1k:stream_top2=1,chunk=1024;wf1:stream_write_first=1"
  rowwise_tests 150
  exit 0
fi
if [ "${1:-}" = wft2 ]; then
  # (2026-12-07) wfdefault, then the row-wise GPU tests again with the two-per-lane subset on
  # for every launch (a pytest plugin sets CONFIG["stream_top2"] = 1), so that it can become the
  # default on the numbers of the same call (about 7 minutes)
  paired 150 wfdefault 1024x16384,256x65536 1.5,2.0 \
    "old:stream_write_first=0;t2:stream_top2=1;t2c1k:stream_top2=1,chunk=1024;wf1:stream_write_first=1"
  rowwise_tests 150
  timeout 100 bash -c "$(declare -f run_gpu_tests); REPO=$REPO; run_gpu_tests -q -n 4 -k \"test_attention_fullgraph or test_attention_alpha_tensor\"" \
    > "$O/pytest_gpu_compile.txt" 2>&1; echo "pytest (torch.compile) rc $?"; tail -n 3 "$O/pytest_gpu_compile.txt"
  [ $SECONDS -gt 380 ] && { echo "no time left for the top-2 tests ($SECONDS s)"; exit 0; }
  mkdir -p /tmp/plug && printf 'from sparsemap_tools.gpu import rowwise\nrowwise.CONFIG["stream_top2"] = 1\n' > /tmp/plug/top2_on.py
  timeout 150 bash -c "$(declare -f run_gpu_tests); REPO=$REPO; export PYTHONPATH=/tmp/plug:\$PYTHONPATH; run_gpu_tests -q -n 8 -p top2_on -k 'not attention'" \
    > "$O/pytest_gpu_top2.txt" 2>&1; echo "pytest (row-wise, top2 on) rc $?"; tail -n 3 "$O/pytest_gpu_top2.txt"
  exit 0
fi
if [ "${1:-}" = final4 ]; then
  # (2026-12-07, fourth session) the top-2 default for alpha 1.25 above 512 rows: the row-wise
  # GPU tests of streamed rows, then the final defaults against aff1e1b (.old)
  timeout 120 bash -c "$(declare -f run_gpu_tests); REPO=$REPO; run_gpu_tests -q -n 8 -k 'stream or top2 or launch or hypothesis or two_cycle'" \
    > "$O/pytest_gpu_final4.txt" 2>&1; echo "pytest (streamed row-wise) rc $?"; tail -n 3 "$O/pytest_gpu_final4.txt"
  timeout 150 python3 benchmarks/ab_rowwise.py --old .old --rounds 3 --shapes 1024x16384,256x65536 --alphas 1.25,1.5,2.0 \
    > "$O/ab_final4.txt" 2>&1; echo "ab rc $?"
  grep "^|" "$O/ab_final4.txt"; tail -n 3 "$O/ab_final4.txt" | grep -v "^|"
  exit 0
fi
if [ "${1:-}" = rw125 ]; then
  # (2026-12-07, fourth session) alpha 1.25 streamed: the two-per-lane subset and 4096 lanes on
  # 8 warps (each gained ~3.5 % at 1024x16384 in the hold call), and both
  timeout 200 python3 benchmarks/ab_rowwise.py --old .old --rounds 3 --shapes 1024x16384,256x65536 --alphas 1.25 \
    --configs "t2:stream_top2=1;c4k:chunk=4096,stream_elems_per_thread=16,stream_unroll=2;c4kt2:chunk=4096,stream_elems_per_thread=16,stream_unroll=2,stream_top2=1" \
    > "$O/ab_a125.txt" 2>&1; echo "ab rc $?"
  grep "^|" "$O/ab_a125.txt"; tail -n 3 "$O/ab_a125.txt" | grep -v "^|"
  exit 0
fi
if [ "${1:-}" = ab2 ]; then
  # (2026-12-07, third session) after the float32 sum check moved out of the write pass: every
  # GPU-marked test, then old (27ce1b0) / new / write-first off / normalisation off
  gpu_tests 170
  timeout 200 python3 benchmarks/ab_rowwise.py --old .old --rounds 3 \
    --configs "wf0:stream_write_first=0;rn0:stream_renorm=0,onchip_renorm=0" > "$O/ab2.txt" 2>&1; echo "ab rc $?"
  grep "^|" "$O/ab2.txt"; tail -n 3 "$O/ab2.txt" | grep -v "^|"
  exit 0
fi
if [ "${1:-}" = ab ]; then
  # (2026-12-07, third session) the GPU tests that failed in wfall (torch.compile with dim=,
  # two row-wise test assumptions), then the current kernels against the copy before the sum
  # normalisation (.old: gpu/rowwise.py and _host.py of 27ce1b0), top-2 and write-first off
  timeout 120 bash -c "$(declare -f run_gpu_tests); REPO=$REPO; run_gpu_tests -q -n 8 -k 'test_compile or test_forward_onchip or test_rows_are_normalised'" \
    > "$O/pytest_gpu_fix.txt" 2>&1; echo "pytest (fixed tests) rc $?"; tail -n 3 "$O/pytest_gpu_fix.txt"
  timeout 240 python3 benchmarks/ab_rowwise.py --old .old --rounds 5 \
    --configs "t2:stream_top2=1;wf0:stream_write_first=0" > "$O/ab.txt" 2>&1; echo "ab rc $?"
  grep "^|" "$O/ab.txt"; tail -n 3 "$O/ab.txt" | grep -v "^|"
  exit 0
fi
if [ "${1:-}" = wfall ]; then
  # (2026-12-07, second session) wft2 with every GPU-marked test (attention's too: its launcher
  # was split into forward_geometry / forward_state / forward_result for torch.compile since its
  # last GPU run), then the row-wise tests with the two-per-lane subset on (about 7.5 minutes)
  paired 150 wfdefault 1024x16384,256x65536 1.5,2.0 \
    "old:stream_write_first=0;t2:stream_top2=1;t2c1k:stream_top2=1,chunk=1024;wf1:stream_write_first=1"
  gpu_tests 170
  [ $SECONDS -gt 400 ] && { echo "no time left for the top-2 tests ($SECONDS s)"; exit 0; }
  mkdir -p /tmp/plug && printf 'from sparsemap_tools.gpu import rowwise\nrowwise.CONFIG["stream_top2"] = 1\n' > /tmp/plug/top2_on.py
  timeout 100 bash -c "$(declare -f run_gpu_tests); REPO=$REPO; export PYTHONPATH=/tmp/plug:\$PYTHONPATH; run_gpu_tests -q -n 8 -p top2_on -k 'not attention'" \
    > "$O/pytest_gpu_top2.txt" 2>&1; echo "pytest (row-wise, top2 on) rc $?"; tail -n 3 "$O/pytest_gpu_top2.txt"
  exit 0
fi
if [ "${1:-}" = wfmid ]; then
  # wfall without the top-2 test run (about 5.5 minutes): the paired timings, then every
  # GPU-marked test (the sum normalisation, the float16 alpha > 2 fix and torch.compile included)
  paired 190 wfdefault 1024x16384,256x65536,16384x1024 1.5,2.0 \
    "old:stream_write_first=0;t2:stream_top2=1;t2c1k:stream_top2=1,chunk=1024"
  gpu_tests 170
  exit 0
fi
if [ "${1:-}" = wfshort ]; then
  # the least worth a start (about 4.5 minutes): every GPU-marked test, then paired timings of
  # the write-first default against the previous one and the top-2 subset at 1024x16384
  gpu_tests 170
  paired 80 wfshort 1024x16384 1.5,2.0 "old:stream_write_first=0;t2:stream_top2=1"
  exit 0
fi
if [ "${1:-}" = testsonly ]; then
  # every GPU-marked test and nothing else (about 3 minutes)
  gpu_tests 170
  exit 0
fi
if [ "${1:-}" = wfmin ]; then
  # wft2 without the top-2 test run, shorter time limits (for a session with little device time)
  paired 150 wfdefault 1024x16384,256x65536 1.5,2.0 \
    "old:stream_write_first=0;t2:stream_top2=1;t2c1k:stream_top2=1,chunk=1024"
  rowwise_tests 130
  timeout 70 bash -c "$(declare -f run_gpu_tests); REPO=$REPO; run_gpu_tests -q -n 4 -k \"test_attention_fullgraph or test_attention_alpha_tensor\"" \
    > "$O/pytest_gpu_compile.txt" 2>&1; echo "pytest (torch.compile attention) rc $?"; tail -n 3 "$O/pytest_gpu_compile.txt"
  exit 0
fi
if [ "${1:-}" = wftiny ]; then
  # wfmin in one test run (row-wise and the torch.compile tests, attention's included): ~5 min
  paired 140 wfdefault 1024x16384,256x65536 1.5,2.0 \
    "old:stream_write_first=0;t2:stream_top2=1;t2c1k:stream_top2=1,chunk=1024"
  timeout 130 bash -c "$(declare -f run_gpu_tests); REPO=$REPO; run_gpu_tests -q -n 8 -k \"not attention or test_attention_fullgraph or test_attention_alpha_tensor\"" \
    > "$O/pytest_gpu.txt" 2>&1; echo "pytest (row-wise and compile) rc $?"; tail -n 3 "$O/pytest_gpu.txt"
  exit 0
fi
if [ "${1:-}" = wflast ]; then
  # the least a short device window should do: the row-wise and torch.compile GPU tests under
  # the write-first default, then (time permitting) the top-2 subset at 1024x16384 (~3.5 min)
  timeout 120 bash -c "$(declare -f run_gpu_tests); REPO=$REPO; run_gpu_tests -q -n 8 -k \"not attention or test_attention_fullgraph or test_attention_alpha_tensor\"" \
    > "$O/pytest_gpu.txt" 2>&1; echo "pytest (row-wise and compile) rc $?"; tail -n 3 "$O/pytest_gpu.txt"
  [ $SECONDS -gt 140 ] && exit 0
  paired 70 wflast 1024x16384 1.5,2.0 "old:stream_write_first=0;t2:stream_top2=1"
  exit 0
fi
if [ "${1:-}" = generic ]; then
  # (split off unroll2, 2026-12-06 night, to keep that call short) a generic alpha (1.3,
  # exp2/log2) and a per-row alpha tensor (run-time power branch) with U 4 and CHUNK 1024
  paired 130 generic 1024x16384,256x65536 1.3 \
    "g4:stream_unroll_generic=4;g4c1k:stream_unroll_generic=4,chunk=1024"
  paired 130 tensor 1024x16384,256x65536 1.5 \
    "t1:tensor_alpha=1;t4:tensor_alpha=1,stream_unroll_generic=4;t4c1k:tensor_alpha=1,stream_unroll_generic=4,chunk=1024"
  exit 0
fi
if [ "${1:-}" = table ]; then
  # the full paired table (all three shapes, alpha 1.5 / 2 / 1.25, 5 rounds) for the record
  timeout 280 python3 benchmarks/gpu_rowwise.py --paired 5 --reps 100 --graph --check --out /tmp/pg \
    > "$O/rowwise_paired_graph.txt" 2>&1; echo "paired rc $?"; cp /tmp/pg/gpu_rowwise_paired.csv /tmp/pg/*.png "$O/" 2>/dev/null
  grep "^|" "$O/rowwise_paired_graph.txt" | cut -d'|' -f2-8,12
  exit 0
fi
if [ "${1:-}" = breakdown ]; then
  # (2026-12-06, night; the scan-two-blocks code, SPARSEMAP_ATTN_SCAN_SUB and the variant
  # scansub2, was measured slower and removed: commit 81228b6 in git history)
  # the float64 check and the GPU tests of the alpha > 2 bracket commit, the
  # same with the scan sweeping two query blocks per program (SPARSEMAP_ATTN_SCAN_SUB=2), its
  # timing (is the scan bound by L2 bandwidth? each 64-row block reads every K tile: ~4.4 TB/s
  # at N = 16k, D = 64), and where the solve's time goes (nocopy / nobuf / top2 give wrong
  # results: timing only)
  which ncu nsys 2>&1 | head -2
  if [ -z "${2:-}" ]; then  # (`breakdown stages` / `stages2`: the timings only)
  check_attn breakdown
  grep -o '"case": "[^"]*a3[^"]*", "out": [0-9.e-]*, "dq": [0-9.e-]*' "$O/check_breakdown.txt" | cut -c1-90
  gpu_tests 150
  export SPARSEMAP_ATTN_SCAN_SUB=2
  check_attn sub2
  timeout 120 bash -c "$(declare -f run_gpu_tests); REPO=$REPO; run_gpu_tests -q -n 8 -k attention" \
    > "$O/pytest_gpu_sub2.txt" 2>&1; echo "pytest (scan sub 2, attention) rc $?"; tail -n 2 "$O/pytest_gpu_sub2.txt"
  unset SPARSEMAP_ATTN_SCAN_SUB
  fi
  st() {  # N D variants tag timeout [--fb]
    timeout $5 python3 benchmarks/gpu_attention_stages.py --N $1 --D $2 --alpha 1.5 --variants $3 \
      --rounds 2 $6 --out /tmp/s_$4 > "$O/stages_$4.txt" 2>&1; echo "stages $4 rc $?"
    cp /tmp/s_$4/gpu_attention_stages.json "$O/stages_$4.json" 2>/dev/null
    grep -v "^{" "$O/stages_$4.txt" | grep -v "^topics" | tail -n 9 | cut -c1-150
    grep "^topics" "$O/stages_$4.txt" | cut -c1-80
  }
  if [ "${2:-}" = stages2 ]; then  # (the second call: the profiling variants that do not crash)
    st 16384 64 default,scantma sctma 70
    st 16384 64 default,gather0,nocopyg0,nobufg0 brk16k 100
    st 1024 64 default,tiles/BN=32 bn1k 50
    exit 0
  fi
  st 16384 64 default,scansub2 sub16k 120 --fb
  st 16384 64 default,nocopy,nobuf,top2,gather0,tiles/solve.nw=8 brk16k 130
  st 1024 64 default,scansub2,nocopy,nobuf,tiles/BN=32 brk1k 90
  st 16384 128 default,scansub2 sub16k128 90
  exit 0
fi
if [ "${1:-}" = prefix ]; then
  # (2026-12-06, night) validation of the commits after c833fda (shift-invariant bracket, the
  # prefix scatter as inline stores, _row_block / _query_start): the float64 check and every
  # GPU-marked test; then the prefix-sum copy (asm stores) against the extraction rounds for
  # alpha 1.5 at N = 1k / 4k / 16k (forward; forward+backward at 16k)
  check_attn prefix
  gpu_tests 200
  for cfg in "1024 1.5" "4096 1.5" "1024 2.0" "16384 1.5"; do
    set -- $cfg
    fb=; [ $1 = 16384 ] && fb=--fb
    timeout $([ $1 = 16384 ] && echo 150 || echo 70) python3 benchmarks/gpu_attention_stages.py --N $1 --D 64 --alpha $2 \
      --variants default,prefix --rounds 2 $fb --out /tmp/s_$1_$2 > "$O/stages_prefix_$1_$2.txt" 2>&1
    echo "stages N=$1 a=$2 rc $?"
    cp /tmp/s_$1_$2/gpu_attention_stages.json "$O/stages_prefix_$1_$2.json" 2>/dev/null
    grep -v "^{" "$O/stages_prefix_$1_$2.txt" | tail -n 5 | cut -c1-150
  done
  exit 0
fi
if [ "${1:-}" = final ]; then
  # the float64 check, every GPU-marked test (attention and row-wise) on the final code and the
  # N = 16k causal rows of the issue grid for D = 64, alpha 1.5 (no peers)
  check_attn final
  gpu_tests 240
  timeout 100 python3 benchmarks/gpu_attention.py --bench --issue --profile --only "N=16384,D=64,causal=True,alpha=1.5" \
    --max-seconds 45 --out /tmp/ab > "$O/attn_n16k.txt" 2>&1; echo "attn rc $?"
  cp /tmp/ab/gpu_attention.json "$O/gpu_attention_n16k.json" 2>/dev/null
  grep "^|" "$O/attn_n16k.txt" | tail -n 10 | cut -c1-220
  # the inline-asm stores on (default) and off, forward and forward+backward, two rounds
  timeout 150 python3 benchmarks/gpu_attention_stages.py --D 64 --alpha 1.5 --variants default,asmstore0 \
    --rounds 2 --fb --out /tmp/sf > "$O/stages_final.txt" 2>&1; echo "stages rc $?"
  cp /tmp/sf/gpu_attention_stages.json "$O/stages_final.json" 2>/dev/null
  grep -v "^{" "$O/stages_final.txt" | tail -n 6 | cut -c1-150
  exit 0
fi
if [ "${1:-}" = attention ]; then
  timeout 330 python3 benchmarks/gpu_attention.py --bench --profile --only "N=16384,D=64,causal=True,alpha=1.5" \
    --max-seconds 150 --out /tmp/ab > "$O/attn_ada.txt" 2>&1; echo "attn rc $?"
  cp /tmp/ab/gpu_attention.json "$O/" 2>/dev/null; tail -n 6 "$O/attn_ada.txt"
  exit 0
fi
timeout 150 bash -c "$(declare -f run_gpu_tests); REPO=$REPO; run_gpu_tests -q -n 8 -k 'rowwise or api_triton or torch'" \
  > "$O/pytest_gpu.txt" 2>&1; echo "pytest rc $?"; tail -n 2 "$O/pytest_gpu.txt"
python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/site_old .old >/dev/null 2>&1
for round in 1 2; do
  for code in old new; do
    site=/tmp/site2; [ $code = old ] && site=/tmp/site_old
    PYTHONPATH=$site:/tmp/site timeout 90 python3 benchmarks/gpu_rowwise_api.py --no-profile --label "$code" \
      > /tmp/api_${code}_$round.txt 2>&1
  done
done
grep -h "^| [on]" /tmp/api_old_1.txt /tmp/api_new_1.txt /tmp/api_old_2.txt /tmp/api_new_2.txt > "$O/rowwise_api_ab.txt"
timeout 150 python3 benchmarks/gpu_rowwise.py --paired 5 --reps 100 --graph --check --out /tmp/pg \
  > "$O/rowwise_paired_graph.txt" 2>&1; echo "paired rc $?"; cp /tmp/pg/gpu_rowwise_paired.csv "$O/"
grep "^|" "$O/rowwise_paired_graph.txt"; cat "$O/rowwise_api_ab.txt"
