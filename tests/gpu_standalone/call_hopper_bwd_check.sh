#!/usr/bin/env bash
# One GPU call for the Hopper backward (repository root; needs .carry/): the standalone harness
# (all 12 default instances, variant 1 = SkipEmpty for r1 bf16 D=128, and the BASE_INCLUDE
# baseline for bf16 D=128 r1-3 when BASE_INCLUDE is set) built alongside a restricted Python
# build (bf16, D 64/128); then harness tests (default; variant 1), harness benchmarks (1d,
# 1d-strided, flux, hunyuan, strided forms, video-causal-t: baseline vs this in one run), pytest
# test_fused_gpu -k "hopper or backward or gradients", per-kernel rows of the 1d fwd+bwd, and
# bench_fwd --bwd --graph --kernel-time on 1d / 1d-strided (cuDNN and Flex in the same run).
#   BASE_INCLUDE=/abs/include FASTNA_COMMIT=abc1234 bash tests/gpu_standalone/call_hopper_bwd_check.sh
# Env: HB_V0 / HB_VARIANTS / HB_BASE (harness instance lists, default all / "0 1" / bf16 D=128 r1-3),
# BENCH_FILTER (harness --bench SUBSTR), FASTNA_RANKS etc. (Python build), *_LIMIT (timeouts, s).
# Writes $OUT/{gpu.txt,build.txt,test.log,bench.log,pytest.log,rows.md,fwdbwd.md,fwdbwd.json}.
set -o pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --target /tmp/cl .carry/nvidia_cutlass-*.whl >/dev/null 2>&1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.txt"
t0=$(date +%s)
all=""; for r in 1 2 3; do for e in f16 bf16; do for d in 64 128; do all="$all r${r}_${e}_${d}"; done; done; done
( export CUTLASS_INCLUDE=/tmp/cl/cutlass_library/source/include JOBS=8 VARIANTS="${HB_VARIANTS:-0 1}" HOPPER_INSTS=r1_bf16_128 \
    V0_INSTS="${HB_V0:-$all}" SM80_INSTS=none BASE_INSTS="${HB_BASE:-r1_bf16_128 r2_bf16_128 r3_bf16_128}"
  bash tests/gpu_standalone/run_hopper_bwd.sh --test-only --bench-only ) > "$OUT/harness_build.log" 2>&1 &
hb=$!
export FASTNA_KERNELS="${FASTNA_KERNELS:-fused_fwd;fused_bwd;hopper_fwd;hopper_bwd}"
export FASTNA_DTYPES="${FASTNA_DTYPES:-bfloat16}" FASTNA_HEAD_DIMS="${FASTNA_HEAD_DIMS:-64;128}" CMAKE_BUILD_PARALLEL_LEVEL=10
bash scripts/gpu_build.sh > "$OUT/build_py.log" 2>&1; prc=$?
wait $hb; hrc=$?
{ echo "builds: python rc=$prc harness rc=$hrc, $(( $(date +%s) - t0 )) s"
  grep -E "error|spill|build:" "$OUT/harness_build.log" | sort | uniq -c | head -40; } | tee "$OUT/build.txt"
rm -f "$OUT/harness_build.log"
B=/tmp/fastna_hopper_bwd_standalone/test_hopper_bwd
if [ -x $B ]; then
  { timeout ${TEST_LIMIT:-150} $B --test-only
    for v in ${HB_VARIANTS:-0 1}; do [ "$v" = 0 ] || timeout 60 $B --test-only --variant $v | sed "s/^/[v$v] /"; done; } 2>&1 \
    | tee "$OUT/test.log" | grep -E "FAIL|SUMMARY|error"
  timeout ${BENCH_LIMIT:-150} $B --bench-only ${BENCH_FILTER:+--bench "$BENCH_FILTER"} 2>&1 | tee "$OUT/bench.log"
fi
[ $prc -eq 0 ] || { tail -30 "$OUT/build_py.log" >> "$OUT/build.txt"; exit 1; }
rm -f "$OUT/build_py.log"
export PYTHONPATH=/tmp/fastna-cutlass${PYTHONPATH:+:$PYTHONPATH}
(cd tests && timeout ${PYTEST_LIMIT:-200} python3 -m pytest -q -p no:randomly -p no:cacheprovider -m gpu \
   test_fused_gpu.py -k "hopper or backward or gradients" 2>&1 | tail -15 | tee "$OUT/pytest.log")
(cd tests && timeout 60 python3 ../benchmarks/tools/bwd_kernel_rows.py --cases 1d,1d-strided 2>&1 | tee "$OUT/rows.md")
(cd tests && timeout ${FWD_LIMIT:-150} python3 ../benchmarks/bench_fwd.py --bwd --graph --kernel-time \
   --cases ${CASES:-1d,1d-strided} --backends hopper --out "$OUT/fwdbwd.md" 2>&1 | tail -8)
