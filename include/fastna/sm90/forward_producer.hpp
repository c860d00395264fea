// The producer warpgroup of the sm90a forward (forward_kernel.hpp): per query tile, the Q box by
// cp.async, then every KV box the queries need into the kStages-deep ring -- by TMA from one
// thread (Signal::kTma, problems without dilation), else by cp.async gathers from all 128
// threads.  Completion is signalled on the per-stage "full" mbarriers; a stage is reused once
// both consumer warpgroups released it (bar_empty).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include <cstdint>

#include "fastna/common/problem.hpp"
#include "fastna/common/tma.hpp"
#include "fastna/sm90/forward_params.hpp"
#include "fastna/sm90/forward_smem.hpp"
#include "fastna/sm90/kernel_traits.hpp"
#include "fastna/sm90/load.hpp"

namespace fastna {
namespace hopper {
namespace detail {

// Which producer threads load Q.
template <class Traits>
struct QLoad {
  // With TMA K/V loads, persistent CTAs load Q with warps 1-3 of the producer (warp 0's thread 0
  // issues the TMA copies and must never wait for a Q buffer, or the ring would stall across
  // tiles).  At two CTAs per SM (head dim 32, never persistent): all 128 producer threads, thread
  // 0 before its TMA copies, row loop unrolled by 4 -- the pre-persistence code (nat's CTAs are
  // short, their Q load is on the critical path; 96 threads / no unroll measured nat 0.160 ms
  // vs 0.144 before, not A/B'd in one run).  Elsewhere the call-2-verified 96 / unroll 1 (at one
  // CTA per SM the 128-thread form made the 3D consumers spill).
  static constexpr bool kQAll = !Traits::kPersistent && Traits::kCtasPerSm == 2;
  static constexpr int kQThreadsTma = kQAll ? Traits::kProducerThreads : Traits::kProducerThreads - 32;
  static constexpr int kQFirstTma = kQAll ? 0 : 32;            // first Q-loading producer thread
  static constexpr int kLoadUnroll = kQAll ? 4 : 1;           // persistent: fewer live addresses (spills)
};

template <class Traits>
__device__ __forceinline__ void forward_producer(HopperParams<Traits::kRank, typename Traits::Element> const& hparams,
                                                 ForwardSmem<typename Traits::Element> const& smem, bool tma) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace cute;
  using Element = typename Traits::Element;
  using QBox = typename Traits::QBox;
  using KBox = typename Traits::KBox;
  using Barrier = cutlass::arch::ClusterBarrier;
  auto const& params = hparams.base;
  constexpr int R = Traits::kRank;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kStages = Traits::kStages;
  Element* smem_q = smem.q;
  Element* smem_k = smem.k;
  Element* smem_v = smem.v;
  uint64_t* bar_q = smem.bar_q;
  uint64_t* bar_k = smem.bar_k;
  uint64_t* bar_v = smem.bar_v;
  uint64_t* bar_empty = smem.bar_empty;
  uint64_t* bar_q_empty = smem.bar_q_empty;
  const NaProblem<R>& prob = params.problem;
  auto tile_coords = [&](int t, int& bx, int& h, int& b) { detail::tile_coords(hparams.tiles_x, prob.heads, t, bx, h, b); };
  constexpr int kQThreadsTma = QLoad<Traits>::kQThreadsTma;
  constexpr int kQFirstTma = QLoad<Traits>::kQFirstTma;
  constexpr int kLoadUnroll = QLoad<Traits>::kLoadUnroll;
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
  for (int tile = blockIdx.x; tile < hparams.num_tiles; tile += gridDim.x) {
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
          if (next < hparams.num_tiles) {
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
#endif
}

}  // namespace detail
}  // namespace hopper
}  // namespace fastna
