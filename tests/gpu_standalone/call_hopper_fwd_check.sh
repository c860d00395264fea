#!/usr/bin/env bash
# One GPU call for the Hopper forward: standalone harness (HOPPER_SET=r1: bf16 D=128 r1-3 + nat,
# schedule variants) built alongside a restricted Python build, then (GPU idle otherwise) the
# harness's reference tests and benchmarks, pytest test_fused_gpu -k "hopper or forward", and
# bench_fwd's 1d / 1d-strided / nat rows with kernel time (cuDNN and Flex in the same run).
#   bash tests/gpu_standalone/call_hopper_fwd_check.sh   (repository root; needs .carry/)
# Writes $OUT/{gpu.txt,harness_test.log,harness_bench.log,pytest.log,fwd.md,build_py.log}.
set -o pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --target /tmp/cl .carry/nvidia_cutlass-*.whl >/dev/null 2>&1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.txt"
t0=$(date +%s)
( export CUTLASS_INCLUDE=/tmp/cl/cutlass_library/source/include JOBS=6 HOPPER_SET=r1
  bash tests/gpu_standalone/run_hopper.sh --test-only --bench-only ) > "$OUT/harness_build.log" 2>&1 &
hb=$!
export FASTNA_KERNELS="${FASTNA_KERNELS:-fused_fwd;fused_bwd;hopper_fwd;hopper_bwd}"
export FASTNA_DTYPES="${FASTNA_DTYPES:-float16;bfloat16}" CMAKE_BUILD_PARALLEL_LEVEL=12
bash scripts/gpu_build.sh > "$OUT/build_py.log" 2>&1; prc=$?
wait $hb; hrc=$?
echo "builds: python rc=$prc harness rc=$hrc, $(( $(date +%s) - t0 )) s"; grep -E "error|spill" "$OUT/harness_build.log" | head -20
B=/tmp/fastna_hopper_standalone/test_hopper_fwd
if [ -x $B ]; then
  timeout ${TEST_LIMIT:-90} $B --test-only 2>&1 | tee "$OUT/harness_test.log" | grep -v " PASS$"
  timeout ${BENCH_LIMIT:-120} $B --bench-only ${ONLY:+--only "$ONLY"} 2>&1 | grep -v "^RATIO" | tee "$OUT/harness_bench.log"
fi
[ $prc -eq 0 ] || { tail -30 "$OUT/build_py.log"; exit 1; }
export PYTHONPATH=/tmp/fastna-cutlass${PYTHONPATH:+:$PYTHONPATH}
(cd tests && timeout ${PYTEST_LIMIT:-200} python3 -m pytest -q -p no:randomly -p no:cacheprovider -m gpu \
   test_fused_gpu.py -k "hopper or forward" 2>&1 | tail -15 | tee "$OUT/pytest.log")
(cd tests && timeout ${FWD_LIMIT:-120} python3 ../benchmarks/bench_fwd.py --cases ${CASES:-1d,1d-strided,nat} \
   --backends hopper --kernel-time --out "$OUT/fwd.md" 2>&1 | tail -20)
