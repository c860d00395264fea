#!/usr/bin/env bash
# One GPU call: the standalone sm90a forward harness, small instance set (HOPPER_SET=small, with
# the persistent / one-tile-per-CTA variants v7 / v8): every reference test (also on a grid of
# at most 3 persistent CTAs), then all benchmarks (anchors, small windows, 1d-strided K sweep).
#   bash tests/gpu_standalone/call_hopper_persist.sh   (repository root; needs .carry/)
# Writes $OUT/gpu.txt, $OUT/test.log, $OUT/bench.log.
set -o pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --target /tmp/cl .carry/nvidia_cutlass-*.whl >/dev/null 2>&1
export CUTLASS_INCLUDE=/tmp/cl/cutlass_library/source/include JOBS=${JOBS:-16} HOPPER_SET=small
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.txt"
timeout ${TEST_LIMIT:-300} bash tests/gpu_standalone/run_hopper.sh --test-only 2>&1 \
  | grep -v "warning #177\|Remark\|^$" | tee "$OUT/test.log" | grep -v " PASS$"
B=/tmp/fastna_hopper_standalone/test_hopper_fwd
test -x $B || exit 1
timeout ${BENCH_LIMIT:-150} $B --bench-only ${ONLY:+--only "$ONLY"} 2>&1 | tee "$OUT/bench.log" | grep -v "^RATIO"
