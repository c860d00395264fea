#!/usr/bin/env bash
# Build and run the standalone sm90a fused-forward test + benchmark (hopper vs sm80 kernel).
#   CUTLASS_INCLUDE=/path/to/cutlass/include tests/gpu_standalone/run_hopper.sh [--test-only|--bench-only]
# Env: JOBS (default nproc), BUILD (default /tmp/fastna_hopper_standalone),
#      HOPPER_INSTS (default: every instance test_hopper_fwd.cu declares, as r<R>_<elem>_<D>).
ARCHS=90a  # sm90a kernels only
source "$(dirname "$0")/build_env.sh" /tmp/fastna_hopper_standalone "90a"
# HOPPER_SET=small: the quicker instance set of test_hopper_fwd.cu (FASTNA_HOPPER_SMALL_SET).
if [ "${HOPPER_SET:-}" = small ]; then
  flags="$flags -DFASTNA_HOPPER_SMALL_SET"
  HOPPER_INSTS="r1_f16_32 r1_bf16_32 r2_f16_32 r2_bf16_32 r3_f16_32 r3_bf16_32 r2_bf16_64 r1_bf16_128 r2_bf16_128 r3_bf16_128"
  HOPPER_VARIANTS="r1_bf16_32_v1 r2_bf16_32_v1 r3_bf16_32_v1 r1_bf16_128_v1 r1_bf16_128_v2 r1_bf16_128_v7"
  HOPPER_SM80="r2_bf16_32 r2_bf16_64"
fi
# HOPPER_SET=r1: the 1D bf16 D=128 default and its variants 7, 11, 12.
if [ "${HOPPER_SET:-}" = r1 ]; then
  flags="$flags -DFASTNA_HOPPER_R1_SET"
  HOPPER_INSTS="r1_bf16_128"
  HOPPER_VARIANTS="r1_bf16_128_v7 r1_bf16_128_v11 r1_bf16_128_v12"
  HOPPER_SM80=""
fi
hopper="${HOPPER_INSTS:-}"
if [ -z "$hopper" ]; then
  for r in 1 2 3; do for e in f16 bf16; do for d in 32 64 128; do hopper="$hopper r${r}_${e}_${d}"; done; done; done
  hopper="$hopper r1_bf16_256 r2_bf16_256 r3_bf16_256"
fi
# bf16 variants (see test_hopper_fwd.cu FASTNA_HOPPER_FOR_VARIANTS), as r<R>_bf16_<D>_v<n>
variants="${HOPPER_VARIANTS-r1_bf16_128_v1 r2_bf16_128_v1 r3_bf16_128_v1 r1_bf16_128_v2 r2_bf16_128_v2 r3_bf16_128_v2
          r1_bf16_128_v3 r2_bf16_128_v3 r3_bf16_128_v3
          r1_bf16_32_v1 r2_bf16_32_v1 r3_bf16_32_v1 r2_bf16_32_v5 r2_bf16_32_v3 r2_bf16_64_v6
          r1_bf16_128_v7 r2_bf16_128_v8 r2_bf16_32_v8
          r1_bf16_128_v11 r1_bf16_128_v12}"
sm80="${HOPPER_SM80-r1_bf16_128 r2_bf16_128 r3_bf16_128 r2_bf16_32 r2_bf16_64}"  # the benchmark's sm80 comparison instances
jobs=""
for t in $hopper; do jobs="$jobs h_$t"; done
for t in $variants; do jobs="$jobs v_$t"; done
for t in $sm80; do jobs="$jobs s_$t"; done
build_one() {
  local j=$1; local kind=${j%%_*}; local t=${j#*_}
  local var=""; if [ "$kind" = v ]; then var=${t##*_v}; t=${t%_v*}; fi
  local r=${t#r}; r=${r%%_*}; local rest=${t#r*_}; local e=${rest%_*}; local d=${rest##*_}
  if [ "$kind" = main ]; then
    nvcc $flags -c "$here/test_hopper_fwd.cu" -o "$BUILD/main.o"
  elif [ "$kind" = h ] || [ "$kind" = v ]; then
    local extra=""; local o="$BUILD/hop_$t.o"
    if [ "$kind" = v ]; then extra="-DINST_VARIANT=$var -DINST_TAG=_v$var"; o="$BUILD/hop_${t}_v$var.o"; fi
    nvcc $flags --resource-usage $extra -DINST_RANK=$r -DINST_ELEM=$e -DINST_DIM=$d -c "$here/test_hopper_fwd.cu" \
      -o "$o" 2>&1 | grep -E "error|warning|registers|spill" | sed "s/^/[$kind$var $t] /" || true
    test -f "$o"
  else
    nvcc $flags -DINST_RANK=$r -DINST_ELEM=$e -DINST_DIM=$d -c "$here/instance.cu" -o "$BUILD/sm80_$t.o"
  fi
}
export -f build_one; export flags here BUILD
rm -f "$BUILD"/*.o
start=$(date +%s)
{ echo main_x; for j in $jobs; do echo $j; done; } | xargs -P "$JOBS" -I{} bash -c 'build_one {}'
# The driver references every declared instance; undeclared ones would fail to link, so the
# default HOPPER_INSTS must cover FASTNA_HOPPER_FOR_ALL and the sm80 list FASTNA_SM80_FOR_BENCH.
nvcc $gencode "$BUILD"/main.o "$BUILD"/hop_*.o $(ls "$BUILD"/sm80_*.o 2>/dev/null) -o "$BUILD/test_hopper_fwd"
echo "build: $(( $(date +%s) - start )) s"
"$BUILD/test_hopper_fwd" "$@"
