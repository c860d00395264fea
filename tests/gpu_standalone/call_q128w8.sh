#!/usr/bin/env bash
# One GPU call: build the standalone fused-forward harness for sm_90 (H100/H200) and run the
# q128w8 (v3) / 1D 4-warp 128x32 (v4) tiles' tests and benchmarks (tests/gpu_standalone/run.sh --v3).
#   bash tests/gpu_standalone/call_q128w8.sh        (run from the repository root; needs .carry/)
# Writes $OUT/gpu.txt, $OUT/q128w8.log (build + every test line + BENCH lines), $OUT/regs.txt.
set -o pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --target /tmp/cl .carry/nvidia_cutlass-*.whl >/dev/null 2>&1
export CUTLASS_INCLUDE=/tmp/cl/cutlass_library/source/include JOBS=${JOBS:-16} ARCHS=${ARCHS:-90}
export BUILD=${BUILD:-/tmp/fastna_gpu_standalone}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.txt"
timeout ${LIMIT:-480} bash tests/gpu_standalone/run.sh --v3 2>&1 | grep -v "warning #177\|Remark\|^$" \
  | tee "$OUT/q128w8.log" | grep -v " PASS$"
rc=$?
for o in "$BUILD"/inst_r1_bf16_128.o "$BUILD"/inst_r1_bf16_128_v3.o "$BUILD"/inst_r1_bf16_128_v4.o \
         "$BUILD"/inst_r2_bf16_128_v3.o; do
  [ -f "$o" ] && { echo "== $(basename "$o")"; cuobjdump -res-usage "$o" 2>&1 | grep -E "REG|Function" | head -4; }
done > "$OUT/regs.txt"
cat "$OUT/regs.txt"
exit $rc
