// Naive neighborhood-attention forward pass and its device-level API.
//
//   QK      one thread per (query, head, window slot):   attn = scale * q . k   (fp32 logits)
//   softmax one thread per (query, head) row:            lse = logsumexp(attn row)
//   AV      one thread per (query, head, value element): out = sum exp(attn - lse) * v
//
// attn keeps the scaled logits (-inf for causal slots without a key) rather than probabilities:
// the legacy qk op wants logits, and the backward pass recomputes P = exp(attn - lse) from them.
#pragma once

#include "fastna/naive/common.cuh"

namespace fastna {
namespace naive {
inline namespace FASTNA_NAIVE_NS {
namespace detail {

// lse[row] = logsumexp(attn[row, :]); one thread per (b, n, h).  A template only so that every
// TU including this header may instantiate it without a duplicate-symbol link error.
template <int Unused = 0>
__global__ void __launch_bounds__(kBlock)
row_lse_kernel(const float* __restrict__ attn, float* __restrict__ lse, int64_t rows, int32_t W) {
  for (int64_t r = global_thread(); r < rows; r += grid_threads()) {
    lse[r] = row_logsumexp(attn + r * W, W);
  }
}

// out[b, n, h, e] = sum_w P[w] * value(w)[e]; one thread per (b, n, h, e).
template <int Rank, typename T>
__global__ void __launch_bounds__(kBlock)
av_kernel(NaProblem<Rank> p, const float* __restrict__ attn, const float* __restrict__ lse,
          TokenTensor<const T, Rank> v, ExtraTensor<const T> ev, TokenTensor<T, Rank> out) {
  const int32_t Kp = p.window_size();
  const int32_t W = Kp + p.num_extra;
  const int64_t N = p.num_tokens();
  const int64_t total = int64_t(p.batch) * N * p.heads * p.dim_v;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t row = idx / p.dim_v;  // == (b * N + n) * H + h, the attn/lse row
    const int32_t e = static_cast<int32_t>(idx - row * p.dim_v);
    int64_t t = row;
    int32_t b, h, coord[Rank];
    split_token_row(p, N, p.heads, t, b, h, coord);
    const int32_t hk = p.kv_head(h);
    const QueryWindow<Rank> win = query_window(p, coord);
    const float* a = attn + row * W;
    const float l = lse[row];
    float acc = 0.f;
    for (int32_t w = 0; w < Kp; ++w) {
      int32_t key[Rank];
      if (!slot_key(p, win, w, key)) continue;
      acc += probability(a[w], l) * to_float(v.at(b, key, hk)[e * v.stride_dim]);
    }
    for (int32_t x = 0; x < p.num_extra; ++x) {
      acc += probability(a[Kp + x], l) * to_float(ev.at(b, x, hk)[e * ev.stride_dim]);
    }
    out.at(b, coord, h)[e * out.stride_dim] = from_float<T>(acc);
  }
}

}  // namespace detail

template <int Rank, typename T>
struct ForwardArguments {
  NaProblem<Rank> problem;
  TokenTensor<const T, Rank> q;    // [B, *spatial, H, D]
  TokenTensor<const T, Rank> k;    // [B, *spatial, H_kv, D]
  TokenTensor<const T, Rank> v;    // [B, *spatial, H_kv, Dv]
  ExtraTensor<const T> extra_k;    // [B, N_extra, H_kv, D], needed when num_extra > 0
  ExtraTensor<const T> extra_v;    // [B, N_extra, H_kv, Dv]
  TokenTensor<T, Rank> out;        // [B, *spatial, H, Dv]
  float* attn = nullptr;           // fp32 contiguous [B, N, H, W] logits; nullptr = workspace
  float* lse = nullptr;            // fp32 contiguous [B, N, H]; nullptr = workspace
  void* workspace = nullptr;       // get_workspace_size() bytes, 256-byte aligned
};

// Device-level operator in the CUTLASS style: can_implement / get_workspace_size / run.
template <int Rank, typename T>
class Forward : public detail::LaunchChecker {
 public:
  using Arguments = ForwardArguments<Rank, T>;

  static Status can_implement(Arguments const& args) {
    if (!detail::problem_is_valid(args.problem)) return Status::kErrorInvalidProblem;
    if (!args.q.ptr || !args.k.ptr || !args.v.ptr || !args.out.ptr) return Status::kErrorNullPointer;
    if (args.problem.num_extra > 0 && (!args.extra_k.ptr || !args.extra_v.ptr)) {
      return Status::kErrorNullPointer;
    }
    if (get_workspace_size(args) > 0 && !args.workspace) return Status::kErrorWorkspaceNull;
    return Status::kSuccess;
  }

  static size_t get_workspace_size(Arguments const& args) {
    size_t bytes = 0;
    if (!args.attn) bytes += detail::align_up(sizeof(float) * detail::attn_elements(args.problem));
    if (!args.lse) bytes += detail::align_up(sizeof(float) * detail::row_count(args.problem));
    return bytes;
  }

  Status run(Arguments const& args, cudaStream_t stream = nullptr) {
    const Status st = can_implement(args);
    if (st != Status::kSuccess) return st;
    const NaProblem<Rank>& p = args.problem;
    char* ws = static_cast<char*>(args.workspace);
    float* attn = args.attn;
    if (!attn) {
      attn = reinterpret_cast<float*>(ws);
      ws += detail::align_up(sizeof(float) * detail::attn_elements(p));
    }
    float* lse = args.lse ? args.lse : reinterpret_cast<float*>(ws);
    const int64_t rows = detail::row_count(p);
    const int32_t W = p.window_size() + p.num_extra;

    detail::launch_logits<Rank, T>(p, args.q, args.k, args.extra_k, attn, stream);
    if (!check()) return Status::kErrorCuda;
    detail::row_lse_kernel<><<<detail::grid_for(rows), detail::kBlock, 0, stream>>>(attn, lse, rows, W);
    if (!check()) return Status::kErrorCuda;
    detail::av_kernel<Rank, T><<<detail::grid_for(rows * p.dim_v), detail::kBlock, 0, stream>>>(
        p, attn, lse, args.v, args.extra_v, args.out);
    if (!check()) return Status::kErrorCuda;
    return Status::kSuccess;
  }

};

}  // inline namespace FASTNA_NAIVE_NS
}  // namespace naive
}  // namespace fastna
