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

#include "fastna/box_tile.hpp"  // tiles_per_group
#include "fastna/host_checks.hpp"
#include "fastna/fused/backward_kernel.hpp"
#include "fastna/fused/kernel_traits.hpp"
#include "fastna/problem.hpp"

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

  struct Arguments {
    NaProblem<Rank> problem;
    TokenTensor<Element const, Rank> q;
    TokenTensor<Element const, Rank> k;
    TokenTensor<Element const, Rank> v;
    TokenTensor<Element const, Rank> out;
    TokenTensor<Element const, Rank> dout;
    float const* lse = nullptr;  // fp32 contiguous [B, N, H]
    TokenTensor<Element, Rank> dq;
    TokenTensor<Element, Rank> dk;
    TokenTensor<Element, Rank> dv;
    // Optional fp32 contiguous [B, N, H]: the gradient flowing into lse (nullptr = zero).
    float const* dlse = nullptr;
  };

  static cutlass::Status can_implement(Arguments const& args) {
    NaProblem<Rank> const& p = args.problem;
    const cutlass::Status st = check_fused_problem<HeadDim>(p);
    if (st != cutlass::Status::kSuccess) return st;
    if (box_grid_x<QBox>(p) > 0x7fffffff || box_grid_x<KBox>(p) > 0x7fffffff)
      return cutlass::Status::kErrorInvalidProblem;
    if ((int64_t(p.batch) * p.num_tokens() * p.heads + 3) / 4 > 0x7fffffff) return cutlass::Status::kErrorInvalidProblem;
    if (args.lse == nullptr) return cutlass::Status::kErrorInvalidProblem;
    if (!rows_in_16_byte_chunks(args.q) || !rows_in_16_byte_chunks(args.k) || !rows_in_16_byte_chunks(args.v) ||
        !rows_in_16_byte_chunks(args.out) || !rows_in_16_byte_chunks(args.dout) || !rows_in_16_byte_chunks(args.dq) ||
        !rows_in_16_byte_chunks(args.dk) || !rows_in_16_byte_chunks(args.dv))
      return cutlass::Status::kErrorMisalignedOperand;
    return cutlass::Status::kSuccess;
  }

  // fp32 delta [B, N, H].
  static size_t get_workspace_size(Arguments const& args) {
    return sizeof(float) * size_t(args.problem.batch) * size_t(args.problem.num_tokens()) * size_t(args.problem.heads);
  }

  static Params to_params(Arguments const& args, void* workspace) {
    Params params;
    params.problem = args.problem;
    params.q = args.q;
    params.k = args.k;
    params.v = args.v;
    params.out = args.out;
    params.dout = args.dout;
    params.dq = args.dq;
    params.dk = args.dk;
    params.dv = args.dv;
    params.lse = args.lse;
    params.dlse = args.dlse;
    params.delta = static_cast<float*>(workspace);
    for (int a = 0; a < Rank; ++a) {
      params.q_tiles_per_group[a] = tiles_per_group(args.problem.axis[a], QBox::extent(a));
      params.kv_tiles_per_group[a] = tiles_per_group(args.problem.axis[a], KBox::extent(a));
    }
    params.scale_log2 = args.problem.scale * 1.4426950408889634f;
    return params;
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
