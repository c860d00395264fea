#!/usr/bin/env bash
# Installs fastna and its build dependencies into the current Python environment.
#
# Build dependencies are installed here and the package is built without build isolation:
# the nvidia-cutlass wheel is only needed for its headers, and as a build requirement it
# would drag in cuda-python, scipy and others (hundreds of MB) that the headers never use.
#
# Environment knobs (all optional):
#   FASTNA_CUDA_ARCHS   "80;90a" to compile those archs, "none" for a host-only build,
#                       unset = the local GPU's arch, or host-only when there is no GPU
#   FASTNA_RANKS / FASTNA_DTYPES / FASTNA_KERNELS   instantiation subsets (see README)
#   FASTNA_TORCH        torch requirement installed when torch is missing (default torch==2.13.0)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "${FASTNA_TORCH:-torch==2.13.0}"
fi
"$PY" -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" ninja numpy pytest
# Headers only: --no-deps keeps cuda-python/scipy/networkx out.
"$PY" -m pip install -q --no-deps "nvidia-cutlass==4.2.0.0"
log=$(mktemp)
if ! "$PY" -m pip install -v --no-build-isolation --no-deps . >"$log" 2>&1; then
  tail -n 80 "$log"; echo "fastna: build failed (full log: $log)" >&2; exit 1
fi
grep -E -- "-- fastna" "$log" | sed "s/^ *//" || true
grep -E "^Successfully installed" "$log"
