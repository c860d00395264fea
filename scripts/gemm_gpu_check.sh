#!/usr/bin/env bash
# One-call GPU verification of the UNVERIFIED GEMM-based NA kernels (PN / NN / IN,
# include/fastna/gemm; benchmarks/NOTES_gemm.md):
#   1. the standalone harness tests/gpu_standalone/run_gemm.sh (kernel-level, CPU double reference)
#   2. a fastna build with FASTNA_KERNELS=gemm_na (opt-in family; not in the default list)
#   3. FASTNA_UNVERIFIED_GEMM=1 pytest -m gpu tests/test_gemm_gpu.py (backend="gemm" of
#      fastna.ops_unfused, forward + autograd vs the reference in float64)
#   bash scripts/gemm_gpu_check.sh [extra pytest args]
# Needs the nvidia-cutlass wheel in .carry/ (no network on the GPU machine: carry=[".carry"]).
# Logs under $OUT (default ./gpu-out). Env: SKIP_STANDALONE=1 skips step 1.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
export FASTNA_CUDA_ARCHS=${FASTNA_CUDA_ARCHS:-90a}

cl=$(python3 -c "import cutlass_library, os; print(os.path.dirname(cutlass_library.__file__))" 2>/dev/null)
if [ -z "$cl" ]; then
  whl=$(ls .carry/nvidia_cutlass-*.whl 2>/dev/null | head -n1)
  [ -n "$whl" ] && python3 -m pip install -q --no-deps --target /tmp/fastna-cutlass "$whl"
  export PYTHONPATH=/tmp/fastna-cutlass${PYTHONPATH:+:$PYTHONPATH}
  cl=/tmp/fastna-cutlass/cutlass_library
fi

rc_sa=skipped
if [ "${SKIP_STANDALONE:-0}" != 1 ]; then
  CUTLASS_INCLUDE=$cl/source/include ARCHS=${ARCHS:-90} JOBS=${JOBS:-16} \
    tests/gpu_standalone/run_gemm.sh >"$OUT/standalone.log" 2>&1
  rc_sa=$?
  echo "standalone harness rc=$rc_sa"; grep -E "FAIL|SUMMARY|build:" "$OUT/standalone.log" | tail -n 40
fi

t0=$(date +%s)
FASTNA_KERNELS=gemm_na FASTNA_RANKS="1;2;3" FASTNA_DTYPES="float16;bfloat16" FASTNA_HEAD_DIMS="32;64;128" \
  python3 -m pip install -v --no-build-isolation --no-deps --no-index . >"$OUT/build.log" 2>&1
rc=$?
echo "build rc=$rc in $(( $(date +%s) - t0 ))s (FASTNA_CUDA_ARCHS=$FASTNA_CUDA_ARCHS, FASTNA_KERNELS=gemm_na)"
[ $rc -eq 0 ] || { tail -n 60 "$OUT/build.log"; exit $rc; }

(cd tests && FASTNA_UNVERIFIED_GEMM=1 python3 -m pytest -q -m gpu -p no:cacheprovider \
   --junitxml "$OUT/gemm_junit.xml" "$@" test_gemm_gpu.py) 2>&1 | tee "$OUT/gemm_tests.log" | tail -n 60
rc=${PIPESTATUS[0]}
echo "standalone rc=$rc_sa, pytest rc=$rc"
[ "$rc_sa" = skipped ] || [ "$rc_sa" = 0 ] || exit 1
exit $rc
