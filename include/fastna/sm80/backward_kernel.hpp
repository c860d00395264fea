// Fused neighborhood-attention backward kernels (sm80-class: mma.sync + cp.async + ldmatrix).
//
// Three launches, no atomics (deterministic by construction):
//   1. fna_bwd_preprocess_kernel: delta = rowsum(dO * O) (- dlse, when a gradient flows into
//      the logsumexp) per (query, head), fp32 [B, N, H].
//   2. fna_bwd_dkdv_kernel: one CTA per KV box (group-local, one dilation group) x kv head x
//      batch.  It visits the query boxes that see the KV box (per-axis query_range_for_key_tile)
//      for every query head of its GQA group, recomputes S^T = K Q^T and P^T, and accumulates
//      dV += P^T dO and dK += scale * dS^T Q in registers, where dP^T = V dO^T and
//      dS^T = P^T * (dP^T - delta).
//   3. fna_bwd_dq_kernel: one CTA per query box x head x batch (the forward's decomposition);
//      walks the KV boxes of key_range_for_query_tile and accumulates dQ = scale * dS K.
//
// Both main kernels reuse ForwardTraits: the dQ kernel as the forward (rows = queries,
// columns = keys), the dK/dV kernel with the boxes swapped (rows = keys, columns = queries).
#pragma once

#include <cute/tensor.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cutlass/numeric_types.h>

#include <cmath>
#include <cstdint>

#include "fastna/common/backward_params.hpp"
#include "fastna/common/box_tile.hpp"
#include "fastna/common/grouped_schedule.hpp"
#include "fastna/sm80/forward_kernel.hpp"
#include "fastna/common/sm80_tile_traits.hpp"
#include "fastna/sm80/score_tile.hpp"
#include "fastna/common/sm80_tile_gemm.hpp"
#include "fastna/common/index_math.hpp"
#include "fastna/common/problem.hpp"

namespace fastna {
namespace fused {

namespace detail {

// Reads a box's rows (tokens) back from swizzled shared memory into a token tensor.
template <class Traits, class Box, class SmemLayout, int Rank>
__device__ __forceinline__ void store_box(TokenTensor<typename Traits::Element, Rank> const& t, int b, int h,
                                          typename Traits::Element const* smem, int const (&origin)[Rank],
                                          int const (&limit)[Rank], int const (&group)[Rank],
                                          AxisParams const (&axis)[Rank], int tid) {
  const int chunk = tid % Traits::kChunksPerRow;
  const int row0 = tid / Traits::kChunksPerRow;
#pragma unroll
  for (int r = row0; r < Box::kSize; r += Traits::kRowsPerPass) {
    int off[Rank];
    Box::unflatten(r, off);
    int coord[Rank];
    if (box_token(origin, off, limit, group, axis, coord)) {
      const uint4 val = *reinterpret_cast<uint4 const*>(smem + SmemLayout{}(r, chunk * 8));
      *reinterpret_cast<uint4*>(t.at(b, coord, h) + chunk * 8) = val;
    }
  }
}

// lse (log2 units) and delta of query token `coord`, head h (n_tokens: problem.num_tokens());
// padding queries (valid false): +inf and 0, so that P = 0 there.
template <int Rank, class Element>
__device__ __forceinline__ void query_stats(BackwardParams<Rank, Element> const& params, int64_t n_tokens, int b,
                                            int h, int const (&coord)[Rank], bool valid, float& lse2, float& delta) {
  lse2 = INFINITY;
  delta = 0.f;
  if (valid) {
    NaProblem<Rank> const& p = params.problem;
    const int64_t idx = (int64_t(b) * n_tokens + flatten(coord, p.axis)) * p.heads + h;
    lse2 = params.lse[idx] * kLog2e;
    delta = params.delta[idx];
  }
}

}  // namespace detail

// ------------------------------------------------------------------ preprocess: delta
// One warp per (batch, token, head) row; 16-byte loads along the head dim.
// A gradient dlse into the logsumexp adds dlse * P to dS (d lse / d s = P), i.e.
// dS = P (dP - (delta - dlse)): it is folded into delta here, so the main kernels are unchanged.
// `Tag` only makes the symbol unique (a binding TU passes a type with internal linkage so that
// copies compiled for several archs never share one); it does not change the code.
template <int HeadDim, int Rank, class Element>
__device__ __forceinline__ void bwd_preprocess_cta(BackwardParams<Rank, Element> const& params, unsigned block) {
  detail::out_dout_row_dot<HeadDim>(params, block, [&](int64_t row, int, int, int32_t const (&)[Rank], float acc) {
    if (threadIdx.x % 32 == 0) params.delta[row] = params.dlse != nullptr ? acc - params.dlse[row] : acc;
  });
}

template <int Rank, class Element, int HeadDim, class Tag = void>
__global__ void __launch_bounds__(128) fna_bwd_preprocess_kernel(BackwardParams<Rank, Element> const params) {
  bwd_preprocess_cta<HeadDim>(params, blockIdx.x);
}

// Grouped: x over every problem's blocks of 4 rows (128 threads, a warp a row).
template <int Rank, class Element, int HeadDim, class Tag = void>
__global__ void __launch_bounds__(128)
    fna_bwd_preprocess_grouped_kernel(GroupedParams<BackwardParams<Rank, Element>> const params) {
  int32_t problem, block;
  params.schedule.locate(blockIdx.x, problem, block);
  bwd_preprocess_cta<HeadDim>(params.problems[problem], block);
}

// ------------------------------------------------------------------ dK / dV
// Traits = ForwardTraits<Rank, Element, HeadDim, KvBox, QTile>: M rows = keys of the KV box,
// N columns = queries of a query tile.
template <class Traits>
__device__ __forceinline__ void bwd_dkdv_cta(BackwardParams<Traits::kRank, typename Traits::Element> const& params,
                                             int tile_x, int h_kv, int b) {
  using namespace cute;
  using Element = typename Traits::Element;
  using KvBox = typename Traits::QBox;  // rows
  using QTile = typename Traits::KBox;  // columns
  constexpr int R = Traits::kRank;
  constexpr int kBlockM = Traits::kBlockM;  // keys
  constexpr int kBlockN = Traits::kBlockN;  // queries
  constexpr int kHeadDim = Traits::kHeadDim;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  Element* smem_k = reinterpret_cast<Element*>(smem_raw);
  Element* smem_v = smem_k + Traits::kElemsQ;
  Element* smem_q = smem_v + Traits::kElemsQ;                     // [stage][kBlockN x D]
  Element* smem_do = smem_q + Traits::kStages * Traits::kElemsKV;  // [stage][kBlockN x D]
  float* smem_lse = reinterpret_cast<float*>(smem_do + Traits::kStages * Traits::kElemsKV);  // [stage][kBlockN]
  float* smem_delta = smem_lse + Traits::kStages * kBlockN;                                 // [stage][kBlockN]

  const int tid = threadIdx.x;
  const NaProblem<R>& prob = params.problem;
  const int group_size = prob.heads / prob.heads_kv;
  const int64_t n_tokens = prob.num_tokens();

  // ---- which KV box (rows) and the query tiles (columns) that see it ----
  const BoxTile<R, KvBox, QTile, true> cta(prob, params.kv_tiles_per_group, tile_x);
  if (cta.empty) return;
  const int n_it = cta.n_col * group_size;

  // Loads Q, dO (cp.async) and lse, delta (plain loads) of iteration `it` into stage `st`.
  auto load_iter = [&](int it, int st) {
    const int h = h_kv * group_size + it % group_size;
    int origin[R];
    cta.col_origin(it / group_size, origin);
    detail::load_box<Traits, QTile, typename Traits::SmemLayoutKV>(params.q, b, h, smem_q + st * Traits::kElemsKV,
                                                                  origin, cta.clim, cta.group, prob.axis, tid);
    detail::load_box<Traits, QTile, typename Traits::SmemLayoutKV>(
        params.dout, b, h, smem_do + st * Traits::kElemsKV, origin, cta.clim, cta.group, prob.axis, tid);
    for (int c = tid; c < kBlockN; c += Traits::kThreads) {
      int off[R];
      QTile::unflatten(c, off);
      int32_t coord[R];
      const bool valid = box_token(origin, off, cta.clim, cta.group, prob.axis, coord);
      float l, dl;
      detail::query_stats(params, n_tokens, b, h, coord, valid, l, dl);
      smem_lse[st * kBlockN + c] = l;
      smem_delta[st * kBlockN + c] = dl;
    }
  };

  // ---- prologue: K, V of this box, and the first query tile ----
  detail::load_box<Traits, KvBox, typename Traits::SmemLayoutQ>(params.k, b, h_kv, smem_k, cta.r0, cta.rlim,
                                                               cta.group, prob.axis, tid);
  detail::load_box<Traits, KvBox, typename Traits::SmemLayoutQ>(params.v, b, h_kv, smem_v, cta.r0, cta.rlim,
                                                               cta.group, prob.axis, tid);
  if (n_it > 0) load_iter(0, 0);
  cp_async_fence();

  typename Traits::TiledMma tiled_mma;
  auto thr_mma = tiled_mma.get_thread_slice(tid);
  Tensor sK = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutQ{});
  Tensor sV = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutQ{});
  Tensor sQ0 = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutKV{});
  Tensor sQt0 = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutVt{});

  Tensor tSrA = thr_mma.partition_fragment_A(sK);     // K or V rows
  Tensor tSrB = thr_mma.partition_fragment_B(sQ0);    // Q or dO rows (N = queries)
  Tensor tOrBt = thr_mma.partition_fragment_B(sQt0);  // Q^T or dO^T (N = head dim)
  Tensor acc_dk = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  Tensor acc_dv = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  clear(acc_dk);
  clear(acc_dv);

  const detail::OperandCopies<Traits> cp(tid);
  Tensor tSsK = cp.thr_a.partition_S(sK);
  Tensor tSsV = cp.thr_a.partition_S(sV);
  Tensor tSrA_v = cp.thr_a.retile_D(tSrA);
  Tensor tSrB_v = cp.thr_b.retile_D(tSrB);
  Tensor tOrBt_v = cp.thr_bt.retile_D(tOrBt);

  Tensor cS = make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{});
  Tensor tScS = thr_mma.partition_C(cS);
  constexpr int kM = decltype(size<1>(tScS))::value;
  constexpr int kN = decltype(size<2>(tScS))::value;
  constexpr int kRows = 2 * kM;
  constexpr int kMo = decltype(size<1>(acc_dk))::value;
  static_assert(kMo == kM, "row partition of S and dK must agree");

  // Inverse windows (group-local, per axis) of this thread's key rows; padding keys see nobody.
  int ibeg[kRows][R], iend[kRows][R];
  detail::row_windows<KvBox>(tScS, cta, prob.axis, ibeg, iend);
  bool kv_full = true;
#pragma unroll
  for (int a = 0; a < R; ++a) kv_full = kv_full && (cta.rlim[a] - cta.r0[a] == KvBox::extent(a));
  const float scale_log2 = params.scale_log2;

  for (int it = 0; it < n_it; ++it) {
    const int stage = it & 1;
    if (it + 1 < n_it) load_iter(it + 1, stage ^ 1);
    cp_async_fence();
    cp_async_wait<1>();
    __syncthreads();

    Tensor sQ = make_tensor(make_smem_ptr(smem_q + stage * Traits::kElemsKV), typename Traits::SmemLayoutKV{});
    Tensor sdO = make_tensor(make_smem_ptr(smem_do + stage * Traits::kElemsKV), typename Traits::SmemLayoutKV{});
    Tensor sQt = make_tensor(make_smem_ptr(smem_q + stage * Traits::kElemsKV), typename Traits::SmemLayoutVt{});
    Tensor sdOt = make_tensor(make_smem_ptr(smem_do + stage * Traits::kElemsKV), typename Traits::SmemLayoutVt{});
    Tensor tSsQ = cp.thr_b.partition_S(sQ);
    Tensor tSsdO = cp.thr_b.partition_S(sdO);
    Tensor tOsQt = cp.thr_bt.partition_S(sQt);
    Tensor tOsdOt = cp.thr_bt.partition_S(sdOt);
    float const* lse2 = smem_lse + stage * kBlockN;
    float const* dlt = smem_delta + stage * kBlockN;

    // S^T = K Q^T and dP^T = V dO^T
    Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    Tensor acc_dp = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_s);
    clear(acc_dp);
    detail::gemm_ss(tiled_mma, cp.a, tSsK, tSrA_v, tSrA, cp.b, tSsQ, tSrB_v, tSrB, acc_s);
    detail::gemm_ss(tiled_mma, cp.a, tSsV, tSrA_v, tSrA, cp.b, tSsdO, tSrB_v, tSrB, acc_dp);

    // Mask unless every (key, query) pair of the tile is a neighbor pair.
    int qo[R];
    cta.col_origin(it / group_size, qo);
    if (!(kv_full && cta.col_tile_inside(prob.axis, qo))) detail::mask_outside_windows<QTile>(acc_s, tScS, qo, ibeg, iend);

    // P^T = exp(scale S^T - lse), dS^T = P^T (dP^T - delta)
    Tensor rP = make_tensor<Element>(acc_s.layout());
    Tensor rdS = make_tensor<Element>(acc_s.layout());
#pragma unroll
    for (int n = 0; n < kN; ++n) {
#pragma unroll
      for (int v0 = 0; v0 < 2; ++v0) {
        const int col = get<1>(tScS(v0 + 4 * kM * n));
        const float l2 = lse2[col];
        const float dl = dlt[col];
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const int i = v0 + 2 * r + 4 * kM * n;
          const float p = exp2f(acc_s(i) * scale_log2 - l2);
          rP(i) = static_cast<Element>(p);
          rdS(i) = static_cast<Element>(p * (acc_dp(i) - dl));
        }
      }
    }

    // dV += P^T dO, dK += dS^T Q (scale applied in the epilogue)
    Tensor tOrP = detail::as_k16_a_operand<kM, kN>(rP);
    Tensor tOrdS = detail::as_k16_a_operand<kM, kN>(rdS);
    detail::gemm_rs(tiled_mma, tOrP, cp.bt, tOsdOt, tOrBt_v, tOrBt, acc_dv);
    detail::gemm_rs(tiled_mma, tOrdS, cp.bt, tOsQt, tOrBt_v, tOrBt, acc_dk);
    __syncthreads();  // this stage is refilled by the next iteration's prefetch
  }
  cp_async_wait<0>();
  __syncthreads();

  // ---- epilogue: stage dK (scaled) and dV through the K/V buffers, 16-byte stores ----
  const float scale = prob.scale;
  Tensor cO = make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{});
  Tensor tOcO = thr_mma.partition_C(cO);
#pragma unroll
  for (int i = 0; i < size(acc_dk); ++i) {
    sK(get<0>(tOcO(i)), get<1>(tOcO(i))) = static_cast<Element>(acc_dk(i) * scale);
    sV(get<0>(tOcO(i)), get<1>(tOcO(i))) = static_cast<Element>(acc_dv(i));
  }
  __syncthreads();
  detail::store_box<Traits, KvBox, typename Traits::SmemLayoutQ>(params.dk, b, h_kv, smem_k, cta.r0, cta.rlim,
                                                                cta.group, prob.axis, tid);
  detail::store_box<Traits, KvBox, typename Traits::SmemLayoutQ>(params.dv, b, h_kv, smem_v, cta.r0, cta.rlim,
                                                                cta.group, prob.axis, tid);
}

// One CTA per (KV box, kv head, batch); the grouped grid: x over every problem's KV boxes, y the
// largest kv head count, z the largest batch.
template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads)
    fna_bwd_dkdv_kernel(BackwardParams<Traits::kRank, typename Traits::Element> const params) {
  bwd_dkdv_cta<Traits>(params, blockIdx.x, blockIdx.y, blockIdx.z);
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads)
    fna_bwd_dkdv_grouped_kernel(GroupedParams<BackwardParams<Traits::kRank, typename Traits::Element>> const params) {
  int32_t problem, tile_x;
  params.schedule.locate(blockIdx.x, problem, tile_x);
  auto const& p = params.problems[problem];
  if (int(blockIdx.y) >= p.problem.heads_kv || int(blockIdx.z) >= p.problem.batch) return;
  bwd_dkdv_cta<Traits>(p, tile_x, blockIdx.y, blockIdx.z);
}

// ------------------------------------------------------------------ dQ
// Traits = ForwardTraits<Rank, Element, HeadDim, QBox, KBox> (the forward's decomposition).
template <class Traits>
__device__ __forceinline__ void bwd_dq_cta(BackwardParams<Traits::kRank, typename Traits::Element> const& params,
                                           int tile_x, int h, int b) {
  using namespace cute;
  using Element = typename Traits::Element;
  using QBox = typename Traits::QBox;
  using KBox = typename Traits::KBox;
  constexpr int R = Traits::kRank;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  Element* smem_q = reinterpret_cast<Element*>(smem_raw);
  Element* smem_do = smem_q + Traits::kElemsQ;
  Element* smem_k = smem_do + Traits::kElemsQ;                    // [stage][kBlockN x D]
  Element* smem_v = smem_k + Traits::kStages * Traits::kElemsKV;  // [stage][kBlockN x D]

  const int tid = threadIdx.x;
  const NaProblem<R>& prob = params.problem;
  const int h_kv = prob.kv_head(h);
  const int64_t n_tokens = prob.num_tokens();

  // ---- which query box (rows) and the KV boxes (columns) its queries need ----
  const BoxTile<R, QBox, KBox, false> cta(prob, params.q_tiles_per_group, tile_x);
  if (cta.empty) return;
  const int n_kv = cta.n_col;

  detail::load_box<Traits, QBox, typename Traits::SmemLayoutQ>(params.q, b, h, smem_q, cta.r0, cta.rlim, cta.group,
                                                              prob.axis, tid);
  detail::load_box<Traits, QBox, typename Traits::SmemLayoutQ>(params.dout, b, h, smem_do, cta.r0, cta.rlim,
                                                              cta.group, prob.axis, tid);
  if (n_kv > 0) detail::load_kv_tile<Traits>(params, cta, 0, b, h_kv, smem_k, smem_v, tid);
  cp_async_fence();

  typename Traits::TiledMma tiled_mma;
  auto thr_mma = tiled_mma.get_thread_slice(tid);
  Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutQ{});
  Tensor sdO = make_tensor(make_smem_ptr(smem_do), typename Traits::SmemLayoutQ{});
  Tensor sK0 = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutKV{});
  Tensor sKt0 = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutVt{});

  Tensor tSrA = thr_mma.partition_fragment_A(sQ);     // Q or dO
  Tensor tSrB = thr_mma.partition_fragment_B(sK0);    // K or V rows
  Tensor tOrBt = thr_mma.partition_fragment_B(sKt0);  // K^T (head dim, key)
  Tensor acc_dq = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  clear(acc_dq);

  const detail::OperandCopies<Traits> cp(tid);
  Tensor tSsQ = cp.thr_a.partition_S(sQ);
  Tensor tSsdO = cp.thr_a.partition_S(sdO);
  Tensor tSrA_v = cp.thr_a.retile_D(tSrA);
  Tensor tSrB_v = cp.thr_b.retile_D(tSrB);
  Tensor tOrBt_v = cp.thr_bt.retile_D(tOrBt);

  Tensor cS = make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{});
  Tensor tScS = thr_mma.partition_C(cS);
  constexpr int kM = decltype(size<1>(tScS))::value;
  constexpr int kN = decltype(size<2>(tScS))::value;
  constexpr int kRows = 2 * kM;
  constexpr int kMo = decltype(size<1>(acc_dq))::value;
  static_assert(kMo == kM, "row partition of S and dQ must agree");

  // Windows, lse (log2 units) and delta of this thread's query rows.
  int wbeg[kRows][R], wend[kRows][R];
  float lse2[kRows], dlt[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    int off[R];
    QBox::unflatten(get<0>(tScS(2 * r)), off);
    int32_t coord[R];
    const bool valid = box_token(cta.r0, off, cta.rlim, cta.group, prob.axis, coord);
#pragma unroll
    for (int a = 0; a < R; ++a) {
      const Range w = window_local(prob.axis[a], cta.r0[a] + off[a], cta.glen[a]);
      wbeg[r][a] = w.begin;
      wend[r][a] = w.end;
    }
    detail::query_stats(params, n_tokens, b, h, coord, valid, lse2[r], dlt[r]);
  }
  const float scale_log2 = params.scale_log2;

  for (int j = 0; j < n_kv; ++j) {
    const int stage = j & 1;
    if (j + 1 < n_kv) {
      const int ns = stage ^ 1;
      detail::load_kv_tile<Traits>(params, cta, j + 1, b, h_kv, smem_k + ns * Traits::kElemsKV,
                                   smem_v + ns * Traits::kElemsKV, tid);
    }
    cp_async_fence();
    cp_async_wait<1>();
    __syncthreads();

    Tensor sK = make_tensor(make_smem_ptr(smem_k + stage * Traits::kElemsKV), typename Traits::SmemLayoutKV{});
    Tensor sV = make_tensor(make_smem_ptr(smem_v + stage * Traits::kElemsKV), typename Traits::SmemLayoutKV{});
    Tensor sKt = make_tensor(make_smem_ptr(smem_k + stage * Traits::kElemsKV), typename Traits::SmemLayoutVt{});
    Tensor tSsK = cp.thr_b.partition_S(sK);
    Tensor tSsV = cp.thr_b.partition_S(sV);
    Tensor tOsKt = cp.thr_bt.partition_S(sKt);

    // S = Q K^T, dP = dO V^T
    Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    Tensor acc_dp = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_s);
    clear(acc_dp);
    detail::gemm_ss(tiled_mma, cp.a, tSsQ, tSrA_v, tSrA, cp.b, tSsK, tSrB_v, tSrB, acc_s);
    detail::gemm_ss(tiled_mma, cp.a, tSsdO, tSrA_v, tSrA, cp.b, tSsV, tSrB_v, tSrB, acc_dp);

    int origin[R];
    cta.col_origin(j, origin);
    if (!cta.col_tile_inside(prob.axis, origin)) detail::mask_outside_windows<KBox>(acc_s, tScS, origin, wbeg, wend);

    Tensor rdS = make_tensor<Element>(acc_s.layout());
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int n = 0; n < kN; ++n) {
#pragma unroll
        for (int v0 = 0; v0 < 2; ++v0) {
          const int i = v0 + 2 * r + 4 * kM * n;
          const float p = exp2f(acc_s(i) * scale_log2 - lse2[r]);
          rdS(i) = static_cast<Element>(p * (acc_dp(i) - dlt[r]));
        }
      }
    }
    Tensor tOrdS = detail::as_k16_a_operand<kM, kN>(rdS);
    detail::gemm_rs(tiled_mma, tOrdS, cp.bt, tOsKt, tOrBt_v, tOrBt, acc_dq);
    __syncthreads();
  }
  cp_async_wait<0>();
  __syncthreads();

  const float scale = prob.scale;
  Tensor cO = make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{});
  Tensor tOcO = thr_mma.partition_C(cO);
#pragma unroll
  for (int i = 0; i < size(acc_dq); ++i)
    sQ(get<0>(tOcO(i)), get<1>(tOcO(i))) = static_cast<Element>(acc_dq(i) * scale);
  __syncthreads();
  detail::store_box<Traits, QBox, typename Traits::SmemLayoutQ>(params.dq, b, h, smem_q, cta.r0, cta.rlim, cta.group,
                                                               prob.axis, tid);
}

// One CTA per (query box, head, batch); the grouped grid: x over every problem's query boxes, y
// the largest head count, z the largest batch.
template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads)
    fna_bwd_dq_kernel(BackwardParams<Traits::kRank, typename Traits::Element> const params) {
  bwd_dq_cta<Traits>(params, blockIdx.x, blockIdx.y, blockIdx.z);
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads)
    fna_bwd_dq_grouped_kernel(GroupedParams<BackwardParams<Traits::kRank, typename Traits::Element>> const params) {
  int32_t problem, tile_x;
  params.schedule.locate(blockIdx.x, problem, tile_x);
  auto const& p = params.problems[problem];
  if (int(blockIdx.y) >= p.problem.heads || int(blockIdx.z) >= p.problem.batch) return;
  bwd_dq_cta<Traits>(p, tile_x, blockIdx.y, blockIdx.z);
}

}  // namespace fused
}  // namespace fastna
