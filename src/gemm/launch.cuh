// Glue between LaunchParams and fastna::gemm_na::PN / NN / IN (include/fastna/gemm/device.hpp),
// included by exactly one generated TU per instance (cmake/templates/gemm_na.cu.in).
// Element: cutlass::half_t, cutlass::bfloat16_t, or float (TF32 tensor cores; attn in fp32).
//
// As in src/common/launch_glue.cuh, the kernels are launched here (not through PN::run / GatherOp::run)
// with template arguments of internal linkage (GemmLocalTraits, anonymous namespace), so the
// same kernel compiled for several archs never shares a weak symbol across TUs.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>

#include <stdexcept>
#include <string>
#include <type_traits>

#include "fastna/gemm/device.hpp"
#include "common/launch_views.hpp"

namespace fastna {
namespace binding {
namespace {

template <class Base>
struct GemmLocalTraits : Base {};

// [B, *spatial, H, D] strides in order: batch, spatial..., head, dim.
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

inline void gemm_check_status(Verdict const& v, const char* op, const char* name) {
  if (!v.is_ok()) {
    throw std::invalid_argument(std::string("fastna: gemm: ") + v.reason + " (" + op + " of " + name + ": " +
                                cutlassGetStatusString(v.status) + ")");
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

// ---- softmax of the attention weights (backend "gemm" of the full attention) -----------------
// Rows = B * N * H contiguous rows of W = prod(K) slots in Element; fp32 math.  TPR threads per
// row (4..32, shuffles within the group), the first kCache values of each thread kept in
// registers, the rest re-read (L1).  Defined here, in the anonymous namespace, so that every
// instance TU has its own copy (internal linkage, as the GEMM kernels above).
constexpr int kSoftmaxThreads = 256;

template <int TPR>
__device__ __forceinline__ float softmax_group_max(float x) {
#pragma unroll
  for (int o = TPR / 2; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
template <int TPR>
__device__ __forceinline__ float softmax_group_sum(float x) {
#pragma unroll
  for (int o = TPR / 2; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// In place: attn[r, :] = softmax(scale * attn[r, :]) (-inf slots -> 0); lse[r] = logsumexp of the
// scaled row when lse != nullptr.  The first kSoftmaxCache values of each thread stay in registers
// (rows up to TPR * kSoftmaxCache slots are read once); the rest are read again.
template <class T, int TPR, int kSoftmaxCache>
__global__ void __launch_bounds__(kSoftmaxThreads)
    gemm_softmax_kernel(T* __restrict__ attn, float* __restrict__ lse, int64_t rows, int W, float scale) {
  const int lane = threadIdx.x % TPR;
  const int64_t row = int64_t(blockIdx.x) * (kSoftmaxThreads / TPR) + threadIdx.x / TPR;
  const bool valid = row < rows;  // no early return: every lane takes part in the shuffles
  T* x = attn + (valid ? row : 0) * int64_t(W);
  float v[kSoftmaxCache];
  float m = -INFINITY;
#pragma unroll
  for (int j = 0; j < kSoftmaxCache; ++j) {
    const int w = lane + j * TPR;
    v[j] = (valid && w < W) ? scale * static_cast<float>(x[w]) : -INFINITY;
    m = fmaxf(m, v[j]);
  }
  for (int w = lane + kSoftmaxCache * TPR; valid && w < W; w += TPR) m = fmaxf(m, scale * static_cast<float>(x[w]));
  m = softmax_group_max<TPR>(m);
  const float mm = m == -INFINITY ? 0.f : m;
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < kSoftmaxCache; ++j) {
    v[j] = expf(v[j] - mm);
    sum += v[j];
  }
  for (int w = lane + kSoftmaxCache * TPR; valid && w < W; w += TPR) sum += expf(scale * static_cast<float>(x[w]) - mm);
  sum = softmax_group_sum<TPR>(sum);
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  if (!valid) return;  // after the last shuffle
#pragma unroll
  for (int j = 0; j < kSoftmaxCache; ++j) {
    const int w = lane + j * TPR;
    if (w < W) x[w] = static_cast<T>(v[j] * inv);
  }
  for (int w = lane + kSoftmaxCache * TPR; w < W; w += TPR)
    x[w] = static_cast<T>(expf(scale * static_cast<float>(x[w]) - mm) * inv);
  if (lse != nullptr && lane == 0) lse[row] = sum > 0.f ? mm + logf(sum) : -INFINITY;
}

// Backward of the softmax, in place, one pass:
//   p  = exp(scale * s - lse)          (attn: logits s in, P out; -inf slots -> 0)
//   dS = scale * p * (dP - delta)      (dattn: dP = PN(dO, V) in, dS out; 0 where p = 0)
// delta[r] = rowsum(dO * O) - dlse[r] (fp32, [rows]).
template <class T, int TPR>
__global__ void __launch_bounds__(kSoftmaxThreads)
    gemm_softmax_bwd_kernel(T* __restrict__ attn, T* __restrict__ dattn, float const* __restrict__ lse,
                            float const* __restrict__ delta, int64_t rows, int W, float scale) {
  const int lane = threadIdx.x % TPR;
  const int64_t row = int64_t(blockIdx.x) * (kSoftmaxThreads / TPR) + threadIdx.x / TPR;
  if (row >= rows) return;  // no shuffles here
  T* x = attn + row * int64_t(W);
  T* g = dattn + row * int64_t(W);
  const float l = lse[row];
  const float d = delta[row];
  for (int w = lane; w < W; w += TPR) {
    const float s = static_cast<float>(x[w]);
    const float p = s == -INFINITY ? 0.f : expf(scale * s - l);
    const float dp = static_cast<float>(g[w]);
    x[w] = static_cast<T>(p);
    g[w] = static_cast<T>(p == 0.f ? 0.f : scale * p * (dp - d));
  }
}

inline int64_t softmax_rows(const LaunchParams& lp) {
  int64_t n = int64_t(lp.batch) * lp.heads;
  for (int a = 0; a < lp.rank; ++a) n *= lp.axis[a].length;
  return n;
}

inline int softmax_window(const LaunchParams& lp) {
  int w = 1;
  for (int a = 0; a < lp.rank; ++a) w *= lp.axis[a].kernel;
  return w;
}

inline void softmax_check_launch(const char* op, const char* name) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("fastna: gemm: launch of ") + op + " of " + name + " failed: " +
                             cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
  }
}

template <class Element, int TPR>
void run_softmax_tpr(const LaunchParams& lp, const char* name, bool backward) {
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  const int64_t rows = softmax_rows(lp);
  const int W = softmax_window(lp);
  constexpr int64_t kRowsPerBlock = kSoftmaxThreads / TPR;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  if (blocks > 0x7fffffff) throw std::invalid_argument(std::string("fastna: gemm: softmax: too many rows for ") + name);
  if (rows == 0) return;
  Element* attn = reinterpret_cast<Element*>(lp.attn.ptr);
  if (!backward) {
    // TPR < 32 only for W <= TPR (run_softmax): 8 cached values cover those rows.
    constexpr int kBigCache = TPR == 32 ? 32 : 8;
    if (W <= 8 * TPR)
      gemm_softmax_kernel<Element, TPR, 8><<<static_cast<unsigned>(blocks), kSoftmaxThreads, 0, stream>>>(
          attn, reinterpret_cast<float*>(lp.lse.ptr), rows, W, lp.scale);
    else
      gemm_softmax_kernel<Element, TPR, kBigCache><<<static_cast<unsigned>(blocks), kSoftmaxThreads, 0, stream>>>(
          attn, reinterpret_cast<float*>(lp.lse.ptr), rows, W, lp.scale);
    softmax_check_launch("softmax", name);
  } else {
    gemm_softmax_bwd_kernel<Element, TPR><<<static_cast<unsigned>(blocks), kSoftmaxThreads, 0, stream>>>(
        attn, reinterpret_cast<Element*>(lp.dattn.ptr), reinterpret_cast<float const*>(lp.lse.ptr),
        reinterpret_cast<float const*>(lp.dlse.ptr), rows, W, lp.scale);
    softmax_check_launch("softmax backward", name);
  }
}

template <class Element>
void run_softmax(const LaunchParams& lp, const char* name, bool backward) {
  const int W = softmax_window(lp);
  if (W <= 4)
    run_softmax_tpr<Element, 4>(lp, name, backward);
  else if (W <= 8)
    run_softmax_tpr<Element, 8>(lp, name, backward);
  else if (W <= 16)
    run_softmax_tpr<Element, 16>(lp, name, backward);
  else
    run_softmax_tpr<Element, 32>(lp, name, backward);
}

// Largest 1D kernel size for which fp32 runs PN / NN / IN with 32-token inner boxes (KV boxes of
// PN and NN, query boxes of IN) instead of the default 64: a 64-query box with a window of K keys
// spans 63 + K keys, 3 boxes of 32 (96 keys) instead of 2 of 64 (128) up to K = 33, and half the
// shared memory per CTA (twice the CTAs per SM).  FASTNA_GEMM_BOX32_MAX_K overrides it (0: off),
// read once per process (a tuning knob for benchmarks/bench_gemm.py).
inline int gemm_box32_max_k() {
  static const int k = [] {
    const char* e = std::getenv("FASTNA_GEMM_BOX32_MAX_K");
    return (e != nullptr && *e != 0) ? std::atoi(e) : 33;
  }();
  return k;
}

// PN, NN or IN (lp.gemm_op) with query / row boxes of DefaultBox and the given inner box.
template <int Rank, class Element, int HeadDim, class InnerBox>
void run_gemm_op(const LaunchParams& lp, const char* name) {
  using RowBox = typename gemm_na::DefaultBox<Rank>::type;
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  if (lp.gemm_op == kGemmPN) {
    using Op = gemm_na::PN<Rank, Element, HeadDim, Element, RowBox, InnerBox>;
    using Traits = GemmLocalTraits<typename Op::Traits>;
    typename Op::Arguments args;
    args.problem = problem_of<Rank>(lp);
    args.q = token_view<Element const, Rank>(lp.q);
    args.k = token_view<Element const, Rank>(lp.k);
    args.attn = gemm_attn<Element>(lp.attn);
    args.rpb = reinterpret_cast<Element const*>(lp.rpb.ptr);
    gemm_check_status(Op::can_implement(args), "PN", name);
    gemm_launch(gemm_na::na_pn_kernel<Traits, Element>, Op::grid_shape(args), Traits::kThreads,
                static_cast<int>(Traits::kSmemBytes), 48 * 1024, stream, Op::to_params(args), "PN", name);
  } else {
    const bool inverse = lp.gemm_op == kGemmIN;
    auto go = [&](auto inv_tag) {
      constexpr bool kInv = decltype(inv_tag)::value;
      using Op = gemm_na::GatherOp<kInv, Rank, Element, HeadDim, Element, RowBox, InnerBox>;
      using Traits = GemmLocalTraits<typename Op::Traits>;
      const char* op = kInv ? "IN" : "NN";
      typename Op::Arguments args;
      args.problem = problem_of<Rank>(lp);
      args.attn = gemm_attn<Element const>(lp.attn);
      args.x = token_view<Element const, Rank>(kInv ? lp.dout : lp.v);
      args.out = token_view<Element, Rank>(kInv ? lp.dv : lp.out);
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
  }
}

// One instance = PN, NN and IN for (Rank, Element, HeadDim), attention weights in Element,
// default boxes (fp32 1D with K <= gemm_box32_max_k(): 32-token inner boxes); lp.gemm_op picks
// the GEMM, or the softmax / its backward (kGemmSoftmax: lp.attn in place, lp.lse optional fp32
// [rows]; kGemmSoftmaxBwd: lp.attn and lp.dattn in place, lp.lse, lp.dlse = delta - dlse; lp.scale).
//   PN: lp.q, lp.k [B, *S, H(_kv), dim], lp.rpb (optional), lp.attn (written); HeadDim == dim
//   NN: lp.attn, lp.v = x [B, *S, H_kv, dim_v], lp.out [B, *S, H, dim_v];   HeadDim == dim_v
//   IN: lp.attn, lp.dout = x [B, *S, H, dim_v], lp.dv = out [B, *S, H_kv, dim_v]; HeadDim == dim_v
template <int Rank, class Element, int HeadDim, class QBox>
void run_gemm_na(const LaunchParams& lp, const char* name) {
  static_assert(std::is_same<QBox, typename gemm_na::DefaultBox<Rank>::type>::value,
                "cmake/kernel_table.json: gemm qbox");
  if (lp.gemm_op == kGemmSoftmax || lp.gemm_op == kGemmSoftmaxBwd) {
    run_softmax<Element>(lp, name, lp.gemm_op == kGemmSoftmaxBwd);
    return;
  }
  if (lp.gemm_op != kGemmPN && lp.gemm_op != kGemmNN && lp.gemm_op != kGemmIN) {
    throw std::invalid_argument(std::string("fastna: gemm: unknown gemm_op ") + std::to_string(lp.gemm_op) +
                                " for " + name);
  }
  if constexpr (Rank == 1 && std::is_same_v<Element, float>) {
    if (lp.axis[0].kernel <= gemm_box32_max_k()) {
      run_gemm_op<Rank, Element, HeadDim, gemm_na::Box<1, 32>>(lp, name);
      return;
    }
  }
  run_gemm_op<Rank, Element, HeadDim, typename gemm_na::DefaultBox<Rank>::type>(lp, name);
}

// The instance's answer to "can you run lp's problem" for lp.gemm_op (PN: head dim lp.dim,
// NN / IN: lp.dim_v; the softmax ops take any problem the PN instance takes).
template <int Rank, class Element, int HeadDim>
std::string gemm_na_reason(const LaunchParams& lp) {
  using RowBox = typename gemm_na::DefaultBox<Rank>::type;
  const NaProblem<Rank> p = problem_of<Rank>(lp);
  if (lp.gemm_op == kGemmNN || lp.gemm_op == kGemmIN)
    return gemm_na::GatherOp<false, Rank, Element, HeadDim, Element, RowBox, RowBox>::can_implement_problem(p, lp.dim_v)
        .reason;
  return gemm_na::PN<Rank, Element, HeadDim, Element, RowBox, RowBox>::can_implement_problem(p, lp.rpb.present())
      .reason;
}

}  // namespace
}  // namespace binding
}  // namespace fastna
