// The S (score) tile of the sm80 kernels in registers: the mma.sync C fragment
// ((2,2), M, N) of a (rows x columns) tile, compact, flat index i = v0 + 2 r + 4 M n with row
// slot r = v1 + 2 m.  Shared by the forward and both backward kernels.
#pragma once

#include <cute/tensor.hpp>

#include <cmath>

#include "fastna/common/index_math.hpp"

namespace fastna {
namespace fused {
namespace detail {

// Windows [beg[r], end[r]) (group-local, per axis) of the fragment's row slots r = v1 + 2 m, for
// the rows of `cta` (a BoxTile; row_window: keys of a query, or the queries of a key).  Inverse
// tiles give rows past the group's end (padding keys) empty windows; query rows past it keep
// the window of their position (their results are never stored).
template <class RowBox, int R, int kRows, class Tile, class Coords>
__device__ __forceinline__ void row_windows(Coords const& tScS, Tile const& cta, AxisParams const (&axis)[R],
                                            int (&beg)[kRows][R], int (&end)[kRows][R]) {
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int row = cute::get<0>(tScS(2 * r));
    int off[R];
    RowBox::unflatten(row, off);
    bool valid = true;
    if constexpr (Tile::kInverse) {
#pragma unroll
      for (int a = 0; a < R; ++a) valid = valid && (cta.r0[a] + off[a] < cta.rlim[a]);
    }
#pragma unroll
    for (int a = 0; a < R; ++a) {
      const Range w = valid ? cta.row_window(axis[a], a, cta.r0[a] + off[a]) : Range{0, 0};
      beg[r][a] = w.begin;
      end[r][a] = w.end;
    }
  }
}

// Sets to -inf the entries whose column (a position of ColBox at group-local `col_origin`) is
// outside the row's window [beg[r], end[r]) on some axis.  tScS: the fragment's (row, column)
// coordinates (partition_C of an identity tensor).
template <class ColBox, int R, int kRows, class Acc, class Coords>
__device__ __forceinline__ void mask_outside_windows(Acc& acc, Coords const& tScS, int const (&col_origin)[R],
                                                     int const (&beg)[kRows][R], int const (&end)[kRows][R]) {
  constexpr int kM = kRows / 2;
  constexpr int kN = decltype(cute::size<2>(tScS))::value;
#pragma unroll
  for (int n = 0; n < kN; ++n) {
#pragma unroll
    for (int v0 = 0; v0 < 2; ++v0) {
      const int col = cute::get<1>(tScS(v0 + 4 * kM * n));
      int off[R];
      ColBox::unflatten(col, off);
      int pos[R];
#pragma unroll
      for (int a = 0; a < R; ++a) pos[a] = col_origin[a] + off[a];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        bool in = true;
#pragma unroll
        for (int a = 0; a < R; ++a) in = in && (beg[r][a] <= pos[a]) && (pos[a] < end[r][a]);
        if (!in) acc(v0 + 2 * r + 4 * kM * n) = -INFINITY;
      }
    }
  }
}

// A 16-bit copy of the S fragment (kM row slots of 2, kN column tiles of 8) as the A operand
// ((2,2,2), M, N/2) of an m16n8k16 MMA: two n8 tiles are one k16 block, columns in order.
template <int kM, int kN, class Frag>
__device__ __forceinline__ auto as_k16_a_operand(Frag& frag) {
  using namespace cute;
  return make_tensor(frag.data(),
                     make_layout(make_shape(make_shape(_2{}, _2{}, _2{}), Int<kM>{}, Int<kN / 2>{}),
                                 make_stride(make_stride(_1{}, _2{}, Int<4 * kM>{}), _4{}, Int<8 * kM>{})));
}

}  // namespace detail
}  // namespace fused
}  // namespace fastna
