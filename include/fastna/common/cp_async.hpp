// cp.async (sm80+) global -> shared copies of token rows, shared by the mma.sync families.
#pragma once

#include "fastna/common/box_tile.hpp"  // box_token
#include "fastna/common/problem.hpp"

namespace fastna {
namespace fused {
namespace detail {

// 16-byte global->shared async copy; pred == false writes zeros and reads nothing.
__device__ __forceinline__ void cp_async_16_zfill(void* smem, void const* gmem, bool pred) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_size = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_size));
}

// Loads one box of tokens (rows) x HeadDim (cols) into swizzled shared memory, in 16-byte
// chunks of Traits::kChunkElems elements.
// origin/limit: group-local box origin and exclusive bound of valid positions per axis.
template <class Traits, class Box, class SmemLayout, int Rank, class T>
__device__ __forceinline__ void load_box(TokenTensor<T, Rank> const& t, int b, int h,
                                         typename Traits::Element* smem, int const (&origin)[Rank],
                                         int const (&limit)[Rank], int const (&group)[Rank],
                                         AxisParams const (&axis)[Rank], int tid) {
  constexpr int kRows = Box::kSize;
  const int chunk = tid % Traits::kChunksPerRow;
  const int row0 = tid / Traits::kChunksPerRow;
#pragma unroll
  for (int r = row0; r < kRows; r += Traits::kRowsPerPass) {
    int off[Rank];
    Box::unflatten(r, off);
    int coord[Rank];
    const bool valid = box_token(origin, off, limit, group, axis, coord);
    T const* src = valid ? t.at(b, coord, h) + chunk * Traits::kChunkElems : t.ptr;
    cp_async_16_zfill(smem + SmemLayout{}(r, chunk * Traits::kChunkElems), src, valid);
  }
}

}  // namespace detail
}  // namespace fused
}  // namespace fastna
