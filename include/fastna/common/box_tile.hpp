// Box tiling shared by the box-tiled kernels (sm80 fused forward and backward, the GEMM-based
// kernels, the sm90a backward): which row box a CTA owns, the column positions its rows pair
// with and the column tiles over them, and the token coordinates of a position inside a box.
//
// All coordinates are group-local (one dilation group per CTA, index_math.hpp) until
// box_token turns them into absolute token coordinates.  Rows and columns: queries and keys
// (forward, dQ), or keys and queries (Inverse: dK / dV, the inverse neighborhood).
#pragma once

#include <cstdint>

#include "fastna/common/index_math.hpp"
#include "fastna/common/problem.hpp"

namespace fastna {

// Number of boxes of `extent` along the longest dilation group of an axis (host: grid sizes).
FASTNA_HOST_DEVICE int32_t tiles_per_group(AxisParams const& ax, int32_t extent) {
  const int32_t max_group = (ax.length + ax.dilation - 1) / ax.dilation;
  return (max_group + extent - 1) / extent;
}

// Column positions that rows [rows.begin, rows.end) pair with on one axis: the keys of the
// queries' windows, or (Inverse) the queries whose windows hold the keys.
template <bool Inverse>
FASTNA_HOST_DEVICE Range column_range(AxisParams const& p, Range rows, int32_t group_len) {
  if constexpr (Inverse) {
    return query_range_for_key_tile(p, rows, group_len);
  } else {
    return key_range_for_query_tile(p, rows, group_len);
  }
}

// Absolute token coordinates of position `off` of a box at group-local `origin` in dilation
// group `group`; false where the position reaches `limit` (exclusive) on some axis.
template <int Rank>
FASTNA_HOST_DEVICE bool box_token(int const (&origin)[Rank], int const (&off)[Rank], int const (&limit)[Rank],
                                  int const (&group)[Rank], AxisParams const (&axis)[Rank], int (&coord)[Rank]) {
  bool valid = true;
#pragma unroll
  for (int a = 0; a < Rank; ++a) {
    const int loc = origin[a] + off[a];
    valid = valid && (loc < limit[a]);
    coord[a] = loc * axis[a].dilation + group[a];
  }
  return valid;
}

// The row box of one CTA and the column tiles its rows pair with.  The spatial grid index bx
// enumerates (dilation group, box) per axis, last axis fastest, tiles_per_group boxes a group.
template <int R, class RowBox, class ColBox, bool Inverse>
struct BoxTile {
  static constexpr bool kInverse = Inverse;
  int group[R];  // dilation group
  int r0[R];     // row box origin
  int rlim[R];   // exclusive bound of the rows inside the group
  int glen[R];   // group length
  Range cr[R];   // column range (column_range of the rows)
  int clim[R];   // cr[a].end: exclusive bound of the columns
  int n_ct[R];   // column tiles per axis
  int n_col;     // column tiles in all (0 where a column range is empty)
  bool empty;    // the box lies past the end of a shorter dilation group: uniform over the CTA

  __device__ __forceinline__ BoxTile(NaProblem<R> const& prob, int32_t const (&tiles_per_group)[R], int bx) {
#pragma unroll
    for (int a = R - 1; a >= 0; --a) {
      const int tpg = tiles_per_group[a];
      const int n = prob.axis[a].dilation * tpg;
      const int idx = bx % n;
      bx /= n;
      group[a] = idx / tpg;
      r0[a] = (idx % tpg) * RowBox::extent(a);
    }
    empty = false;
    n_col = 1;
#pragma unroll
    for (int a = 0; a < R; ++a) {
      glen[a] = group_length(prob.axis[a], group[a]);
      empty = empty || (r0[a] >= glen[a]);
      rlim[a] = imin(r0[a] + RowBox::extent(a), glen[a]);
      cr[a] = column_range<Inverse>(prob.axis[a], Range{r0[a], rlim[a]}, glen[a]);
      clim[a] = cr[a].end;
      n_ct[a] = (cr[a].size() + ColBox::extent(a) - 1) / ColBox::extent(a);
      n_col *= n_ct[a];
    }
  }

  // Window (group-local) of row position `loc` on axis a: the keys query `loc` sees, or
  // (Inverse) the queries that see key `loc`.
  __device__ __forceinline__ Range row_window(AxisParams const& p, int a, int loc) const {
    if constexpr (Inverse) {
      return inverse_window_local(p, loc, glen[a]);
    } else {
      return window_local(p, loc, glen[a]);
    }
  }

  // Origin of column tile j (last axis fastest).
  __device__ __forceinline__ void col_origin(int j, int (&origin)[R]) const {
#pragma unroll
    for (int a = R - 1; a >= 0; --a) {
      origin[a] = cr[a].begin + (j % n_ct[a]) * ColBox::extent(a);
      j /= n_ct[a];
    }
  }

  // Whether the column tile at `origin` is whole (not cut by clim) and every position of it pairs
  // with every row of the box on every axis: the tile needs no mask.
  __device__ __forceinline__ bool col_tile_inside(AxisParams const (&axis)[R], int const (&origin)[R]) const {
    bool full = true;
#pragma unroll
    for (int a = 0; a < R; ++a) {
      const Range ct{origin[a], imin(origin[a] + ColBox::extent(a), clim[a])};
      const Range rows{r0[a], rlim[a]};
      full = full && (ct.size() == ColBox::extent(a)) &&
             (Inverse ? tile_fully_inside(axis[a], ct, rows, glen[a]) : tile_fully_inside(axis[a], rows, ct, glen[a]));
    }
    return full;
  }
};

}  // namespace fastna
