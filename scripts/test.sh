#!/usr/bin/env bash
# The test command of README.md, and what CI runs: installs everything into the current Python
# environment (scripts/install.sh, then the test requirements of pyproject.toml), proves the
# CUDA sources compile (a small instantiation set; no GPU needed), runs the C++ index-math
# tests, builds the C++ consumer examples (add_subdirectory, and find_package of an installed
# fastna), then the CPU test suite.  GPU tests (pytest -m gpu) run on a GPU machine through
# scripts/gpu_check.sh.
#
# Leaves behind (kept so a second run is incremental): dist/ (the wheel), build/ (the wheel's
# CMake tree), build-cpp/, build-consumer/, build-install/, build-consumer-installed/; and in
# the environment: fastna, its build tools and the test requirements.  `git clean -fdX` removes
# the folders.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
JOBS=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export CMAKE_BUILD_PARALLEL_LEVEL=$JOBS

have_nvcc() { command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; }
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="$PATH:/usr/local/cuda/bin"

echo "== install (CUDA sources compiled for a small set when nvcc is present) =="
if have_nvcc; then
  export FASTNA_CUDA_ARCHS=${FASTNA_CUDA_ARCHS:-80}
  # CuTe TUs take ~20-40 CPU-s each; one arch and one head dim keep CI's compile check to a
  # few dozen TUs (every family that builds for sm80, `python -m fastna info` lists them).
  # Override to check more.
  export FASTNA_HEAD_DIMS=${FASTNA_HEAD_DIMS:-64}
  # The opt-in grouped kernels too, so that a change that breaks their build shows here.
  export FASTNA_EXTRA_KERNELS=${FASTNA_EXTRA_KERNELS-fused_fwd_grouped;fused_bwd_grouped;small_fwd_grouped;hopper_fwd_grouped;hopper_bwd_grouped}
else
  echo "no nvcc: host-only build"; export FASTNA_CUDA_ARCHS=none
fi
t0=$(date +%s)
bash scripts/install.sh
echo "install took $(( $(date +%s) - t0 )) s"

echo "== C++ index-math tests =="
cmake -S . -B build-cpp -G Ninja -DFASTNA_BUILD_PYTHON=OFF -DFASTNA_BUILD_TESTS=ON -DFASTNA_CUDA_ARCHS=none >/dev/null
cmake --build build-cpp
ctest --test-dir build-cpp --output-on-failure

echo "== C++ consumer (add_subdirectory + #include <fastna/...>) =="
cmake -S examples/cpp_consumer -B build-consumer -G Ninja -DFASTNA_CUDA_ARCHS="$FASTNA_CUDA_ARCHS" >/dev/null
cmake --build build-consumer
./build-consumer/consumer

echo "== C++ consumer of an installed fastna (cmake --install + find_package) =="
# Installed to one prefix and consumed from another: proves the package config is relocatable.
prefix_root=$(mktemp -d)
trap 'rm -rf "$prefix_root"' EXIT
cmake -S . -B build-install -G Ninja -DFASTNA_BUILD_PYTHON=OFF -DFASTNA_BUILD_TESTS=OFF \
  -DFASTNA_CUDA_ARCHS=none -DCMAKE_INSTALL_PREFIX="$prefix_root/staged" >/dev/null
cmake --build build-install
cmake --install build-install >/dev/null
if grep -qi cutlass "$prefix_root/staged/share/cmake/fastna/fastnaTargets.cmake"; then
  echo "FAIL: the exported target bakes in a CUTLASS path" >&2; exit 1
fi
mv "$prefix_root/staged" "$prefix_root/prefix"
rm -rf build-consumer-installed
cmake -S examples/cpp_consumer_installed -B build-consumer-installed -G Ninja \
  -DCMAKE_PREFIX_PATH="$prefix_root/prefix" | grep -E "^-- (fastna|consumer):"
cmake --build build-consumer-installed
./build-consumer-installed/consumer_installed

echo "== pytest (CPU) =="
# Test requirements from pyproject.toml (transformers: the legacy-compat test drives
# HuggingFace's DinatModel through the natten shim; 4.46.3 is the last release whose DiNAT
# works upstream, see tests/test_dinat_transformers.py).
# shellcheck disable=SC2046
"$PY" -m pip install -q $("$PY" scripts/deps.py test)
cd tests && "$PY" -m pytest -q -m "not gpu" -p no:cacheprovider .
