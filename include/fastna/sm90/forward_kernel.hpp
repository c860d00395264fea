// Fused neighborhood-attention forward kernel for sm90a: wgmma + warp specialization.
//
// One CTA = one 128-token query box (group-local coordinates of one dilation group) x head x
// batch, 3 warpgroups:
//   WG0   producer: the Q box by cp.async, then every KV box the queries need (per-axis
//         key_range_for_query_tile) into a kStages-deep shared-memory ring: by TMA from one thread
//         (Signal::kTma, problems without dilation, tma.hpp), else by cp.async gathers from all
//         128 threads.  Per-stage "full" mbarriers, separate for K and V so S = Q K^T can start
//         before V has landed, complete when the bytes land (transaction count, or
//         cp.async.mbarrier.arrive); consumers fence to the async proxy after each wait (wgmma
//         reads shared memory through it; needed for the cp.async path).
//   WG1,2 consumers, 64 query rows each: S = Q K^T (wgmma SS), neighborhood mask only on KV boxes
//         not fully inside the windows of the warpgroup's own rows, online softmax in registers,
//         O += P V (wgmma RS, P from registers), then an "empty" arrival releases the stage.
// setmaxnreg moves registers from the producer to the consumers (S and O accumulators).
#pragma once

#include <cute/tensor.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/numeric_types.h>

#include <cmath>
#include <cstdint>

#include "fastna/common/device_math.hpp"
#include "fastna/common/forward_params.hpp"
#include "fastna/common/grouped_schedule.hpp"
#include "fastna/sm90/forward_params.hpp"  // HopperParams, detail::CtaBox
#include "fastna/sm90/kernel_traits.hpp"
#include "fastna/sm90/load.hpp"
#include "fastna/common/tma.hpp"
#include "fastna/sm90/mask.hpp"
#include "fastna/common/index_math.hpp"
#include "fastna/common/problem.hpp"
#include "fastna/common/warp_reduce.hpp"

namespace fastna {
namespace hopper {

// The CTA's work on the problem hparams describes.  Dense (kGrouped false): tiles blockIdx.x,
// blockIdx.x + gridDim.x, ... (persistent, or one tile per CTA).  Grouped: the one tile
// grouped_tile of a problem of a grouped launch.
template <class Traits, bool kGrouped>
__device__ __forceinline__ void hopper_forward_tiles(HopperParams<Traits::kRank, typename Traits::Element> const& hparams,
                                                     int grouped_tile) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace cute;
  using Element = typename Traits::Element;
  using QBox = typename Traits::QBox;
  using KBox = typename Traits::KBox;
  using Barrier = cutlass::arch::ClusterBarrier;
  auto const& params = hparams.base;
  bool tma = false;
  if constexpr (Traits::kSignal == Signal::kTma) tma = hparams.use_tma != 0;
  constexpr int R = Traits::kRank;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kStages = Traits::kStages;
  // With TMA K/V loads, persistent CTAs load Q with warps 1-3 of the producer (warp 0's thread 0
  // issues the TMA copies and must never wait for a Q buffer, or the ring would stall across
  // tiles).  At two CTAs per SM (head dim 32, never persistent): all 128 producer threads, thread
  // 0 before its TMA copies, row loop unrolled by 4 -- the pre-persistence code (nat's CTAs are
  // short, their Q load is on the critical path; 96 threads / no unroll measured nat 0.160 ms
  // vs 0.144 before, not A/B'd in one run).  Elsewhere the call-2-verified 96 / unroll 1 (at one
  // CTA per SM the 128-thread form made the 3D consumers spill).
  constexpr bool kQAll = !Traits::kPersistent && Traits::kCtasPerSm == 2;
  constexpr int kQThreadsTma = kQAll ? Traits::kProducerThreads : Traits::kProducerThreads - 32;
  constexpr int kQFirstTma = kQAll ? 0 : 32;            // first Q-loading producer thread
  constexpr int kLoadUnroll = kQAll ? 4 : 1;           // persistent: fewer live addresses (spills)

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  Element* smem_q = reinterpret_cast<Element*>(smem_raw + Traits::kOffQ);
  Element* smem_k = reinterpret_cast<Element*>(smem_raw + Traits::kOffK);
  Element* smem_v = reinterpret_cast<Element*>(smem_raw + Traits::kOffV);
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem_raw + Traits::kOffBar);
  uint64_t* bar_q = bars;
  uint64_t* bar_k = bars + 1;
  uint64_t* bar_v = bars + 1 + kStages;
  uint64_t* bar_empty = bars + 1 + 2 * kStages;
  uint64_t* bar_q_empty = bars + 1 + 3 * kStages;  // Q buffer free: both warpgroups' last S of a tile done

  const NaProblem<R>& prob = params.problem;
  // Tile t -> (spatial box bx, head h, batch b), spatial box fastest.
  auto tile_coords = [&](int t, int& bx, int& h, int& b) {
    bx = t % hparams.tiles_x;
    const int rest = t / hparams.tiles_x;
    h = rest % prob.heads;
    b = rest / prob.heads;
  };

  const int warpgroup = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    constexpr int kEmptyCount = 128 * Traits::kConsumerWarpgroups / (Traits::kSignal == Signal::kThread ? 1 : 32);
    Barrier::init(bar_q, tma ? kQThreadsTma : Traits::kProducerThreads);
    for (int s = 0; s < kStages; ++s) {
      Barrier::init(bar_k + s, tma ? 1 : Traits::kProducerThreads);
      Barrier::init(bar_v + s, tma ? 1 : Traits::kProducerThreads);
      Barrier::init(bar_empty + s, kEmptyCount);
    }
    Barrier::init(bar_q_empty, 4 * Traits::kConsumerWarpgroups);  // one arrival per consumer warp
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  if (warpgroup == 0) {
    // ================================ producer ================================
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    const int ptid = threadIdx.x;
    Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutK{});
    Tensor sVt = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutVt{});
    auto q_dst = [&](int r, int c) { return raw_pointer_cast(&sQ(r, c)); };
    auto commit_to = [](uint64_t* bar) {
      cutlass::arch::cpasync_barrier_arrive(bar);
      Barrier::arrive(bar);
    };
    // KV boxes are numbered across the CTA's tiles (it): ring stage it % kStages, phase (it / kStages) & 1.
    int kv_iter = 0, tile_iter = 0;
    if constexpr (kGrouped) {
      // A grouped problem's tensor maps live in global memory, written there by the host's copy:
      // the thread that issues the TMA copies acquires them for the tensormap proxy first.
      if (tma && ptid == 0) {
        asm volatile("fence.proxy.tensormap::generic.acquire.sys [%0], 128;\n" ::"l"(&hparams.tma_k) : "memory");
        asm volatile("fence.proxy.tensormap::generic.acquire.sys [%0], 128;\n" ::"l"(&hparams.tma_v) : "memory");
      }
    }
    for (int tile = kGrouped ? grouped_tile : blockIdx.x; kGrouped ? tile == grouped_tile : tile < hparams.num_tiles;
         tile += gridDim.x) {
      int bx, h, b;
      tile_coords(tile, bx, h, b);
      const detail::CtaBox<QBox, KBox, R> cta(prob, params.tiles_per_group, bx);
      if (cta.empty) continue;  // a box of a shorter dilation group: uniform over the CTA
      const int n_kv = cta.n_kv;
      const int h_kv = prob.kv_head(h);
      if (tma) {
        if (ptid >= kQFirstTma) {
          // Q of this tile once both warpgroups' last S = Q K^T of the previous tile has completed.
          if (tile_iter > 0) Barrier::wait(bar_q_empty, (tile_iter - 1) & 1);
          detail::load_box_async<Traits, QBox, kQThreadsTma, kLoadUnroll>(params.q, b, h, q_dst, cta.q0, cta.qlim,
                                                                          cta.group, prob.axis, ptid - kQFirstTma);
          commit_to(bar_q);
          if constexpr (Traits::kPrefetchQ) {
            const int next = tile + gridDim.x;
            if (!kGrouped && next < hparams.num_tiles) {
              int nbx, nh, nb;
              tile_coords(next, nbx, nh, nb);
              const detail::CtaBox<QBox, KBox, R> nc(prob, params.tiles_per_group, nbx);
              if (!nc.empty)
                detail::prefetch_box_l2<QBox, kQThreadsTma, kHeadDim>(params.q, nb, nh, nc.q0, nc.qlim, nc.group,
                                                                      prob.axis, ptid - kQFirstTma);
            }
          }
        }
        if (ptid == 0) {
          // K/V boxes by TMA from one thread; it runs ahead into the next tile as the ring allows.
          constexpr uint32_t kBytes = sizeof(Element) * Traits::kElemsKV;
          for (int j = 0; j < n_kv; ++j) {
            const int it = kv_iter + j;
            const int s = it % kStages;
            if (it >= kStages) Barrier::wait(bar_empty + s, ((it / kStages) - 1) & 1);
            int origin[R];
            cta.kv_origin(j, origin);
            int c[5] = {0, h_kv, 0, 0, 0};
#pragma unroll
            for (int a = 0; a < R; ++a) c[2 + (R - 1 - a)] = origin[a] * prob.axis[a].dilation + cta.group[a];
            if (hparams.tma_dims.batch_dim == 3) c[3] += b * hparams.tma_dims.batch_mul;
            else c[4] += b * hparams.tma_dims.batch_mul;
            cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(bar_k + s, kBytes);
            constexpr int kIn = Traits::kTmaInner;
#pragma unroll
            for (int half = 0; half < kHeadDim / kIn; ++half)
              detail::tma_load_5d(&hparams.tma_k, bar_k + s, smem_k + s * Traits::kElemsKV + half * kBlockN * kIn,
                                  kIn * half, c[1], c[2], c[3], c[4]);
            cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(bar_v + s, kBytes);
#pragma unroll
            for (int half = 0; half < kHeadDim / kIn; ++half)
              detail::tma_load_5d(&hparams.tma_v, bar_v + s, smem_v + s * Traits::kElemsKV + half * kBlockN * kIn,
                                  kIn * half, c[1], c[2], c[3], c[4]);
          }
        }
      } else {
        // cp.async from all 128 threads: Q, then the KV boxes.  Completion is tracked by the
        // mbarriers (cp.async.mbarrier.arrive holds the phase open until this thread's earlier
        // copies have landed), so the producer never waits for its own copies.
        if (tile_iter > 0) Barrier::wait(bar_q_empty, (tile_iter - 1) & 1);
        detail::load_box_async<Traits, QBox, Traits::kProducerThreads, kLoadUnroll>(params.q, b, h, q_dst, cta.q0,
                                                                                    cta.qlim, cta.group, prob.axis, ptid);
        commit_to(bar_q);
        int klim[R];
        cta.kv_limit(klim);
        for (int j = 0; j < n_kv; ++j) {
          const int it = kv_iter + j;
          const int s = it % kStages;
          if (it >= kStages) Barrier::wait(bar_empty + s, ((it / kStages) - 1) & 1);
          int origin[R];
          cta.kv_origin(j, origin);
          detail::load_box_async<Traits, KBox, Traits::kProducerThreads, kLoadUnroll>(
              params.k, b, h_kv, [&](int r, int c) { return raw_pointer_cast(&sK(r, c, s)); }, origin, klim,
              cta.group, prob.axis, ptid);
          commit_to(bar_k + s);
          detail::load_box_async<Traits, KBox, Traits::kProducerThreads, kLoadUnroll>(
              params.v, b, h_kv, [&](int r, int c) { return raw_pointer_cast(&sVt(c, r, s)); }, origin, klim,
              cta.group, prob.axis, ptid);
          commit_to(bar_v + s);
        }
      }
      kv_iter += n_kv;
      ++tile_iter;
      if constexpr (!Traits::kPersistent) break;  // one tile per CTA (grid = tiles)
    }
    // Stay until every tracked copy has landed: the CTA must not retire with copies in flight.
    cp_async_wait<0>();
  } else {
    // ================================ consumers ================================
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    const int ctid = threadIdx.x - 128;
    const int wg = ctid / 128;     // consumer warpgroup: query rows [64 wg, 64 wg + 64)
    const int quad = ctid % 4;

    typename Traits::TiledMmaQK mma_qk;
    typename Traits::TiledMmaPV mma_pv;
    auto thr_qk = mma_qk.get_thread_slice(ctid);
    auto thr_pv = mma_pv.get_thread_slice(ctid);
    Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutK{});
    Tensor sVt = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutVt{});
    Tensor tSrQ = thr_qk.partition_fragment_A(sQ);  // (MMA, M, K) descriptors
    Tensor tSrK = thr_qk.partition_fragment_B(sK);  // (MMA, N, K, stage)
    Tensor tOrV = thr_pv.partition_fragment_B(sVt); // (MMA, D, Kn, stage)
    Tensor acc_o = partition_fragment_C(mma_pv, Shape<_128, Int<kHeadDim>>{});
    static_assert(decltype(size(acc_o))::value == kHeadDim / 2, "O accumulator: ((2,2,D/8),1,1)");
    Tensor acc_s = partition_fragment_C(mma_qk, Shape<_128, Int<kBlockN>>{});
    static_assert(decltype(size(acc_s))::value == kBlockN / 2, "S accumulator: ((2,2,N/8),1,1)");
    Tensor rP = make_tensor<Element>(Layout<Shape<Int<kBlockN / 2>>>{});
    Tensor rP32 = recast<uint32_t>(rP);
    // The S accumulator ((2,2,N/8)) read as the A operand ((2,2,2), 1, N/16) of O += P V.
    Tensor tOrP = make_tensor(rP.data(), Layout<Shape<Shape<_2, _2, _2>, _1, Int<kBlockN / 16>>,
                                                Stride<Stride<_1, _2, _4>, _0, _8>>{});
    const float scale_log2 = params.scale_log2;

    auto issue_qk = [&](int s) {
      warpgroup_fence_operand(acc_s);
      warpgroup_arrive();
      mma_qk.accumulate_ = GMMA::ScaleOut::Zero;
#pragma unroll
      for (int kk = 0; kk < size<2>(tSrQ); ++kk) {
        cute::gemm(mma_qk, tSrQ(_, _, kk), tSrK(_, _, kk, s), acc_s);
        mma_qk.accumulate_ = GMMA::ScaleOut::One;
      }
      warpgroup_commit_batch();
    };
    // P stays in registers while the wgmma reads it: the operand fences keep the compiler from
    // reusing those registers before the wait.
    auto issue_pv = [&](int s) {
      warpgroup_fence_operand(acc_o);
#pragma unroll
      for (int i = 0; i < size(rP32); ++i) warpgroup_fence_operand(rP32(i));
      warpgroup_arrive();
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) cute::gemm(mma_pv, tOrP(_, _, kk), tOrV(_, _, kk, s), acc_o);
      warpgroup_commit_batch();
    };
    auto fence_pv = [&]() {
      warpgroup_fence_operand(acc_o);
#pragma unroll
      for (int i = 0; i < size(rP32); ++i) warpgroup_fence_operand(rP32(i));
    };
    auto rescale_o = [&](float const (&corr)[2]) {
#pragma unroll
      for (int v1 = 0; v1 < 2; ++v1)
#pragma unroll
        for (int v2 = 0; v2 < kHeadDim / 8; ++v2) {
          acc_o(2 * v1 + 4 * v2) *= corr[v1];
          acc_o(1 + 2 * v1 + 4 * v2) *= corr[v1];
        }
    };
    auto convert_p = [&]() {
#pragma unroll
      for (int i = 0; i < kBlockN / 2; ++i) rP(i) = static_cast<Element>(acc_s(i));
    };

    // Pingpong: warpgroup w issues its wgmmas after named barrier w completes, i.e. after the
    // other warpgroup has issued (barrier ids 0/1 after CUTLASS's reserved ones).  Each
    // warpgroup has n_kv + 1 issue points per tile; warpgroup 1 opens the first turn of
    // warpgroup 0 and skips its own last hand-over, so every barrier sees matching arrivals.
    constexpr bool kPingpong = Traits::kSchedule == Schedule::kPingpong;
    auto take_turn = [&]() {
      if constexpr (kPingpong) cutlass::arch::NamedBarrier::sync(256, wg);
    };
    auto pass_turn = [&](bool last) {
      if constexpr (kPingpong)
        if (!(last && wg == 1)) cutlass::arch::NamedBarrier::arrive(256, 1 - wg);
    };
    auto release = [&](int stage) {
      if constexpr (Traits::kSignal == Signal::kThread) {
        Barrier::arrive(bar_empty + stage);
      } else {
        __syncwarp();
        if (ctid % 32 == 0) Barrier::arrive(bar_empty + stage);
      }
    };
    // The tile's last S = Q K^T of this warpgroup has completed: the producer may load the next Q.
    auto release_q = [&]() {
      __syncwarp();
      if (ctid % 32 == 0) Barrier::arrive(bar_q_empty);
    };
    // Data written by cp.async (generic proxy) is read by wgmma (async proxy): fence after each
    // wait on a full barrier.
    auto wait_full = [](uint64_t* bar, int phase) {
      Barrier::wait(bar, phase);
      cutlass::arch::fence_view_async_shared();
    };

    int kv_iter = 0, tile_iter = 0;
    for (int tile = kGrouped ? grouped_tile : blockIdx.x; kGrouped ? tile == grouped_tile : tile < hparams.num_tiles;
         tile += gridDim.x) {
      const detail::CtaBox<QBox, KBox, R> cta(prob, params.tiles_per_group, tile % hparams.tiles_x);
      if (cta.empty) continue;  // a box of a shorter dilation group: uniform over the CTA
      const int n_kv = cta.n_kv;
      // KV box j of this tile: ring stage and phase.
      auto stage_of = [&](int j) { return (kv_iter + j) % kStages; };
      auto phase_of = [&](int j) { return ((kv_iter + j) / kStages) & 1; };

      // This thread's two query rows (row slot v1 = 0, 1) and their windows.
      int wbeg[2][R], wend[2][R], row_off[2][R];
#pragma unroll
      for (int v1 = 0; v1 < 2; ++v1) {
        const int row = 64 * wg + 16 * ((ctid % 128) / 32) + (ctid % 32) / 4 + 8 * v1;
        QBox::unflatten(row, row_off[v1]);
#pragma unroll
        for (int a = 0; a < R; ++a) {
          const Range w = detail::window_fast(prob.axis[a], cta.q0[a] + row_off[v1][a], cta.glen[a]);
          wbeg[v1][a] = w.begin;
          wend[v1][a] = w.end;
        }
      }
      // The warpgroup's rows are a box: the first axis halves.
      Range wg_rows[R];
#pragma unroll
      for (int a = 0; a < R; ++a) {
        const int half = (a == 0) ? QBox::extent(0) / 2 : QBox::extent(a);
        const int begin = cta.q0[a] + ((a == 0) ? wg * half : 0);
        wg_rows[a] = Range{begin, imin(begin + half, cta.qlim[a])};
      }
      int klim[R];
      cta.kv_limit(klim);
      // Per axis, the keys inside every window of the warpgroup's rows ([start of the last row's
      // window, end of the first row's): tile_fully_inside, hoisted out of the box loop) and the end
      // of the CTA's box grid.  A box needs no mask when it lies inside on every axis and is not
      // clipped by the key range.  Small-window CTAs run few, cheap boxes, so per-box integer work
      // (divisions in window_local / kv_origin) is a large share of their instructions.
      int in_lo[R], in_hi[R], kend[R];
#pragma unroll
      for (int a = 0; a < R; ++a) {
        if (wg_rows[a].empty()) {
          in_lo[a] = INT32_MIN / 2;
          in_hi[a] = klim[a];
        } else {
          in_lo[a] = detail::window_fast(prob.axis[a], wg_rows[a].end - 1, cta.glen[a]).begin;
          in_hi[a] = imin(detail::window_fast(prob.axis[a], wg_rows[a].begin, cta.glen[a]).end, klim[a]);
        }
        kend[a] = cta.krange[a].begin + cta.n_ktiles[a] * KBox::extent(a);
      }
      // Origin of the next KV box in the CTA's order (last axis fastest), without divisions.
      auto next_origin = [&](int (&o)[R]) {
#pragma unroll
        for (int a = R - 1; a >= 0; --a) {
          o[a] += KBox::extent(a);
          if (a == 0 || o[a] < kend[a]) break;
          o[a] = cta.krange[a].begin;
        }
      };
      // KV boxes this warpgroup's rows see: the CTA's boxes are ordered with axis 0 outermost and
      // the warpgroups split the query box along axis 0 (same extents on the other axes), so they
      // are one contiguous run [j_first, j_last] -- those whose axis-0 tile meets the key range of
      // the warpgroup's own rows.  The others are only waited for and released (drain): with
      // small windows (nat: 8x8 boxes over a 22x14 halo) each warpgroup skips a third of them.
      // Pingpong needs both warpgroups to take the same number of turns: no skipping there.
      int j_first = 0, j_last = n_kv - 1;
      if constexpr (Traits::kSchedule != Schedule::kPingpong) {
        const Range kr = detail::key_range_fast(prob.axis[0], wg_rows[0], cta.glen[0]);
        if (kr.empty() || n_kv == 0) {
          j_first = n_kv;
          j_last = n_kv - 1;
        } else {
          const int inner = n_kv / cta.n_ktiles[0];
          const int t_lo = imax((kr.begin - cta.krange[0].begin) / KBox::extent(0), 0);
          const int t_hi = imin((kr.end - 1 - cta.krange[0].begin) / KBox::extent(0), cta.n_ktiles[0] - 1);
          j_first = t_lo * inner;
          j_last = (t_hi + 1) * inner - 1;
        }
      }

      float row_max[2] = {-INFINITY, -INFINITY};
      float row_sum[2] = {0.f, 0.f};
      clear(acc_o);

      // Mask KV box j (unless fully inside every window of this warpgroup's rows), update the running
      // max, turn acc_s into unnormalized probabilities (fp32, in place) and return the factor that
      // rescales the earlier O and row sums.
      auto softmax = [&](int const (&origin)[R], float (&corr)[2]) {
        bool full = true;
#pragma unroll
        for (int a = 0; a < R; ++a)
          full = full && (in_lo[a] <= origin[a]) && (origin[a] + KBox::extent(a) <= in_hi[a]);
        if (!full) {
#pragma unroll
          for (int v1 = 0; v1 < 2; ++v1) {
            int lo[R], hi[R];
#pragma unroll
            for (int a = 0; a < R; ++a) {
              lo[a] = wbeg[v1][a] - origin[a];
              hi[a] = wend[v1][a] - origin[a];
            }
            detail::RowMask<KBox, R> m;
            m.build(lo, hi, quad);
#pragma unroll
            for (int v2 = 0; v2 < kBlockN / 8; ++v2)
#pragma unroll
              for (int v0 = 0; v0 < 2; ++v0)
                if (!m.test(v2, v0)) acc_s(v0 + 2 * v1 + 4 * v2) = -INFINITY;
          }
        }
        float mxs[2];
#pragma unroll
        for (int v1 = 0; v1 < 2; ++v1) {
          float mx = row_max[v1];
#pragma unroll
          for (int v2 = 0; v2 < kBlockN / 8; ++v2) {
            mx = fmaxf(mx, acc_s(2 * v1 + 4 * v2));
            mx = fmaxf(mx, acc_s(1 + 2 * v1 + 4 * v2));
          }
          mxs[v1] = fused::detail::quad_max(mx);
        }
#pragma unroll
        for (int v1 = 0; v1 < 2; ++v1) {
          const float mx = mxs[v1];
          // Rows without any key so far keep m = -inf: use 0 as the exponent offset (p = 0, no NaN).
          const float mscaled = (mx == -INFINITY) ? 0.f : mx * scale_log2;
          corr[v1] = exp2_approx(row_max[v1] * scale_log2 - mscaled);
          row_max[v1] = mx;
          float sum = 0.f;
#pragma unroll
          for (int v2 = 0; v2 < kBlockN / 8; ++v2)
#pragma unroll
            for (int v0 = 0; v0 < 2; ++v0) {
              const int i = v0 + 2 * v1 + 4 * v2;
              acc_s(i) = exp2_approx(fmaf(acc_s(i), scale_log2, -mscaled));
              sum += acc_s(i);
            }
          row_sum[v1] = row_sum[v1] * corr[v1] + sum;
        }
      };

      // A box this warpgroup does not need: wait until it has landed (so that a later wait on the
      // same stage sees the right phase) and release it.
      auto drain = [&](int j) {
        const int s = stage_of(j), ph = phase_of(j);
        Barrier::wait(bar_k + s, ph);
        Barrier::wait(bar_v + s, ph);
        release(s);
      };

      if constexpr (kPingpong)
        if (wg == 1 && n_kv > 0) cutlass::arch::NamedBarrier::arrive(256, 0);
      wait_full(bar_q, tile_iter & 1);
      if (j_first > j_last) release_q();
      for (int j = 0; j < j_first; ++j) drain(j);
      if constexpr (Traits::kSchedule != Schedule::kSerial) {
        // Software pipeline: S_j = Q K_j^T and O += P_{j-1} V_{j-1} are in flight together; the
        // softmax of S_j runs while the tensor cores finish P_{j-1} V_{j-1}.
        if (j_first <= j_last) {
          float corr[2];
          int org[R];
          cta.kv_origin(j_first, org);
          wait_full(bar_k + stage_of(j_first), phase_of(j_first));
          take_turn();
          issue_qk(stage_of(j_first));
          pass_turn(false);
          warpgroup_wait<0>();
          warpgroup_fence_operand(acc_s);
          if (j_first == j_last) release_q();
          softmax(org, corr);
          convert_p();
          for (int j = j_first + 1; j <= j_last; ++j) {
            const int s = stage_of(j), sp = stage_of(j - 1);
            next_origin(org);
            wait_full(bar_k + s, phase_of(j));
            wait_full(bar_v + sp, phase_of(j - 1));
            take_turn();
            issue_qk(s);
            issue_pv(sp);
            pass_turn(false);
            warpgroup_wait<1>();
            warpgroup_fence_operand(acc_s);
            if (j == j_last) release_q();
            softmax(org, corr);
            warpgroup_wait<0>();
            fence_pv();
            release(sp);
            rescale_o(corr);
            convert_p();
          }
          const int sl = stage_of(j_last);
          wait_full(bar_v + sl, phase_of(j_last));
          take_turn();
          issue_pv(sl);
          pass_turn(true);
          warpgroup_wait<0>();
          fence_pv();
          release(sl);
        }
      } else {
        int org[R];
        cta.kv_origin(j_first, org);
        for (int j = j_first; j <= j_last; ++j) {
          const int s = stage_of(j);
          const int phase = phase_of(j);
          float corr[2];
          if (j > j_first) next_origin(org);
          wait_full(bar_k + s, phase);
          issue_qk(s);
          warpgroup_wait<0>();
          warpgroup_fence_operand(acc_s);
          if (j == j_last) release_q();
          softmax(org, corr);
          rescale_o(corr);
          convert_p();
          wait_full(bar_v + s, phase);
          issue_pv(s);
          warpgroup_wait<0>();
          fence_pv();
          release(s);
        }
      }

      // ---- epilogue: normalize, lse, direct 4-byte stores of (row, 2 columns) ----
      int bx, h, b;  // head and batch decoded here, not kept live through the box loop
      tile_coords(tile, bx, h, b);
      const float scale = prob.scale;
      const int64_t n_tokens = prob.num_tokens();
#pragma unroll
      for (int v1 = 0; v1 < 2; ++v1) {
        const float l = fused::detail::quad_sum(row_sum[v1]);
        const float inv = l > 0.f ? 1.f / l : 0.f;
        bool valid = true;
        int coord[R];
#pragma unroll
        for (int a = 0; a < R; ++a) {
          const int loc = cta.q0[a] + row_off[v1][a];
          valid = valid && (loc < cta.qlim[a]);
          coord[a] = loc * prob.axis[a].dilation + cta.group[a];
        }
        if (!valid) continue;
        Element* dst = params.out.at(b, coord, h) + 2 * quad;
#pragma unroll
        for (int v2 = 0; v2 < kHeadDim / 8; ++v2) {
          Element pair[2] = {static_cast<Element>(acc_o(2 * v1 + 4 * v2) * inv),
                             static_cast<Element>(acc_o(1 + 2 * v1 + 4 * v2) * inv)};
          *reinterpret_cast<uint32_t*>(dst + 8 * v2) = *reinterpret_cast<uint32_t const*>(pair);
        }
        if (params.lse != nullptr && quad == 0) {
          const float lse = (l > 0.f) ? row_max[v1] * scale + logf(l) : -INFINITY;
          params.lse[(int64_t(b) * n_tokens + flatten(coord, prob.axis)) * prob.heads + h] = lse;
        }
      }
      // Boxes past this warpgroup's run: released after the stores (the producer and the other
      // warpgroup may still need them; the CTA must not retire with copies in flight).
      for (int j = j_last + 1; j < n_kv; ++j) drain(j);
      kv_iter += n_kv;
      ++tile_iter;
      if constexpr (!Traits::kPersistent) break;  // one tile per CTA (grid = tiles)
    }
  }
#endif
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kCtasPerSm)
    fna_hopper_forward_kernel(__grid_constant__ HopperParams<Traits::kRank, typename Traits::Element> const hparams) {
  hopper_forward_tiles<Traits, false>(hparams, 0);
}

// Several problems in one grid (GroupedSchedule over each problem's tiles: a CTA runs one tile
// of its problem).  The problems' parameters, tensor maps included, live in global memory.
template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kCtasPerSm)
    fna_hopper_forward_grouped_kernel(GroupedParams<HopperParams<Traits::kRank, typename Traits::Element>> const params) {
  int32_t problem, tile;
  params.schedule.locate(blockIdx.x, problem, tile);
  hopper_forward_tiles<Traits, true>(params.problems[problem], tile);
}

}  // namespace hopper
}  // namespace fastna
