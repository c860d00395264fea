// The grouped sm80-class fused forward: several problems in one launch
// (fastna::GroupedForward, include/fastna/common/grouped_forward.hpp).
//
//   using Op = fastna::fused::ForwardGrouped<2, cutlass::bfloat16_t, 64>;
//   std::vector<Op::Problem> problems = ...;     // one ForwardArguments each
//   Op::Arguments args{problems.data(), int32_t(problems.size())};
//   void* ws;  cudaMalloc(&ws, Op::get_workspace_size(args));
//   if (Op::can_implement(args).is_ok()) Op::run(args, ws, stream);
//
// A packed variable-size batch is one batch-1 problem per sample (views of its rows of the
// packed tensors); per-head-group windows are one problem per head group (views of its heads).
// Every problem is one the dense Forward takes, at this op's head dim.
#pragma once

#include "fastna/common/grouped_forward.hpp"
#include "fastna/sm80/forward.hpp"

namespace fastna {
namespace fused {

template <int Rank, class Element, int HeadDim, class QBox, class KBox>
struct Sm80GroupedFamily {
  using Dense = Forward<Rank, Element, HeadDim, QBox, KBox>;
  using Traits = typename Dense::Traits;
  using Params = ForwardParams<Rank, Element>;
  static constexpr bool kHeadsInGrid = true;
  static int64_t tiles(NaProblem<Rank> const& p) { return box_grid_x<QBox>(p); }
  template <class KernelTraits>
  static auto kernel() { return &fna_forward_grouped_kernel<KernelTraits>; }
};

template <int Rank, class Element, int HeadDim, class QBox = typename DefaultBox<Rank>::type,
          class KBox = typename DefaultBox<Rank>::type>
using ForwardGrouped = GroupedForward<Sm80GroupedFamily<Rank, Element, HeadDim, QBox, KBox>>;

}  // namespace fused
}  // namespace fastna
