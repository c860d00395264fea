// Device-level API of the grouped small-window forward: several problems -- each its own
// shape, windows, batch, heads and tensor views, each one the small-window tile takes -- in one
// launch (docs/INTERNALS.md, "Several problems in one launch").  The key halo is copied with
// cp.async on every arch (no per-problem tensor maps).
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fastna/common/grouped_plan.hpp"
#include "fastna/small/forward.hpp"

namespace fastna {
namespace fused {

template <int Rank, class Element, int HeadDim, class Config = DefaultSmallWindow<Rank, HeadDim>>
class SmallWindowForwardGrouped {
 public:
  using Dense = SmallWindowForward<Rank, Element, HeadDim, Config, false>;
  using Traits = typename Dense::CopyTraits;
  using CtaBox = typename Dense::CtaBox;
  using Params = SmallWindowParams<Rank, Element>;
  using Problem = ForwardArguments<Rank, Element>;

  struct Arguments {
    Problem const* problems = nullptr;  // host array
    int32_t count = 0;
  };

  struct Launch {
    GroupedParams<Params> params;
    dim3 grid;
  };

  static Verdict can_implement(Arguments const& args) {
    return check_grouped(
        args.problems, args.count, [](Problem const& p) { return Dense::can_implement(p); },
        [](Problem const& p) { return box_grid_x<CtaBox>(p.problem); });
  }

  static size_t get_workspace_size(Arguments const& args) { return grouped_tables_bytes<Params>(args.count, 1); }

  static cudaError_t prepare(Arguments const& args, void* workspace, cudaStream_t stream, Launch* launch) {
    std::vector<Params> params;
    std::vector<int64_t> tiles, cost;
    int heads = 1, batch = 1;
    for (int32_t i = 0; i < args.count; ++i) {
      NaProblem<Rank> const& p = args.problems[i].problem;
      params.push_back(Dense::to_params(args.problems[i]));
      tiles.push_back(box_grid_x<CtaBox>(p));
      cost.push_back(p.window_size());
      heads = std::max(heads, p.heads);
      batch = std::max(batch, p.batch);
    }
    GroupedPlan<Params> plan(params, static_cast<char*>(workspace));
    int64_t grid_x = 0;
    launch->params = plan.add_schedule(tiles, cost, &grid_x);
    launch->grid = dim3(static_cast<unsigned>(grid_x), static_cast<unsigned>(heads), static_cast<unsigned>(batch));
    return plan.upload(stream);
  }

  static cutlass::Status run(Arguments const& args, void* workspace, cudaStream_t stream = nullptr) {
    cutlass::Status st = can_implement(args);
    if (st != cutlass::Status::kSuccess) return st;
    if (workspace == nullptr) return cutlass::Status::kErrorWorkspaceNull;
    Launch launch;
    if (prepare(args, workspace, stream, &launch) != cudaSuccess) return cutlass::Status::kErrorInternal;
    auto kernel = small_window_grouped_kernel<Traits>();
    constexpr int smem = Traits::kSmemBytes;
    if (smem > 48 * 1024 && cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
      return cutlass::Status::kErrorInternal;
    kernel<<<launch.grid, Traits::kThreads, smem, stream>>>(launch.params);
    return cudaGetLastError() == cudaSuccess ? cutlass::Status::kSuccess : cutlass::Status::kErrorInternal;
  }
};

}  // namespace fused
}  // namespace fastna
