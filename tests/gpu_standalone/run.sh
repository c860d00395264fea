#!/usr/bin/env bash
# Build and run the standalone fused-forward test + benchmark on a GPU machine.
#   CUTLASS_INCLUDE=/path/to/cutlass/include tests/gpu_standalone/run.sh [--test-only|--bench-only] [--v3]
# --v3: only the q128w8 (v3) and 1D 4-warp 128x32 (v4) tiles' tests (with the default tile on the
#       same cases) and the benchmarks comparing them with the default / q16x8_kv4x8 tiles.
# Env: ARCHS (default "80 90"), JOBS (default nproc), BUILD (default /tmp/fastna_gpu_standalone).
source "$(dirname "$0")/build_env.sh" /tmp/fastna_gpu_standalone "80 90"
insts=""
for r in 1 2 3; do for e in f16 bf16; do for d in 32 64 128; do insts="$insts r${r}_${e}_${d}"; done; done; done
compile_inst() {
  local t=$1; local r=${t#r}; r=${r%%_*}; local rest=${t#r*_}; local e=${rest%_*}; local d=${rest##*_}
  nvcc $flags -DINST_RANK=$r -DINST_ELEM=$e -DINST_DIM=$d -c "$here/instance.cu" -o "$BUILD/inst_$t.o"
}
compile_var() {  # r2_bf16_128_v1 -> variant 1 of the 2D D=128 instance
  local t=$1; local r=${t#r}; r=${r%%_*}; local rest=${t#r*_}; local e=${rest%%_*}; rest=${rest#*_}
  local d=${rest%%_*}; local v=${t##*_v}
  nvcc $flags -DINST_RANK=$r -DINST_ELEM=$e -DINST_DIM=$d -DINST_VARIANT=$v -DINST_TAG=_v$v -c "$here/instance.cu" -o "$BUILD/inst_$t.o"
}
for v in 1 2; do for e in f16 bf16; do insts="$insts r2_${e}_128_v$v"; done; done
# variant 3: tile q128w8 (8 warps, 128-query box, 3 K/V stages), ranks 1 and 2, D 64 and 128
for r in 1 2; do for e in f16 bf16; do for d in 64 128; do insts="$insts r${r}_${e}_${d}_v3"; done; done; done
# variant 4 (harness only): 1D D=128, 128-query box on 4 warps x 32 rows, 32-key KV box, 3 stages
for e in f16 bf16; do insts="$insts r1_${e}_128_v4"; done
export -f compile_inst compile_var; export flags here BUILD
start=$(date +%s)
{ echo main; for t in $insts; do echo $t; done; } | xargs -P "$JOBS" -I{} bash -c \
  'if [ {} = main ]; then nvcc $flags -c "$here/test_fused.cu" -o "$BUILD/main.o"; elif [[ {} == *_v? ]]; then compile_var {}; else compile_inst {}; fi'
nvcc $gencode "$BUILD"/main.o "$BUILD"/inst_*.o -o "$BUILD/test_fused"
echo "build: $(( $(date +%s) - start )) s"
"$BUILD/test_fused" "$@"
