# Sourced by the run*.sh build scripts: `source build_env.sh DEFAULT_BUILD DEFAULT_ARCHS`.
# Needs CUTLASS_INCLUDE; sets here (this folder), root (the repository), JOBS (default nproc),
# BUILD (default DEFAULT_BUILD, created), ARCHS (default DEFAULT_ARCHS), gencode (one -gencode
# per arch) and flags (the nvcc flags of every TU).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
: "${CUTLASS_INCLUDE:?set CUTLASS_INCLUDE to the CUTLASS include folder}"
ARCHS="${ARCHS:-$2}"
JOBS="${JOBS:-$(nproc)}"
BUILD="${BUILD:-$1}"
mkdir -p "$BUILD"
gencode=""
for a in $ARCHS; do gencode="$gencode -gencode=arch=compute_$a,code=sm_$a"; done
flags="-std=c++17 -O3 --expt-relaxed-constexpr $gencode -I$root/include -I$CUTLASS_INCLUDE -I$here"
