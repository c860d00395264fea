// Shapes of the small-window fused forward (small_window_traits.hpp) and the host-side test of
// whether a problem fits them.  Plain C++ (no CUDA headers), so that the Python binding can ask
// before it dispatches.
#pragma once

#include <cstdint>

#include "fastna/common/index_math.hpp"

namespace fastna {
namespace fused {

// Per rank: the 16 queries of a warp (patch), the key slots of a warp's halo (slots), warps per
// CTA (warps), per axis; min_ctas: __launch_bounds__' minimum CTAs per SM; patches_per_warp: patches a warp
// computes in turn along the last axis.  2D: an 8x2 patch of a 7x7 window needs 14x8 keys; 1D: 16 queries of
// windows up to 49.  3D is not instantiated (its halos outgrow a register tile even at 3x3x3).
template <int Rank> struct SmallWindowShape;
template <> struct SmallWindowShape<1> {
  static constexpr int patch[1] = {16};
  static constexpr int slots[1] = {64};
  static constexpr int warps[1] = {4};
  template <int HeadDim> static constexpr int min_ctas = 0;  // __launch_bounds__ minimum CTAs per SM (0: none)
  static constexpr int patches_per_warp = 1;
};
template <> struct SmallWindowShape<2> {
  static constexpr int patch[2] = {8, 2};
  static constexpr int slots[2] = {14, 8};
  static constexpr int warps[2] = {1, 4};
  // Head dim 32: 5 CTAs per SM (96 registers) beat 4 (109) by 5% on nat (H100, bench_small_window).
  template <int HeadDim> static constexpr int min_ctas = HeadDim == 32 ? 5 : 0;
  static constexpr int patches_per_warp = 1;
};

// Upper bound of the keys a run of `queries` consecutive group-local queries needs on one axis
// (index_math.hpp: window starts and ends are monotone in the query; a non-causal window's
// leader moves at most queries - 1 + stride - 1 positions over the run, a causal window ends at
// its query), capped by the longest dilation group.
FASTNA_HOST_DEVICE int32_t small_window_halo_bound(const AxisParams& ax, int32_t queries) {
  const int32_t max_group = (ax.length + ax.dilation - 1) / ax.dilation;
  const int32_t bound = queries - 1 + ax.kernel + (ax.causal ? 0 : ax.stride - 1);
  return bound < max_group ? bound : max_group;
}

// Whether every warp's key halo fits its slots (then every CTA halo fits shared memory).
template <int Rank>
FASTNA_HOST_DEVICE bool small_window_fits(const AxisParams* axis) {
  for (int a = 0; a < Rank; ++a) {
    if (small_window_halo_bound(axis[a], SmallWindowShape<Rank>::patch[a]) > SmallWindowShape<Rank>::slots[a])
      return false;
  }
  return true;
}

}  // namespace fused
}  // namespace fastna
