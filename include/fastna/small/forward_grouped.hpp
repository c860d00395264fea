// The grouped small-window forward: several problems -- each one the small-window tile takes --
// in one launch (fastna::GroupedForward, include/fastna/common/grouped_forward.hpp).  The key
// halo is copied with cp.async on every arch (no per-problem tensor maps).
#pragma once

#include "fastna/common/grouped_forward.hpp"
#include "fastna/small/forward.hpp"

namespace fastna {
namespace fused {

template <int Rank, class Element, int HeadDim, class Config>
struct SmallWindowGroupedFamily {
  using Dense = SmallWindowForward<Rank, Element, HeadDim, Config, false>;
  using Traits = typename Dense::CopyTraits;
  using Params = SmallWindowParams<Rank, Element>;
  static constexpr bool kHeadsInGrid = true;
  static int64_t tiles(NaProblem<Rank> const& p) { return box_grid_x<typename Dense::CtaBox>(p); }
  template <class KernelTraits>
  static auto kernel() { return small_window_grouped_kernel<KernelTraits>(); }
};

template <int Rank, class Element, int HeadDim, class Config = DefaultSmallWindow<Rank, HeadDim>>
using SmallWindowForwardGrouped = GroupedForward<SmallWindowGroupedFamily<Rank, Element, HeadDim, Config>>;

}  // namespace fused
}  // namespace fastna
