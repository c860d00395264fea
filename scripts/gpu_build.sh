#!/usr/bin/env bash
# Builds and installs fastna on the GPU machine (16 cores), once per source tree: a warm machine
# that already installed this exact tree skips the ~2-minute build.
#   bash scripts/gpu_build.sh            # then: cd tests && python3 ../benchmarks/...
# Needs the nvidia-cutlass wheel in .carry/ (the GPU machine has no network; pass carry=[".carry"]).
# Writes $OUT/build.log (default ./gpu-out); FASTNA_CUDA_ARCHS defaults to 90a, FASTNA_EXTRA_KERNELS to
# the grouped kernels.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # also right when sourced
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
export FASTNA_CUDA_ARCHS=${FASTNA_CUDA_ARCHS:-90a}
# The GPU check covers the opt-in kernels too (FASTNA_EXTRA_KERNELS= to leave them out).
export FASTNA_EXTRA_KERNELS=${FASTNA_EXTRA_KERNELS-fused_fwd_grouped;fused_bwd_grouped;small_fwd_grouped;hopper_fwd_grouped;hopper_bwd_grouped}

if ! python3 -c "import cutlass_library" 2>/dev/null; then
  whl=$(ls .carry/nvidia_cutlass-*.whl 2>/dev/null | head -n1)
  [ -n "$whl" ] && python3 -m pip install -q --no-deps --target /tmp/fastna-cutlass "$whl" \
    && export PYTHONPATH=/tmp/fastna-cutlass${PYTHONPATH:+:$PYTHONPATH}
fi

# Identity of what gets built: every source file plus the build-shaping environment.
stamp=$( { find include src cmake python CMakeLists.txt pyproject.toml -type f -not -path '*/__pycache__/*' -print0 | sort -z \
           | xargs -0 sha1sum; env | grep -E '^FASTNA_(KERNELS|EXTRA_KERNELS|CUDA_ARCHS|HEAD_DIMS|HOPPER)' | sort; } \
         | sha1sum | cut -c1-16)
if [ "$(cat /tmp/fastna_build_stamp 2>/dev/null)" = "$stamp" ] && (cd /tmp && python3 -c "import fastna._C") 2>/dev/null; then
  echo "build: this tree ($stamp) is already installed"
  export FASTNA_BUILD_SECONDS=0
else
  t0=$(date +%s)
  python3 -m pip install -v --no-build-isolation --no-deps --no-index . >"$OUT/build.log" 2>&1
  rc=$?; FASTNA_BUILD_SECONDS=$(( $(date +%s) - t0 )); export FASTNA_BUILD_SECONDS
  echo "build rc=$rc in ${FASTNA_BUILD_SECONDS}s (FASTNA_CUDA_ARCHS=$FASTNA_CUDA_ARCHS)"
  if [ $rc -ne 0 ]; then tail -n 60 "$OUT/build.log"; return $rc 2>/dev/null || exit $rc; fi
  echo "$stamp" > /tmp/fastna_build_stamp
  rm -f "$OUT/build.log"   # only ~8 files come back from a device call; keep the log on failure only
fi
