// Device-level API of the fused forward over a packed batch of samples of different shapes and
// window parameters (sm80-class kernel), in one launch.
//
//   using Op = fastna::fused::ForwardVarlen<2, cutlass::bfloat16_t, 64>;
//   std::vector<Op::Sample> samples = ...;   // batch-1 ForwardArguments, one per sample
//   Op::Arguments args{samples.data(), int32_t(samples.size())};
//   void* ws;  cudaMalloc(&ws, Op::get_workspace_size(args));
//   if (Op::can_implement(args).is_ok()) Op::run(args, ws, stream);
//
// Each sample is a batch-1 problem of its own (shape, kernel, stride, dilation, causal, extra
// tokens none) whose q / k / v / out views and lse pointer point at its rows of the packed
// tensors; every sample has the same heads, kv heads and head dims.  The grid's x covers every
// sample's query boxes in the VarlenSchedule's order (costliest windows first), y the heads.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fastna/common/varlen_plan.hpp"
#include "fastna/sm80/forward.hpp"

namespace fastna {
namespace fused {

template <int Rank, class Element, int HeadDim, class QBox = typename DefaultBox<Rank>::type,
          class KBox = typename DefaultBox<Rank>::type>
class ForwardVarlen {
 public:
  using Dense = Forward<Rank, Element, HeadDim, QBox, KBox>;
  using Traits = typename Dense::Traits;
  using Params = ForwardParams<Rank, Element>;
  using Sample = ForwardArguments<Rank, Element>;

  struct Arguments {
    Sample const* samples = nullptr;  // host array
    int32_t count = 0;
  };

  // What a launch needs: the kernel parameter and the grid.
  struct Launch {
    VarlenParams<Params> params;
    dim3 grid;
  };

  static Verdict can_implement(Arguments const& args) {
    Verdict v = check_varlen_samples(args.samples, args.count);
    int64_t x = 0;
    for (int32_t s = 0; v.is_ok() && s < args.count; ++s) {
      v = for_sample(Dense::can_implement(args.samples[s]), s);
      x += box_grid_x<QBox>(args.samples[s].problem);
    }
    if (v.is_ok() && x > 0x7fffffff) v = Verdict::invalid("too many query tiles for one varlen grid (more than 2^31 - 1 CTAs)");
    return v;
  }

  static size_t get_workspace_size(Arguments const& args) { return varlen_tables_bytes<Params>(args.count, 1); }

  // Builds the samples' parameters and the schedule and uploads them into `workspace`
  // (get_workspace_size bytes of device memory) on `stream`.
  static cudaError_t prepare(Arguments const& args, void* workspace, cudaStream_t stream, Launch* launch) {
    std::vector<Params> params;
    std::vector<int64_t> tiles, cost;
    for (int32_t s = 0; s < args.count; ++s) {
      params.push_back(Dense::to_params(args.samples[s]));
      tiles.push_back(box_grid_x<QBox>(args.samples[s].problem));
      cost.push_back(args.samples[s].problem.window_size());
    }
    VarlenPlan<Params> plan(params, static_cast<char*>(workspace));
    int64_t grid_x = 0;
    launch->params = plan.add_schedule(tiles, cost, &grid_x);
    launch->grid = dim3(static_cast<unsigned>(grid_x), static_cast<unsigned>(args.samples[0].problem.heads), 1);
    return plan.upload(stream);
  }

  static cutlass::Status run(Arguments const& args, void* workspace, cudaStream_t stream = nullptr) {
    cutlass::Status st = can_implement(args);
    if (st != cutlass::Status::kSuccess) return st;
    if (workspace == nullptr) return cutlass::Status::kErrorWorkspaceNull;
    Launch launch;
    if (prepare(args, workspace, stream, &launch) != cudaSuccess) return cutlass::Status::kErrorInternal;
    auto kernel = fna_forward_varlen_kernel<Traits>;
    constexpr int smem = static_cast<int>(Traits::kSmemBytes);
    if (smem > 48 * 1024 && cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
      return cutlass::Status::kErrorInternal;
    kernel<<<launch.grid, Traits::kThreads, smem, stream>>>(launch.params);
    return cudaGetLastError() == cudaSuccess ? cutlass::Status::kSuccess : cutlass::Status::kErrorInternal;
  }
};

}  // namespace fused
}  // namespace fastna
