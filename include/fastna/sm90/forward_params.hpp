// Kernel parameters of the sm90a forward (the shared fused forward parameters plus the K/V
// tensor maps and the flattened tile count) and CtaBox, the query tile a CTA owns with the KV
// boxes its queries need (the kernel's tile decomposition).
#pragma once

#include <cutlass/numeric_types.h>

#include <cstdint>

#include "fastna/common/forward_params.hpp"
#include "fastna/common/index_math.hpp"
#include "fastna/common/problem.hpp"
#include "fastna/common/tma.hpp"  // TmaDims

namespace fastna {
namespace hopper {

using fused::ForwardParams;

// Kernel parameters: the sm80 op's, plus the K/V tensor maps when TMA is used.
template <int Rank, class Element>
struct HopperParams {
  CUtensorMap tma_k;
  CUtensorMap tma_v;
  ForwardParams<Rank, Element> base;
  TmaDims tma_dims;
  int use_tma = 0;
  // Query tiles: (spatial box, head, batch) flattened, spatial box fastest; the grid is 1-D and a
  // CTA takes tiles blockIdx.x, blockIdx.x + gridDim.x, ... (persistent when the grid is smaller).
  int tiles_x = 1;    // spatial boxes per (head, batch): the sm80 op's grid x
  int num_tiles = 0;  // tiles_x * heads * batch
};

namespace detail {

// Division-free window / group-length / key-range fast paths: fastna/common/index_math.hpp.
using ::fastna::group_length_fast;
using ::fastna::key_range_fast;
using ::fastna::window_fast;

// Tile coordinates: the spatial index bx enumerates (dilation group, box) per axis, last axis fastest.
template <class QBox, class KBox, int R>
struct CtaBox {
  int group[R], q0[R], qlim[R], glen[R], n_ktiles[R];
  Range krange[R];
  int n_kv;
  bool empty;

  __device__ __forceinline__ CtaBox(NaProblem<R> const& prob, int32_t const (&tiles_per_group)[R], int bx) {
#pragma unroll
    for (int a = R - 1; a >= 0; --a) {
      const int tpg = tiles_per_group[a];
      if (prob.axis[a].dilation == 1) {  // no dilation: one division fewer
        group[a] = 0;
        q0[a] = (bx % tpg) * QBox::extent(a);
        bx /= tpg;
        continue;
      }
      const int n = prob.axis[a].dilation * tpg;
      const int idx = bx % n;
      bx /= n;
      group[a] = idx / tpg;
      q0[a] = (idx % tpg) * QBox::extent(a);
    }
    empty = false;
    n_kv = 1;
#pragma unroll
    for (int a = 0; a < R; ++a) {
      glen[a] = group_length_fast(prob.axis[a], group[a]);
      empty = empty || (q0[a] >= glen[a]);
      qlim[a] = imin(q0[a] + QBox::extent(a), glen[a]);
      krange[a] = key_range_fast(prob.axis[a], Range{q0[a], qlim[a]}, glen[a]);
      n_ktiles[a] = (krange[a].size() + KBox::extent(a) - 1) / KBox::extent(a);
      n_kv *= n_ktiles[a];
    }
  }

  __device__ __forceinline__ void kv_origin(int j, int (&origin)[R]) const {
#pragma unroll
    for (int a = R - 1; a >= 0; --a) {
      origin[a] = krange[a].begin + (j % n_ktiles[a]) * KBox::extent(a);
      j /= n_ktiles[a];
    }
  }
  __device__ __forceinline__ void kv_limit(int (&lim)[R]) const {
#pragma unroll
    for (int a = 0; a < R; ++a) lim[a] = krange[a].end;
  }
};

}  // namespace detail

}  // namespace hopper
}  // namespace fastna
