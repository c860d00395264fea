// The epilogue of the sm90a forward consumers (forward_consumer.hpp): normalize the O
// accumulator of one query tile by the row sums, store it with direct 4-byte stores of (row, 2
// columns), and the rows' logsumexp.
#pragma once

#include <cmath>
#include <cstdint>

#include "fastna/common/problem.hpp"
#include "fastna/common/warp_reduce.hpp"
#include "fastna/sm90/forward_params.hpp"
#include "fastna/sm90/forward_smem.hpp"

namespace fastna {
namespace hopper {
namespace detail {

// row_off: this thread's two rows inside the query box; row_max / row_sum: their softmax
// state (max of the raw scores, sum of exp2 at scale_log2).
template <class Traits, class Cta, class AccO>
__device__ __forceinline__ void forward_epilogue(HopperParams<Traits::kRank, typename Traits::Element> const& hparams,
                                                 int tile, Cta const& cta, int const (&row_off)[2][Traits::kRank],
                                                 AccO const& acc_o, float const (&row_max)[2],
                                                 float const (&row_sum)[2], int quad) {
  using Element = typename Traits::Element;
  constexpr int R = Traits::kRank;
  constexpr int kHeadDim = Traits::kHeadDim;
  auto const& params = hparams.base;
  const NaProblem<R>& prob = params.problem;
  auto tile_coords = [&](int t, int& bx, int& h, int& b) { detail::tile_coords(hparams.tiles_x, prob.heads, t, bx, h, b); };
  int bx, h, b;  // head and batch decoded here, not kept live through the box loop
  tile_coords(tile, bx, h, b);
  const float scale = prob.scale;
  const int64_t n_tokens = prob.num_tokens();
#pragma unroll
  for (int v1 = 0; v1 < 2; ++v1) {
    const float l = fused::detail::quad_sum(row_sum[v1]);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    bool valid = true;
    int coord[R];
#pragma unroll
    for (int a = 0; a < R; ++a) {
      const int loc = cta.q0[a] + row_off[v1][a];
      valid = valid && (loc < cta.qlim[a]);
      coord[a] = loc * prob.axis[a].dilation + cta.group[a];
    }
    if (!valid) continue;
    Element* dst = params.out.at(b, coord, h) + 2 * quad;
#pragma unroll
    for (int v2 = 0; v2 < kHeadDim / 8; ++v2) {
      Element pair[2] = {static_cast<Element>(acc_o(2 * v1 + 4 * v2) * inv),
                         static_cast<Element>(acc_o(1 + 2 * v1 + 4 * v2) * inv)};
      *reinterpret_cast<uint32_t*>(dst + 8 * v2) = *reinterpret_cast<uint32_t const*>(pair);
    }
    if (params.lse != nullptr && quad == 0) {
      const float lse = (l > 0.f) ? row_max[v1] * scale + logf(l) : -INFINITY;
      params.lse[(int64_t(b) * n_tokens + flatten(coord, prob.axis)) * prob.heads + h] = lse;
    }
  }
}

}  // namespace detail
}  // namespace hopper
}  // namespace fastna
