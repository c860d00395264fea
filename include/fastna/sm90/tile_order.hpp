// Host: the order in which the CTAs of a rank-1 Hopper backward kernel take their row tiles --
// longest first (LPT: longest processing time first).
//
// Why: in 1D the inverse neighborhood of a key near an end of the axis is larger than an interior
// key's (the windows of the first ~K/2 queries are all clamped to [0, K)), so the dK/dV kernel's
// row tiles between K/2 and 3K/2 from either end have up to ~1.4x the column tiles of an interior
// one (1d anchor, L 32768, K 2048: 18 .. 48 tiles of 64 queries, 34 inside), and the outermost
// tiles fewer.  With one head the grid is 256 CTAs on 132 SMs, and in blockIdx order the heavy
// tiles at the far end start in the second wave and finish last: a greedy-schedule model gives a
// makespan of 84 column tiles per SM, against 70 with the heavy tiles first (ideal 65.7).  The
// dQ kernel's windows are all K keys, but causal problems vary there too.  The order never changes
// results (each CTA computes its own tile); it is a permutation of blockIdx.x.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "fastna/common/index_math.hpp"

namespace fastna {
namespace hopper {

// Row tiles of a rank-1 backward kernel that the LPT order covers (kernel parameter space: 2 KB).
constexpr int kBwdOrderCap = 1024;

namespace detail {

// Fills order[0, n) with the row tiles (row_extent positions each) sorted by their number of
// column tiles (col_extent positions), descending, ties in index order, and returns n; returns 0
// (blockIdx order) when the order would be the identity, the axis has dilation (several groups),
// or there are more than `cap` tiles.  dq: columns are the keys of the row tile's queries
// (dQ kernel); else the queries of the row tile's keys (dK/dV kernel).
// The last problem of each kind is cached per thread: the binding calls this on every backward.
inline int lpt_row_order(AxisParams const& ax, int row_extent, int col_extent, bool dq, uint16_t* order, int cap) {
  if (ax.dilation != 1 || row_extent <= 0 || col_extent <= 0) return 0;
  const int64_t n64 = (int64_t(ax.length) + row_extent - 1) / row_extent;
  if (n64 < 2 || n64 > cap || n64 > 65536) return 0;
  const int n = static_cast<int>(n64);
  struct Entry {
    AxisParams ax;
    int row = 0, col = 0, count = -1;
    std::vector<uint16_t> order;
  };
  thread_local Entry cache[2];
  Entry& e = cache[dq ? 1 : 0];
  const bool hit = e.count >= 0 && e.row == row_extent && e.col == col_extent && e.ax.length == ax.length &&
                   e.ax.kernel == ax.kernel && e.ax.stride == ax.stride && e.ax.causal == ax.causal;
  if (!hit) {
    std::vector<int> cost(n);
    for (int t = 0; t < n; ++t) {
      const Range rows{t * row_extent, std::min(t * row_extent + row_extent, ax.length)};
      const Range cr = dq ? key_range_for_query_tile(ax, rows, ax.length) : query_range_for_key_tile(ax, rows, ax.length);
      cost[t] = (cr.size() + col_extent - 1) / col_extent;
    }
    std::vector<int> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return cost[a] > cost[b]; });
    bool identity = true;
    for (int t = 0; t < n; ++t) identity = identity && idx[t] == t;
    e.ax = ax;
    e.row = row_extent;
    e.col = col_extent;
    e.count = identity ? 0 : n;
    e.order.assign(idx.begin(), idx.end());
  }
  if (e.count > 0) std::copy(e.order.begin(), e.order.end(), order);
  return e.count;
}

}  // namespace detail
}  // namespace hopper
}  // namespace fastna
