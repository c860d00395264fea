// Glue between LaunchParams and fastna::fused::Forward, included by exactly one generated TU
// per instance (cmake/templates/fused_fwd.cu.in).
//
// The kernel is launched here rather than through Forward::run so that its template argument
// is a traits type with internal linkage (LocalTraits, anonymous namespace): the same
// fna_forward_kernel<Traits> compiled for several archs (sm80 and sm90a TUs) would otherwise be
// one weak symbol across TUs, and the CUDA runtime could register the wrong arch's cubin for it.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <stdexcept>
#include <string>

#include "fastna/fused/forward.hpp"
#include "launch_params.hpp"

namespace fastna {
namespace binding {
namespace {

template <class Base>
struct LocalTraits : Base {};

template <int Rank>
NaProblem<Rank> fused_problem(const LaunchParams& lp) {
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
TokenTensor<E, Rank> fused_view(const TensorArg& t) {
  TokenTensor<E, Rank> v;
  v.ptr = reinterpret_cast<E*>(t.ptr);
  v.stride_batch = t.strides[0];
  for (int a = 0; a < Rank; ++a) v.stride_spatial[a] = t.strides[1 + a];
  v.stride_head = t.strides[Rank + 1];
  v.stride_dim = t.strides[Rank + 2];
  return v;
}

template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_fused_forward(const LaunchParams& lp, const char* name) {
  using Op = fused::Forward<Rank, Element, HeadDim, QBox, KBox>;
  using Traits = LocalTraits<typename Op::Traits>;
  typename Op::Arguments args;
  args.problem = fused_problem<Rank>(lp);
  args.q = fused_view<Element const, Rank>(lp.q);
  args.k = fused_view<Element const, Rank>(lp.k);
  args.v = fused_view<Element const, Rank>(lp.v);
  args.out = fused_view<Element, Rank>(lp.out);
  args.lse = reinterpret_cast<float*>(lp.lse.ptr);
  // module.cpp names the failing condition before dispatching; this is the last guard.
  const cutlass::Status st = Op::can_implement(args);
  if (st != cutlass::Status::kSuccess) {
    throw std::invalid_argument(std::string("fastna: fused: ") + name + " cannot run this problem: " +
                                cutlassGetStatusString(st));
  }
  auto kernel = fused::fna_forward_kernel<Traits>;
  constexpr int smem = static_cast<int>(Traits::kSmemBytes);
  cudaError_t err = cudaSuccess;
  if (smem > 48 * 1024) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) {
      throw std::runtime_error(std::string("fastna: fused: cannot set ") + std::to_string(smem) +
                               " bytes of shared memory for " + name + ": " + cudaGetErrorString(err));
    }
  }
  kernel<<<Op::grid_shape(args), Traits::kThreads, smem, reinterpret_cast<cudaStream_t>(lp.stream)>>>(
      Op::to_params(args));
  err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("fastna: fused: launch of ") + name + " failed: " +
                             cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
  }
}

}  // namespace
}  // namespace binding
}  // namespace fastna
