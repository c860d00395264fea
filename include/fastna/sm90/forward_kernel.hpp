// Fused neighborhood-attention forward kernel for sm90a: wgmma + warp specialization.
//
// One CTA = one 128-token query box (group-local coordinates of one dilation group) x head x
// batch (persistent CTAs take several such tiles), 3 warpgroups:
//   WG0   producer (forward_producer.hpp): the Q box, then every KV box the queries need
//         (per-axis key_range_for_query_tile) into a kStages-deep shared-memory ring, by TMA or
//         cp.async.  Per-stage "full" mbarriers, separate for K and V so S = Q K^T can start
//         before V has landed, complete when the bytes land (transaction count, or
//         cp.async.mbarrier.arrive); consumers fence to the async proxy after each wait (wgmma
//         reads shared memory through it; needed for the cp.async path).
//   WG1,2 consumers (forward_consumer.hpp, forward_epilogue.hpp), 64 query rows each: masked
//         online softmax between the two wgmmas, then the tile's output and logsumexp.
// setmaxnreg moves registers from the producer to the consumers (S and O accumulators).
#pragma once

#include <cutlass/arch/barrier.h>

#include <cstdint>

#include "fastna/sm90/forward_consumer.hpp"
#include "fastna/sm90/forward_params.hpp"  // HopperParams, detail::CtaBox
#include "fastna/sm90/forward_producer.hpp"
#include "fastna/sm90/forward_smem.hpp"
#include "fastna/sm90/kernel_traits.hpp"

namespace fastna {
namespace hopper {

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kCtasPerSm)
    fna_hopper_forward_kernel(__grid_constant__ HopperParams<Traits::kRank, typename Traits::Element> const hparams) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Element = typename Traits::Element;
  using Barrier = cutlass::arch::ClusterBarrier;
  constexpr int kStages = Traits::kStages;
  bool tma = false;
  if constexpr (Traits::kSignal == Signal::kTma) tma = hparams.use_tma != 0;

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem_raw + Traits::kOffBar);
  const detail::ForwardSmem<Element> smem{reinterpret_cast<Element*>(smem_raw + Traits::kOffQ),
                                          reinterpret_cast<Element*>(smem_raw + Traits::kOffK),
                                          reinterpret_cast<Element*>(smem_raw + Traits::kOffV),
                                          bars,
                                          bars + 1,
                                          bars + 1 + kStages,
                                          bars + 1 + 2 * kStages,
                                          bars + 1 + 3 * kStages};

  const int warpgroup = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    constexpr int kEmptyCount = 128 * Traits::kConsumerWarpgroups / (Traits::kSignal == Signal::kThread ? 1 : 32);
    Barrier::init(smem.bar_q, tma ? detail::QLoad<Traits>::kQThreadsTma : Traits::kProducerThreads);
    for (int s = 0; s < kStages; ++s) {
      Barrier::init(smem.bar_k + s, tma ? 1 : Traits::kProducerThreads);
      Barrier::init(smem.bar_v + s, tma ? 1 : Traits::kProducerThreads);
      Barrier::init(smem.bar_empty + s, kEmptyCount);
    }
    Barrier::init(smem.bar_q_empty, 4 * Traits::kConsumerWarpgroups);  // one arrival per consumer warp
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  if (warpgroup == 0) {
    detail::forward_producer<Traits>(hparams, smem, tma);
  } else {
    detail::forward_consumer<Traits>(hparams, smem);
  }
#endif
}

}  // namespace hopper
}  // namespace fastna
