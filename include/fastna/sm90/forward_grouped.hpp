// Device-level API of the grouped sm90a forward: several problems -- each its own shape,
// windows, batch, heads and tensor views -- in one launch (docs/INTERNALS.md, "Several problems
// in one launch").  A CTA runs one query tile of its problem (no persistence); K / V come by TMA
// where the problem's tensor maps could be made (they live in global memory: the kernel fences
// them for the tensormap proxy), else by the cp.async producer.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <cstdint>
#include <vector>

#include "fastna/common/grouped_plan.hpp"
#include "fastna/sm90/forward.hpp"

static_assert(sizeof(fastna::hopper::HopperParams<1, cutlass::half_t>) % 64 == 0,
              "a grouped launch keeps the problems' tensor maps 64-byte aligned in its parameter array");

namespace fastna {
namespace hopper {

template <int Rank, class Element, int HeadDim>
class ForwardGrouped {
 public:
  using Dense = Forward<Rank, Element, HeadDim>;
  using Traits = typename Dense::Traits;
  using Params = HopperParams<Rank, Element>;
  using Problem = fused::ForwardArguments<Rank, Element>;

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
        [](Problem const& p) { return Dense::num_tiles(p.problem); });
  }

  static size_t get_workspace_size(Arguments const& args) { return grouped_tables_bytes<Params>(args.count, 1); }

  static cudaError_t prepare(Arguments const& args, void* workspace, cudaStream_t stream, Launch* launch) {
    std::vector<Params> params;
    std::vector<int64_t> tiles, cost;
    for (int32_t i = 0; i < args.count; ++i) {
      params.push_back(Dense::to_params(args.problems[i]));
      tiles.push_back(params.back().num_tiles);
      cost.push_back(args.problems[i].problem.window_size());
    }
    GroupedPlan<Params> plan(params, static_cast<char*>(workspace));
    int64_t grid_x = 0;
    launch->params = plan.add_schedule(tiles, cost, &grid_x);
    launch->grid = dim3(static_cast<unsigned>(grid_x));
    return plan.upload(stream);
  }

  static cutlass::Status run(Arguments const& args, void* workspace, cudaStream_t stream = nullptr) {
    cutlass::Status st = can_implement(args);
    if (st != cutlass::Status::kSuccess) return st;
    if (workspace == nullptr) return cutlass::Status::kErrorWorkspaceNull;
    Launch launch;
    if (prepare(args, workspace, stream, &launch) != cudaSuccess) return cutlass::Status::kErrorInternal;
    auto kernel = fna_hopper_forward_grouped_kernel<Traits>;
    constexpr int smem = static_cast<int>(Traits::kSmemBytes);
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
      return cutlass::Status::kErrorInternal;
    kernel<<<launch.grid, Traits::kThreads, smem, stream>>>(launch.params);
    return cudaGetLastError() == cudaSuccess ? cutlass::Status::kSuccess : cutlass::Status::kErrorInternal;
  }
};

}  // namespace hopper
}  // namespace fastna
