// Device-level API of the fused neighborhood-attention backward pass (sm80-class kernels).
//
//   using Op = fastna::fused::Backward<2, cutlass::bfloat16_t, 128>;
//   Op::Arguments args{problem, q, k, v, out, dout, lse, dq, dk, dv};
//   void* ws;  cudaMalloc(&ws, Op::get_workspace_size(args));   // fp32 delta [B, N, H]
//   if (Op::can_implement(args) == cutlass::Status::kSuccess) Op::run(args, stream, ws);
//
// lse is the forward's fp32 [B, N, H] logsumexp (natural log); dlse (optional, fp32 [B, N, H])
// is a gradient flowing into that lse (nullptr = none).  dq has q's shape, dk / dv have
// k's; all are written completely (keys no query sees get zero gradients).  Three launches on
// `stream`: delta preprocess, dK/dV (one CTA per KV box x kv head x batch; sums over the GQA
// group and over the query boxes inside the CTA, no atomics), dQ (one CTA per query box x head x
// batch).  Deterministic: no atomics anywhere.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <cmath>
#include <cstdint>

#include "fastna/common/box_tile.hpp"  // tiles_per_group
#include "fastna/common/problem_checks.hpp"
#include "fastna/sm80/backward_kernel.hpp"
#include "fastna/common/sm80_tile_traits.hpp"
#include "fastna/common/problem.hpp"

namespace fastna {
namespace fused {

template <int Rank, class Element, int HeadDim, class QBox = typename DefaultBox<Rank>::type,
          class KBox = typename DefaultBox<Rank>::type>
class Backward {
 public:
  // dQ: rows = queries (QBox), columns = keys (KBox).  dK/dV: rows = keys (KBox), columns = queries (QBox).
  using DqTraits = ForwardTraits<Rank, Element, HeadDim, QBox, KBox>;
  using DkvTraits = ForwardTraits<Rank, Element, HeadDim, KBox, QBox>;
  using Params = BackwardParams<Rank, Element>;

  static constexpr size_t kSmemDq =
      sizeof(Element) * (2 * size_t(DqTraits::kElemsQ) + size_t(2 * DqTraits::kStages) * DqTraits::kElemsKV);
  static constexpr size_t kSmemDkv =
      sizeof(Element) * (2 * size_t(DkvTraits::kElemsQ) + size_t(2 * DkvTraits::kStages) * DkvTraits::kElemsKV) +
      sizeof(float) * 2 * DkvTraits::kStages * DkvTraits::kBlockN;

  using Arguments = BackwardArguments<Rank, Element>;

  static Verdict can_implement_problem(NaProblem<Rank> const& p) {
    return check_backward_problem<HeadDim, QBox, KBox>(p);
  }

  static Verdict can_implement(Arguments const& args) {
    Verdict v = can_implement_problem(args.problem);
    if (v.is_ok()) v = check_backward_tensors(args);
    return v;
  }

  // fp32 delta [B, N, H].
  static size_t get_workspace_size(Arguments const& args) {
    return sizeof(float) * size_t(args.problem.batch) * size_t(args.problem.num_tokens()) * size_t(args.problem.heads);
  }

  static Params to_params(Arguments const& args, void* workspace) {
    return backward_params<QBox, KBox>(args, workspace);
  }

  static cutlass::Status run(Arguments const& args, cudaStream_t stream, void* workspace) {
    cutlass::Status st = can_implement(args);
    if (st != cutlass::Status::kSuccess) return st;
    if (workspace == nullptr) return cutlass::Status::kErrorWorkspaceNull;
    const Params params = to_params(args, workspace);
    NaProblem<Rank> const& p = args.problem;

    const int64_t rows = int64_t(p.batch) * p.num_tokens() * p.heads;
    fna_bwd_preprocess_kernel<Rank, Element, HeadDim>
        <<<static_cast<unsigned>((rows + 3) / 4), 128, 0, stream>>>(params);

    const int64_t xq = box_grid_x<QBox>(p), xkv = box_grid_x<KBox>(p);
    {
      auto kernel = fna_bwd_dkdv_kernel<DkvTraits>;
      constexpr int smem = static_cast<int>(kSmemDkv);
      if (smem > 48 * 1024 &&
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return cutlass::Status::kErrorInternal;
      kernel<<<dim3(static_cast<unsigned>(xkv), static_cast<unsigned>(p.heads_kv), static_cast<unsigned>(p.batch)),
               DkvTraits::kThreads, smem, stream>>>(params);
    }
    {
      auto kernel = fna_bwd_dq_kernel<DqTraits>;
      constexpr int smem = static_cast<int>(kSmemDq);
      if (smem > 48 * 1024 &&
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return cutlass::Status::kErrorInternal;
      kernel<<<dim3(static_cast<unsigned>(xq), static_cast<unsigned>(p.heads), static_cast<unsigned>(p.batch)),
               DqTraits::kThreads, smem, stream>>>(params);
    }
    return cudaGetLastError() == cudaSuccess ? cutlass::Status::kSuccess : cutlass::Status::kErrorInternal;
  }
};

}  // namespace fused
}  // namespace fastna
