// The tile schedule of a packed (variable-size) batch: the CTAs of several samples, each its
// own batch-1 problem, in one grid's x dimension.
//
// Slots are the samples in launch order: the costliest CTAs first (largest window volume, then
// most tiles), so that the long CTAs start early and the short ones fill the tail (longest
// processing time first).  x in [first_tile[i], first_tile[i + 1]) runs tile x - first_tile[i]
// of sample sample_of[i].  Samples with no tiles get no slot.
#pragma once

#include <cstdint>

#include "fastna/common/index_math.hpp"  // FASTNA_HOST_DEVICE

#if !defined(__CUDACC_RTC__)
#include <algorithm>
#include <numeric>
#include <vector>
#endif

namespace fastna {

struct VarlenSchedule {
  int32_t const* first_tile = nullptr;  // [slots + 1], first_tile[slots] = the grid's x extent
  int32_t const* sample_of = nullptr;   // [slots]
  int32_t slots = 0;

  // The slot holding x: the last i with first_tile[i] <= x (binary search; slots are non-empty,
  // so first_tile is strictly increasing).
  FASTNA_HOST_DEVICE void locate(int32_t x, int32_t& sample, int32_t& tile) const {
    int32_t lo = 0, hi = slots - 1;
    while (lo < hi) {
      const int32_t mid = (lo + hi + 1) >> 1;
      if (first_tile[mid] <= x)
        lo = mid;
      else
        hi = mid - 1;
    }
    sample = sample_of[lo];
    tile = x - first_tile[lo];
  }
};

// A varlen kernel's parameter: the samples' own kernel parameters (device memory, one per
// sample, indexed by sample) and the schedule over them.
template <class Params>
struct VarlenParams {
  Params const* samples = nullptr;
  VarlenSchedule schedule;
};

#if !defined(__CUDACC_RTC__)
// The host side: the schedule's two tables for samples with `tiles[s]` CTAs of cost `cost[s]`
// each (any monotone proxy: the window volume).  first_tile gets slots + 1 entries, sample_of
// slots; returns the grid's x extent (0 when no sample has a tile).
inline int64_t make_varlen_schedule(std::vector<int64_t> const& tiles, std::vector<int64_t> const& cost,
                                    std::vector<int32_t>& first_tile, std::vector<int32_t>& sample_of) {
  std::vector<int32_t> order(tiles.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return cost[a] != cost[b] ? cost[a] > cost[b] : tiles[a] > tiles[b];
  });
  first_tile.clear();
  sample_of.clear();
  int64_t x = 0;
  for (int32_t s : order) {
    if (tiles[s] <= 0) continue;
    first_tile.push_back(static_cast<int32_t>(x));
    sample_of.push_back(s);
    x += tiles[s];
  }
  first_tile.push_back(static_cast<int32_t>(x));
  return x;
}
#endif

}  // namespace fastna
