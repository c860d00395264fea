// Glue between LaunchParams and fastna::gemm_na::PN / NN / IN (include/fastna/gemm/device.hpp),
// included by exactly one generated TU per instance (cmake/templates/gemm_na.cu.in).
// Element: cutlass::half_t, cutlass::bfloat16_t, or float (TF32 tensor cores; attn in fp32).
//
// As in fused_launch.cuh, the kernels are launched here (not through PN::run / GatherOp::run)
// with template arguments of internal linkage (GemmLocalTraits, anonymous namespace), so the
// same kernel compiled for several archs never shares a weak symbol across TUs.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <stdexcept>
#include <string>
#include <type_traits>

#include "fastna/gemm/device.hpp"
#include "launch_params.hpp"

namespace fastna {
namespace binding {
namespace {

template <class Base>
struct GemmLocalTraits : Base {};

template <int Rank>
NaProblem<Rank> gemm_problem(const LaunchParams& lp) {
  NaProblem<Rank> p;
  p.batch = lp.batch;
  p.heads = lp.heads;
  p.heads_kv = lp.heads_kv;
  p.dim = lp.dim;
  p.dim_v = lp.dim_v;
  p.num_extra = lp.num_extra;
  p.scale = lp.scale;
  for (int a = 0; a < Rank; ++a) p.axis[a] = lp.axis[a];
  return p;
}

// [B, *spatial, H, D] strides in order: batch, spatial..., head, dim.
template <typename E, int Rank>
TokenTensor<E, Rank> gemm_view(const TensorArg& t) {
  TokenTensor<E, Rank> v;
  v.ptr = reinterpret_cast<E*>(t.ptr);
  v.stride_batch = t.strides[0];
  for (int a = 0; a < Rank; ++a) v.stride_spatial[a] = t.strides[1 + a];
  v.stride_head = t.strides[Rank + 1];
  v.stride_dim = t.strides[Rank + 2];
  return v;
}

// attn: contiguous [B, N, H, W] or [B, *S, H, W] (module.cpp checks it): the batch, token and
// head strides are the first, third-from-last and second-from-last.
template <typename E>
gemm_na::AttnView<E> gemm_attn(const TensorArg& t) {
  gemm_na::AttnView<E> v;
  v.ptr = reinterpret_cast<E*>(t.ptr);
  v.stride_batch = t.strides[0];
  v.stride_token = t.strides[t.ndim - 3];
  v.stride_head = t.strides[t.ndim - 2];
  return v;
}

inline void gemm_check_status(cutlass::Status st, const char* op, const char* name) {
  if (st != cutlass::Status::kSuccess) {
    throw std::invalid_argument(std::string("fastna: gemm: ") + op + " of " + name +
                                " cannot run this problem: " + cutlassGetStatusString(st));
  }
}

template <class Kernel, class Params>
void gemm_launch(Kernel kernel, dim3 grid, int threads, int smem, int smem_attr_above, cudaStream_t stream,
                 Params const& params, const char* op, const char* name) {
  cudaError_t err = cudaSuccess;
  if (smem > smem_attr_above) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) {
      throw std::runtime_error(std::string("fastna: gemm: cannot set ") + std::to_string(smem) +
                               " bytes of shared memory for " + op + " of " + name + ": " + cudaGetErrorString(err));
    }
  }
  kernel<<<grid, threads, smem, stream>>>(params);
  err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("fastna: gemm: launch of ") + op + " of " + name + " failed: " +
                             cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
  }
}

// One instance = PN, NN and IN for (Rank, Element, HeadDim), attention weights in Element,
// default boxes; lp.gemm_op picks the GEMM.
//   PN: lp.q, lp.k [B, *S, H(_kv), dim], lp.rpb (optional), lp.attn (written); HeadDim == dim
//   NN: lp.attn, lp.v = x [B, *S, H_kv, dim_v], lp.out [B, *S, H, dim_v];   HeadDim == dim_v
//   IN: lp.attn, lp.dout = x [B, *S, H, dim_v], lp.dv = out [B, *S, H_kv, dim_v]; HeadDim == dim_v
template <int Rank, class Element, int HeadDim>
void run_gemm_na(const LaunchParams& lp, const char* name) {
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  if (lp.gemm_op == kGemmPN) {
    using Op = gemm_na::PN<Rank, Element, HeadDim>;
    using Traits = GemmLocalTraits<typename Op::Traits>;
    typename Op::Arguments args;
    args.problem = gemm_problem<Rank>(lp);
    args.q = gemm_view<Element const, Rank>(lp.q);
    args.k = gemm_view<Element const, Rank>(lp.k);
    args.attn = gemm_attn<Element>(lp.attn);
    args.rpb = reinterpret_cast<Element const*>(lp.rpb.ptr);
    gemm_check_status(Op::can_implement(args), "PN", name);
    gemm_launch(gemm_na::na_pn_kernel<Traits, Element>, Op::grid_shape(args), Traits::kThreads,
                static_cast<int>(Traits::kSmemBytes), 48 * 1024, stream, Op::to_params(args), "PN", name);
  } else if (lp.gemm_op == kGemmNN || lp.gemm_op == kGemmIN) {
    const bool inverse = lp.gemm_op == kGemmIN;
    auto go = [&](auto inv_tag) {
      constexpr bool kInv = decltype(inv_tag)::value;
      using Op = gemm_na::GatherOp<kInv, Rank, Element, HeadDim, Element, typename gemm_na::DefaultBox<Rank>::type,
                                   typename gemm_na::DefaultBox<Rank>::type>;
      using Traits = GemmLocalTraits<typename Op::Traits>;
      const char* op = kInv ? "IN" : "NN";
      typename Op::Arguments args;
      args.problem = gemm_problem<Rank>(lp);
      args.attn = gemm_attn<Element const>(lp.attn);
      args.x = gemm_view<Element const, Rank>(kInv ? lp.dout : lp.v);
      args.out = gemm_view<Element, Rank>(kInv ? lp.dv : lp.out);
      args.head_dim = lp.dim_v;
      gemm_check_status(Op::can_implement(args), op, name);
      // The static shared arrays (NN row windows) come on top of the dynamic size (device.hpp).
      gemm_launch(gemm_na::na_gather_kernel<Traits, kInv, Element>, Op::grid_shape(args), Traits::kThreads,
                  static_cast<int>(Traits::kSmemBytes), 40 * 1024, stream, Op::to_params(args), op, name);
    };
    if (inverse)
      go(std::integral_constant<bool, true>{});
    else
      go(std::integral_constant<bool, false>{});
  } else {
    throw std::invalid_argument(std::string("fastna: gemm: unknown gemm_op ") + std::to_string(lp.gemm_op) +
                                " for " + name);
  }
}

}  // namespace
}  // namespace binding
}  // namespace fastna
