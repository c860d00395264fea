// Glue between LaunchParams and fastna::hopper::Backward (the sm90a fused backward), included by
// the generated hopper_bwd TUs (cmake/templates/hopper_bwd.cu.in; fused_bwd tile "hopper").
// Problems the Hopper kernels do not take (dilation, a layout no TMA tensor map accepts) run the
// sm80 backward (run_fused_backward, default boxes) from the same TU: the fallback never changes
// results, only speed.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <stdexcept>
#include <string>
#include <type_traits>

#include "common/launch_glue.cuh"
#include "fastna/sm90/backward.hpp"
#include "sm80/launch.cuh"  // run_fused_backward: the fallback

namespace fastna {
namespace binding {
namespace {

template <int Rank, class Element, int HeadDim>
using Sm90Backward = hopper::Backward<Rank, Element, HeadDim>;

// What this instance runs, with its fallback: the sm80 backward's conditions (default boxes).
template <int Rank, class Element, int HeadDim, class Box = typename fused::DefaultBox<Rank>::type>
using Sm90BackwardFallback = Sm80Backward<Rank, Element, HeadDim, Box, Box>;

// QBox / KBox: the table's boxes of tile "hopper" (the dQ kernel's query and key tiles).
template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_hopper_backward(const LaunchParams& lp, const char* name) {
  using Op = Sm90Backward<Rank, Element, HeadDim>;
  static_assert(std::is_same<QBox, typename Op::DqTraits::RowBox>::value, "cmake/kernel_table.json: hopper bwd qbox");
  static_assert(std::is_same<KBox, typename Op::DqTraits::ColBox>::value, "cmake/kernel_table.json: hopper bwd kvbox");
  using Box = typename fused::DefaultBox<Rank>::type;
  const auto args = backward_arguments<Rank, Element>(lp);
  // Invalid problems raise in the sm80 path's own can_implement; unsupported ones run there.
  if (!Op::can_implement_problem(args.problem).is_ok() || !fused::check_backward_tensors(args).is_ok()) {
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
