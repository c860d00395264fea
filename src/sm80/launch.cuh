// Glue between LaunchParams and the sm80 fused ops fastna::fused::Forward / Backward, included by
// the generated fused_fwd / fused_bwd TUs (cmake/templates/fused_fwd.cu.in, fused_bwd.cu.in) and
// by the sm90 backward's TUs, which fall back to run_fused_backward.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <stdexcept>
#include <string>

#include "common/launch_glue.cuh"
#include "fastna/sm80/backward.hpp"
#include "fastna/sm80/forward.hpp"

namespace fastna {
namespace binding {
namespace {

template <int Rank, class Element, int HeadDim, class QBox, class KBox>
using Sm80Forward = fused::Forward<Rank, Element, HeadDim, QBox, KBox>;
template <int Rank, class Element, int HeadDim, class QBox, class KBox>
using Sm80Backward = fused::Backward<Rank, Element, HeadDim, QBox, KBox>;

template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_fused_forward(const LaunchParams& lp, const char* name) {
  using Op = Sm80Forward<Rank, Element, HeadDim, QBox, KBox>;
  using Traits = LocalTraits<typename Op::Traits>;
  const auto args = forward_arguments<Rank, Element>(lp);
  require_implementable(Op::can_implement(args), name);
  auto kernel = fused::fna_forward_kernel<Traits>;
  constexpr int smem = static_cast<int>(Traits::kSmemBytes);
  set_smem(kernel, smem, name);
  kernel<<<Op::grid_shape(args), Traits::kThreads, smem, reinterpret_cast<cudaStream_t>(lp.stream)>>>(
      Op::to_params(args));
  check_launch("launch", name);
}

// The fused backward: Backward::run's three launches (delta preprocess, dK/dV, dQ), with
// internal-linkage template arguments.  lp.workspace (fp32 [B, N, H]) holds delta; when absent
// it is allocated with cudaMallocAsync on the stream and freed after the launches.
template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_fused_backward(const LaunchParams& lp, const char* name) {
  using Op = Sm80Backward<Rank, Element, HeadDim, QBox, KBox>;
  using DqTraits = LocalTraits<typename Op::DqTraits>;
  using DkvTraits = LocalTraits<typename Op::DkvTraits>;
  const auto args = backward_arguments<Rank, Element>(lp);
  require_implementable(Op::can_implement(args), name);
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  void* workspace = reinterpret_cast<void*>(lp.workspace.ptr);
  const bool own_workspace = workspace == nullptr;
  if (own_workspace) {
    const cudaError_t err = cudaMallocAsync(&workspace, Op::get_workspace_size(args), stream);
    if (err != cudaSuccess) {
      throw std::runtime_error(std::string("fastna: fused: cannot allocate the backward workspace (") +
                               std::to_string(Op::get_workspace_size(args)) + " bytes) for " + name + ": " +
                               cudaGetErrorString(err));
    }
  }
  const typename Op::Params params = Op::to_params(args, workspace);
  NaProblem<Rank> const& p = args.problem;
  auto release = [&]() {
    if (own_workspace) cudaFreeAsync(workspace, stream);
  };
  try {
    const int64_t rows = int64_t(p.batch) * p.num_tokens() * p.heads;
    fused::fna_bwd_preprocess_kernel<Rank, Element, HeadDim, LocalTag>
        <<<static_cast<unsigned>((rows + 3) / 4), 128, 0, stream>>>(params);
    check_launch("delta preprocess", name);

    const int64_t xq = box_grid_x<QBox>(p), xkv = box_grid_x<KBox>(p);
    {
      auto kernel = fused::fna_bwd_dkdv_kernel<DkvTraits>;
      constexpr int smem = static_cast<int>(Op::kSmemDkv);
      set_smem(kernel, smem, name);
      kernel<<<dim3(static_cast<unsigned>(xkv), static_cast<unsigned>(p.heads_kv), static_cast<unsigned>(p.batch)),
               DkvTraits::kThreads, smem, stream>>>(params);
      check_launch("dK/dV launch", name);
    }
    {
      auto kernel = fused::fna_bwd_dq_kernel<DqTraits>;
      constexpr int smem = static_cast<int>(Op::kSmemDq);
      set_smem(kernel, smem, name);
      kernel<<<dim3(static_cast<unsigned>(xq), static_cast<unsigned>(p.heads), static_cast<unsigned>(p.batch)),
               DqTraits::kThreads, smem, stream>>>(params);
      check_launch("dQ launch", name);
    }
  } catch (...) {
    release();
    throw;
  }
  release();
}

}  // namespace
}  // namespace binding
}  // namespace fastna
