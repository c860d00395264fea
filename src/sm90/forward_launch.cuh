// Glue between LaunchParams and fastna::hopper::Forward (the sm90a fused forward), included by
// the generated hopper_fwd TUs (cmake/templates/hopper_fwd.cu.in; fused_fwd tile "hopper").
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <type_traits>

#include "common/launch_glue.cuh"
#include "fastna/sm90/forward.hpp"

namespace fastna {
namespace binding {
namespace {

template <int Rank, class Element, int HeadDim>
using Sm90Forward = hopper::Forward<Rank, Element, HeadDim>;

// QBox / KBox: the table's boxes of tile "hopper", checked against the op's defaults.
template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_hopper_forward(const LaunchParams& lp, const char* name) {
  using Op = Sm90Forward<Rank, Element, HeadDim>;
  static_assert(std::is_same<QBox, typename Op::Traits::QBox>::value, "cmake/kernel_table.json: hopper qbox");
  static_assert(std::is_same<KBox, typename Op::Traits::KBox>::value, "cmake/kernel_table.json: hopper kvbox");
  // Internal linkage for the kernel's template argument (launch_glue.cuh).
  using Traits = LocalTraits<typename Op::Traits>;
  const auto args = forward_arguments<Rank, Element>(lp);
  // can_implement also rejects devices other than compute capability 9.0.
  require_implementable(Op::can_implement(args), name);
  // 1D large windows: the pingpong build of the same kernel (Op::use_pingpong).
  auto kernel = hopper::fna_hopper_forward_kernel<Traits>;
  if constexpr (Op::kMayPingpong)
    if (Op::use_pingpong(args)) kernel = hopper::fna_hopper_forward_kernel<LocalTraits<typename Op::TraitsPingpong>>;
  constexpr int smem = static_cast<int>(Traits::kSmemBytes);
  set_smem(kernel, smem, name);
  kernel<<<Op::grid_shape(args), Traits::kThreads, smem, reinterpret_cast<cudaStream_t>(lp.stream)>>>(
      Op::to_params(args));
  check_launch("launch", name);
}

}  // namespace
}  // namespace binding
}  // namespace fastna
