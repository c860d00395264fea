// Glue between LaunchParams and the grouped sm90a forward fastna::hopper::ForwardGrouped,
// included by the generated hopper_fwd_grouped TUs (op fused_fwd_grouped, tile "hopper").
#pragma once

#include <cuda_runtime.h>

#include <type_traits>

#include "common/grouped_glue.cuh"
#include "fastna/sm90/forward_grouped.hpp"

namespace fastna {
namespace binding {
namespace {

template <int Rank, class Element, int HeadDim>
using Sm90ForwardGrouped = hopper::ForwardGrouped<Rank, Element, HeadDim>;

template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_hopper_forward_grouped(const LaunchParams& lp, const char* name) {
  using Op = Sm90ForwardGrouped<Rank, Element, HeadDim>;
  static_assert(std::is_same<QBox, typename Op::Traits::QBox>::value, "cmake/kernel_table.json: hopper qbox");
  static_assert(std::is_same<KBox, typename Op::Traits::KBox>::value, "cmake/kernel_table.json: hopper kvbox");
  run_grouped_forward<Op, Rank, Element>(lp, name);
}

}  // namespace
}  // namespace binding
}  // namespace fastna
