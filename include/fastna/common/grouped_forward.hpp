// The device-level grouped forward op every family shares (sm80, small-window, sm90a): several
// problems -- each its own shape, windows, batch, heads and tensor views -- in one launch
// (docs/INTERNALS.md, "Several problems in one launch").
//
// Family supplies what differs: the dense op whose CTA body the grouped kernel runs (Dense:
// can_implement, to_params), its kernel parameters (Params), the tiles of a problem (tiles),
// whether the grid spans heads and batch in y / z (kHeadsInGrid; else the tiles count them), the
// grouped kernel's traits (Traits) and the kernel itself (kernel<Traits>()).
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fastna/common/forward_params.hpp"
#include "fastna/common/grouped_plan.hpp"

namespace fastna {

template <class Family>
class GroupedForward {
 public:
  using Dense = typename Family::Dense;
  using Traits = typename Family::Traits;
  using Params = typename Family::Params;
  using Problem = typename Dense::Arguments;

  struct Arguments {
    Problem const* problems = nullptr;  // host array
    int32_t count = 0;
  };

  // What a launch needs: the kernel parameter and the grid.
  struct Launch {
    GroupedParams<Params> params;
    dim3 grid;
  };

  static Verdict can_implement(Arguments const& args) {
    return check_grouped(
        args.problems, args.count, [](Problem const& p) { return Dense::can_implement(p); },
        [](Problem const& p) { return Family::tiles(p.problem); });
  }

  static size_t get_workspace_size(Arguments const& args) { return grouped_tables_bytes<Params>(args.count, 1); }

  // Builds the problems' parameters and the schedule (costliest windows first) and uploads them
  // into `workspace` (get_workspace_size bytes of device memory) on `stream`.
  static cudaError_t prepare(Arguments const& args, void* workspace, cudaStream_t stream, Launch* launch) {
    std::vector<Params> params;
    std::vector<int64_t> tiles, cost;
    int heads = 1, batch = 1;
    for (int32_t i = 0; i < args.count; ++i) {
      auto const& p = args.problems[i].problem;
      params.push_back(Dense::to_params(args.problems[i]));
      tiles.push_back(Family::tiles(p));
      cost.push_back(p.window_size());
      heads = std::max(heads, int(p.heads));
      batch = std::max(batch, int(p.batch));
    }
    GroupedPlan<Params> plan(params, static_cast<char*>(workspace));
    int64_t grid_x = 0;
    launch->params = plan.add_schedule(tiles, cost, &grid_x);
    launch->grid = Family::kHeadsInGrid
                       ? dim3(static_cast<unsigned>(grid_x), static_cast<unsigned>(heads), static_cast<unsigned>(batch))
                       : dim3(static_cast<unsigned>(grid_x));
    return plan.upload(stream);
  }

  // The grouped kernel for KernelTraits: Traits, or a binding's internal-linkage subclass of it.
  template <class KernelTraits = Traits>
  static auto kernel() {
    return Family::template kernel<KernelTraits>();
  }

  template <class KernelTraits = Traits>
  static cutlass::Status run(Arguments const& args, void* workspace, cudaStream_t stream = nullptr) {
    cutlass::Status st = can_implement(args);
    if (st != cutlass::Status::kSuccess) return st;
    if (workspace == nullptr) return cutlass::Status::kErrorWorkspaceNull;
    Launch launch;
    if (prepare(args, workspace, stream, &launch) != cudaSuccess) return cutlass::Status::kErrorInternal;
    auto kernel = GroupedForward::kernel<KernelTraits>();
    constexpr int smem = static_cast<int>(KernelTraits::kSmemBytes);
    if (smem > 48 * 1024 && cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
      return cutlass::Status::kErrorInternal;
    kernel<<<launch.grid, KernelTraits::kThreads, smem, stream>>>(launch.params);
    return cudaGetLastError() == cudaSuccess ? cutlass::Status::kSuccess : cutlass::Status::kErrorInternal;
  }
};

}  // namespace fastna
