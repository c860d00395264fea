#!/usr/bin/env bash
# Build and run the standalone sm90a fused-backward test + benchmark (hopper vs sm80 backward).
#   CUTLASS_INCLUDE=/path/to/cutlass/include tests/gpu_standalone/run_hopper_bwd.sh [--test-only|--bench-only]
#     [--only SUBSTR] [--skip SUBSTR] [--variant 1|2|3] [--bench SUBSTR]
#   --variant: test variant 1 (SkipEmpty), 2 (no PDL; older includes: 64-key dQ tiles) or 3 (the BASE_INCLUDE build); the
#   bench times every built variant.  --bench: anchor benchmark cases whose name contains SUBSTR.
# Env FASTNA_BWD_WHICH (bit 0 preprocess, 1 dK/dV, 2 dQ), FASTNA_BWD_DEBUG=1 (mask every tile).
# Env: JOBS (default nproc), BUILD (default /tmp/fastna_hopper_bwd_standalone),
#      HOPPER_INSTS (default: every instance test_hopper_bwd.cu declares, as r<R>_<elem>_<D>),
#      VARIANTS (default "0 1 2"), V0_INSTS (default HOPPER_INSTS: the instances of variant 0),
#      BASE_INCLUDE (a folder holding fastna/: builds variant 3 = its default Backward, for BASE_INSTS,
#      default V0_INSTS),
#      SM80_INSTS (default "r1_bf16_128 r2_bf16_128 r3_bf16_128", "none" for none).
#      A subset links (the driver declares instances weak); cases without their instance are skipped.
ARCHS=90a  # sm90a kernels only
source "$(dirname "$0")/build_env.sh" /tmp/fastna_hopper_bwd_standalone "90a"
hopper="${HOPPER_INSTS:-}"
if [ -z "$hopper" ]; then
  for r in 1 2 3; do for e in f16 bf16; do for d in 64 128; do hopper="$hopper r${r}_${e}_${d}"; done; done; done
fi
sm80="${SM80_INSTS:-r1_bf16_128 r2_bf16_128 r3_bf16_128}"  # the benchmark's sm80 comparison instances
[ "$sm80" = none ] && sm80=""
variants="${VARIANTS:-0 1 2}"
v0="${V0_INSTS:-$hopper}"
jobs="main_x"
for var in $variants; do
  insts="$hopper"; [ "$var" = 0 ] && insts="$v0"
  for t in $insts; do jobs="$jobs v${var}_$t"; done  # variant N: INST_VARIANT=N, *_vN symbols (none for 0)
done
for t in $sm80; do jobs="$jobs s_$t"; done
if [ -n "${BASE_INCLUDE:-}" ]; then for t in ${BASE_INSTS:-$v0}; do jobs="$jobs b_$t"; done; fi
build_one() {
  local j=$1; local kind=${j%%_*}; local t=${j#*_}
  local r=${t#r}; r=${r%%_*}; local rest=${t#r*_}; local e=${rest%_*}; local d=${rest##*_}
  if [ "$kind" = main ]; then
    nvcc $flags -c -x cu "$here/test_hopper_bwd.cu" -o "$BUILD/main.o"
  elif [ "${kind#v}" != "$kind" ] || [ "$kind" = b ]; then
    local var=${kind#v} o="$BUILD/hop_$t.o" extra=""
    if [ "$var" != 0 ]; then o="$BUILD/hop_${t}_v$var.o"; extra="-DINST_VARIANT=$var -DINST_TAG=_v$var"; fi
    if [ "$kind" = b ]; then o="$BUILD/hop_${t}_base.o"; extra="-I$BASE_INCLUDE -DINST_VARIANT=0 -DINST_TAG=_base -Dfastna=fastna_base"; fi
    nvcc $extra $flags --resource-usage -DINST_RANK=$r -DINST_ELEM=$e -DINST_DIM=$d -c -x cu "$here/test_hopper_bwd.cu" \
      -o "$o" 2>&1 | grep -E "error|registers|spill|Function properties for _Z" | sed "s/^/[$kind $t] /" || true
    test -f "$o"
  else
    nvcc $flags -DINST_RANK=$r -DINST_ELEM=$e -DINST_DIM=$d -c -x cu "$here/test_fused_bwd.cu" -o "$BUILD/sm80_$t.o"
  fi
}
export -f build_one; export flags here BUILD BASE_INCLUDE
rm -f "$BUILD"/*.o
start=$(date +%s)
for j in $jobs; do echo $j; done | xargs -P "$JOBS" -I{} bash -c 'build_one {}'
nvcc $gencode "$BUILD"/*.o -o "$BUILD/test_hopper_bwd"
echo "build: $(( $(date +%s) - start )) s"
"$BUILD/test_hopper_bwd" "$@"
