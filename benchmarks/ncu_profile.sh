#!/usr/bin/env bash
# Hardware counters of the kernels that issues 4 and 5 wait on, with Nsight Compute (written
# 2026-12-08, not yet run: no device that session).  On the device, from the repository root:
#   bash benchmarks/ncu_profile.sh [attn|rowwise|all]      (default all; files under $OUT)
# attn: the attention forward at the issue 5 anchor (N = 16k, B = 1, H = 16, D = 64, causal,
#   bf16, alpha = 1.5, random inputs), its solve kernel (pass-0 sweep + candidate copy + gathered
#   output: where do its 2.6 ms go?) and its scan; rowwise: the streamed forward at 1024x16384
#   float32, alpha = 1.5 and 2, and torch.softmax beside it (bandwidth-bound or latency-bound?).
# ncu reads counters only on the Firecracker machines (the device's KINDS.md); the clocks are
# left alone (--clock-control none, as METHOD.md asks).  Each profile replays one launch of
# one kernel (--launch-skip 1: the second call, after the compile), so each takes seconds.
set -uo pipefail
O=${OUT:-/tmp/out}
mkdir -p "$O"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | tail -n 1)
if [ -z "$NCU" ]; then echo "no ncu found"; exit 1; fi
"$NCU" --version | tail -n 1

profile() {  # NAME KERNEL_REGEX COMMAND...: one launch, --set full, raw + source exports, summary
  local name=$1 kern=$2
  shift 2
  timeout 240 "$NCU" --clock-control none --target-processes all -k "regex:$kern" -s 1 -c 1 \
    --set full --import-source yes -f -o "$O/$name" "$@" > "$O/$name.log" 2>&1
  echo "== $name: ncu rc $? ($(tail -n 1 "$O/$name.log" | cut -c1-100))"
  "$NCU" -i "$O/$name.ncu-rep" --page raw --csv > "$O/$name.raw.csv" 2> "$O/$name.raw.err"
  "$NCU" -i "$O/$name.ncu-rep" --page details > "$O/$name.details.txt" 2>&1
  "$NCU" -i "$O/$name.ncu-rep" --page source --csv --print-source sass > "$O/$name.source.csv" \
    2> "$O/$name.source.err"
  python3 benchmarks/ncu_summary.py "$O/$name.raw.csv" "$O/$name.source.csv" --top 25 \
    > "$O/$name.summary.txt" 2>&1
  head -n 60 "$O/$name.summary.txt"
}

what=${1:-all}
if [ "$what" = attn ] || [ "$what" = all ]; then
  profile attn_solve_a15 _fwd_solve_kernel python3 benchmarks/ncu_workloads.py attn --alpha 1.5
  profile attn_scan_a15 _fwd_scan_kernel python3 benchmarks/ncu_workloads.py attn --alpha 1.5
fi
if [ "$what" = rowwise ] || [ "$what" = all ]; then
  for a in 1.5 2.0; do
    profile "rowwise_stream_a$a" _fwd_stream_kernel python3 benchmarks/ncu_workloads.py rowwise --alpha $a
  done
  profile rowwise_softmax softmax python3 benchmarks/ncu_workloads.py rowwise --alpha 2.0
fi
exit 0
