#!/usr/bin/env bash
# The device call behind the 2026-12-01 H200 records (docs/benchmarks*.md): GPU tests of the
# changed row-wise code, the public API's host cost old vs new (alternating), the paired row-wise
# table timed with CUDA graphs, and attention with adasplash v2 at the anchor configuration.
# A second call, `bash benchmarks/h200_session.sh attention`, times attention with adasplash v2;
# `bash benchmarks/h200_session.sh gather [True|False]`: the later session's call (causal or not).
# Run from the repository root on the device with .whl (adasplash, entmax) and .old (the package
# before the host-overhead change: git archive of the previous commit) carried.
source benchmarks/device_setup.sh
set -o pipefail
O=${OUT:-/tmp/out}
if [ "${1:-}" = gather ]; then
  # for the session after the second 2026-12-01 one (written then, not yet run): GPU tests, the
  # experimental gathered dQ and a register cap of the solve against the default and the gather
  # off (D = 64, alpha 1.5, with f+b), the N = 16k rows of the issue grid (no peers installed)
  timeout 170 bash -c "$(declare -f run_gpu_tests); REPO=$REPO; run_gpu_tests -q -n 8" \
    > "$O/pytest_gpu.txt" 2>&1; echo "pytest rc $?"; tail -n 2 "$O/pytest_gpu.txt"
  SPARSEMAP_ATTN_DQ_GATHER=1 timeout 100 python3 benchmarks/gpu_attention.py --check --out /tmp/ck \
    > "$O/check_dq_gather.txt" 2>&1; echo "check (gathered dQ on) rc $?"; tail -n 4 "$O/check_dq_gather.txt"
  timeout 110 python3 benchmarks/gpu_attention_stages.py --D 64 --alpha 1.5 \
    --variants default,dqgather,solve=168,gather0 --rounds 2 --fb --out /tmp/sa > "$O/stages_regs.txt" 2>&1
  echo "stages rc $?"; tail -n 9 "$O/stages_regs.txt" | cut -c1-100
  timeout 290 python3 benchmarks/gpu_attention.py --bench --issue --profile --only "N=16384,causal=${2:-True}" \
    --max-seconds 240 --out /tmp/ab > "$O/attn_n16k.txt" 2>&1; echo "attn rc $?"
  cp /tmp/ab/gpu_attention.json "$O/gpu_attention_n16k.json" 2>/dev/null; cp /tmp/ab/gpu_attention_table.txt "$O/" 2>/dev/null
  grep "^|" "$O/attn_n16k.txt" | tail -n 14
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
