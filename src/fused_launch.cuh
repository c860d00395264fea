// Glue between LaunchParams and fastna::fused::Forward / Backward, included by exactly one
// generated TU per instance (cmake/templates/fused_fwd.cu.in, fused_bwd.cu.in).
//
// The kernels are launched here rather than through Forward::run / Backward::run so that their
// template arguments are types with internal linkage (LocalTraits / LocalTag, anonymous
// namespace): the same fna_forward_kernel<Traits> (or fna_bwd_*_kernel) compiled for several
// archs (sm80 and sm90a TUs) would otherwise be one weak symbol across TUs, and the CUDA runtime
// could register the wrong arch's cubin for it.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <stdexcept>
#include <string>

#include "fastna/sm80/backward.hpp"
#include "fastna/sm80/forward.hpp"
#include "fastna/small/forward.hpp"
#include "launch_views.hpp"

namespace fastna {
namespace binding {
namespace {

template <class Base>
struct LocalTraits : Base {};

struct LocalTag {};

inline void check_launch(const char* what, const char* name) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("fastna: fused: ") + what + " of " + name + " failed: " +
                             cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
  }
}

template <class Kernel>
void set_smem(Kernel kernel, int smem, const char* name) {
  if (smem <= 48 * 1024) return;
  const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("fastna: fused: cannot set ") + std::to_string(smem) +
                             " bytes of shared memory for " + name + ": " + cudaGetErrorString(err));
  }
}

// The last guard before a launch (module.cpp names the failing condition before dispatching):
// std::invalid_argument (ValueError in Python) naming the instance and the status.
inline void require_implementable(cutlass::Status st, const char* name, const char* why = "") {
  if (st != cutlass::Status::kSuccess) {
    throw std::invalid_argument(std::string("fastna: fused: ") + name + " cannot run this problem: " +
                                cutlassGetStatusString(st) + why);
  }
}

// Forward Arguments (fused::Forward's, shared by hopper::Forward) from the binding's params.
template <class Arguments, int Rank, class Element>
Arguments forward_arguments(const LaunchParams& lp) {
  Arguments args;
  args.problem = problem_of<Rank>(lp);
  args.q = token_view<Element const, Rank>(lp.q);
  args.k = token_view<Element const, Rank>(lp.k);
  args.v = token_view<Element const, Rank>(lp.v);
  args.out = token_view<Element, Rank>(lp.out);
  args.lse = reinterpret_cast<float*>(lp.lse.ptr);
  return args;
}

// Backward Arguments (fused::Backward's, shared by hopper::Backward) from the binding's params.
template <class Arguments, int Rank, class Element>
Arguments backward_arguments(const LaunchParams& lp) {
  Arguments args;
  args.problem = problem_of<Rank>(lp);
  args.q = token_view<Element const, Rank>(lp.q);
  args.k = token_view<Element const, Rank>(lp.k);
  args.v = token_view<Element const, Rank>(lp.v);
  args.out = token_view<Element const, Rank>(lp.out);
  args.dout = token_view<Element const, Rank>(lp.dout);
  args.lse = reinterpret_cast<float const*>(lp.lse.ptr);
  args.dlse = reinterpret_cast<float const*>(lp.dlse.ptr);
  args.dq = token_view<Element, Rank>(lp.dq);
  args.dk = token_view<Element, Rank>(lp.dk);
  args.dv = token_view<Element, Rank>(lp.dv);
  return args;
}

template <int Rank, class Element, int HeadDim, class QBox, class KBox, int Warps = 0, int Stages = 2>
void run_fused_forward(const LaunchParams& lp, const char* name) {
  using Op = fused::Forward<Rank, Element, HeadDim, QBox, KBox, Warps, Stages>;
  using Traits = LocalTraits<typename Op::Traits>;
  const auto args = forward_arguments<typename Op::Arguments, Rank, Element>(lp);
  require_implementable(Op::can_implement(args), name);
  auto kernel = fused::fna_forward_kernel<Traits>;
  constexpr int smem = static_cast<int>(Traits::kSmemBytes);
  set_smem(kernel, smem, name);
  kernel<<<Op::grid_shape(args), Traits::kThreads, smem, reinterpret_cast<cudaStream_t>(lp.stream)>>>(
      Op::to_params(args));
  check_launch("launch", name);
}

// The small-window forward (fused_fwd tile "small"); module.cpp sends only problems that fit.
// Tma: the sm90a instances copy the CTA's key halo with TMA where the tensor maps can be made
// (SmallWindowForward::run picks the kernel the same way).
template <int Rank, class Element, int HeadDim, bool Tma>
void run_small_window_forward(const LaunchParams& lp, const char* name) {
  using Op = fused::SmallWindowForward<Rank, Element, HeadDim, fused::DefaultSmallWindow<Rank, HeadDim>, Tma>;
  const auto args = forward_arguments<typename Op::Arguments, Rank, Element>(lp);
  const cutlass::Status st = Op::can_implement(args);
  require_implementable(st, name, st == cutlass::Status::kErrorNotSupported ? " (window too large for the small-window tile)" : "");
  const typename Op::Params params = Op::to_params(args);
  auto launch = [&](auto kernel, int threads, int smem) {
    set_smem(kernel, smem, name);
    kernel<<<Op::grid_shape(args), threads, smem, reinterpret_cast<cudaStream_t>(lp.stream)>>>(params);
  };
  if (params.use_tma) {
    using Traits = LocalTraits<typename Op::Traits>;
    launch(fused::small_window_kernel<Traits>(), Traits::kThreads, Traits::kSmemBytes);
  } else {
    using Traits = LocalTraits<typename Op::CopyTraits>;
    launch(fused::small_window_kernel<Traits>(), Traits::kThreads, Traits::kSmemBytes);
  }
  check_launch("launch", name);
}

// The fused backward: Backward::run's three launches (delta preprocess, dK/dV, dQ), with
// internal-linkage template arguments.  lp.workspace (fp32 [B, N, H]) holds delta; when absent
// it is allocated with cudaMallocAsync on the stream and freed after the launches.
template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_fused_backward(const LaunchParams& lp, const char* name) {
  using Op = fused::Backward<Rank, Element, HeadDim, QBox, KBox>;
  using DqTraits = LocalTraits<typename Op::DqTraits>;
  using DkvTraits = LocalTraits<typename Op::DkvTraits>;
  const auto args = backward_arguments<typename Op::Arguments, Rank, Element>(lp);
  require_implementable(Op::can_implement(args), name);
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  void* workspace = reinterpret_cast<void*>(lp.workspace.ptr);
  const bool own_workspace = workspace == nullptr;
  if (own_workspace) {
    const cudaError_t err = cudaMallocAsync(&workspace, Op::get_workspace_size(args), stream);
    if (err != cudaSuccess) {
      throw std::runtime_error(std::string("fastna: fused: cannot allocate the backward workspace (") +
                               std::to_string(Op::get_workspace_size(args)) + " bytes) for " + name + ": " +
                               cudaGetErrorString(err));
    }
  }
  const typename Op::Params params = Op::to_params(args, workspace);
  NaProblem<Rank> const& p = args.problem;
  auto release = [&]() {
    if (own_workspace) cudaFreeAsync(workspace, stream);
  };
  try {
    const int64_t rows = int64_t(p.batch) * p.num_tokens() * p.heads;
    fused::fna_bwd_preprocess_kernel<Rank, Element, HeadDim, LocalTag>
        <<<static_cast<unsigned>((rows + 3) / 4), 128, 0, stream>>>(params);
    check_launch("delta preprocess", name);

    const int64_t xq = box_grid_x<QBox>(p), xkv = box_grid_x<KBox>(p);
    {
      auto kernel = fused::fna_bwd_dkdv_kernel<DkvTraits>;
      constexpr int smem = static_cast<int>(Op::kSmemDkv);
      set_smem(kernel, smem, name);
      kernel<<<dim3(static_cast<unsigned>(xkv), static_cast<unsigned>(p.heads_kv), static_cast<unsigned>(p.batch)),
               DkvTraits::kThreads, smem, stream>>>(params);
      check_launch("dK/dV launch", name);
    }
    {
      auto kernel = fused::fna_bwd_dq_kernel<DqTraits>;
      constexpr int smem = static_cast<int>(Op::kSmemDq);
      set_smem(kernel, smem, name);
      kernel<<<dim3(static_cast<unsigned>(xq), static_cast<unsigned>(p.heads), static_cast<unsigned>(p.batch)),
               DqTraits::kThreads, smem, stream>>>(params);
      check_launch("dQ launch", name);
    }
  } catch (...) {
    release();
    throw;
  }
  release();
}

}  // namespace
}  // namespace binding
}  // namespace fastna
