// Glue between LaunchParams and the grouped sm90a backward fastna::hopper::BackwardGrouped,
// included by the generated hopper_bwd_grouped TUs (op fused_bwd_grouped, tile "hopper").
// Problems the Hopper kernels do not take (dilation, a layout no TMA tensor map accepts) run the
// sm80 grouped backward from the same TU, as the dense hopper_bwd falls back to the sm80 one.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "common/grouped_glue.cuh"
#include "fastna/sm90/backward_grouped.hpp"
#include "sm80/launch_grouped.cuh"  // run_fused_backward_grouped: the fallback

namespace fastna {
namespace binding {
namespace {

template <int Rank, class Element, int HeadDim>
using Sm90BackwardGrouped = hopper::BackwardGrouped<Rank, Element, HeadDim>;

// What this instance runs, with its fallback: the sm80 backward's conditions (default boxes).
template <int Rank, class Element, int HeadDim, class Box = typename fused::DefaultBox<Rank>::type>
using Sm90BackwardGroupedFallback = Sm80Backward<Rank, Element, HeadDim, Box, Box>;

// QBox / KBox: the table's boxes of tile "hopper" (the dQ kernel's query and key tiles).
template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_hopper_backward_grouped(const LaunchParams& lp, const char* name) {
  using Op = Sm90BackwardGrouped<Rank, Element, HeadDim>;
  static_assert(std::is_same<QBox, typename Op::DqTraits::RowBox>::value, "cmake/kernel_table.json: hopper bwd qbox");
  static_assert(std::is_same<KBox, typename Op::DqTraits::ColBox>::value, "cmake/kernel_table.json: hopper bwd kvbox");
  using Box = typename fused::DefaultBox<Rank>::type;
  const auto problems = backward_problems<Rank, Element>(lp);
  const typename Op::Arguments args{problems.data(), lp.num_problems};
  // Invalid problems raise in the sm80 path's own can_implement; unsupported ones run there.
  if (!Op::can_implement(args).is_ok()) {
    run_fused_backward_grouped<Rank, Element, HeadDim, Box, Box>(lp, name);
    return;
  }
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  StreamWorkspace workspace(Op::get_workspace_size(args), stream, name);
  typename Op::Launch launch;
  cudaError_t upload = cudaSuccess;
  if (!Op::prepare(args, workspace.get(), stream, &launch, &upload)) {
    run_fused_backward_grouped<Rank, Element, HeadDim, Box, Box>(lp, name);
    return;
  }
  check_upload(upload, name);
  using DkvTraits = LocalTraits<typename Op::DkvTraits>;
  using DqTraits = LocalTraits<typename Op::DqTraits>;
  const cudaError_t err = Op::template launch<DkvTraits, DqTraits, LocalTag>(launch, stream);
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("fastna: hopper: launch of ") + name + " failed: " + cudaGetErrorString(err));
}

}  // namespace
}  // namespace binding
}  // namespace fastna
