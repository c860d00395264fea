#!/usr/bin/env bash
# Build and run the standalone GEMM-based NA test (PN / NN / IN) + benchmark on a GPU machine.
#   CUTLASS_INCLUDE=/path/to/cutlass/include tests/gpu_standalone/run_gemm.sh [--test-only|--bench-only]
# Env: ARCHS (default "80 90"), JOBS (default nproc), BUILD (default /tmp/fastna_gpu_standalone_gemm),
#      DTYPES (default "f16 bf16 f32"; f32 = TF32 kernels), e.g. DTYPES=f32 for the fp32 instances only.
# One TU per (rank, dtype, head dim) holds PN, NN and IN (test_gemm_na.cu with -DINST_*), plus main;
# main runs each config in the dtypes built and skips the others.
source "$(dirname "$0")/build_env.sh" /tmp/fastna_gpu_standalone_gemm "80 90"
DTYPES="${DTYPES:-f16 bf16 f32}"
for e in $DTYPES; do
  case "$e" in f16|bf16|f32) ;; *) echo "run_gemm.sh: unknown dtype '$e' in DTYPES (f16 bf16 f32)" >&2; exit 2 ;; esac
done
with=""
for e in f16 bf16 f32; do
  case " $DTYPES " in *" $e "*) on=1 ;; *) on=0 ;; esac
  with="$with -DGEMM_WITH_$(echo "$e" | tr a-z A-Z)=$on"
done
# keep in sync with FASTNA_GEMM_FOR_ALL in test_gemm_na.cu
insts=""
for r in 1 2 3; do for e in $DTYPES; do for d in 32 64 128; do insts="$insts r${r}_${e}_${d}"; done; done; done
build_one() {
  local t=$1
  if [ "$t" = main ]; then
    nvcc $flags $with -c -x cu "$here/test_gemm_na.cu" -o "$BUILD/main.o"
  else
    local r=${t#r}; r=${r%%_*}; local rest=${t#r*_}; local e=${rest%_*}; local d=${rest##*_}
    nvcc $flags -DINST_RANK=$r -DINST_ELEM=$e -DINST_DIM=$d -c -x cu "$here/test_gemm_na.cu" -o "$BUILD/inst_$t.o"
  fi
}
export -f build_one; export flags with here BUILD
start=$(date +%s)
{ echo main; for t in $insts; do echo $t; done; } | xargs -P "$JOBS" -I{} bash -c 'build_one {}'
objs="$BUILD/main.o"
for t in $insts; do objs="$objs $BUILD/inst_$t.o"; done
nvcc $gencode $objs -o "$BUILD/test_gemm_na"
echo "build: $(( $(date +%s) - start )) s"
"$BUILD/test_gemm_na" "$@"
