#!/usr/bin/env bash
# Installs fastna and its build dependencies into the current Python environment.
#
# Build dependencies are installed here and the package is built without build isolation:
# the nvidia-cutlass wheel is only needed for its headers, and as a build requirement it
# would drag in cuda-python, scipy and others (hundreds of MB) that the headers never use.
# Every requirement comes from pyproject.toml (scripts/deps.py prints them).
#
# The module is built once into a wheel, dist/fastna-<version>-<python tag>-*.whl, and that
# wheel is installed: the same file serves every torch of the supported range
# (scripts/test_torch_range.sh installs it beside other torch releases).
#
# Environment knobs (all optional):
#   FASTNA_CUDA_ARCHS   "80;90a" to compile those archs, "none" for a host-only build,
#                       unset = the local GPU's arch, or host-only when there is no GPU
#   FASTNA_RANKS / FASTNA_DTYPES / FASTNA_KERNELS / FASTNA_HEAD_DIMS   instantiation subsets
#   FASTNA_TORCH        torch requirement installed when torch is missing
#                       (default: pyproject's tool.fastna torch-default)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
deps() { "$PY" scripts/deps.py "$1"; }

"$PY" -c "import tomllib" 2>/dev/null || "$PY" -m pip install -q tomli
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "${FASTNA_TORCH:-$(deps torch-default)}"
fi
# shellcheck disable=SC2046
"$PY" -m pip install -q $(deps build)
# Headers only: --no-deps keeps cuda-python/scipy/networkx out.
# shellcheck disable=SC2046
"$PY" -m pip install -q --no-deps $(deps cutlass)
log=$(mktemp)
rm -rf dist
if ! "$PY" -m pip wheel -v --no-build-isolation --no-deps -w dist . >"$log" 2>&1; then
  tail -n 80 "$log"; echo "fastna: build failed (full log: $log)" >&2; exit 1
fi
grep -E -- "-- fastna" "$log" | sed "s/^ *//" || true
wheel=$(ls dist/fastna-*.whl)
"$PY" -m pip uninstall -q -y fastna 2>/dev/null || true
"$PY" -m pip install -q "$wheel"     # with its runtime dependencies (numpy)
echo "installed $wheel"
