# Source on the device machine (from the repository root): installs the carried peer wheels
# (.whl/: adasplash, entmax) and this package into /tmp, sets PYTHONPATH, prints the GPU.
# Then run benchmarks as `python3 benchmarks/...` and tests as `run_gpu_tests [pytest args]`
# (from /tmp, so that the checkout's sparsemap_tools/ does not shadow the installed package).
export PYTHONUNBUFFERED=1
REPO=$(pwd)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/site2 . >/tmp/pip_self.log 2>&1 || cat /tmp/pip_self.log
export PYTHONPATH=/tmp/site2:/tmp/site
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
run_gpu_tests() { (cd /tmp && python3 -m pytest -p no:cacheprovider -m gpu "$@" "$REPO/tests"); }
