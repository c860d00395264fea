// Glue between LaunchParams and fastna::hopper::Backward (the sm90a fused backward), included by
// the generated hopper_bwd TUs (cmake/templates/hopper_bwd.cu.in).  Dispatched as fused_bwd tile
// `hopper` (the binding picks it when the forward ran tile `hopper`), so it shares the fused
// backward's binding, checks and tests.  Problems the Hopper kernels do not take (dilation, a
// layout no TMA tensor map accepts) run the sm80 backward (run_fused_backward, default boxes)
// from the same TU: the fallback never changes results, only speed.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <stdexcept>
#include <string>

#include "fastna/sm90/backward.hpp"
#include "fused_launch.cuh"  // backward_arguments, LocalTraits, LocalTag, run_fused_backward

namespace fastna {
namespace binding {
namespace {

template <int Rank, class Element, int HeadDim>
void run_hopper_backward(const LaunchParams& lp, const char* name) {
  using Op = hopper::Backward<Rank, Element, HeadDim>;
  const auto args = backward_arguments<typename Op::Arguments, Rank, Element>(lp);
  const cutlass::Status st = Op::can_implement_problem(args);  // tensor maps: to_params below
  if (st != cutlass::Status::kSuccess) {
    // Invalid problems raise in the sm80 path's own can_implement; unsupported ones run there.
    using Box = typename fused::DefaultBox<Rank>::type;
    run_fused_backward<Rank, Element, HeadDim, Box, Box>(lp, name);
    return;
  }
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  const size_t ws_bytes = Op::get_workspace_size(args);
  void* workspace = nullptr;
  cudaError_t err = cudaMallocAsync(&workspace, ws_bytes, stream);
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("fastna: hopper: cannot allocate the backward workspace (") +
                             std::to_string(ws_bytes) + " bytes) for " + name + ": " + cudaGetErrorString(err));
  }
  typename Op::Params dkv, dq;
  if (!Op::to_params(args, workspace, &dkv, &dq)) {
    cudaFreeAsync(workspace, stream);
    using Box = typename fused::DefaultBox<Rank>::type;
    run_fused_backward<Rank, Element, HeadDim, Box, Box>(lp, name);
    return;
  }
  using DkvTraits = LocalTraits<typename Op::DkvTraits>;
  using DqTraits = LocalTraits<typename Op::DqTraits>;
  const cutlass::Status rs = Op::template launch<DkvTraits, DqTraits, LocalTag>(args.problem, dkv, dq, stream);
  err = cudaGetLastError();
  cudaFreeAsync(workspace, stream);
  if (rs != cutlass::Status::kSuccess || err != cudaSuccess) {
    throw std::runtime_error(std::string("fastna: hopper: launch of ") + name + " failed: " +
                             cutlassGetStatusString(rs) + " / " + cudaGetErrorString(err));
  }
}

}  // namespace
}  // namespace binding
}  // namespace fastna
