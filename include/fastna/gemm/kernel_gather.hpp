// NN (av) and IN (inverse neighborhood) kernels of GEMM-based neighborhood attention
// (sm80-class: mma.sync + cp.async + ldmatrix; fp16 / bf16, or fp32 on TF32 tensor cores).  Both
// are the same tile GEMM
//     acc[rows x D] += P[rows x inner] * X[inner x D]
// over boxes of tokens of one dilation group:
//   NN (kInverse = false): rows = a query box, inner = boxes of its key range (union of the
//       windows, key_range_for_query_tile), X = V (or K for dQ = dAttn K), kv head of h;
//       P[i, j] = attn[i, h, w(i, j)] if key j is in query i's window, else 0.
//   IN (kInverse = true): rows = a key box, inner = boxes of its query range
//       (query_range_for_key_tile), for every query head h of the kv head's GQA group;
//       X = Q or dO of head h; P[j, i] = attn[i, h, w(i, j)] if j is in i's window, else 0.
//       out[j, h_kv] = sum over the group's heads and the queries seeing j (dK = dAttn^T Q,
//       dV = attn^T dO).
// P is gathered (regular loads, converted to Element) into swizzled shared memory and read
// with ldmatrix as the A operand; X is loaded by box with cp.async and read transposed as the B
// operand (16-bit: ldmatrix.trans, as V in the fused forward; fp32: plain 32-bit shared loads,
// common.hpp TileTraits).  Both are double-buffered.
// Slots outside the window (causal -inf) are never read.  Every output row is written by one
// CTA (no atomics): rows nobody contributes to get 0.
#pragma once

#include <cute/tensor.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cutlass/numeric_types.h>

#include <cstdint>
#include <type_traits>

#include "fastna/common/box_tile.hpp"
#include "fastna/common/cp_async.hpp"
#include "fastna/common/sm80_tile_gemm.hpp"
#include "fastna/gemm/common.hpp"
#include "fastna/common/index_math.hpp"
#include "fastna/common/problem.hpp"

namespace fastna {
namespace gemm_na {

template <int Rank, class Element, class AttnElem>
struct GatherParams {
  NaProblem<Rank> problem;
  AttnView<AttnElem const> attn;     // query heads
  TokenTensor<Element const, Rank> x;  // NN: kv heads (V or K); IN: query heads (dO or Q)
  TokenTensor<Element, Rank> out;      // NN: query heads; IN: kv heads
  int32_t tiles_per_group[Rank];       // row boxes per dilation group and axis
};

template <class Traits, bool kInverse, class AttnElem>
__global__ void __launch_bounds__(Traits::kThreads)
    na_gather_kernel(GatherParams<Traits::kRank, typename Traits::Element, AttnElem> const params) {
  using namespace cute;
  using Element = typename Traits::Element;
  using RowBox = typename Traits::QBox;
  using InnerBox = typename Traits::KBox;
  using SmemLayoutP = typename Traits::SmemLayoutP;
  constexpr int R = Traits::kRank;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kThreads = Traits::kThreads;
  // fp32 weights gathered straight into the fp32 P tile with cp.async (4-byte copies, same
  // commit group as the X box); 16-bit weights (2 bytes: below cp.async's 4-byte minimum) or a
  // conversion go through registers.
  constexpr bool kAsyncP = std::is_same_v<Element, float> && std::is_same_v<AttnElem, float>;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  Element* smem_p = reinterpret_cast<Element*>(smem_raw);          // [stage][kBlockM x kBlockN]
  Element* smem_x = smem_p + Traits::kStages * Traits::kElemsP;    // [stage][kBlockN x D]
  // NN only: window (group-local) and attention-row offset of each query row.
  __shared__ int s_wbeg[kInverse ? 1 : kBlockM][R];
  __shared__ int s_wend[kInverse ? 1 : kBlockM][R];
  __shared__ int64_t s_base[kInverse ? 1 : kBlockM];  // -1: row outside the group

  const int tid = threadIdx.x;
  const NaProblem<R>& prob = params.problem;
  const int h = blockIdx.y;  // NN: query head; IN: kv head
  const int b = blockIdx.z;
  const int group_size = prob.heads / prob.heads_kv;

  // ---- which row box, and the inner boxes (columns) its rows pair with ----
  const BoxTile<R, RowBox, InnerBox, kInverse> cta(prob, params.tiles_per_group, blockIdx.x);
  if (cta.empty) return;  // uniform over the CTA
  const int n_boxes = cta.n_col;
  const int n_iter = n_boxes * (kInverse ? group_size : 1);

  // Iteration t: head (IN: query head of the group, head-major) and inner box origin.
  auto iter_info = [&](int t, int& head, int (&origin)[R]) {
    int box = t;
    if (kInverse) {
      head = h * group_size + t / n_boxes;
      box = t % n_boxes;
    } else {
      head = h;
    }
    cta.col_origin(box, origin);
  };

  if (!kInverse) {
    for (int row = tid; row < kBlockM; row += kThreads) {
      int off[R];
      RowBox::unflatten(row, off);
      int coord[R];
      const bool valid = box_token(cta.r0, off, cta.rlim, cta.group, prob.axis, coord);
#pragma unroll
      for (int a = 0; a < R; ++a) {
        const int i_loc = cta.r0[a] + off[a];
        const Range w = window_s1(prob.axis[a], imin(i_loc, cta.glen[a] - 1), cta.glen[a]);
        s_wbeg[row][a] = w.begin;
        s_wend[row][a] = w.end;
      }
      s_base[row] = valid ? params.attn.offset(b, flatten(coord, prob.axis), h) : int64_t(-1);
    }
    __syncthreads();
  }

  // Gathers P for iteration t into stage `stage` (plain loads; stores to swizzled smem).
  auto gather_p = [&](int t, int stage) {
    int head, origin[R];
    iter_info(t, head, origin);
    Element* sp = smem_p + stage * Traits::kElemsP;
    if (!kInverse) {
      // rows = queries (window from smem), cols = keys; keys fastest: consecutive slots.
      for (int idx = tid; idx < kBlockM * kBlockN; idx += kThreads) {
        const int row = idx / kBlockN;
        const int col = idx % kBlockN;
        int off[R];
        InnerBox::unflatten(col, off);
        const int64_t base = s_base[row];
        bool in = base >= 0;
        int slot = 0;
#pragma unroll
        for (int a = 0; a < R; ++a) {
          const int kl = origin[a] + off[a];
          in = in && (s_wbeg[row][a] <= kl) && (kl < s_wend[row][a]);
          slot = slot * prob.axis[a].kernel + (kl - s_wbeg[row][a]);
        }
        if constexpr (kAsyncP) {
          // fp32 weights into fp32 smem: an asynchronous 4-byte copy (zero-filled outside the
          // window), in flight with the X box instead of a load the thread waits on.
          cp_async_4_zfill(sp + SmemLayoutP{}(row, col), in ? params.attn.ptr + (base + slot) : params.attn.ptr, in);
        } else {
          const float v = in ? to_float(params.attn.ptr[base + slot]) : 0.f;
          sp[SmemLayoutP{}(row, col)] = static_cast<Element>(v);
        }
      }
    } else {
      // rows = keys, cols = queries; keys fastest: consecutive slots of one query.
      for (int idx = tid; idx < kBlockM * kBlockN; idx += kThreads) {
        const int col = idx / kBlockM;
        const int row = idx % kBlockM;
        int roff[R], coff[R];
        RowBox::unflatten(row, roff);
        InnerBox::unflatten(col, coff);
        bool in = true;
        int slot = 0;
        int coord[R];
#pragma unroll
        for (int a = 0; a < R; ++a) {
          const int kl = cta.r0[a] + roff[a];
          const int ql = origin[a] + coff[a];
          in = in && (kl < cta.rlim[a]) && (ql < cta.clim[a]);
          const Range w = window_s1(prob.axis[a], imin(ql, cta.glen[a] - 1), cta.glen[a]);
          in = in && (w.begin <= kl) && (kl < w.end);
          slot = slot * prob.axis[a].kernel + (kl - w.begin);
          coord[a] = ql * prob.axis[a].dilation + cta.group[a];
        }
        if constexpr (kAsyncP) {
          AttnElem const* src =
              in ? params.attn.ptr + (params.attn.offset(b, flatten(coord, prob.axis), head) + slot) : params.attn.ptr;
          cp_async_4_zfill(sp + SmemLayoutP{}(row, col), src, in);
        } else {
          float v = 0.f;
          if (in) v = to_float(params.attn.ptr[params.attn.offset(b, flatten(coord, prob.axis), head) + slot]);
          sp[SmemLayoutP{}(row, col)] = static_cast<Element>(v);
        }
      }
    }
  };
  auto load_x = [&](int t, int stage) {
    int head, origin[R];
    iter_info(t, head, origin);
    const int xh = kInverse ? head : prob.kv_head(h);
    load_box<Traits, InnerBox, typename Traits::SmemLayoutX>(params.x, b, xh, smem_x + stage * Traits::kElemsKV,
                                                             origin, cta.clim, cta.group, prob.axis, tid);
  };

  // ---- MMA partitions ----
  typename Traits::TiledMma tiled_mma;
  auto thr_mma = tiled_mma.get_thread_slice(tid);
  Tensor sP0 = make_tensor(make_smem_ptr(mma_smem<Traits>(smem_p)), SmemLayoutP{});
  Tensor sXt0 = make_tensor(make_smem_ptr(mma_smem<Traits>(smem_x)), typename Traits::SmemLayoutXt{});
  Tensor tCrP = thr_mma.partition_fragment_A(sP0);   // (MMA, MMA_M, MMA_K)
  Tensor tCrX = thr_mma.partition_fragment_B(sXt0);  // (MMA, MMA_D, MMA_K)
  Tensor acc = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  clear(acc);
  const fused::detail::OperandCopies<Traits> cp(tid);  // P: A (cp.a), X: B read transposed (cp.bt)
  Tensor tCrP_v = cp.thr_a.retile_D(tCrP);
  Tensor tCrX_v = cp.thr_bt.retile_D(tCrX);

  // ---- prologue ----
  if (n_iter > 0) {
    load_x(0, 0);
    gather_p(0, 0);
  }
  cp_async_fence();

  // ---- mainloop ----
  for (int t = 0; t < n_iter; ++t) {
    const int stage = t & 1;
    if (t + 1 < n_iter) {
      load_x(t + 1, stage ^ 1);
      gather_p(t + 1, stage ^ 1);
    }
    cp_async_fence();
    cp_async_wait<1>();
    __syncthreads();

    Tensor sP = make_tensor(make_smem_ptr(mma_smem<Traits>(smem_p + stage * Traits::kElemsP)), SmemLayoutP{});
    Tensor sXt = make_tensor(make_smem_ptr(mma_smem<Traits>(smem_x + stage * Traits::kElemsKV)),
                             typename Traits::SmemLayoutXt{});
    Tensor tCsP = cp.thr_a.partition_S(sP);
    Tensor tCsX = cp.thr_bt.partition_S(sXt);
    fused::detail::gemm_ss<Traits::kTf32>(tiled_mma, cp.a, tCsP, tCrP_v, tCrP, cp.bt, tCsX, tCrX_v, tCrX, acc);
    __syncthreads();  // this stage is refilled by the next iteration
  }
  cp_async_wait<0>();

  // ---- epilogue: rows of the box inside the group -> out[b, token, h, :] ----
  Tensor cO = make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{});
  Tensor tOcO = thr_mma.partition_C(cO);
#pragma unroll
  for (int i = 0; i < size(acc); ++i) {
    const int row = get<0>(tOcO(i));
    const int col = get<1>(tOcO(i));
    int off[R];
    RowBox::unflatten(row, off);
    int coord[R];
    if (box_token(cta.r0, off, cta.rlim, cta.group, prob.axis, coord)) params.out.at(b, coord, h)[col] = static_cast<Element>(acc(i));
  }
}

}  // namespace gemm_na
}  // namespace fastna
