// Producer-side gathers: one box of tokens x head dim from a strided [B, *spatial, H, D] view
// into a swizzled (GMMA) shared-memory tensor, 16-byte cp.async chunks.
//
// The destination is addressed through a CuTe tensor on a smem pointer, never by evaluating the
// layout alone: the GMMA swizzle atoms are defined on byte addresses and only the swizzled
// pointer applies them correctly to 16-bit elements.
#pragma once

#include <cute/tensor.hpp>

#include "fastna/common/box_tile.hpp"
#include "fastna/common/cp_async.hpp"  // fused::detail::cp_async_16_zfill
#include "fastna/common/index_math.hpp"
#include "fastna/common/problem.hpp"

namespace fastna {
namespace hopper {
namespace detail {

// dst(row, col) -> Element* in shared memory.  origin/limit: group-local box origin and exclusive
// bound of valid positions per axis; rows past the bound are zero-filled without a global read.
// Threads: how many threads share the copy (tid in [0, Threads)); Unroll: of the row loop.
template <class Traits, class Box, int Threads, int Unroll, int Rank, class T, class Dst>
__device__ __forceinline__ void load_box_async(TokenTensor<T, Rank> const& t, int b, int h, Dst const& dst,
                                               int const (&origin)[Rank], int const (&limit)[Rank],
                                               int const (&group)[Rank], AxisParams const (&axis)[Rank], int tid) {
  static_assert(Threads % Traits::kChunksPerRow == 0, "chunk mapping: threads must cover whole rows");
  constexpr int kRowsPerPass = Threads / Traits::kChunksPerRow;
  const int chunk = tid % Traits::kChunksPerRow;
  const int row0 = tid / Traits::kChunksPerRow;
#pragma unroll Unroll
  for (int r = row0; r < Box::kSize; r += kRowsPerPass) {
    int off[Rank];
    Box::unflatten(r, off);
    int coord[Rank];
    const bool valid = box_token(origin, off, limit, group, axis, coord);
    T const* src = valid ? t.at(b, coord, h) + chunk * 8 : t.ptr;
    fused::detail::cp_async_16_zfill(dst(r, chunk * 8), src, valid);
  }
}

// Prefetch one box of tokens x head dim into L2 (no shared-memory copy): every 128-byte line
// of each valid row.  Persistent CTAs warm the next tile's Q while the current tile computes.
template <class Box, int Threads, int HeadDim, int Rank, class T>
__device__ __forceinline__ void prefetch_box_l2(TokenTensor<T, Rank> const& t, int b, int h, int const (&origin)[Rank],
                                                int const (&limit)[Rank], int const (&group)[Rank],
                                                AxisParams const (&axis)[Rank], int tid) {
  constexpr int kLineElems = 128 / sizeof(T);
#pragma unroll 1
  for (int r = tid; r < Box::kSize; r += Threads) {
    int off[Rank];
    Box::unflatten(r, off);
    int coord[Rank];
    const bool valid = box_token(origin, off, limit, group, axis, coord);
    if (!valid) continue;
    T const* row = t.at(b, coord, h);
#pragma unroll
    for (int c = 0; c < HeadDim; c += kLineElems) asm volatile("prefetch.global.L2 [%0];" ::"l"(row + c));
  }
}

}  // namespace detail
}  // namespace hopper
}  // namespace fastna
