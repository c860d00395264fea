// Glue between LaunchParams and the grouped small-window forward
// fastna::fused::SmallWindowForwardGrouped, included by the generated small_fwd_grouped TUs
// (op fused_fwd_grouped, tile "small").
#pragma once

#include <cuda_runtime.h>

#include <type_traits>
#include <vector>

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
  using Traits = LocalTraits<typename Op::Traits>;
  // QBox / KBox: the table's boxes of tile "small" (the CTA's query box, a warp's key slots).
  static_assert(std::is_same<QBox, typename Op::CtaBox>::value, "cmake/kernel_table.json: small qbox");
  static_assert(std::is_same<KBox, typename Op::Traits::Slots>::value, "cmake/kernel_table.json: small kvbox");
  std::vector<typename Op::Problem> problems;
  for (int32_t i = 0; i < lp.num_problems; ++i) problems.push_back(forward_arguments<Rank, Element>(lp.problems[i]));
  const typename Op::Arguments args{problems.data(), lp.num_problems};
  require_implementable(Op::can_implement(args), name);
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  StreamWorkspace workspace(Op::get_workspace_size(args), stream, name);
  typename Op::Launch launch;
  check_upload(Op::prepare(args, workspace.get(), stream, &launch), name);
  auto kernel = fused::small_window_grouped_kernel<Traits>();
  set_smem(kernel, Traits::kSmemBytes, name);
  kernel<<<launch.grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(launch.params);
  check_launch("launch", name);
}

}  // namespace
}  // namespace binding
}  // namespace fastna
