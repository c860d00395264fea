// Device-level API of GEMM-based neighborhood attention (legacy unfused ops, docs/SEMANTICS.md section 8,
// heads-last layout; sm80-class tensor-core kernels, fp16 / bf16 inputs, or fp32 inputs computed
// on TF32 tensor cores (operands rounded to TF32, as torch's allow_tf32 matmuls); fp32
// accumulation throughout).
//
//   PN (qk):  attn[b, i, h, w] = q_i . k_{n(i,w)} (+ rpb[h, j' - i' + K - 1]);  causal slots past
//             the window end = -inf.  No softmax scale.
//   NN (av):  out[b, i, h] = sum_w attn[b, i, h, w] x_{n(i,w)}  (x = V; also dQ = dAttn K)
//   IN:       out[b, j, h_kv] = sum_{h in group(h_kv)} sum_{i: j in N(i)} attn[b, i, h, w(i,j)] x[b, i, h]
//             (dK = dAttn^T Q with x = Q, dV = attn^T dO with x = dO)
//
//   using Qk = fastna::gemm_na::PN<2, cutlass::half_t, 64>;          // attn in half_t
//   Qk::Arguments a{problem, q, k, attn, rpb};
//   if (Qk::can_implement(a) == cutlass::Status::kSuccess) Qk::run(a, stream);
//
// Attention-weight dtype (AttnElem): the input dtype by default, as NATTEN's qk wrote and as
// fastna.ops_unfused's reference returns (so fp32 for fp32 inputs); `float` is accepted with
// 16-bit inputs too (PN then stores the fp32 accumulator + rpb unrounded; NN / IN read it and
// round to Element for the MMA).
// Conditions (can_implement): stride 1 on every axis (legacy ops), K * d <= L, H % H_kv == 0,
// num_extra == 0 (the E extra slots of NATTEN's additional keys are the caller's business),
// B and H <= 65535, head dim == HeadDim (PN: problem.dim; NN / IN: Arguments::head_dim or,
// when 0, problem.dim_v), token tensors with a contiguous head dim, 16-byte aligned pointers and
// strides that are multiples of 16 bytes (8 elements of 16 bits, 4 of fp32); attn: slot stride 1,
// non-null, aligned to its element; rpb (PN): only for odd
// K on non-causal axes, contiguous [H, 2K_1-1, ..., 2K_r-1] in Element.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "fastna/gemm/common.hpp"
#include "fastna/common/problem_checks.hpp"
#include "fastna/gemm/kernel_gather.hpp"
#include "fastna/gemm/kernel_pn.hpp"
#include "fastna/common/problem.hpp"

namespace fastna {
namespace gemm_na {

template <class T>
inline constexpr bool is_supported_element = std::is_same_v<T, cutlass::half_t> ||
                                             std::is_same_v<T, cutlass::bfloat16_t> || std::is_same_v<T, float>;

namespace detail {

// The conditions PN and GatherOp share: check_heads_and_batch, no extra tokens, per axis a valid
// window (kernel * dilation <= length) and stride 1 (the legacy qk / av ops have no stride).
template <int Rank>
Verdict check_problem(NaProblem<Rank> const& p) {
  Verdict v = check_heads_and_batch(p);
  if (!v.is_ok()) return v;
  if (p.num_extra != 0)
    return Verdict::unsupported("additional KV tokens not supported (num_extra must be 0; the caller handles the "
                                "extra slots)");
  for (int a = 0; a < Rank; ++a) {
    AxisParams const& ax = p.axis[a];
    if (ax.length <= 0 || ax.kernel < 1 || ax.dilation < 1 || int64_t(ax.kernel) * ax.dilation > ax.length)
      return Verdict::invalid(axis_text(a, ax) + " (need kernel * dilation <= length)");
    if (ax.stride != 1)
      return Verdict::unsupported("stride != 1 not supported (legacy qk/av ops; axis " + std::to_string(a) +
                                  " has stride " + std::to_string(ax.stride) + ")");
  }
  return Verdict::ok();
}

template <class T>
bool attn_ok(AttnView<T> const& v) {
  return v.ptr != nullptr && reinterpret_cast<uintptr_t>(v.ptr) % alignof(T) == 0;
}

}  // namespace detail

// ------------------------------------------------------------------------------------------- PN
template <int Rank, class Element, int HeadDim, class AttnElem = Element,
          class QBox = typename DefaultBox<Rank>::type, class KBox = typename DefaultBox<Rank>::type>
class PN {
  static_assert(is_supported_element<Element>, "gemm_na: Element must be cutlass::half_t, cutlass::bfloat16_t or float");

 public:
  using Traits = PNTraits<Rank, Element, HeadDim, QBox, KBox>;
  using Params = PNParams<Rank, Element, AttnElem>;

  struct Arguments {
    NaProblem<Rank> problem;
    TokenTensor<Element const, Rank> q;  // [B, *S, H, D]
    TokenTensor<Element const, Rank> k;  // [B, *S, H_kv, D]
    AttnView<AttnElem> attn;             // [B, N, H, >= prod(K)]
    Element const* rpb = nullptr;        // optional [H, 2K_1-1, ...] contiguous
  };

  // rpb: whether a relative positional bias will be added (it needs odd kernels, no causal axis).
  static Verdict can_implement_problem(NaProblem<Rank> const& p, bool rpb = false) {
    Verdict v = detail::check_problem(p);
    if (!v.is_ok()) return v;
    if (p.dim != HeadDim)
      return Verdict::invalid("head dim " + std::to_string(p.dim) + " != the instance's " + std::to_string(HeadDim));
    if (rpb)
      for (int a = 0; a < Rank; ++a)
        if (p.axis[a].causal || p.axis[a].kernel % 2 == 0)
          return Verdict::unsupported("rpb needs an odd kernel on every axis and no causal axis");
    return check_grid_x<QBox>(p);
  }

  static Verdict can_implement(Arguments const& args) {
    Verdict v = can_implement_problem(args.problem, args.rpb != nullptr);
    if (v.is_ok()) v = check_rows_16b(args.q, "q");
    if (v.is_ok()) v = check_rows_16b(args.k, "k");
    if (v.is_ok() && !detail::attn_ok(args.attn)) v = Verdict::misaligned("attn pointer is null or misaligned");
    return v;
  }

  static size_t get_workspace_size(Arguments const&) { return 0; }

  static Params to_params(Arguments const& args) {
    Params params;
    params.problem = args.problem;
    params.q = args.q;
    params.k = args.k;
    params.attn = args.attn;
    params.rpb = args.rpb;
    for (int a = 0; a < Rank; ++a) params.tiles_per_group[a] = tiles_per_group(args.problem.axis[a], QBox::extent(a));
    return params;
  }

  static dim3 grid_shape(Arguments const& args) {
    return dim3(static_cast<unsigned>(box_grid_x<QBox>(args.problem)),
                static_cast<unsigned>(args.problem.heads), static_cast<unsigned>(args.problem.batch));
  }

  static cutlass::Status run(Arguments const& args, cudaStream_t stream = nullptr, void* workspace = nullptr) {
    (void)workspace;
    cutlass::Status st = can_implement(args);
    if (st != cutlass::Status::kSuccess) return st;
    auto kernel = na_pn_kernel<Traits, AttnElem>;
    constexpr int smem = static_cast<int>(Traits::kSmemBytes);
    if (smem > 48 * 1024) {
      if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return cutlass::Status::kErrorInternal;
    }
    kernel<<<grid_shape(args), Traits::kThreads, smem, stream>>>(to_params(args));
    return cudaGetLastError() == cudaSuccess ? cutlass::Status::kSuccess : cutlass::Status::kErrorInternal;
  }
};

// ------------------------------------------------------------------------------- NN and IN
// kInverse = false: NN; true: IN.  RowBox: output tokens per CTA; InnerBox: reduction tokens.
template <bool kInverse, int Rank, class Element, int HeadDim, class AttnElem, class RowBox, class InnerBox>
class GatherOp {
  static_assert(is_supported_element<Element>, "gemm_na: Element must be cutlass::half_t, cutlass::bfloat16_t or float");

 public:
  using Traits = GatherTraits<Rank, Element, HeadDim, RowBox, InnerBox>;
  using Params = GatherParams<Rank, Element, AttnElem>;

  struct Arguments {
    NaProblem<Rank> problem;
    AttnView<AttnElem const> attn;       // [B, N, H, >= prod(K)] (query heads)
    TokenTensor<Element const, Rank> x;  // NN: [B, *S, H_kv, HeadDim]; IN: [B, *S, H, HeadDim]
    TokenTensor<Element, Rank> out;      // NN: [B, *S, H, HeadDim];   IN: [B, *S, H_kv, HeadDim]
    int32_t head_dim = 0;                // columns of x / out; 0 = problem.dim_v
  };

  // head_dim: columns of x / out (0 = problem.dim_v).
  static Verdict can_implement_problem(NaProblem<Rank> const& p, int32_t head_dim = 0) {
    Verdict v = detail::check_problem(p);
    if (!v.is_ok()) return v;
    const int32_t d = head_dim != 0 ? head_dim : p.dim_v;
    if (d != HeadDim)
      return Verdict::invalid("head dim " + std::to_string(d) + " != the instance's " + std::to_string(HeadDim));
    return check_grid_x<RowBox>(p);
  }

  static Verdict can_implement(Arguments const& args) {
    Verdict v = can_implement_problem(args.problem, args.head_dim);
    if (v.is_ok()) v = check_rows_16b(args.x, "x");
    if (v.is_ok()) v = check_rows_16b(args.out, "out");
    if (v.is_ok() && !detail::attn_ok(args.attn)) v = Verdict::misaligned("attn pointer is null or misaligned");
    return v;
  }

  static size_t get_workspace_size(Arguments const&) { return 0; }

  static Params to_params(Arguments const& args) {
    Params params;
    params.problem = args.problem;
    params.attn = args.attn;
    params.x = args.x;
    params.out = args.out;
    for (int a = 0; a < Rank; ++a) params.tiles_per_group[a] = tiles_per_group(args.problem.axis[a], RowBox::extent(a));
    return params;
  }

  static dim3 grid_shape(Arguments const& args) {
    const int heads = kInverse ? args.problem.heads_kv : args.problem.heads;
    return dim3(static_cast<unsigned>(box_grid_x<RowBox>(args.problem)), static_cast<unsigned>(heads),
                static_cast<unsigned>(args.problem.batch));
  }

  static cutlass::Status run(Arguments const& args, cudaStream_t stream = nullptr, void* workspace = nullptr) {
    (void)workspace;
    cutlass::Status st = can_implement(args);
    if (st != cutlass::Status::kSuccess) return st;
    auto kernel = na_gather_kernel<Traits, kInverse, AttnElem>;
    constexpr int smem = static_cast<int>(Traits::kSmemBytes);
    // The static shared arrays (NN row windows) come on top of the dynamic size.
    if (smem > 40 * 1024) {
      if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return cutlass::Status::kErrorInternal;
    }
    kernel<<<grid_shape(args), Traits::kThreads, smem, stream>>>(to_params(args));
    return cudaGetLastError() == cudaSuccess ? cutlass::Status::kSuccess : cutlass::Status::kErrorInternal;
  }
};

// NN (av; also dQ = dAttn K with x = K, head_dim = D).  One CTA per query box x head x batch.
template <int Rank, class Element, int HeadDim, class AttnElem = Element,
          class QBox = typename DefaultBox<Rank>::type, class KBox = typename DefaultBox<Rank>::type>
using NN = GatherOp<false, Rank, Element, HeadDim, AttnElem, QBox, KBox>;

// IN (dK = dAttn^T Q, dV = attn^T dO).  One CTA per key box x kv head x batch; sums the GQA
// group's query heads.
template <int Rank, class Element, int HeadDim, class AttnElem = Element,
          class KBox = typename DefaultBox<Rank>::type, class QBox = typename DefaultBox<Rank>::type>
using IN = GatherOp<true, Rank, Element, HeadDim, AttnElem, KBox, QBox>;

}  // namespace gemm_na
}  // namespace fastna
