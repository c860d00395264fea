// Device-level API of the small-window fused forward (sm80-class kernel, fp16 / bf16).
//
//   using Op = fastna::fused::SmallWindowForward<2, cutlass::bfloat16_t, 32>;
//   Op::Arguments args{problem, q, k, v, out, lse};
//   if (Op::can_implement(args) == cutlass::Status::kSuccess) Op::run(args, stream);
//
// can_implement() says kErrorNotSupported when a warp's key halo may outgrow the register tile
// (Slots; small_window_shape.hpp has the bound).  Use the general fused::Forward (or the Hopper one) then.
// Same semantics and arguments as fused::Forward (docs/SEMANTICS.md sections 1-5).
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "fastna/small/kernel.hpp"
#include "fastna/common/tma.hpp"
#include "fastna/common/forward_params.hpp"
#include "fastna/common/problem_checks.hpp"
#include "fastna/small/traits.hpp"
#include "fastna/common/problem.hpp"

namespace fastna {
namespace fused {

// Tma: also compile the sm90 TMA halo-copy kernel (head dims 32 / 64; the binding's sm90a
// instances) and launch it when to_params could make both tensor maps, else the cp.async one.
template <int Rank, class Element, int HeadDim, class Config = DefaultSmallWindow<Rank, HeadDim>, bool Tma = false>
class SmallWindowForward {
 public:
  using Traits = SmallWindowTraits<Rank, Element, HeadDim, typename Config::Patch, typename Config::Slots,
                                   typename Config::WarpGrid, Config::kMinCtasPerSm, Config::kPatchesPerWarp, Tma>;
  using Params = SmallWindowParams<Rank, Element>;
  // The cp.async kernel's traits (the fallback where no tensor map describes the views).
  using CopyTraits = SmallWindowTraits<Rank, Element, HeadDim, typename Config::Patch, typename Config::Slots,
                                       typename Config::WarpGrid, Config::kMinCtasPerSm, Config::kPatchesPerWarp, false>;
  // The CTA's query tile as a box (grid and tile counts).
  using CtaBox = Box<Rank, Traits::tile(0), (Rank > 1 ? Traits::tile(1) : 1), (Rank > 2 ? Traits::tile(2) : 1)>;

  using Arguments = ForwardArguments<Rank, Element>;

  // Whether every warp's halo fits the key slots (shape.hpp).
  static bool fits(NaProblem<Rank> const& p) {
    for (int a = 0; a < Rank; ++a) {
      if (small_window_halo_bound(p.axis[a], Traits::Patch::extent(a)) > Traits::Slots::extent(a)) return false;
    }
    return true;
  }

  static Verdict can_implement_problem(NaProblem<Rank> const& p) {
    Verdict v = check_forward_problem<HeadDim, CtaBox>(p);
    if (v.is_ok() && !fits(p)) {
      std::string window, slots;
      for (int a = 0; a < Rank; ++a) {
        window += (a ? "x" : "") + std::to_string(p.axis[a].kernel);
        slots += (a ? "x" : "") + std::to_string(int(Traits::Slots::extent(a)));
      }
      v = Verdict::unsupported("window " + window + " (with its stride and causal mask) does not fit the small-window "
                               "tile: a warp's key halo outgrows its " + slots + " key slots");
    }
    return v;
  }

  // K and V are copied in 16-byte rows (cp.async); Q and out are read / written 4 bytes at a time
  // but checked alike.
  static Verdict can_implement(Arguments const& args) {
    Verdict v = can_implement_problem(args.problem);
    if (v.is_ok()) v = check_forward_tensors(args);
    return v;
  }

  static size_t get_workspace_size(Arguments const&) { return 0; }

  static Params to_params(Arguments const& args) {
    Params params;
    params.fwd = ForwardParams<Rank, Element>::template from_arguments<CtaBox>(args);
    params.use_tma = 0;
    if constexpr (Traits::kTma) {
      using HaloBox = Box<Rank, Traits::halo_cap(0), (Rank > 1 ? Traits::halo_cap(1) : 1), (Rank > 2 ? Traits::halo_cap(2) : 1)>;
      hopper::TmaDims dims;
      const bool ok =
          hopper::make_kv_tensor_map<Element, Rank, HaloBox, HeadDim>(args.k, args.problem, args.problem.heads_kv,
                                                                      HeadDim, &params.tma_k, &dims) &&
          hopper::make_kv_tensor_map<Element, Rank, HaloBox, HeadDim>(args.v, args.problem, args.problem.heads_kv,
                                                                      HeadDim, &params.tma_v, &dims);
      params.use_tma = ok ? 1 : 0;
    }
    return params;
  }

  static dim3 grid_shape(Arguments const& args) {
    return dim3(static_cast<unsigned>(box_grid_x<CtaBox>(args.problem)), static_cast<unsigned>(args.problem.heads),
                static_cast<unsigned>(args.problem.batch));
  }

  static cutlass::Status run(Arguments const& args, cudaStream_t stream = nullptr, void* workspace = nullptr) {
    (void)workspace;
    cutlass::Status st = can_implement(args);
    if (st != cutlass::Status::kSuccess) return st;
    const Params params = to_params(args);
    return params.use_tma ? launch<Traits>(args, params, stream) : launch<CopyTraits>(args, params, stream);
  }

  // One launch of small_window_kernel<KernelTraits>() (Traits or CopyTraits, or the binding's
  // internal-linkage subclasses of them).
  template <class KernelTraits>
  static cutlass::Status launch(Arguments const& args, Params const& params, cudaStream_t stream) {
    auto kernel = small_window_kernel<KernelTraits>();
    constexpr int smem = KernelTraits::kSmemBytes;
    if (smem > 48 * 1024) {
      if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return cutlass::Status::kErrorInternal;
    }
    kernel<<<grid_shape(args), KernelTraits::kThreads, smem, stream>>>(params);
    return cudaGetLastError() == cudaSuccess ? cutlass::Status::kSuccess : cutlass::Status::kErrorInternal;
  }

};

}  // namespace fused
}  // namespace fastna
