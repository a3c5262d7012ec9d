#!/usr/bin/env bash
# The GPU path in one command (benchmarks/gpu_check.py): CUDA tests, training steps/s and
# clips/s at batch 256 (main-job model, CNN10, HTSAT-tiny; bf16), data wait from a feature
# store, on-device LogMel vs one CPU thread, peak GPU memory. Prints ONE JSON object as its
# last line; progress goes to stderr. Needs only `make install` (+ `make apt-test-deps` for
# real sounds; synthesised audio otherwise); no internet, nothing outside the repository.
#
#   tools/gpu_check.sh                 # on a CUDA machine: at most ~8 minutes
#   tools/gpu_check.sh --dry-run       # CPU, batch 4, 2 steps (also what runs without CUDA)
#   tools/gpu_check.sh --skip cuda_tests --batch 128   # options: benchmarks/gpu_check.py --help
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$root/.venv/bin/python}
if [ ! -x "$PY" ]; then
  echo "gpu_check: $PY not found; run 'make install' first (or set PYTHON=...)" >&2
  exit 2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
cd "$root"
# the script keeps to its own --budget (450 s); this is the hard stop at 8 minutes
exec timeout --signal=TERM --kill-after=10 480 "$PY" "$root/benchmarks/gpu_check.py" "$@"
