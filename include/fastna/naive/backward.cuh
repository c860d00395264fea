// Naive neighborhood-attention backward pass and its device-level API.
//
//   dP      one thread per (query, head, slot):     dP = dout . v(slot)
//   softmax one thread per (query, head) row:       dS = scale * P * (dP - sum(P * dP))
//   dQ      one thread per (query, head, d):        dq = sum_slots dS * k(slot)
//   dK, dV  one thread per (key, kv_head, d):       sums over the key's INVERSE neighborhood
//           (the queries whose windows contain it) and over the query heads of its GQA group
//   extras  one thread per (b, extra token, kv_head, d), summing over every query
//
// Gradients are gathered, never scattered, so no float atomics are needed and results are
// bit-reproducible.  P is recomputed as exp(attn - lse) from the forward's logits.
#pragma once

#include "fastna/naive/common.cuh"

namespace fastna {
namespace naive {
inline namespace FASTNA_NAIVE_NS {
namespace detail {

// Per row: lse from the logits, then dattn <- dS = scale * P * (dP - sum(P * dP)) in place.
template <int Unused = 0>
__global__ void __launch_bounds__(kBlock)
softmax_backward_kernel(const float* __restrict__ attn, float* __restrict__ dattn,
                        float* __restrict__ lse, int64_t rows, int32_t W, float scale) {
  for (int64_t r = global_thread(); r < rows; r += grid_threads()) {
    const float* a = attn + r * W;
    float* g = dattn + r * W;
    const float l = row_logsumexp(a, W);
    lse[r] = l;
    float dot = 0.f;
    for (int32_t w = 0; w < W; ++w) dot += probability(a[w], l) * g[w];
    for (int32_t w = 0; w < W; ++w) g[w] = scale * probability(a[w], l) * (g[w] - dot);
  }
}

// dq[b, n, h, d] = sum_w dS[w] * key(w)[d].
template <int Rank, typename T>
__global__ void __launch_bounds__(kBlock)
dq_kernel(NaProblem<Rank> p, const float* __restrict__ dattn, TokenTensor<const T, Rank> k,
          ExtraTensor<const T> ek, TokenTensor<T, Rank> dq) {
  const int32_t Kp = p.window_size();
  const int32_t W = Kp + p.num_extra;
  const int64_t N = p.num_tokens();
  const int64_t total = int64_t(p.batch) * N * p.heads * p.dim;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t row = idx / p.dim;
    const int32_t d = static_cast<int32_t>(idx - row * p.dim);
    int64_t t = row;
    int32_t b, h, coord[Rank];
    split_token_row(p, N, p.heads, t, b, h, coord);
    const int32_t hk = p.kv_head(h);
    const QueryWindow<Rank> win = query_window(p, coord);
    const float* g = dattn + row * W;
    float acc = 0.f;
    for (int32_t w = 0; w < Kp; ++w) {
      int32_t key[Rank];
      if (!slot_key(p, win, w, key)) continue;
      acc += g[w] * to_float(k.at(b, key, hk)[d * k.stride_dim]);
    }
    for (int32_t x = 0; x < p.num_extra; ++x) {
      acc += g[Kp + x] * to_float(ek.at(b, x, hk)[d * ek.stride_dim]);
    }
    dq.at(b, coord, h)[d * dq.stride_dim] = from_float<T>(acc);
  }
}

// IsV = false: dk[b, j, hk, d] = sum_{h in group(hk)} sum_{i : j in N(i)} dS[i, h, slot] * q[i, h, d]
// IsV = true:  dv[b, j, hk, e] = sum ... P[i, h, slot] * dout[i, h, e]
// The queries attending to key j are the Cartesian product of the per-axis inverse windows;
// each one's slot for j is found from that query's own window start.
template <int Rank, typename T, bool IsV>
__global__ void __launch_bounds__(kBlock)
dkv_kernel(NaProblem<Rank> p, const float* __restrict__ attn, const float* __restrict__ lse,
           const float* __restrict__ dattn, TokenTensor<const T, Rank> src, TokenTensor<T, Rank> dst) {
  const int32_t Kp = p.window_size();
  const int32_t W = Kp + p.num_extra;
  const int64_t N = p.num_tokens();
  const int32_t E = IsV ? p.dim_v : p.dim;
  const int32_t group = p.heads / p.heads_kv;
  const int64_t total = int64_t(p.batch) * N * p.heads_kv * E;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    int64_t t = idx;
    const int32_t e = static_cast<int32_t>(t % E); t /= E;
    int32_t b, hk, key[Rank];
    split_token_row(p, N, p.heads_kv, t, b, hk, key);

    Range inv[Rank];
    int32_t key_local[Rank], key_group[Rank], il[Rank];
    bool empty = false;
    for (int a = 0; a < Rank; ++a) {
      inv[a] = inverse_window(p.axis[a], key[a]);
      key_local[a] = key[a] / p.axis[a].dilation;
      key_group[a] = key[a] % p.axis[a].dilation;
      il[a] = inv[a].begin;
      empty = empty || inv[a].empty();
    }
    float acc = 0.f;
    while (!empty) {
      int32_t qc[Rank];
      int32_t slot = 0;
      bool inside = true;
      for (int a = 0; a < Rank; ++a) {
        qc[a] = il[a] * p.axis[a].dilation + key_group[a];
        const Range wr = window(p.axis[a], qc[a]);
        // Always true by construction of inverse_window; kept so a violated invariant can
        // never index outside the query's row.
        inside = inside && wr.begin <= key_local[a] && key_local[a] < wr.end;
        slot = slot * p.axis[a].kernel + (key_local[a] - wr.begin);
      }
      if (inside) {
        const int64_t row0 = (int64_t(b) * N + flatten(qc, p.axis)) * p.heads;
        for (int32_t h = hk * group; h < (hk + 1) * group; ++h) {
          const int64_t row = row0 + h;
          const float coef = IsV ? probability(attn[row * W + slot], lse[row]) : dattn[row * W + slot];
          acc += coef * to_float(src.at(b, qc, h)[e * src.stride_dim]);
        }
      }
      // Advance the odometer over the inverse-window product, last axis fastest.
      int a = Rank - 1;
      for (; a >= 0; --a) {
        if (++il[a] < inv[a].end) break;
        il[a] = inv[a].begin;
      }
      if (a < 0) break;
    }
    dst.at(b, key, hk)[e * dst.stride_dim] = from_float<T>(acc);
  }
}

// Gradients of the additional KV tokens: every query sees them, so each thread sums over all
// N queries of its batch and the query heads of its GQA group.
template <int Rank, typename T, bool IsV>
__global__ void __launch_bounds__(kBlock)
dextra_kernel(NaProblem<Rank> p, const float* __restrict__ attn, const float* __restrict__ lse,
              const float* __restrict__ dattn, TokenTensor<const T, Rank> src, ExtraTensor<T> dst) {
  const int32_t Kp = p.window_size();
  const int32_t W = Kp + p.num_extra;
  const int64_t N = p.num_tokens();
  const int32_t E = IsV ? p.dim_v : p.dim;
  const int32_t group = p.heads / p.heads_kv;
  const int64_t total = int64_t(p.batch) * p.num_extra * p.heads_kv * E;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    int64_t t = idx;
    const int32_t e = static_cast<int32_t>(t % E); t /= E;
    const int32_t hk = static_cast<int32_t>(t % p.heads_kv); t /= p.heads_kv;
    const int32_t x = static_cast<int32_t>(t % p.num_extra);
    const int32_t b = static_cast<int32_t>(t / p.num_extra);
    const int32_t slot = Kp + x;
    float acc = 0.f;
    for (int64_t n = 0; n < N; ++n) {
      int32_t coord[Rank];
      unflatten(n, p.axis, coord);
      const int64_t row0 = (int64_t(b) * N + n) * p.heads;
      for (int32_t h = hk * group; h < (hk + 1) * group; ++h) {
        const int64_t row = row0 + h;
        const float coef = IsV ? probability(attn[row * W + slot], lse[row]) : dattn[row * W + slot];
        acc += coef * to_float(src.at(b, coord, h)[e * src.stride_dim]);
      }
    }
    dst.at(b, x, hk)[e * dst.stride_dim] = from_float<T>(acc);
  }
}

}  // namespace detail

template <int Rank, typename T>
struct BackwardArguments {
  NaProblem<Rank> problem;
  TokenTensor<const T, Rank> q, k, v;   // as in the forward pass
  ExtraTensor<const T> extra_k, extra_v;
  TokenTensor<const T, Rank> dout;      // [B, *spatial, H, Dv]
  // The forward's fp32 logits [B, N, H, W]; nullptr = recompute them into the workspace.
  const float* attn = nullptr;
  // Gradients; a null pointer skips that gradient.
  TokenTensor<T, Rank> dq, dk, dv;
  ExtraTensor<T> dextra_k, dextra_v;
  // fp32 contiguous [B, N, H, W] scratch (holds dS on return); nullptr = workspace.  Must not
  // alias attn.
  float* dattn = nullptr;
  void* workspace = nullptr;
};

template <int Rank, typename T>
class Backward : public detail::LaunchChecker {
 public:
  using Arguments = BackwardArguments<Rank, T>;

  static Status can_implement(Arguments const& args) {
    if (!detail::problem_is_valid(args.problem)) return Status::kErrorInvalidProblem;
    if (!args.q.ptr || !args.k.ptr || !args.v.ptr || !args.dout.ptr) return Status::kErrorNullPointer;
    if (args.problem.num_extra > 0 && (!args.extra_k.ptr || !args.extra_v.ptr)) {
      return Status::kErrorNullPointer;
    }
    if (get_workspace_size(args) > 0 && !args.workspace) return Status::kErrorWorkspaceNull;
    return Status::kSuccess;
  }

  static size_t get_workspace_size(Arguments const& args) {
    const size_t attn_bytes = detail::align_up(sizeof(float) * detail::attn_elements(args.problem));
    size_t bytes = detail::align_up(sizeof(float) * detail::row_count(args.problem));  // lse
    if (!args.attn) bytes += attn_bytes;
    if (!args.dattn) bytes += attn_bytes;
    return bytes;
  }

  Status run(Arguments const& args, cudaStream_t stream = nullptr) {
    const Status st = can_implement(args);
    if (st != Status::kSuccess) return st;
    const NaProblem<Rank>& p = args.problem;
    using detail::grid_for;
    using detail::kBlock;
    const int64_t rows = detail::row_count(p);
    const int64_t attn_elems = detail::attn_elements(p);
    const int32_t W = p.window_size() + p.num_extra;

    char* ws = static_cast<char*>(args.workspace);
    float* lse = reinterpret_cast<float*>(ws);
    ws += detail::align_up(sizeof(float) * rows);
    const float* attn = args.attn;
    if (!attn) {
      float* logits = reinterpret_cast<float*>(ws);
      ws += detail::align_up(sizeof(float) * attn_elems);
      detail::launch_logits<Rank, T>(p, args.q, args.k, args.extra_k, logits, stream);
      if (!check()) return Status::kErrorCuda;
      attn = logits;
    }
    float* dattn = args.dattn ? args.dattn : reinterpret_cast<float*>(ws);

    detail::slot_dot_kernel<Rank, T><<<grid_for(attn_elems), kBlock, 0, stream>>>(
        p, args.dout, args.v, args.extra_v, p.dim_v, 1.f, 0.f, dattn);
    if (!check()) return Status::kErrorCuda;
    detail::softmax_backward_kernel<><<<grid_for(rows), kBlock, 0, stream>>>(attn, dattn, lse, rows, W, p.scale);
    if (!check()) return Status::kErrorCuda;
    if (args.dq.ptr) {
      detail::dq_kernel<Rank, T><<<grid_for(rows * p.dim), kBlock, 0, stream>>>(
          p, dattn, args.k, args.extra_k, args.dq);
      if (!check()) return Status::kErrorCuda;
    }
    const int64_t kv_tokens = int64_t(p.batch) * p.num_tokens() * p.heads_kv;
    if (args.dk.ptr) {
      detail::dkv_kernel<Rank, T, false><<<grid_for(kv_tokens * p.dim), kBlock, 0, stream>>>(
          p, attn, lse, dattn, args.q, args.dk);
      if (!check()) return Status::kErrorCuda;
    }
    if (args.dv.ptr) {
      detail::dkv_kernel<Rank, T, true><<<grid_for(kv_tokens * p.dim_v), kBlock, 0, stream>>>(
          p, attn, lse, dattn, args.dout, args.dv);
      if (!check()) return Status::kErrorCuda;
    }
    const int64_t extra_tokens = int64_t(p.batch) * p.num_extra * p.heads_kv;
    if (p.num_extra > 0 && args.dextra_k.ptr) {
      detail::dextra_kernel<Rank, T, false><<<grid_for(extra_tokens * p.dim), kBlock, 0, stream>>>(
          p, attn, lse, dattn, args.q, args.dextra_k);
      if (!check()) return Status::kErrorCuda;
    }
    if (p.num_extra > 0 && args.dextra_v.ptr) {
      detail::dextra_kernel<Rank, T, true><<<grid_for(extra_tokens * p.dim_v), kBlock, 0, stream>>>(
          p, attn, lse, dattn, args.dout, args.dextra_v);
      if (!check()) return Status::kErrorCuda;
    }
    return Status::kSuccess;
  }

};

}  // inline namespace FASTNA_NAIVE_NS
}  // namespace naive
}  // namespace fastna
