#!/usr/bin/env bash
# Builds fastna on the GPU machine and runs the GPU test suite in one go.
#   bash scripts/gpu_check.sh [extra pytest args]
# Needs the nvidia-cutlass wheel in .carry/ (the GPU machine has no network; pass carry=[".carry"]).
# Writes logs and a markdown summary under $OUT (default ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
source scripts/gpu_build.sh || exit $?
build_s=$FASTNA_BUILD_SECONDS

(cd tests && python3 -m fastna info) | tee "$OUT/info.txt"
(cd tests && python3 -m pytest -q -m gpu -p no:cacheprovider --junitxml "$OUT/gpu_junit.xml" "$@" . ) \
  2>&1 | tee "$OUT/gpu_tests.log"
rc=${PIPESTATUS[0]}

{
  echo "# GPU test run"
  echo
  echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n1)"
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- commit: ${FASTNA_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  echo "- torch: $(python3 -c 'import torch; print(torch.__version__)')"
  echo "- build: FASTNA_CUDA_ARCHS=$FASTNA_CUDA_ARCHS, ${build_s}s on $(nproc) cores"
  echo "- command: bash scripts/gpu_check.sh $*"
  echo
  echo '```'
  tail -n 15 "$OUT/gpu_tests.log"
  echo '```'
} >"$OUT/summary.md"
exit $rc
