// Compile-time box shapes: the query / KV tiles of every fused family, flattened row-major
// (last axis fastest) into the M or N dimension of a tile GEMM.
#pragma once

#include "fastna/common/index_math.hpp"  // FASTNA_HOST_DEVICE

namespace fastna {
namespace fused {

// A compile-time box shape of Rank extents (unused trailing extents are 1).
template <int Rank, int E0, int E1 = 1, int E2 = 1>
struct Box {
  static_assert(Rank >= 1 && Rank <= 3, "rank 1..3");
  static_assert(Rank >= 2 || E1 == 1, "unused extents must be 1");
  static_assert(Rank >= 3 || E2 == 1, "unused extents must be 1");
  static constexpr int kRank = Rank;
  static constexpr int kSize = E0 * E1 * E2;
  FASTNA_HOST_DEVICE static constexpr int extent(int a) { return a == 0 ? E0 : (a == 1 ? E1 : E2); }
  // Row-major unflattening of a position inside the box (constant divisors after unrolling).
  FASTNA_HOST_DEVICE static void unflatten(int idx, int (&off)[Rank]) {
#pragma unroll
    for (int a = Rank - 1; a >= 0; --a) {
      off[a] = idx % extent(a);
      idx /= extent(a);
    }
  }
};

// Default boxes: 64 tokens, as square as possible.
template <int Rank> struct DefaultBox;
template <> struct DefaultBox<1> { using type = Box<1, 64>; };
template <> struct DefaultBox<2> { using type = Box<2, 8, 8>; };
template <> struct DefaultBox<3> { using type = Box<3, 4, 4, 4>; };

}  // namespace fused
}  // namespace fastna
