#!/usr/bin/env bash
# Build and run the varlen check (test_varlen.cu: the sm80-class varlen ops against the dense
# ops per sample, bitwise) on a GPU machine.
#   CUTLASS_INCLUDE=/path/to/cutlass/include tests/gpu_standalone/run_varlen.sh [cases]
# Env: ARCHS (default "80 90"), BUILD (default /tmp/fastna_gpu_standalone_varlen).
source "$(dirname "$0")/build_env.sh" /tmp/fastna_gpu_standalone_varlen "80 90"
start=$(date +%s)
nvcc $flags "$here/test_varlen.cu" -o "$BUILD/test_varlen"
echo "build: $(( $(date +%s) - start )) s"
"$BUILD/test_varlen" "$@"
