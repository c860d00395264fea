// Device-level API of the fused neighborhood-attention forward pass (sm80-class kernel).
//
//   using Op = fastna::fused::Forward<2, cutlass::bfloat16_t, 128>;   // or float: TF32 tensor cores
//   Op::Arguments args{problem, q, k, v, out, lse};
//   if (Op::can_implement(args) == cutlass::Status::kSuccess) Op::run(args, stream);
//
// Semantics: DESIGN.md section 1 (heads-last [B, *spatial, H, D] strided views, per-axis
// kernel / stride / dilation / causal, GQA, scale; lse in natural log).
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <cmath>
#include <cstdint>

#include "fastna/box_tile.hpp"  // tiles_per_group
#include "fastna/host_checks.hpp"
#include "fastna/fused/kernel.hpp"
#include "fastna/fused/kernel_traits.hpp"
#include "fastna/problem.hpp"

namespace fastna {
namespace fused {

// Warps / Stages: see ForwardTraits (0 / 2: the original 4-warp (or fewer) double-buffered tiles).
template <int Rank, class Element, int HeadDim, class QBox = typename DefaultBox<Rank>::type,
          class KBox = typename DefaultBox<Rank>::type, int Warps = 0, int Stages = 2>
class Forward {
 public:
  using Traits = ForwardTraits<Rank, Element, HeadDim, QBox, KBox, Warps, Stages>;
  using Params = ForwardParams<Rank, Element>;

  struct Arguments {
    NaProblem<Rank> problem;
    TokenTensor<Element const, Rank> q;
    TokenTensor<Element const, Rank> k;
    TokenTensor<Element const, Rank> v;
    TokenTensor<Element, Rank> out;
    float* lse = nullptr;  // optional, fp32 contiguous [B, N, H]
  };

  static cutlass::Status can_implement(Arguments const& args) {
    NaProblem<Rank> const& p = args.problem;
    const cutlass::Status st = check_fused_problem<HeadDim>(p);
    if (st != cutlass::Status::kSuccess) return st;
    if (box_grid_x<QBox>(p) > 0x7fffffff) return cutlass::Status::kErrorInvalidProblem;
    if (!rows_in_16_byte_chunks(args.q) || !rows_in_16_byte_chunks(args.k) || !rows_in_16_byte_chunks(args.v) ||
        !rows_in_16_byte_chunks(args.out))
      return cutlass::Status::kErrorMisalignedOperand;
    return cutlass::Status::kSuccess;
  }

  static size_t get_workspace_size(Arguments const&) { return 0; }

  static Params to_params(Arguments const& args) { return Params::template from_arguments<QBox>(args); }

  static dim3 grid_shape(Arguments const& args) {
    return dim3(static_cast<unsigned>(box_grid_x<QBox>(args.problem)), static_cast<unsigned>(args.problem.heads),
                static_cast<unsigned>(args.problem.batch));
  }

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
