# A/B of the attention stage timings against another commit, on the device machine:
#   bash benchmarks/ab_stages.sh OLD.tar TAG [gpu_attention_stages.py arguments]
# OLD.tar: `git archive -o .old/OLD.tar <commit>` (carried as .old).  Installs that tree into
# /tmp/site_old, runs the stage script with it and then with this checkout (two processes, same
# GPU, each with its own FA2 baseline), writes $OUT/ab_TAG_{old,new}.txt and prints one line per
# (inputs, variant) of the last round: scan / solve / output / forward ms, ratio to FA2.
# OLDV=v1,v2 replaces the --variants of the old side (default: the same as the new side's).
set -u
OLD=$1; TAG=$2; shift 2
source benchmarks/device_setup.sh >/dev/null 2>&1
rm -rf /tmp/old_src /tmp/site_old && mkdir -p /tmp/old_src && tar -xf "$OLD" -C /tmp/old_src
python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/site_old /tmp/old_src >/tmp/pip_old.log 2>&1 || tail -5 /tmp/pip_old.log
for side in old new; do
  if [ $side = old ]; then PP=/tmp/site_old:/tmp/site; else PP=$PYTHONPATH; fi
  extra=()
  if [ $side = old ] && [ -n "${OLDV:-}" ]; then extra=(--variants "$OLDV"); fi
  PYTHONPATH=$PP python3 benchmarks/gpu_attention_stages.py "$@" "${extra[@]}" --out /tmp/ab_$side > "$OUT/ab_${TAG}_$side.txt" 2>&1
  echo "$side rc $?"
done
python3 - "$OUT" "$TAG" <<'PY'
import json, sys
out, tag = sys.argv[1:3]
for side in ("old", "new"):
    rows = [json.loads(l) for l in open(f"{out}/ab_{tag}_{side}.txt") if l.startswith("{")]
    last = max((r["round"] for r in rows), default=0)
    for r in rows:
        if r["round"] == last:
            fb = "" if r["fwd_bwd"] != r["fwd_bwd"] else f" f+b {r['fwd_bwd']:.3f} ({r['fb_ratio']:.2f}x)"
            print(f"{tag} {side} a={r['alpha']} {r['kind']:7s} {r['variant']:9s} scan {r['scan']:.3f} "
                  f"solve {r['solve']:.3f} out {r['output']:.3f} fwd {r['fwd']:.3f} "
                  f"({r['ratio']:.2f}x FA2 {r['flash_fwd']:.3f}) passes {r['solve_passes']}{fb}")
PY
