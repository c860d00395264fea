// Fused neighborhood-attention backward kernels for sm90a: wgmma + TMA + warp specialization.
//
// Three launches, no atomics (deterministic by construction), the decomposition of the sm80
// backward (include/fastna/sm80/backward_kernel.hpp):
//   1. fna_hopper_bwd_preprocess_kernel: delta = rowsum(dO * O) - dlse and lse2 = lse * log2(e)
//      per (query, head), written head-major [B, H, L0, .., L_last padded to 4] (fp32) so that a
//      query tile's 64 values are one TMA box (the last axis padded: 16-byte row strides; the pad
//      holds delta 0, lse2 +inf).
//   2. dK/dV (kDq = false): one CTA per 128-key box (group-local) x kv head x batch.  Rows = keys
//      (K, V resident in shared memory), columns = 64-query tiles of the box's inverse
//      neighborhood (query_range_for_key_tile) for every query head of the GQA group, streamed
//      with lse2 / delta by TMA.  Per tile: S^T = K Q^T and dP^T = V dO^T (wgmma SS),
//      P^T = exp2(S^T scale log2e - lse2), dS^T = P^T (dP^T - delta), dV += P^T dO and
//      dK += dS^T Q (wgmma RS, P^T / dS^T from registers; Q / dO read MN-major).
//   3. dQ (kDq = true): one CTA per 128-query box x head x batch.  Rows = queries (Q, dO
//      resident, lse2 / delta of the thread's rows in registers), columns = key tiles
//      (DefaultBwdDqColBox: 128 keys) of key_range_for_query_tile.  Per tile: S = Q K^T,
//      dP = dO V^T (SS), P, dS as above, dQ += dS K (RS, K read MN-major).
// Both main kernels: warpgroup 0 = producer (one thread issues every TMA copy into a kStages
// ring; "full" barriers complete on transaction bytes, "empty" barriers take one arrival per
// consumer warp), warpgroups 1, 2 = consumers of 64 rows each (the row box is halved along its
// first axis, so each warpgroup's rows are a box and skip the mask on tiles fully inside their
// windows).  TMA needs dilation 1 and a 16-byte aligned strided layout (tma.hpp); other problems
// run the sm80 backward (backward.hpp decides on the host).
#pragma once

#include <cute/tensor.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/numeric_types.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "fastna/common/box_tile.hpp"
#include "fastna/common/device_math.hpp"
#include "fastna/common/grouped_schedule.hpp"
#include "fastna/common/backward_params.hpp"  // fused::BackwardParams, fused::detail::out_dout_row_dot
#include "fastna/sm90/backward_preprocess.hpp"
#include "fastna/sm90/backward_traits.hpp"  // BackwardTraits, HopperBwdParams
#include "fastna/sm90/kernel_traits.hpp"     // Box, SmemAtoms, DefaultQBox
#include "fastna/sm90/mask.hpp"
#include "fastna/sm90/tile_order.hpp"  // kBwdOrderCap
#include "fastna/common/tma.hpp"
#include "fastna/common/index_math.hpp"
#include "fastna/common/problem.hpp"

namespace fastna {
namespace hopper {

namespace detail {

// The column tiles of a CTA in order (last axis fastest; dK/dV: the GQA group's heads innermost),
// stepped without divisions: the producer and every consumer thread walk them once per CTA.
template <int R, class ColBox>
struct ColCursor {
  int origin[R];  // group-local origin of the current tile
  int head = 0;   // head within the GQA group (dK/dV), 0 for dQ

  __device__ __forceinline__ explicit ColCursor(Range const (&cr)[R]) {
#pragma unroll
    for (int a = 0; a < R; ++a) origin[a] = cr[a].begin;
  }
  // Tiles start at cr.begin + k * extent for k < ceil(size / extent): origin < cr.end.
  __device__ __forceinline__ void step(Range const (&cr)[R], int group_size) {
    if (++head < group_size) return;
    head = 0;
    bool carry = true;
#pragma unroll
    for (int a = R - 1; a >= 0; --a) {
      if (carry) {
        origin[a] += ColBox::extent(a);
        carry = a > 0 && origin[a] >= cr[a].end;
        if (carry) origin[a] = cr[a].begin;
      }
    }
  }
};

}  // namespace detail

// ------------------------------------------------------------------ dK/dV and dQ
// One CTA's work on the problem hp describes.  Dense (kGrouped false): row box blockIdx.x (through
// the rank-1 order), row head blockIdx.y (dK/dV: the kv head; dQ: the query head), batch
// blockIdx.z.  Grouped: tile_x, h_row_index, b_index; hp lives in global memory, so its tensor
// maps are fenced before the first TMA copy.
template <class Traits, bool kGrouped>
__device__ __forceinline__ void hopper_bwd_cta(HopperBwdParams<Traits::kRank, typename Traits::Element> const& hp,
                                               unsigned tile_x, unsigned h_row_index, unsigned b_index) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace cute;
  using Element = typename Traits::Element;
  using RowBox = typename Traits::RowBox;
  using ColBox = typename Traits::ColBox;
  using Barrier = cutlass::arch::ClusterBarrier;
  constexpr int R = Traits::kRank;
  constexpr bool kDq = Traits::kDq;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kStages = Traits::kStages;
  auto const& params = hp.base;

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  Element* smem_a1 = reinterpret_cast<Element*>(smem_raw + Traits::kOffA1);
  Element* smem_a2 = reinterpret_cast<Element*>(smem_raw + Traits::kOffA2);
  Element* smem_b1 = reinterpret_cast<Element*>(smem_raw + Traits::kOffB1);
  Element* smem_b2 = reinterpret_cast<Element*>(smem_raw + Traits::kOffB2);
  float* smem_lse = reinterpret_cast<float*>(smem_raw + Traits::kOffLse);
  float* smem_delta = reinterpret_cast<float*>(smem_raw + Traits::kOffDelta);
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem_raw + Traits::kOffBar);
  uint64_t* bar_res = bars;
  uint64_t* bar_full = bars + 1;
  uint64_t* bar_empty = bars + 1 + kStages;

  if constexpr (Traits::kPdl && !kDq) {
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  }
  // dQ under PDL: every exit waits for the dK/dV grid (see kPdl).
  auto pdl_exit = [&]() {
    if constexpr (Traits::kPdl && kDq) asm volatile("griddepcontrol.wait;" ::: "memory");
  };

  const NaProblem<R>& prob = params.problem;
  // (The dense kernel reads blockIdx here, as it always has: its code stays as it was.)
  const int b = kGrouped ? b_index : blockIdx.z;
  // dK/dV: h_row = kv head, columns over the GQA group's heads; dQ: the query head.
  const int h_row = kGrouped ? h_row_index : blockIdx.y;
  const int group_size = kDq ? 1 : prob.heads / prob.heads_kv;
  const int h_kv_dq = kDq ? prob.kv_head(h_row) : h_row;

  // Row box (group-local) and the column range it pairs with (dK/dV: rows are keys).  Rank 1:
  // tile_x goes through the host's longest-first row-tile order (tile_order.hpp).
  int bx = kGrouped ? tile_x : blockIdx.x;
  if constexpr (R == 1) {
    if (bx < hp.order_count) bx = hp.order[bx];
  }
  const BoxTile<R, RowBox, ColBox, !kDq> cta(prob, hp.row_tiles_per_group, bx);
  if (cta.empty) {  // uniform over the CTA
    pdl_exit();
    return;
  }
  Range const (&cr)[R] = cta.cr;
  const int n_it = cta.n_col * group_size;

  const int warpgroup = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    Barrier::init(bar_res, 1);
    for (int s = 0; s < kStages; ++s) {
      Barrier::init(bar_full + s, 1);
      Barrier::init(bar_empty + s, 128 * Traits::kConsumerWarpgroups / 32);
    }
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  if (warpgroup == 0) {
    // ================================ producer ================================
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (threadIdx.x == 0 && n_it > 0) {
      if constexpr (kGrouped) {
        // The problem's tensor maps were written to global memory by the host's copy: acquire
        // them for the tensormap proxy before this thread's first TMA copy.
        for (CUtensorMap const* map : {&hp.tma_a1, &hp.tma_a2, &hp.tma_b1, &hp.tma_b2, &hp.tma_lse, &hp.tma_delta})
          asm volatile("fence.proxy.tensormap::generic.acquire.sys [%0], 128;\n" ::"l"(map) : "memory");
      }
      using TxBarrier = cutlass::arch::ClusterTransactionBarrier;
      auto token_coords = [&](int const (&origin)[R], int head, int (&c)[5]) {
        c[0] = 0;
        c[1] = head;
        c[2] = c[3] = c[4] = 0;
#pragma unroll
        for (int a = 0; a < R; ++a) c[2 + (R - 1 - a)] = origin[a];
        if (hp.tma_dims.batch_dim == 3) c[3] += b * hp.tma_dims.batch_mul;
        else c[4] += b * hp.tma_dims.batch_mul;
      };
      {
        int c[5];
        token_coords(cta.r0, h_row, c);
        TxBarrier::arrive_and_expect_tx(bar_res, 2 * sizeof(Element) * Traits::kElemsA);
#pragma unroll
        for (int half = 0; half < kHeadDim / 64; ++half) {
          detail::tma_load_5d(&hp.tma_a1, bar_res, smem_a1 + half * kBlockM * 64, 64 * half, c[1], c[2], c[3], c[4]);
          detail::tma_load_5d(&hp.tma_a2, bar_res, smem_a2 + half * kBlockM * 64, 64 * half, c[1], c[2], c[3], c[4]);
        }
      }
      detail::ColCursor<R, ColBox> cur(cr);
      int s = 0, phase = 0;  // stage, and the parity of its current use
      for (int it = 0; it < n_it; ++it, cur.step(cr, group_size)) {
        if (it >= kStages) Barrier::wait(bar_empty + s, phase ^ 1);
        int const (&origin)[R] = cur.origin;
        // dK/dV: columns are query tiles of head h; dQ: key tiles of the kv head.
        const int head = kDq ? h_kv_dq : h_row * group_size + cur.head;
        int c[5];
        token_coords(origin, head, c);
        TxBarrier::arrive_and_expect_tx(bar_full + s, Traits::kBytesStage);
#pragma unroll
        for (int half = 0; half < kHeadDim / 64; ++half) {
          detail::tma_load_5d(&hp.tma_b1, bar_full + s, smem_b1 + s * Traits::kElemsB + half * kBlockN * 64, 64 * half,
                              c[1], c[2], c[3], c[4]);
          detail::tma_load_5d(&hp.tma_b2, bar_full + s, smem_b2 + s * Traits::kElemsB + half * kBlockN * 64, 64 * half,
                              c[1], c[2], c[3], c[4]);
        }
        if constexpr (!kDq) {
          // fp32 head-major [B, H, L0, .., Lp_last]: dims (Lp_last, .., L0, H, B).
          int l[5] = {0, 0, 0, 0, 0};
#pragma unroll
          for (int a = 0; a < R; ++a) l[R - 1 - a] = origin[a];
          l[0] &= ~3;  // 16-byte aligned box start; the consumers add origin % 4
          l[R] = head;
          l[R + 1] = b;
          detail::tma_load_5d(&hp.tma_lse, bar_full + s, smem_lse + s * Traits::kStatStage, l[0], l[1], l[2], l[3], l[4]);
          detail::tma_load_5d(&hp.tma_delta, bar_full + s, smem_delta + s * Traits::kStatStage, l[0], l[1], l[2], l[3],
                              l[4]);
        }
        if (++s == kStages) {
          s = 0;
          phase ^= 1;
        }
      }
    }
  } else {
    // ================================ consumers ================================
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    const int ctid = threadIdx.x - 128;
    const int wg = ctid / 128;
    const int quad = ctid % 4;

    typename Traits::TiledMmaS mma_s;
    typename Traits::TiledMmaG mma_g;
    auto thr_s = mma_s.get_thread_slice(ctid);
    auto thr_g = mma_g.get_thread_slice(ctid);
    Tensor sA1 = make_tensor(make_smem_ptr(smem_a1), typename Traits::SmemLayoutA{});
    Tensor sA2 = make_tensor(make_smem_ptr(smem_a2), typename Traits::SmemLayoutA{});
    Tensor sB1 = make_tensor(make_smem_ptr(smem_b1), typename Traits::SmemLayoutB{});
    Tensor sB2 = make_tensor(make_smem_ptr(smem_b2), typename Traits::SmemLayoutB{});
    Tensor sB1t = make_tensor(make_smem_ptr(smem_b1), typename Traits::SmemLayoutBt{});
    Tensor sB2t = make_tensor(make_smem_ptr(smem_b2), typename Traits::SmemLayoutBt{});
    Tensor tSrA1 = thr_s.partition_fragment_A(sA1);   // (MMA, 1, D/16)
    Tensor tSrA2 = thr_s.partition_fragment_A(sA2);
    Tensor tSrB1 = thr_s.partition_fragment_B(sB1);   // (MMA, 1, D/16, stage)
    Tensor tSrB2 = thr_s.partition_fragment_B(sB2);
    Tensor tGrB1 = thr_g.partition_fragment_B(sB1t);  // (MMA, D/.., N/16, stage)
    Tensor tGrB2 = thr_g.partition_fragment_B(sB2t);

    // acc1: dK (dK/dV) or dQ; acc2: dV (dK/dV only).
    Tensor acc1 = partition_fragment_C(mma_g, Shape<Int<kBlockM>, Int<kHeadDim>>{});
    Tensor acc2 = partition_fragment_C(mma_g, Shape<Int<kBlockM>, Int<kDq ? 64 : kHeadDim>>{});
    clear(acc1);
    clear(acc2);
    Tensor acc_s = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
    Tensor acc_dp = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
    static_assert(decltype(size(acc_s))::value == kBlockN / 2, "S accumulator: ((2,2,N/8),1,1)");
    static_assert(decltype(size(acc1))::value == kHeadDim / 2, "G accumulator: ((2,2,D/8),1,1)");
    Tensor rP = make_tensor<Element>(Layout<Shape<Int<kBlockN / 2>>>{});
    Tensor rdS = make_tensor<Element>(Layout<Shape<Int<kBlockN / 2>>>{});
    Tensor rP32 = recast<uint32_t>(rP);
    Tensor rdS32 = recast<uint32_t>(rdS);
    // The S accumulator ((2,2,N/8)) read as the A operand ((2,2,2), 1, N/16) of G += dS B.
    using ALayout = Layout<Shape<Shape<_2, _2, _2>, _1, Int<kBlockN / 16>>, Stride<Stride<_1, _2, _4>, _0, _8>>;
    Tensor tGrP = make_tensor(rP.data(), ALayout{});
    Tensor tGrdS = make_tensor(rdS.data(), ALayout{});

    // This thread's two rows (slot v1 = 0, 1): windows (dQ: keys of the query; dK/dV: queries
    // of the key, the inverse window), validity, and for dQ the row's lse2 / delta.
    int wbeg[2][R], wend[2][R], row_off[2][R];
    float row_lse2[2] = {INFINITY, INFINITY}, row_delta[2] = {0.f, 0.f};
#pragma unroll
    for (int v1 = 0; v1 < 2; ++v1) {
      const int row = 64 * wg + 16 * ((ctid % 128) / 32) + (ctid % 32) / 4 + 8 * v1;
      RowBox::unflatten(row, row_off[v1]);
      int coord[R];
      const bool valid = box_token(cta.r0, row_off[v1], cta.rlim, cta.group, prob.axis, coord);
#pragma unroll
      for (int a = 0; a < R; ++a) {
        Range w{0, 0};
        if (valid) w = cta.row_window(prob.axis[a], a, cta.r0[a] + row_off[v1][a]);
        wbeg[v1][a] = w.begin;
        wend[v1][a] = w.end;
      }
      if constexpr (kDq) {
        if (valid) {
          const int64_t o = detail::head_major_index(prob, b, h_row, coord, hp.last_pad);
          if constexpr (Traits::kPdl) {  // written by the preprocess: past L1 (see kPdl)
            row_lse2[v1] = __ldcg(hp.lse2_t + o);
            row_delta[v1] = __ldcg(hp.delta_t + o);
          } else {
            row_lse2[v1] = hp.lse2_t[o];
            row_delta[v1] = hp.delta_t[o];
          }
        }
      }
    }
    // The warpgroup's rows are a box: the first axis halves.
    Range wg_rows[R];
    bool wg_rows_full = true;
#pragma unroll
    for (int a = 0; a < R; ++a) {
      const int half = (a == 0) ? RowBox::extent(0) / 2 : RowBox::extent(a);
      const int begin = cta.r0[a] + ((a == 0) ? wg * half : 0);
      wg_rows[a] = Range{begin, imin(begin + half, cta.rlim[a])};
      wg_rows_full = wg_rows_full && (wg_rows[a].size() == half);
    }
    // Full tiles (no mask): per axis, the column positions that pair with every row of the
    // warpgroup form one interval [full_lo, full_hi) (window starts and ends are monotone):
    // dQ: the intersection of the rows' windows, [start(last row), end(first row));
    // dK/dV: the queries whose window holds every key row, [inv(last key).begin, inv(first key).end).
    // A tile is full iff it lies inside on every axis; full_hi is clamped to the column range, so a
    // tile cut by its end never is.  Computed once: no per-tile window arithmetic.
    int full_lo[R], full_hi[R];
    {
      const bool can = (kDq || wg_rows_full) && !(hp.debug & 1);
#pragma unroll
      for (int a = 0; a < R; ++a) {
        Range f{0, 0};
        if (can && !wg_rows[a].empty()) {
          f = Range{cta.row_window(prob.axis[a], a, wg_rows[a].end - 1).begin,
                    cta.row_window(prob.axis[a], a, wg_rows[a].begin).end};
        }
        full_lo[a] = f.begin;
        full_hi[a] = imin(f.end, cr[a].end);
      }
    }
    // The warpgroup's own column range (kSkipEmpty): the union of its rows' windows.  The
    // warpgroups split the row box along axis 0 only, so on every other axis it is the CTA's
    // range, which every column tile meets: only axis 0 can make a tile empty.
    Range wg_cr0{0, 0};
    if constexpr (Traits::kSkipEmpty) {
      if (!wg_rows[0].empty()) wg_cr0 = column_range<!kDq>(prob.axis[0], wg_rows[0], cta.glen[0]);
      wg_cr0.end = imin(wg_cr0.end, cr[0].end);
    }
    const float scale_log2 = params.scale_log2;

    auto release = [&](int stage) {
      __syncwarp();
      if (ctid % 32 == 0) Barrier::arrive(bar_empty + stage);
    };

    if (n_it > 0) Barrier::wait(bar_res, 0);
    detail::ColCursor<R, ColBox> cur(cr);
    int s = 0, phase = 0;  // stage, and the parity of its current use
    auto advance = [&]() {
      cur.step(cr, group_size);
      if (++s == kStages) {
        s = 0;
        phase ^= 1;
      }
    };
    for (int it = 0; it < n_it; ++it, advance()) {
      Barrier::wait(bar_full + s, phase);
      int const (&origin)[R] = cur.origin;
      if constexpr (Traits::kSkipEmpty) {
        // Skipped only after the full wait: the empty arrival then belongs to this use of stage s.
        if (imax(origin[0], wg_cr0.begin) >= imin(origin[0] + ColBox::extent(0), wg_cr0.end)) {
          release(s);
          continue;
        }
      }

      // S = A1 B1^T, dP = A2 B2^T
      warpgroup_fence_operand(acc_s);
      warpgroup_fence_operand(acc_dp);
      warpgroup_arrive();
      mma_s.accumulate_ = GMMA::ScaleOut::Zero;
#pragma unroll
      for (int kk = 0; kk < size<2>(tSrA1); ++kk) {
        cute::gemm(mma_s, tSrA1(_, _, kk), tSrB1(_, _, kk, s), acc_s);
        mma_s.accumulate_ = GMMA::ScaleOut::One;
      }
      warpgroup_commit_batch();
      mma_s.accumulate_ = GMMA::ScaleOut::Zero;
#pragma unroll
      for (int kk = 0; kk < size<2>(tSrA2); ++kk) {
        cute::gemm(mma_s, tSrA2(_, _, kk), tSrB2(_, _, kk, s), acc_dp);
        mma_s.accumulate_ = GMMA::ScaleOut::One;
      }
      warpgroup_commit_batch();

      // Mask of this tile (unless every pair of the warpgroup's rows x the tile is a neighbor pair).
      bool full = true;
#pragma unroll
      for (int a = 0; a < R; ++a) full = full && full_lo[a] <= origin[a] && origin[a] + ColBox::extent(a) <= full_hi[a];
      detail::RowMask<ColBox, R> m[2];
#pragma unroll
      for (int v1 = 0; v1 < 2; ++v1) {
        if (full) {
          m[v1].last[0] = m[v1].last[1] = m[v1].outer = 0xffffffffu;
        } else {
          int lo[R], hi[R];
#pragma unroll
          for (int a = 0; a < R; ++a) {
            lo[a] = wbeg[v1][a] - origin[a];
            hi[a] = wend[v1][a] - origin[a];
          }
          m[v1].build(lo, hi, quad);
        }
      }
      // Column (v2, v0): last-axis offset 8 (v2 % kSlots) + 2 quad + v0, outer position v2 / kSlots.
      constexpr int kSlots = ColBox::extent(R - 1) / 8;
      const int stat0 = 2 * quad + (origin[R - 1] & 3);
      float const* col_lse2 = smem_lse + s * Traits::kStatStage + stat0;
      float const* col_delta = smem_delta + s * Traits::kStatStage + stat0;
      // Calls f(i, v1, v2, v0) on each S accumulator entry ((2,2,N/8): i = v0 + 2 v1 + 4 v2).
      auto for_each_entry = [&](auto&& f) {
#pragma unroll
        for (int v2 = 0; v2 < kBlockN / 8; ++v2)
#pragma unroll
          for (int v1 = 0; v1 < 2; ++v1)
#pragma unroll
            for (int v0 = 0; v0 < 2; ++v0) f(v0 + 2 * v1 + 4 * v2, v1, v2, v0);
      };
      // lse2 or delta of entry (v1, v2, v0): dQ: of the row (registers), dK/dV: of the column.
      auto stat = [&](float const (&row_stat)[2], float const* col_stat, int v1, int v2, int v0) {
        if constexpr (kDq) return row_stat[v1];
        else return col_stat[(v2 / kSlots) * Traits::kStatRow + 8 * (v2 % kSlots) + v0];
      };

      // P = exp2(S scale log2e - lse2) in place (masked: exactly 0).  Full tiles (all of the
      // strided anchors' tiles) take the loop without the per-element mask test.
      warpgroup_wait<1>();
      warpgroup_fence_operand(acc_s);
      auto softmax = [&](auto masked) {
        for_each_entry([&](int i, int v1, int v2, int v0) {
          const float p = exp2_approx(fmaf(acc_s(i), scale_log2, -stat(row_lse2, col_lse2, v1, v2, v0)));
          if constexpr (decltype(masked)::value) acc_s(i) = m[v1].test(v2, v0) ? p : 0.f;
          else acc_s(i) = p;
        });
      };
      if (full) softmax(std::false_type{});
      else softmax(std::true_type{});
      if constexpr (!kDq) {
        // dV += P^T dO, issued while dS is computed.
#pragma unroll
        for (int i = 0; i < kBlockN / 2; ++i) rP(i) = static_cast<Element>(acc_s(i));
        warpgroup_fence_operand(acc2);
#pragma unroll
        for (int i = 0; i < size(rP32); ++i) warpgroup_fence_operand(rP32(i));
        warpgroup_arrive();
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) cute::gemm(mma_g, tGrP(_, _, kk), tGrB2(_, _, kk, s), acc2);
        warpgroup_commit_batch();
        warpgroup_wait<1>();  // dP (committed before dV)
      } else {
        warpgroup_wait<0>();
      }
      warpgroup_fence_operand(acc_dp);
      // dS = P (dP - delta): masked entries are exactly 0 already (P = 0 and dP - delta finite: past
      // the tensors' ends dO / V / delta are TMA zero fill, and the preprocess defines the last
      // axis' pad of delta), so no second mask test.
      for_each_entry([&](int i, int v1, int v2, int v0) {
        rdS(i) = static_cast<Element>(acc_s(i) * (acc_dp(i) - stat(row_delta, col_delta, v1, v2, v0)));
      });
      // G += dS B1 (dK += dS^T Q, or dQ += dS K)
      warpgroup_fence_operand(acc1);
#pragma unroll
      for (int i = 0; i < size(rdS32); ++i) warpgroup_fence_operand(rdS32(i));
      warpgroup_arrive();
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) cute::gemm(mma_g, tGrdS(_, _, kk), tGrB1(_, _, kk, s), acc1);
      warpgroup_commit_batch();
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc1);
#pragma unroll
      for (int i = 0; i < size(rdS32); ++i) warpgroup_fence_operand(rdS32(i));
      if constexpr (!kDq) {
        warpgroup_fence_operand(acc2);
#pragma unroll
        for (int i = 0; i < size(rP32); ++i) warpgroup_fence_operand(rP32(i));
      }
      release(s);
    }

    // ---- epilogue: direct 4-byte stores of (row, 2 columns) ----
    const float scale = prob.scale;
#pragma unroll
    for (int v1 = 0; v1 < 2; ++v1) {
      int coord[R];
      if (!box_token(cta.r0, row_off[v1], cta.rlim, cta.group, prob.axis, coord)) continue;
      Element* dst1 = (kDq ? params.dq.at(b, coord, h_row) : params.dk.at(b, coord, h_row)) + 2 * quad;
#pragma unroll
      for (int v2 = 0; v2 < kHeadDim / 8; ++v2) {
        Element pair[2] = {static_cast<Element>(acc1(2 * v1 + 4 * v2) * scale),
                           static_cast<Element>(acc1(1 + 2 * v1 + 4 * v2) * scale)};
        *reinterpret_cast<uint32_t*>(dst1 + 8 * v2) = *reinterpret_cast<uint32_t const*>(pair);
      }
      if constexpr (!kDq) {
        Element* dst2 = params.dv.at(b, coord, h_row) + 2 * quad;
#pragma unroll
        for (int v2 = 0; v2 < kHeadDim / 8; ++v2) {
          Element pair[2] = {static_cast<Element>(acc2(2 * v1 + 4 * v2)), static_cast<Element>(acc2(1 + 2 * v1 + 4 * v2))};
          *reinterpret_cast<uint32_t*>(dst2 + 8 * v2) = *reinterpret_cast<uint32_t const*>(pair);
        }
      }
    }
  }
  pdl_exit();
#endif
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    fna_hopper_bwd_kernel(__grid_constant__ HopperBwdParams<Traits::kRank, typename Traits::Element> const hp) {
  hopper_bwd_cta<Traits, false>(hp, 0, 0, 0);
}

// Grouped (GroupedSchedule: x over every problem's row boxes, y the largest row head count, z
// the largest batch).  A CTA past its problem's heads or batch returns (dQ under PDL: after
// waiting for the dK/dV grid, as every dQ exit does).
template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    fna_hopper_bwd_grouped_kernel(GroupedParams<HopperBwdParams<Traits::kRank, typename Traits::Element>> const params) {
  int32_t problem, tile;
  params.schedule.locate(blockIdx.x, problem, tile);
  auto const& hp = params.problems[problem];
  auto const& p = hp.base.problem;
  if (int(blockIdx.y) >= (Traits::kDq ? p.heads : p.heads_kv) || int(blockIdx.z) >= p.batch) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
    if constexpr (Traits::kPdl) asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    return;
  }
  hopper_bwd_cta<Traits, true>(hp, tile, blockIdx.y, blockIdx.z);
}

}  // namespace hopper
}  // namespace fastna
