// Device-level API of the fused neighborhood-attention forward pass (sm80-class kernel).
//
//   using Op = fastna::fused::Forward<2, cutlass::bfloat16_t, 128>;   // or float: TF32 tensor cores
//   Op::Arguments args{problem, q, k, v, out, lse};
//   if (Op::can_implement(args) == cutlass::Status::kSuccess) Op::run(args, stream);
//
// Semantics: docs/SEMANTICS.md sections 1-5 (heads-last [B, *spatial, H, D] strided views, per-axis
// kernel / stride / dilation / causal, GQA, scale; lse in natural log).
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <cmath>
#include <cstdint>

#include "fastna/common/box_tile.hpp"  // tiles_per_group
#include "fastna/common/forward_params.hpp"
#include "fastna/common/problem_checks.hpp"
#include "fastna/sm80/forward_kernel.hpp"
#include "fastna/common/sm80_tile_traits.hpp"
#include "fastna/common/problem.hpp"

namespace fastna {
namespace fused {

// Warps / Stages: see ForwardTraits (0 / 2: the original 4-warp (or fewer) double-buffered tiles).
template <int Rank, class Element, int HeadDim, class QBox = typename DefaultBox<Rank>::type,
          class KBox = typename DefaultBox<Rank>::type, int Warps = 0, int Stages = 2>
class Forward {
 public:
  using Traits = ForwardTraits<Rank, Element, HeadDim, QBox, KBox, Warps, Stages>;
  using Params = ForwardParams<Rank, Element>;

  using Arguments = ForwardArguments<Rank, Element>;

  static Verdict can_implement_problem(NaProblem<Rank> const& p) { return check_forward_problem<HeadDim, QBox>(p); }

  static Verdict can_implement(Arguments const& args) {
    Verdict v = can_implement_problem(args.problem);
    if (v.is_ok()) v = check_forward_tensors(args);
    return v;
  }

  static size_t get_workspace_size(Arguments const&) { return 0; }

  static Params to_params(Arguments const& args) { return Params::template from_arguments<QBox>(args); }

  static dim3 grid_shape(Arguments const& args) { return forward_grid_shape<QBox>(args.problem); }

  static cutlass::Status run(Arguments const& args, cudaStream_t stream = nullptr, void* workspace = nullptr) {
    (void)workspace;
    cutlass::Status st = can_implement(args);
    if (st != cutlass::Status::kSuccess) return st;
    auto kernel = fna_forward_kernel<Traits>;
    constexpr int smem = static_cast<int>(Traits::kSmemBytes);
    if (smem > 48 * 1024) {
      if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return cutlass::Status::kErrorInternal;
    }
    kernel<<<grid_shape(args), Traits::kThreads, smem, stream>>>(to_params(args));
    return cudaGetLastError() == cudaSuccess ? cutlass::Status::kSuccess : cutlass::Status::kErrorInternal;
  }
};

}  // namespace fused
}  // namespace fastna
