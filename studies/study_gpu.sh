#!/usr/bin/env bash
# The study of issue #11 on one GPU (sized for one H200 in under 10 minutes; NOT yet measured there).
#
#   bash studies/study_gpu.sh           # on a GPU machine: the report lands in $OUT (or ./study_gpu)
#   bash studies/study_gpu.sh --smoke   # a tiny version on CPU, to prove the script works
#
# Runs studies/study.py --profile gpu (bf16-mixed, GPU batch sizes, paper-like lengths: 400 epochs
# on 20 labels per class, 200 on 100) for the classification study and the segmentation study, 3
# seeds, in priority order; no regime starts after --budget-s seconds, so the run ends in time even
# if a regime is slower than estimated (the report then marks the rest "not measured").
# Checkpoints stay in $STUDY_RUNS (default a temporary folder); $OUT receives results.md and, per
# regime, compare's report.md, results.jsonl and PNGs (the layout results.md links to).
set -euo pipefail

usage() {
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
}

smoke=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "study_gpu.sh: unknown option '$arg' received; valid: --smoke, --help" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
out_dir="${OUT:-./study_gpu}"
runs="${STUDY_RUNS:-$(mktemp -d -t mmix-study-XXXXXX)}"
mkdir -p "$out_dir" "$runs"

# Priority order: the overfitting classification regimes and the generalisation-gap segmentation
# first (the goals of #11 are checked on them), the brain demo last.
regimes="cls20-long,seg-digit-canvas,cls100-long,cls100-long-a0.2,cls100-long-a2,seg-brain2d"

if [[ "$smoke" == 1 ]]; then
  echo "study_gpu.sh --smoke: the GPU profile's regimes, tiny, on CPU (the numbers mean nothing)"
  "$PYTHON" studies/study.py --profile gpu --quick --accelerator cpu --only "$regimes" --seeds 0,1 \
    --out "$runs/study"
else
  if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "study_gpu.sh: no CUDA device is visible to torch; run on a GPU machine, or pass --smoke for the CPU check" >&2
    exit 2
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"
  start=$(date +%s)
  "$PYTHON" studies/study.py --profile gpu --only "$regimes" --seeds 0,1,2 --budget-s 420 --out "$runs/study"
  echo "study_gpu.sh: study took $(( $(date +%s) - start )) s"
fi

# Bring back the reports, not the checkpoints (each run's own folder stays in $runs).
(cd "$runs/study" && find . -path '*/runs' -prune -o \( -name '*.md' -o -name '*.jsonl' -o -name '*.png' \) -print) |
  while read -r file; do
    mkdir -p "$out_dir/$(dirname "$file")"
    cp "$runs/study/$file" "$out_dir/$file"
  done
echo "study_gpu.sh: report $out_dir/results.md (runs and checkpoints in $runs)"
