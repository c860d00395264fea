// PN (qk) kernel of GEMM-based neighborhood attention (sm80-class: mma.sync + cp.async + ldmatrix;
// fp16 / bf16, or fp32 on TF32 tensor cores).
//
// One CTA = one query box (group-local coordinates of one dilation group) x one head x one batch.
// Its key box is the union of the queries' windows (per-axis key_range_for_query_tile), visited
// in KV boxes double-buffered through cp.async.  Each KV box gives a dense S = Q K^T tile on
// tensor cores; the epilogue scatters S[i, j] (+ rpb) into window slot w(i, j) of query i's
// attention row and skips keys outside i's window.  Every (query, window key) pair lies in
// exactly one KV box, so every valid slot is written exactly once; causal slots beyond the
// window end are written -inf at the end.
#pragma once

#include <cute/tensor.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cutlass/numeric_types.h>

#include <cmath>
#include <cstdint>

#include "fastna/common/box_tile.hpp"
#include "fastna/common/cp_async.hpp"
#include "fastna/common/sm80_tile_gemm.hpp"
#include "fastna/gemm/common.hpp"
#include "fastna/common/index_math.hpp"
#include "fastna/common/problem.hpp"

namespace fastna {
namespace gemm_na {

template <int Rank, class Element, class AttnElem>
struct PNParams {
  NaProblem<Rank> problem;
  TokenTensor<Element const, Rank> q, k;
  AttnView<AttnElem> attn;
  Element const* rpb = nullptr;    // optional, contiguous [H, 2K_1-1, ..., 2K_r-1]
  int32_t tiles_per_group[Rank];   // query boxes per dilation group and axis
};

template <class Traits, class AttnElem>
__global__ void __launch_bounds__(Traits::kThreads)
    na_pn_kernel(PNParams<Traits::kRank, typename Traits::Element, AttnElem> const params) {
  using namespace cute;
  using Element = typename Traits::Element;
  using QBox = typename Traits::QBox;
  using KBox = typename Traits::KBox;
  constexpr int R = Traits::kRank;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  Element* smem_q = reinterpret_cast<Element*>(smem_raw);
  Element* smem_k = smem_q + Traits::kElemsQ;  // [stage][kBlockN x D]

  const int tid = threadIdx.x;
  const NaProblem<R>& prob = params.problem;
  const int h = blockIdx.y;
  const int b = blockIdx.z;
  const int h_kv = prob.kv_head(h);

  // ---- which query box (rows) and the KV boxes (columns) its queries need ----
  const BoxTile<R, QBox, KBox, false> cta(prob, params.tiles_per_group, blockIdx.x);
  if (cta.empty) return;  // a box past the end of a shorter dilation group: uniform over the CTA
  const int n_kv = cta.n_col;

  // Slot strides (row-major over K) and rpb strides (row-major over 2K-1).
  int kstride[R], rstride[R];
  int rpb_head = 1;
  {
    int ks = 1, rs = 1;
#pragma unroll
    for (int a = R - 1; a >= 0; --a) {
      kstride[a] = ks;
      rstride[a] = rs;
      ks *= prob.axis[a].kernel;
      rs *= 2 * prob.axis[a].kernel - 1;
    }
    rpb_head = rs;
  }
  Element const* rpb = params.rpb == nullptr ? nullptr : params.rpb + int64_t(h) * rpb_head;

  // ---- prologue: Q and the first K tile ----
  load_box<Traits, QBox, typename Traits::SmemLayoutQ>(params.q, b, h, smem_q, cta.r0, cta.rlim, cta.group, prob.axis,
                                                      tid);
  if (n_kv > 0) {
    int origin[R];
    cta.col_origin(0, origin);
    load_box<Traits, KBox, typename Traits::SmemLayoutKV>(params.k, b, h_kv, smem_k, origin, cta.clim, cta.group,
                                                         prob.axis, tid);
  }
  cp_async_fence();

  // ---- MMA partitions (as in the fused forward) ----
  typename Traits::TiledMma tiled_mma;
  auto thr_mma = tiled_mma.get_thread_slice(tid);
  Tensor sQ = make_tensor(make_smem_ptr(mma_smem<Traits>(smem_q)), typename Traits::SmemLayoutQ{});
  Tensor sK0 = make_tensor(make_smem_ptr(mma_smem<Traits>(smem_k)), typename Traits::SmemLayoutKV{});
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);   // (MMA, MMA_M, MMA_K)
  Tensor tSrK = thr_mma.partition_fragment_B(sK0);  // (MMA, MMA_N, MMA_K)

  const fused::detail::OperandCopies<Traits> cp(tid);  // Q: A (cp.a), K: B (cp.b)
  Tensor tSsQ = cp.thr_a.partition_S(sQ);
  Tensor tSrQ_v = cp.thr_a.retile_D(tSrQ);
  Tensor tSrK_v = cp.thr_b.retile_D(tSrK);

  Tensor cS = make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{});
  Tensor tScS = thr_mma.partition_C(cS);
  // Accumulator ((2,2), M, N): flat i = v0 + 2*r + 4*M*n with row slot r = v1 + 2*m.
  constexpr int kM = decltype(size<1>(tScS))::value;
  constexpr int kN = decltype(size<2>(tScS))::value;
  constexpr int kRows = 2 * kM;

  // Per row of this thread: validity, group-local query coords, window, attention row offset.
  bool rvalid[kRows];
  int il[kRows][R], wbeg[kRows][R], wend[kRows][R];
  int64_t rbase[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int row = get<0>(tScS(2 * r));
    int off[R];
    QBox::unflatten(row, off);
    bool valid = true;
    int coord[R];
#pragma unroll
    for (int a = 0; a < R; ++a) {
      il[r][a] = cta.r0[a] + off[a];
      valid = valid && (il[r][a] < cta.rlim[a]);
      const Range w = window_s1(prob.axis[a], imin(il[r][a], cta.glen[a] - 1), cta.glen[a]);
      wbeg[r][a] = w.begin;
      wend[r][a] = w.end;
      coord[a] = il[r][a] * prob.axis[a].dilation + cta.group[a];
    }
    rvalid[r] = valid;
    rbase[r] = valid ? params.attn.offset(b, flatten(coord, prob.axis), h) : 0;
  }

  // ---- mainloop over KV boxes ----
  for (int j = 0; j < n_kv; ++j) {
    const int stage = j & 1;
    if (j + 1 < n_kv) {
      int origin[R];
      cta.col_origin(j + 1, origin);
      load_box<Traits, KBox, typename Traits::SmemLayoutKV>(params.k, b, h_kv, smem_k + (stage ^ 1) * Traits::kElemsKV,
                                                           origin, cta.clim, cta.group, prob.axis, tid);
    }
    cp_async_fence();
    cp_async_wait<1>();
    __syncthreads();

    Tensor sK = make_tensor(make_smem_ptr(mma_smem<Traits>(smem_k + stage * Traits::kElemsKV)),
                            typename Traits::SmemLayoutKV{});
    Tensor tSsK = cp.thr_b.partition_S(sK);
    Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_s);
    fused::detail::gemm_ss<Traits::kTf32>(tiled_mma, cp.a, tSsQ, tSrQ_v, tSrQ, cp.b, tSsK, tSrK_v, tSrK, acc_s);

    // Epilogue of this tile: scatter S[i, j] into slot w(i, j) where j is in i's window.
    int origin[R];
    cta.col_origin(j, origin);
#pragma unroll
    for (int n = 0; n < kN; ++n) {
#pragma unroll
      for (int v0 = 0; v0 < 2; ++v0) {
        const int col = get<1>(tScS(v0 + 4 * kM * n));
        int off[R];
        KBox::unflatten(col, off);
        int kl[R];
#pragma unroll
        for (int a = 0; a < R; ++a) kl[a] = origin[a] + off[a];
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          bool in = rvalid[r];
          int slot = 0, rel = 0;
#pragma unroll
          for (int a = 0; a < R; ++a) {
            in = in && (wbeg[r][a] <= kl[a]) && (kl[a] < wend[r][a]);
            slot += (kl[a] - wbeg[r][a]) * kstride[a];
            rel += (kl[a] - il[r][a] + prob.axis[a].kernel - 1) * rstride[a];
          }
          if (in) {
            float val = acc_s(v0 + 2 * r + 4 * kM * n);
            if (rpb != nullptr) val += static_cast<float>(rpb[rel]);
            params.attn.ptr[rbase[r] + slot] = static_cast<AttnElem>(val);
          }
        }
      }
    }
    __syncthreads();  // this stage is refilled by the next iteration's prefetch
  }
  cp_async_wait<0>();

  // ---- causal: slots whose key lies past the window end hold -inf ----
  bool any_causal = false;
#pragma unroll
  for (int a = 0; a < R; ++a) any_causal = any_causal || prob.axis[a].causal;
  if (any_causal) {
    const int W = prob.window_size();
    for (int idx = tid; idx < kBlockM * W; idx += Traits::kThreads) {
      const int row = idx / W;
      int w = idx - row * W;
      int off[R];
      QBox::unflatten(row, off);
      bool valid = true, invalid_slot = false;
      int coord[R];
#pragma unroll
      for (int a = R - 1; a >= 0; --a) {
        const int K = prob.axis[a].kernel;
        const int ka = w % K;
        w /= K;
        const int i_loc = cta.r0[a] + off[a];
        valid = valid && (i_loc < cta.rlim[a]);
        const Range win = window_s1(prob.axis[a], imin(i_loc, cta.glen[a] - 1), cta.glen[a]);
        invalid_slot = invalid_slot || (win.begin + ka >= win.end);
        coord[a] = i_loc * prob.axis[a].dilation + cta.group[a];
      }
      if (valid && invalid_slot)
        params.attn.ptr[params.attn.offset(b, flatten(coord, prob.axis), h) + (idx - row * W)] =
            static_cast<AttnElem>(-INFINITY);
    }
  }
}

}  // namespace gemm_na
}  // namespace fastna
