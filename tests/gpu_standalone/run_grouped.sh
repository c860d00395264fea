#!/usr/bin/env bash
# Build and run the grouped-ops check (test_grouped.cu: the sm80-class grouped ops against the
# dense ops once per problem, bitwise) on a GPU machine.
#   CUTLASS_INCLUDE=/path/to/cutlass/include tests/gpu_standalone/run_grouped.sh [cases]
# Env: ARCHS (default "80 90"), BUILD (default /tmp/fastna_gpu_standalone_grouped).
source "$(dirname "$0")/build_env.sh" /tmp/fastna_gpu_standalone_grouped "80 90"
start=$(date +%s)
nvcc $flags "$here/test_grouped.cu" -o "$BUILD/test_grouped"
echo "build: $(( $(date +%s) - start )) s"
"$BUILD/test_grouped" "$@"
