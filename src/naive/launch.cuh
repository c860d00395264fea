// Glue between LaunchParams and fastna::naive::Forward/Backward, included by exactly one
// generated TU per instance (FASTNA_NAIVE_NS is defined by that TU before this include).
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "fastna/naive/naive.cuh"
#include "common/launch_views.hpp"

namespace fastna {
namespace binding {
namespace {

// [B, *spatial, H, D] strides in order: batch, spatial..., head, dim.
template <typename E>
ExtraTensor<E> extra_view(const TensorArg& t) {
  ExtraTensor<E> v;
  v.ptr = reinterpret_cast<E*>(t.ptr);
  if (!t.present()) return v;
  v.stride_batch = t.strides[0];
  v.stride_token = t.strides[1];
  v.stride_head = t.strides[2];
  v.stride_dim = t.strides[3];
  return v;
}

inline void throw_cuda(const char* what, cudaError_t err) {
  throw std::runtime_error(std::string("fastna: ") + what + ": " + cudaGetErrorName(err) + ": " +
                           cudaGetErrorString(err));
}

// Runs op with a stream-ordered workspace, translating Status into exceptions: a rejected
// problem is the caller's mistake (std::invalid_argument -> ValueError), anything else is CUDA's.
template <typename Op>
void run_op(const char* name, const typename Op::Arguments& args_in, cudaStream_t stream) {
  typename Op::Arguments args = args_in;
  const size_t ws_bytes = Op::get_workspace_size(args);
  void* ws = nullptr;
  if (ws_bytes > 0) {
    cudaError_t err = cudaMallocAsync(&ws, ws_bytes, stream);
    if (err != cudaSuccess) throw_cuda("workspace allocation failed", err);
    args.workspace = ws;
  }
  Op op;
  const naive::Status st = op.run(args, stream);
  if (ws) cudaFreeAsync(ws, stream);
  if (st == naive::Status::kErrorCuda) throw_cuda(name, op.cuda_error());
  if (st != naive::Status::kSuccess) {
    throw std::invalid_argument(std::string("fastna: ") + name + " cannot run this problem: " +
                                naive::status_string(st));
  }
}

template <int Rank, typename T>
void run_naive_forward(const LaunchParams& lp) {
  typename naive::Forward<Rank, T>::Arguments a;
  a.problem = problem_of<Rank>(lp);
  a.q = token_view<const T, Rank>(lp.q);
  a.k = token_view<const T, Rank>(lp.k);
  a.v = token_view<const T, Rank>(lp.v);
  a.extra_k = extra_view<const T>(lp.extra_k);
  a.extra_v = extra_view<const T>(lp.extra_v);
  a.out = token_view<T, Rank>(lp.out);
  a.attn = reinterpret_cast<float*>(lp.attn.ptr);
  a.lse = reinterpret_cast<float*>(lp.lse.ptr);
  run_op<naive::Forward<Rank, T>>("naive_forward", a, reinterpret_cast<cudaStream_t>(lp.stream));
}

template <int Rank, typename T>
void run_naive_backward(const LaunchParams& lp) {
  typename naive::Backward<Rank, T>::Arguments a;
  a.problem = problem_of<Rank>(lp);
  a.q = token_view<const T, Rank>(lp.q);
  a.k = token_view<const T, Rank>(lp.k);
  a.v = token_view<const T, Rank>(lp.v);
  a.extra_k = extra_view<const T>(lp.extra_k);
  a.extra_v = extra_view<const T>(lp.extra_v);
  a.dout = token_view<const T, Rank>(lp.dout);
  a.attn = reinterpret_cast<const float*>(lp.attn.ptr);
  a.dq = token_view<T, Rank>(lp.dq);
  a.dk = token_view<T, Rank>(lp.dk);
  a.dv = token_view<T, Rank>(lp.dv);
  a.dextra_k = extra_view<T>(lp.dextra_k);
  a.dextra_v = extra_view<T>(lp.dextra_v);
  a.dattn = reinterpret_cast<float*>(lp.dattn.ptr);
  run_op<naive::Backward<Rank, T>>("naive_backward", a, reinterpret_cast<cudaStream_t>(lp.stream));
}

// The instance's answer to "can you run lp's problem": the naive ops take every valid problem.
template <int Rank>
std::string naive_reason(const LaunchParams& lp) {
  return naive::detail::problem_is_valid(problem_of<Rank>(lp)) ? std::string()
                                                                 : std::string("invalid problem (naive kernels)");
}

}  // namespace
}  // namespace binding
}  // namespace fastna
