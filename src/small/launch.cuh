// Glue between LaunchParams and the small-window forward fastna::fused::SmallWindowForward,
// included by the generated small_fwd TUs (cmake/templates/small_fwd.cu.in; fused_fwd tile
// "small").  Tma: the sm90a instances copy the CTA's key halo with TMA where the tensor maps can
// be made (SmallWindowForward::run picks the kernel the same way).
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <type_traits>

#include "common/launch_glue.cuh"
#include "fastna/small/forward.hpp"

namespace fastna {
namespace binding {
namespace {

template <int Rank, class Element, int HeadDim, bool Tma>
using SmallOp = fused::SmallWindowForward<Rank, Element, HeadDim, fused::DefaultSmallWindow<Rank, HeadDim>, Tma>;

template <int Rank, class Element, int HeadDim, bool Tma, class QBox, class KBox>
void run_small_window_forward(const LaunchParams& lp, const char* name) {
  using Op = SmallOp<Rank, Element, HeadDim, Tma>;
  // QBox / KBox: the table's boxes of tile "small" (the CTA's query box, a warp's key slots).
  static_assert(std::is_same<QBox, typename Op::CtaBox>::value, "cmake/kernel_table.json: small qbox");
  static_assert(std::is_same<KBox, typename Op::Traits::Slots>::value, "cmake/kernel_table.json: small kvbox");
  const auto args = forward_arguments<Rank, Element>(lp);
  require_implementable(Op::can_implement(args), name);
  const typename Op::Params params = Op::to_params(args);
  auto launch = [&](auto kernel, int threads, int smem) {
    set_smem(kernel, smem, name);
    kernel<<<Op::grid_shape(args), threads, smem, reinterpret_cast<cudaStream_t>(lp.stream)>>>(params);
  };
  if (params.use_tma) {
    using Traits = LocalTraits<typename Op::Traits>;
    launch(fused::small_window_kernel<Traits>(), Traits::kThreads, Traits::kSmemBytes);
  } else {
    using Traits = LocalTraits<typename Op::CopyTraits>;
    launch(fused::small_window_kernel<Traits>(), Traits::kThreads, Traits::kSmemBytes);
  }
  check_launch("launch", name);
}

}  // namespace
}  // namespace binding
}  // namespace fastna
