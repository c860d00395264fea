// The tile schedule of a grouped launch: the CTAs of several problems, each with its own shape,
// windows, batch, heads and tensor views, side by side in one grid (as CUTLASS's grouped GEMM
// runs several GEMMs of different sizes in one launch).  A packed variable-size batch is one
// problem per sample; per-head-group windows are one problem per head group.
//
// Slots are the problems in launch order: the costliest CTAs first (largest window volume, then
// most tiles), so that the long CTAs start early and the short ones fill the tail (longest
// processing time first).  Grid x in [first_tile[i], first_tile[i + 1]) runs tile
// x - first_tile[i] of problem problem_of[i]; grid y and z cover the largest head and batch
// count, and a CTA past its problem's heads or batch does nothing.  Problems with no tiles get
// no slot.
#pragma once

#include <cstdint>

#include "fastna/common/index_math.hpp"  // FASTNA_HOST_DEVICE

#if !defined(__CUDACC_RTC__)
#include <algorithm>
#include <numeric>
#include <vector>
#endif

namespace fastna {

struct GroupedSchedule {
  int32_t const* first_tile = nullptr;  // [slots + 1], first_tile[slots] = the grid's x extent
  int32_t const* problem_of = nullptr;  // [slots]
  int32_t slots = 0;

  // The slot holding x: the last i with first_tile[i] <= x (binary search; slots are non-empty,
  // so first_tile is strictly increasing).
  FASTNA_HOST_DEVICE void locate(int32_t x, int32_t& problem, int32_t& tile) const {
    int32_t lo = 0, hi = slots - 1;
    while (lo < hi) {
      const int32_t mid = (lo + hi + 1) >> 1;
      if (first_tile[mid] <= x)
        lo = mid;
      else
        hi = mid - 1;
    }
    problem = problem_of[lo];
    tile = x - first_tile[lo];
  }
};

// A grouped kernel's parameter: the problems' own kernel parameters (device memory, indexed by
// problem) and the schedule over them.
template <class Params>
struct GroupedParams {
  Params const* problems = nullptr;
  GroupedSchedule schedule;
};

#if !defined(__CUDACC_RTC__)
// The host side: the schedule's two tables for problems with `tiles[p]` CTAs of cost `cost[p]`
// each (any monotone proxy: the window volume).  first_tile gets slots + 1 entries, problem_of
// slots; returns the grid's x extent (0 when no problem has a tile).
inline int64_t make_grouped_schedule(std::vector<int64_t> const& tiles, std::vector<int64_t> const& cost,
                                     std::vector<int32_t>& first_tile, std::vector<int32_t>& problem_of) {
  std::vector<int32_t> order(tiles.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return cost[a] != cost[b] ? cost[a] > cost[b] : tiles[a] > tiles[b];
  });
  first_tile.clear();
  problem_of.clear();
  int64_t x = 0;
  for (int32_t p : order) {
    if (tiles[p] <= 0) continue;
    first_tile.push_back(static_cast<int32_t>(x));
    problem_of.push_back(p);
    x += tiles[p];
  }
  first_tile.push_back(static_cast<int32_t>(x));
  return x;
}
#endif

}  // namespace fastna
