// Glue between LaunchParams and the grouped sm90a forward fastna::hopper::ForwardGrouped,
// included by the generated hopper_fwd_grouped TUs (op fused_fwd_grouped, tile "hopper").
#pragma once

#include <cuda_runtime.h>

#include <type_traits>
#include <vector>

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
  using Traits = LocalTraits<typename Op::Traits>;
  std::vector<typename Op::Problem> problems;
  for (int32_t i = 0; i < lp.num_problems; ++i) problems.push_back(forward_arguments<Rank, Element>(lp.problems[i]));
  const typename Op::Arguments args{problems.data(), lp.num_problems};
  require_implementable(Op::can_implement(args), name);
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  StreamWorkspace workspace(Op::get_workspace_size(args), stream, name);
  typename Op::Launch launch;
  check_upload(Op::prepare(args, workspace.get(), stream, &launch), name);
  auto kernel = hopper::fna_hopper_forward_grouped_kernel<Traits>;
  constexpr int smem = static_cast<int>(Traits::kSmemBytes);
  set_smem(kernel, smem, name);
  kernel<<<launch.grid, Traits::kThreads, smem, stream>>>(launch.params);
  check_launch("launch", name);
}

}  // namespace
}  // namespace binding
}  // namespace fastna
