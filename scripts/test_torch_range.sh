#!/usr/bin/env bash
# Proves that one built wheel serves the whole supported torch range: installs dist/fastna-*.whl
# (built by scripts/install.sh) into a fresh virtual environment beside the oldest and beside the
# newest torch release of the range (pyproject.toml: tool.fastna torch-oldest / torch-newest),
# and runs the CPU test suite in each.  CI runs it after scripts/test.sh.
#
#   bash scripts/test_torch_range.sh [torch-oldest torch-newest]   (the ends to test)
#
# Each environment is made in a temporary folder outside the checkout and removed afterwards
# (PyPI's torch wheels for Linux are CUDA builds: ~3 GB each with their CUDA libraries).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
wheel=$(ls dist/fastna-*.whl 2>/dev/null || true)
[ -n "$wheel" ] || { echo "no dist/fastna-*.whl: run scripts/install.sh first" >&2; exit 1; }
ends=("$@"); [ ${#ends[@]} -gt 0 ] || ends=(torch-oldest torch-newest)

for end in "${ends[@]}"; do
  torch_req=$("$PY" scripts/deps.py "$end")
  echo "== $wheel with $torch_req =="
  env_dir=$(mktemp -d)
  trap 'rm -rf "$env_dir"' EXIT
  "$PY" -m venv "$env_dir/venv"
  vpy="$env_dir/venv/bin/python"
  t0=$(date +%s)
  # PIP_CONSTRAINT: a machine-wide pip constraint file may cap torch below the range's end.
  # shellcheck disable=SC2046
  PIP_CONSTRAINT=/dev/null "$vpy" -m pip install -q "$torch_req" "$wheel" \
    $("$PY" scripts/deps.py test)
  echo "installed in $(( $(date +%s) - t0 )) s: torch $("$vpy" -c 'import torch; print(torch.__version__)')"
  # The suite must import the installed wheel, not the source tree.
  (cd "$env_dir" && "$vpy" -c "import fastna, sys; f = fastna.__file__; \
    assert f.startswith(sys.prefix), f; print('fastna from', f)")
  (cd tests && "$vpy" -m pytest -q -m "not gpu" -p no:cacheprovider .)
  rm -rf "$env_dir"
  trap - EXIT
done
