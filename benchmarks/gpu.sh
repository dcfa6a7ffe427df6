#!/usr/bin/env bash
# GPU benchmark (issue #12 §6): resnet50 at 224 px batch 256 and smp Unet-resnet34 at 512 px batch 32,
# bf16 autocast and channels_last, plain vs manifold mixup, eager and torch.compile: images/s, the
# mixed/plain ratios, peak memory (torch.cuda.max_memory_allocated, a fresh process per variant).
#
#   benchmarks/gpu.sh            # on a GPU machine, from the repository root; < 5 min on one H200
#   benchmarks/gpu.sh --smoke    # tiny sizes on CPU, compile with the 'eager' backend: proves it runs
#
# Writes $OUT/gpu_results.md (OUT defaults to ./gpu_results) and one log per part beside it. Each
# part has its own timeout (PART_TIMEOUT, COMPILE_TIMEOUT seconds); a part that runs out is recorded
# as such in the table and the script goes on. Python: .venv/bin/python if present, else a python3
# that imports torch, timm and segmentation_models_pytorch, else `make install` creates .venv.
# The compiled mixer uses COMPILE_POINTS_* (each point is one more compile; defaults: input + one stage).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SMOKE=0
if [[ "${1:-}" == "--smoke" ]]; then SMOKE=1; elif [[ $# -gt 0 ]]; then
  echo "usage: benchmarks/gpu.sh [--smoke]; received: $*" >&2; exit 2
fi
RESULTS="${OUT:-./gpu_results}"
mkdir -p "$RESULTS"
TABLE="$RESULTS/gpu_results.md"

if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
elif python3 -c "import torch, timm, segmentation_models_pytorch" 2>/dev/null; then PY=python3
else make install >"$RESULTS/install.log" 2>&1; PY=.venv/bin/python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" NO_ALBUMENTATIONS_UPDATE=1

if [[ $SMOKE == 1 ]]; then
  DEVICE=cpu; REPS=2; BACKEND=eager; RESNET=resnet50:2x32; UNET=unet_r34:2x64
  PART_TIMEOUT=${PART_TIMEOUT:-300}; COMPILE_TIMEOUT=${COMPILE_TIMEOUT:-300}
else
  DEVICE=cuda; REPS=${REPS:-20}; BACKEND=inductor; RESNET=resnet50:256x224; UNET=unet_r34:32x512
  PART_TIMEOUT=${PART_TIMEOUT:-75}; COMPILE_TIMEOUT=${COMPILE_TIMEOUT:-70}
fi
COMPILE_POINTS_RESNET=${COMPILE_POINTS_RESNET:-input,layer2}
COMPILE_POINTS_UNET=${COMPILE_POINTS_UNET:-input,encoder.layer2}

{
  echo "# GPU benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`benchmarks/gpu.sh$([[ $SMOKE == 1 ]] && echo ' --smoke')\`; git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  "$PY" -c "import torch; print('torch', torch.__version__, '| device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu', '| CPUs:', __import__('os').cpu_count())"
  echo
  echo "bf16 autocast, channels_last, SGD; median of $REPS interleaved steps; compiled mixer points: resnet50 $COMPILE_POINTS_RESNET, Unet $COMPILE_POINTS_UNET"
  echo
  echo "| case | points | compiled | plain s | mixed s | images/s plain | images/s mixed | ratio of medians | paired ratio [q1, q3] | peak mem plain | peak mem mixed | mem ratio | of it, mixer build |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} >"$TABLE"

part() {  # part NAME TIMEOUT ARGS... : run overhead.py, append its table rows (or the failure) to the table
  local name=$1 limit=$2; shift 2
  local log="$RESULTS/$name.log" status=0
  echo "== $name (timeout ${limit}s)"
  timeout --kill-after=10 "$limit" "$PY" benchmarks/overhead.py --device "$DEVICE" --reps "$REPS" \
    --bf16 --channels-last "$@" >"$log" 2>&1 || status=$?
  grep -E '^\| [a-z]' "$log" | grep -v '^| case' >>"$TABLE" || true
  if [[ $status == 124 || $status == 137 ]]; then
    echo "| $name | | | timed out after ${limit}s (see $name.log) | | | | | | | | | |" >>"$TABLE"
  elif [[ $status != 0 ]]; then
    echo "| $name | | | failed with exit $status (see $name.log) | | | | | | | | | |" >>"$TABLE"
  fi
  tail -n 3 "$log"
}

part resnet50_eager "$PART_TIMEOUT" --cases "$RESNET" --memory
part unet_eager "$PART_TIMEOUT" --cases "$UNET" --memory
part resnet50_compiled "$COMPILE_TIMEOUT" --cases "$RESNET" --compile all --no-eager \
  --compile-backend "$BACKEND" --compile-points "$COMPILE_POINTS_RESNET"
part unet_compiled "$COMPILE_TIMEOUT" --cases "$UNET" --compile all --no-eager \
  --compile-backend "$BACKEND" --compile-points "$COMPILE_POINTS_UNET"

echo "wrote $TABLE"
cat "$TABLE"
