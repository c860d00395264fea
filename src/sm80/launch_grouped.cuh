// Glue between LaunchParams and the sm80 grouped ops fastna::fused::ForwardGrouped /
// BackwardGrouped, included by the generated fused_fwd_grouped / fused_bwd_grouped TUs (tile
// "default").
#pragma once

#include <cuda_runtime.h>

#include <vector>

#include "common/grouped_glue.cuh"
#include "fastna/sm80/backward_grouped.hpp"
#include "fastna/sm80/forward_grouped.hpp"
#include "sm80/launch.cuh"

namespace fastna {
namespace binding {
namespace {

template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_fused_forward_grouped(const LaunchParams& lp, const char* name) {
  run_grouped_forward<fused::ForwardGrouped<Rank, Element, HeadDim, QBox, KBox>, Rank, Element>(lp, name);
}

template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_fused_backward_grouped(const LaunchParams& lp, const char* name) {
  using Op = fused::BackwardGrouped<Rank, Element, HeadDim, QBox, KBox>;
  using DqTraits = LocalTraits<typename Op::DqTraits>;
  using DkvTraits = LocalTraits<typename Op::DkvTraits>;
  const auto problems = backward_problems<Rank, Element>(lp);
  const typename Op::Arguments args{problems.data(), lp.num_problems};
  require_implementable(Op::can_implement(args), name);
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  StreamWorkspace workspace(Op::get_workspace_size(args), stream, name);
  typename Op::Launch launch;
  check_upload(Op::prepare(args, workspace.get(), stream, &launch), name);

  fused::fna_bwd_preprocess_grouped_kernel<Rank, Element, HeadDim, LocalTag>
      <<<launch.preprocess_grid, Op::kPreprocessThreads, 0, stream>>>(launch.preprocess);
  check_launch("delta preprocess", name);
  {
    auto kernel = fused::fna_bwd_dkdv_grouped_kernel<DkvTraits>;
    constexpr int smem = static_cast<int>(Op::Dense::kSmemDkv);
    set_smem(kernel, smem, name);
    kernel<<<launch.dkdv_grid, DkvTraits::kThreads, smem, stream>>>(launch.dkdv);
    check_launch("dK/dV launch", name);
  }
  {
    auto kernel = fused::fna_bwd_dq_grouped_kernel<DqTraits>;
    constexpr int smem = static_cast<int>(Op::Dense::kSmemDq);
    set_smem(kernel, smem, name);
    kernel<<<launch.dq_grid, DqTraits::kThreads, smem, stream>>>(launch.dq);
    check_launch("dQ launch", name);
  }
}

}  // namespace
}  // namespace binding
}  // namespace fastna
