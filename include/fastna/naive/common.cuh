// Shared pieces of the naive CUDA kernels: status codes, element conversion, launch shapes and
// the per-query window walk.
//
// The naive kernels are the correctness baseline (the paper's "naive" NA): one thread per
// output element, fp32 accumulation, no atomics, so results are deterministic run to run.
#pragma once

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "fastna/common/problem.hpp"

// Kernels are templates, and a template __global__ instantiated in two translation units
// compiled for different archs would be one symbol with two fatbins behind it: the linker keeps
// one host stub, and the runtime may launch the wrong arch's image.  Each arch's TU therefore
// defines FASTNA_NAIVE_NS (e.g. sm80) before including these headers; the inline namespace keeps
// fastna::naive::Forward spelled the same for users while giving every arch distinct symbols.
#ifndef FASTNA_NAIVE_NS
#define FASTNA_NAIVE_NS portable
#endif

namespace fastna {
namespace naive {

enum class Status {
  kSuccess = 0,
  kErrorInvalidProblem,  // a shape or window parameter is out of range
  kErrorNullPointer,     // a required tensor is missing
  kErrorWorkspaceNull,   // get_workspace_size() > 0 but no workspace was given
  kErrorCuda,            // a launch failed; see cuda_error()
};

inline const char* status_string(Status s) {
  switch (s) {
    case Status::kSuccess: return "success";
    case Status::kErrorInvalidProblem: return "invalid problem";
    case Status::kErrorNullPointer: return "null tensor pointer";
    case Status::kErrorWorkspaceNull: return "workspace required but null";
    case Status::kErrorCuda: return "CUDA error";
  }
  return "unknown status";
}

inline namespace FASTNA_NAIVE_NS {
namespace detail {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

constexpr int kBlock = 256;
// Grid-stride loops cover any element count, so the grid is capped well below the 2^31-1 limit
// of gridDim.x; the cap still gives every SM on current GPUs many resident blocks.
constexpr int64_t kMaxBlocks = int64_t(1) << 20;

inline unsigned grid_for(int64_t total) {
  int64_t blocks = (total + kBlock - 1) / kBlock;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks);
}

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// Row t of a [B, N, heads] layout (N = p.num_tokens()): its head h, batch b and the spatial
// coordinates of its token.
template <int Rank>
__device__ __forceinline__ void split_token_row(NaProblem<Rank> const& p, int64_t N, int32_t heads, int64_t t,
                                                int32_t& b, int32_t& h, int32_t (&coord)[Rank]) {
  h = static_cast<int32_t>(t % heads);
  t /= heads;
  const int64_t n = t % N;
  b = static_cast<int32_t>(t / N);
  unflatten(n, p.axis, coord);
}

// The last CUDA error of an op's launches (cudaSuccess while none failed): check() after each.
class LaunchChecker {
 public:
  cudaError_t cuda_error() const { return cuda_error_; }

 protected:
  bool check() {
    cuda_error_ = cudaGetLastError();
    return cuda_error_ == cudaSuccess;
  }

 private:
  cudaError_t cuda_error_ = cudaSuccess;
};

// Window of one query, per axis, in group-local coordinates, plus the query's dilation group.
template <int Rank>
struct QueryWindow {
  int32_t begin[Rank];
  int32_t end[Rank];
  int32_t group[Rank];
};

template <int Rank>
__device__ __forceinline__ QueryWindow<Rank> query_window(const NaProblem<Rank>& p,
                                                         const int32_t (&coord)[Rank]) {
  QueryWindow<Rank> w;
  for (int a = 0; a < Rank; ++a) {
    const Range r = window(p.axis[a], coord[a]);
    w.begin[a] = r.begin;
    w.end[a] = r.end;
    w.group[a] = coord[a] % p.axis[a].dilation;
  }
  return w;
}

// Absolute key coordinates of window slot `slot` (row-major over (k_1..k_r)).  Returns false
// for a slot past a causal window's end: such a slot has no key and must not be read.
template <int Rank>
__device__ __forceinline__ bool slot_key(const NaProblem<Rank>& p, const QueryWindow<Rank>& w,
                                         int32_t slot, int32_t (&key)[Rank]) {
  bool valid = true;
  for (int a = Rank - 1; a >= 0; --a) {
    const int32_t K = p.axis[a].kernel;
    const int32_t local = w.begin[a] + slot % K;
    slot /= K;
    if (local >= w.end[a]) valid = false;
    key[a] = local * p.axis[a].dilation + w.group[a];
  }
  return valid;
}

// P = exp(logit - lse); masked (-inf) slots give exactly 0 even if a row were fully masked.
__device__ __forceinline__ float probability(float logit, float lse) {
  return logit == -INFINITY ? 0.f : expf(logit - lse);
}

// Per-row softmax statistics over W logits: lse = max + log(sum exp(x - max)).
__device__ __forceinline__ float row_logsumexp(const float* row, int32_t W) {
  float m = -INFINITY;
  for (int32_t w = 0; w < W; ++w) m = fmaxf(m, row[w]);
  if (m == -INFINITY) return -INFINITY;
  float s = 0.f;
  for (int32_t w = 0; w < W; ++w) s += expf(row[w] - m);
  return m + logf(s);
}

// out[b, n, h, w] = scale * row[b, n, h] . slot(w), where slot(w) is the token of the query's
// window slot w in `slots` (or additional token w - K in `extra`), over `length` channels;
// `missing` for causal slots without a key.  The forward's logits are (q, k, dim, p.scale,
// -inf); the backward's dP is (dout, v, dim_v, 1, 0).
template <int Rank, typename T>
__global__ void __launch_bounds__(kBlock)
slot_dot_kernel(NaProblem<Rank> p, TokenTensor<const T, Rank> row, TokenTensor<const T, Rank> slots,
                ExtraTensor<const T> extra, int32_t length, float scale, float missing,
                float* __restrict__ out) {
  const int32_t Kp = p.window_size();
  const int32_t W = Kp + p.num_extra;
  const int64_t N = p.num_tokens();
  const int64_t total = int64_t(p.batch) * N * p.heads * W;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    int64_t t = idx;
    const int32_t w = static_cast<int32_t>(t % W); t /= W;
    int32_t b, h, coord[Rank];
    split_token_row(p, N, p.heads, t, b, h, coord);
    const int32_t hk = p.kv_head(h);
    const T* sp;
    int64_t ss;
    if (w < Kp) {
      int32_t key[Rank];
      if (!slot_key(p, query_window(p, coord), w, key)) {
        out[idx] = missing;
        continue;
      }
      sp = slots.at(b, key, hk);
      ss = slots.stride_dim;
    } else {
      sp = extra.at(b, w - Kp, hk);
      ss = extra.stride_dim;
    }
    const T* rp = row.at(b, coord, h);
    float acc = 0.f;
    for (int32_t e = 0; e < length; ++e) acc += to_float(rp[e * row.stride_dim]) * to_float(sp[e * ss]);
    out[idx] = acc * scale;
  }
}

inline size_t align_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

template <int Rank>
inline bool problem_is_valid(const NaProblem<Rank>& p) {
  if (p.batch < 1 || p.heads < 1 || p.heads_kv < 1 || p.dim < 1 || p.dim_v < 1) return false;
  if (p.num_extra < 0 || p.heads % p.heads_kv != 0) return false;
  int64_t window = 1;
  for (int a = 0; a < Rank; ++a) {
    const AxisParams& ax = p.axis[a];
    if (ax.length < 1 || ax.kernel < 2 || ax.stride < 1 || ax.stride > ax.kernel) return false;
    if (ax.dilation < 1 || int64_t(ax.kernel) * ax.dilation > ax.length) return false;
    window *= ax.kernel;
  }
  // Slot indices and W are int32 in the kernels.
  if (window + p.num_extra > INT32_MAX) return false;
  return true;
}

template <int Rank>
inline int64_t attn_elements(const NaProblem<Rank>& p) {
  return int64_t(p.batch) * p.num_tokens() * p.heads * (int64_t(p.window_size()) + p.num_extra);
}

// The forward's logits attn = scale * q . k (fp32; -inf for causal slots with no key), also
// recomputed by a backward pass that was not handed them.
template <int Rank, typename T>
inline void launch_logits(const NaProblem<Rank>& p, TokenTensor<const T, Rank> q, TokenTensor<const T, Rank> k,
                          ExtraTensor<const T> ek, float* attn, cudaStream_t stream) {
  slot_dot_kernel<Rank, T><<<grid_for(attn_elements(p)), kBlock, 0, stream>>>(p, q, k, ek, p.dim, p.scale,
                                                                              -INFINITY, attn);
}

template <int Rank>
inline int64_t row_count(const NaProblem<Rank>& p) {
  return int64_t(p.batch) * p.num_tokens() * p.heads;
}

}  // namespace detail
}  // inline namespace FASTNA_NAIVE_NS
}  // namespace naive
}  // namespace fastna
