#!/usr/bin/env bash
# Build and run the standalone fused-backward test + benchmark on a GPU machine.
#   CUTLASS_INCLUDE=/path/to/cutlass/include tests/gpu_standalone/run_bwd.sh [--test-only|--bench-only]
# Env: ARCHS (default "80 90"; e.g. "90a"), JOBS (default nproc), BUILD (default /tmp/fastna_gpu_standalone_bwd).
# Backward instances: FASTNA_BWD_INSTANCES in test_fused_bwd.cu (one TU each, parallel build);
# the forward's 2D D=128 instances (instance.cu) produce out/lse for the benchmark.
source "$(dirname "$0")/build_env.sh" /tmp/fastna_gpu_standalone_bwd "80 90"
# keep in sync with FASTNA_BWD_INSTANCES
bwd="r2_f16_64 r1_bf16_128 r3_f16_32 r2_f16_128 r2_bf16_128 r1_f16_64 r3_bf16_64"
fwd="f16 bf16"
build_one() {
  local t=$1
  case $t in
    main) nvcc $flags -c -x cu "$here/test_fused_bwd.cu" -o "$BUILD/main.o" ;;
    fwd_*) local e=${t#fwd_}
      nvcc $flags -DINST_RANK=2 -DINST_ELEM=$e -DINST_DIM=128 -c "$here/instance.cu" -o "$BUILD/fwd_$e.o" ;;
    *) local r=${t#r}; r=${r%%_*}; local rest=${t#r*_}; local e=${rest%_*}; local d=${rest##*_}
      nvcc $flags -DINST_RANK=$r -DINST_ELEM=$e -DINST_DIM=$d -c -x cu "$here/test_fused_bwd.cu" -o "$BUILD/bwd_$t.o" ;;
  esac
}
export -f build_one; export flags here BUILD
start=$(date +%s)
{ echo main; for e in $fwd; do echo fwd_$e; done; for t in $bwd; do echo $t; done; } | xargs -P "$JOBS" -I{} bash -c 'build_one {}'
objs="$BUILD/main.o"
for e in $fwd; do objs="$objs $BUILD/fwd_$e.o"; done
for t in $bwd; do objs="$objs $BUILD/bwd_$t.o"; done
nvcc $gencode $objs -o "$BUILD/test_fused_bwd"
echo "build: $(( $(date +%s) - start )) s"
"$BUILD/test_fused_bwd" "$@"
