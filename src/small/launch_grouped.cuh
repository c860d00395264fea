// Glue between LaunchParams and the grouped small-window forward
// fastna::fused::SmallWindowForwardGrouped, included by the generated small_fwd_grouped TUs
// (op fused_fwd_grouped, tile "small").
#pragma once

#include <cuda_runtime.h>

#include <type_traits>

#include "common/grouped_glue.cuh"
#include "fastna/small/forward_grouped.hpp"

namespace fastna {
namespace binding {
namespace {

template <int Rank, class Element, int HeadDim>
using SmallGroupedOp = fused::SmallWindowForwardGrouped<Rank, Element, HeadDim>;

template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_small_window_forward_grouped(const LaunchParams& lp, const char* name) {
  using Op = SmallGroupedOp<Rank, Element, HeadDim>;
  // QBox / KBox: the table's boxes of tile "small" (the CTA's query box, a warp's key slots).
  static_assert(std::is_same<QBox, typename Op::Dense::CtaBox>::value, "cmake/kernel_table.json: small qbox");
  static_assert(std::is_same<KBox, typename Op::Traits::Slots>::value, "cmake/kernel_table.json: small kvbox");
  run_grouped_forward<Op, Rank, Element>(lp, name);
}

}  // namespace
}  // namespace binding
}  // namespace fastna
