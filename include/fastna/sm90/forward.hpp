// Device-level API of the sm90a (Hopper) fused neighborhood-attention forward pass.
//
//   using Op = fastna::hopper::Forward<2, cutlass::bfloat16_t, 128>;
//   Op::Arguments args{problem, q, k, v, out, lse};
//   if (Op::can_implement(args) == cutlass::Status::kSuccess) Op::run(args, stream);
//
// Same semantics, Arguments and restrictions as fastna::fused::Forward (docs/SEMANTICS.md sections 1-5;
// heads-last strided views, contiguous head dim, 16-byte aligned rows, Dv == D, no extra KV
// tokens, lse natural log fp32 [B, N, H]).  Needs an sm_90a build and a compute-capability 9.0
// device: can_implement returns kErrorArchMismatch elsewhere.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cutlass/cutlass.h>

#include "fastna/common/forward_params.hpp"  // Arguments, checks and parameters shared with the sm80 op
#include "fastna/common/problem_checks.hpp"
#include "fastna/sm90/forward_kernel.hpp"
#include "fastna/sm90/kernel_traits.hpp"
#include "fastna/common/problem.hpp"

namespace fastna {
namespace hopper {

template <int Rank, class Element, int HeadDim, class QBox = typename DefaultQBox<Rank>::type,
          class KBox = typename DefaultKBox<Rank, HeadDim>::type,
          int Stages = DefaultStages<HeadDim, KBox::kSize>::value, Schedule Sched = DefaultSchedule<HeadDim>::value,
          Signal Sig = Signal::kTma, int CtasPerSm = 0, int Persistent = -1, bool AutoPingpong = true,
          bool PrefetchQ = true>
class Forward {
 public:
  using Traits =
      ForwardTraits<Rank, Element, HeadDim, QBox, KBox, Stages, Sched, Sig, CtasPerSm, Persistent, PrefetchQ>;
  // The same kernel with the pingpong schedule (the two consumer warpgroups take turns issuing
  // their wgmmas).  run() takes it where use_pingpong says so.
  using TraitsPingpong = ForwardTraits<Rank, Element, HeadDim, QBox, KBox, Stages, Schedule::kPingpong, Sig,
                                       CtasPerSm, Persistent, PrefetchQ>;
  using Params = fused::ForwardParams<Rank, Element>;
  using Arguments = fused::ForwardArguments<Rank, Element>;

  // The sm80 op's conditions for this query box, on a compute capability 9.0 device, with a tile
  // count that fits the kernel's int tile index.
  static Verdict can_implement_problem(NaProblem<Rank> const& p) {
    Verdict v = fused::check_forward_problem<HeadDim, QBox>(p);
    if (v.is_ok()) v = check_device_is(9, 0, "the sm90a forward");
    if (v.is_ok() && num_tiles(p) > INT32_MAX) v = Verdict::invalid("more than 2^31 - 1 query tiles");
    return v;
  }

  static Verdict can_implement(Arguments const& args) {
    Verdict v = can_implement_problem(args.problem);
    if (v.is_ok()) v = fused::check_forward_tensors(args);
    return v;
  }

  static size_t get_workspace_size(Arguments const&) { return 0; }

  // Pingpong instead of overlap (AutoPingpong, 1D, overlap schedule, head dim 128 -- the one
  // measured): where both consumer warpgroups of an interior query tile need the same KV boxes
  // (large windows: 1d, 1d-strided, dense), so that pingpong's lack of per-warpgroup box skipping
  // costs nothing; at least 4 boxes.  H100: 1-3% faster there (docs/PERFORMANCE.md section 11.2); small 1D
  // windows keep the skipping.
  static constexpr bool kMayPingpong = AutoPingpong && Rank == 1 && HeadDim == 128 && Sched == Schedule::kOverlap;
  static bool use_pingpong(Arguments const& args) {
    if constexpr (!kMayPingpong) {
      return false;
    } else {
      AxisParams const& ax = args.problem.axis[0];
      const int glen = (ax.length + ax.dilation - 1) / ax.dilation;  // group 0: the longest
      constexpr int kM = QBox::extent(0), kN = KBox::extent(0);
      const int q0 = (glen / kM / 2) * kM;  // an interior tile
      if (q0 + kM > glen) return false;
      const int kb = window_local(ax, q0, glen).begin;
      const int n_kv = (window_local(ax, q0 + kM - 1, glen).end - kb + kN - 1) / kN;
      if (n_kv < 4) return false;
      int lo[2], hi[2];
      for (int wg = 0; wg < 2; ++wg) {
        const int r0 = q0 + wg * kM / 2, r1 = r0 + kM / 2 - 1;
        lo[wg] = std::max((window_local(ax, r0, glen).begin - kb) / kN, 0);
        hi[wg] = std::min((window_local(ax, r1, glen).end - 1 - kb) / kN, n_kv - 1);
      }
      return lo[0] == lo[1] && hi[0] == hi[1];
    }
  }

  // Query tiles (spatial boxes x heads x batch): the sm80 op's grid, flattened.
  static int64_t num_tiles(NaProblem<Rank> const& p) {
    const dim3 g = fused::forward_grid_shape<QBox>(p);
    return int64_t(g.x) * g.y * g.z;
  }
  static int64_t num_tiles(Arguments const& args) { return num_tiles(args.problem); }

  // 1-D grid.  Persistent (Traits::kPersistent): at most as many CTAs as fit the device at once
  // (kCtasPerSm per SM); each loops over tiles blockIdx.x + k * gridDim.x, and its producer loads
  // the next tile's Q and first KV boxes while the consumers finish the previous one.  Otherwise
  // one tile per CTA (the kernel's tile loop runs once).
  // max_ctas > 0 caps the persistent grid further (tests: many tiles per CTA on small problems).
  static dim3 grid_shape(Arguments const& args, int max_ctas = 0) {
    const int64_t tiles = num_tiles(args);
    int64_t ctas = tiles;
    if constexpr (Traits::kPersistent) {
      int dev = 0, sms = 0;
      if (cudaGetDevice(&dev) == cudaSuccess &&
          cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && sms > 0) {
        const int64_t wave = int64_t(sms) * Traits::kCtasPerSm;
        // Many waves: the per-CTA prologue is a small share and dynamic CTA order balances
        // uneven tiles better (one tile per CTA; the kernel's loop runs once).
        if (tiles <= Traits::kPersistentMaxWaves * wave) ctas = std::min<int64_t>(tiles, wave);
      }
      if (max_ctas > 0) ctas = std::min<int64_t>(ctas, max_ctas);
    }
    return dim3(static_cast<unsigned>(std::max<int64_t>(ctas, 1)));
  }

  static cutlass::Status run(Arguments const& args, cudaStream_t stream = nullptr, void* workspace = nullptr,
                             int max_ctas = 0) {
    (void)workspace;
    cutlass::Status st = can_implement(args);
    if (st != cutlass::Status::kSuccess) return st;
    static_assert(TraitsPingpong::kSmemBytes == Traits::kSmemBytes, "same shared memory");
    auto kernel = fna_hopper_forward_kernel<Traits>;
    if constexpr (kMayPingpong)
      if (use_pingpong(args)) kernel = fna_hopper_forward_kernel<TraitsPingpong>;
    constexpr int smem = static_cast<int>(Traits::kSmemBytes);
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
      return cutlass::Status::kErrorInternal;
    kernel<<<grid_shape(args, max_ctas), Traits::kThreads, smem, stream>>>(to_params(args));
    return cudaGetLastError() == cudaSuccess ? cutlass::Status::kSuccess : cutlass::Status::kErrorInternal;
  }

  // Kernel parameters: the sm80 op's, plus the K/V tensor maps when TMA can load this layout
  // (use_tma false selects the kernel's cp.async producer).  Host-side; encodes the maps.
  static HopperParams<Rank, Element> to_params(Arguments const& args) {
    HopperParams<Rank, Element> params{};
    params.base = Params::template from_arguments<QBox>(args);
    params.tiles_x = static_cast<int>(fused::forward_grid_shape<QBox>(args.problem).x);
    params.num_tiles = static_cast<int>(num_tiles(args));
    if constexpr (Traits::kSignal == Signal::kTma) {
      TmaDims dv;
      params.use_tma = make_kv_tensor_map<Element, Rank, KBox, Traits::kTmaInner>(args.k, args.problem, args.problem.heads_kv, HeadDim,
                                                                                  &params.tma_k, &params.tma_dims) &&
                       make_kv_tensor_map<Element, Rank, KBox, Traits::kTmaInner>(args.v, args.problem, args.problem.heads_kv, HeadDim,
                                                                                  &params.tma_v, &dv) &&
                       dv.batch_dim == params.tma_dims.batch_dim && dv.batch_mul == params.tma_dims.batch_mul;
    }
    return params;
  }
};

}  // namespace hopper
}  // namespace fastna
