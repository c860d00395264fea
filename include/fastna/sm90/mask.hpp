// Neighborhood mask of one KV box for the rows a consumer thread owns in the wgmma accumulator.
//
// In the SM90 64xN fp32 accumulator a thread holds, for each of its two rows, the columns
// 8*v2 + 2*quad + v0 (quad = lane % 4, v0 in {0,1}, v2 in [0, N/8)).  With a KV box whose last
// extent E is a multiple of 8, column (v2, v0) sits at last-axis offset 8*(v2 % (E/8)) + 2*quad + v0
// and at outer position v2 / (E/8), both compile-time except for quad.  The mask of a row is then
// two small bit sets built once per KV box -- last-axis slots (per v0) and outer positions -- and
// each element costs one constant-shift bit test instead of a per-axis window comparison.
#pragma once

#include <cstdint>

#include "fastna/common/index_math.hpp"

namespace fastna {
namespace hopper {
namespace detail {

// Bits [lo, hi) of an n-bit set (n <= 32), lo/hi clamped.
__device__ __forceinline__ uint32_t range_bits(int lo, int hi, int n) {
  lo = imax(lo, 0);
  hi = imin(hi, n);
  if (hi <= lo) return 0u;
  return static_cast<uint32_t>((uint64_t(1) << hi) - (uint64_t(1) << lo));
}

// Row mask of one KV box.  lo/hi: the row's window relative to the box origin, per axis.
template <class KBox, int Rank>
struct RowMask {
  static constexpr int kLast = KBox::extent(Rank - 1);
  static constexpr int kSlots = kLast / 8;          // v2 values per outer position
  static constexpr int kOuter = KBox::kSize / kLast;  // outer positions
  uint32_t last[2];  // per v0: bit k set iff last-axis offset 8k + 2*quad + v0 is inside
  uint32_t outer;    // bit o set iff outer position o is inside on every other axis

  __device__ __forceinline__ void build(int const (&lo)[Rank], int const (&hi)[Rank], int quad) {
#pragma unroll
    for (int v0 = 0; v0 < 2; ++v0) {
      const int base = 2 * quad + v0;
      // 8k + base in [lo, hi)  <=>  k in [ceil((lo - base) / 8), ceil((hi - base) / 8))
      last[v0] = range_bits((lo[Rank - 1] - base + 7) >> 3, (hi[Rank - 1] - base + 7) >> 3, kSlots);
    }
    if constexpr (Rank == 1) {
      outer = 1u;
    } else if constexpr (Rank == 2) {
      outer = range_bits(lo[0], hi[0], KBox::extent(0));
    } else {
      constexpr int E1 = KBox::extent(1);
      const uint32_t inner = range_bits(lo[1], hi[1], E1);
      outer = 0u;
#pragma unroll
      for (int o0 = 0; o0 < KBox::extent(0); ++o0)
        if (lo[0] <= o0 && o0 < hi[0]) outer |= inner << (o0 * E1);
    }
  }

  // Whether accumulator column (v2, v0) is a neighbor of this row.  v2, v0 compile-time.
  __device__ __forceinline__ bool test(int v2, int v0) const {
    return ((last[v0] >> (v2 % kSlots)) & (outer >> (v2 / kSlots)) & 1u) != 0u;
  }
};

}  // namespace detail
}  // namespace hopper
}  // namespace fastna
