// The grouped sm90a forward: several problems in one launch (fastna::GroupedForward,
// include/fastna/common/grouped_forward.hpp).  A CTA runs one query tile of its problem (no
// persistence; the tiles count heads and batch); K / V come by TMA where the problem's tensor
// maps could be made (they live in global memory: the kernel fences them for the tensormap
// proxy), else by the cp.async producer.
#pragma once

#include "fastna/common/grouped_forward.hpp"
#include "fastna/sm90/forward.hpp"

namespace fastna {
namespace hopper {

static_assert(sizeof(HopperParams<1, cutlass::half_t>) % 64 == 0,
              "a grouped launch keeps the problems' tensor maps 64-byte aligned in its parameter array");

template <int Rank, class Element, int HeadDim>
struct Sm90GroupedFamily {
  using Dense = Forward<Rank, Element, HeadDim>;
  using Traits = typename Dense::Traits;
  using Params = HopperParams<Rank, Element>;
  static constexpr bool kHeadsInGrid = false;
  static int64_t tiles(NaProblem<Rank> const& p) { return Dense::num_tiles(p); }
  template <class KernelTraits>
  static auto kernel() { return &fna_hopper_forward_grouped_kernel<KernelTraits>; }
};

template <int Rank, class Element, int HeadDim>
using ForwardGrouped = GroupedForward<Sm90GroupedFamily<Rank, Element, HeadDim>>;

}  // namespace hopper
}  // namespace fastna
