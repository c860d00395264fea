// Glue between LaunchParams and fastna::hopper::Forward (the sm90a fused forward), included by
// the generated hopper_fwd TUs (cmake/templates/hopper_fwd.cu.in).  Dispatched as fused_fwd tile
// `hopper`, so it shares the fused forward's binding, checks and tests.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <stdexcept>
#include <string>

#include "fastna/sm90/forward.hpp"
#include "fused_launch.cuh"  // forward_arguments, LocalTraits, set_smem, check_launch

namespace fastna {
namespace binding {
namespace {

template <int Rank, class Element, int HeadDim>
void run_hopper_forward(const LaunchParams& lp, const char* name) {
  using Op = hopper::Forward<Rank, Element, HeadDim>;
  // Internal linkage for the kernel's template argument, as in run_fused_forward.
  using Traits = LocalTraits<typename Op::Traits>;
  const auto args = forward_arguments<typename Op::Arguments, Rank, Element>(lp);
  // can_implement also rejects devices other than compute capability 9.0.
  const cutlass::Status st = Op::can_implement(args);
  if (st != cutlass::Status::kSuccess) {
    throw std::invalid_argument(std::string("fastna: hopper: ") + name + " cannot run this problem: " +
                                cutlassGetStatusString(st));
  }
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
