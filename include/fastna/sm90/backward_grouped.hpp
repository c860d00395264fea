// The grouped sm90a backward: several problems -- each its own shape, windows, batch, heads and
// tensor views -- in three launches (delta preprocess, dK/dV, dQ) whatever their number
// (docs/INTERNALS.md, "Several problems in one launch").  Every problem must be one the dense
// hopper::Backward takes with its tensor maps (no dilation, TMA-describable views): the launch
// glue runs the sm80 grouped backward otherwise.
//
// Workspace: the dK/dV parameters of every problem, then the dQ ones (they hold six tensor maps
// each: the kernels fence them), the three schedules, then each problem's lse2 / delta rows.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fastna/common/grouped_plan.hpp"
#include "fastna/sm90/backward.hpp"

namespace fastna {
namespace hopper {

static_assert(sizeof(HopperBwdParams<1, cutlass::half_t>) % 64 == 0 && sizeof(HopperBwdParams<3, cutlass::half_t>) % 64 == 0,
              "a grouped launch keeps the problems' tensor maps 64-byte aligned in its parameter array");

template <int Rank, class Element, int HeadDim>
class BackwardGrouped {
 public:
  using Dense = Backward<Rank, Element, HeadDim>;
  using DkvTraits = typename Dense::DkvTraits;
  using DqTraits = typename Dense::DqTraits;
  using Params = HopperBwdParams<Rank, Element>;
  using Problem = fused::BackwardArguments<Rank, Element>;
  using Pre = BwdPreprocessShape<HeadDim>;

  struct Arguments {
    Problem const* problems = nullptr;  // host array
    int32_t count = 0;
  };

  struct Launch {
    GroupedParams<Params> preprocess, dkdv, dq;
    dim3 preprocess_grid, dkdv_grid, dq_grid;
  };

  // Every problem as the dense op sees it (tensor maps included).
  static Verdict can_implement(Arguments const& args) {
    return check_grouped(
        args.problems, args.count, [](Problem const& p) { return Dense::can_implement(p); },
        [](Problem const& p) { return 2 * box_grid_x<typename DkvTraits::RowBox>(p.problem); });
  }

  // 2 * count parameters (dK/dV, then dQ) and three schedules (GroupedPlan's layout).
  static size_t tables_bytes(int32_t count) { return grouped_tables_bytes<Params>(2 * count, 3); }

  static size_t get_workspace_size(Arguments const& args) {
    size_t bytes = tables_bytes(args.count);
    for (int32_t i = 0; i < args.count; ++i) bytes += grouped_align(Dense::get_workspace_size(args.problems[i]));
    return bytes;
  }

  // false where a problem's tensor maps cannot be made (the caller runs the sm80 backward);
  // *upload: the copy's status.
  static bool prepare(Arguments const& args, void* workspace, cudaStream_t stream, Launch* launch,
                      cudaError_t* upload) {
    char* ws = static_cast<char*>(workspace);
    size_t rows_at = tables_bytes(args.count);
    std::vector<Params> params(2 * size_t(args.count));
    std::vector<int64_t> pre_blocks, dkv_tiles, dq_tiles, cost, flat;
    int heads = 1, heads_kv = 1, batch = 1;
    for (int32_t i = 0; i < args.count; ++i) {
      Problem const& a = args.problems[i];
      if (!Dense::to_params(a, ws + rows_at, &params[i], &params[args.count + i])) return false;
      rows_at += grouped_align(Dense::get_workspace_size(a));
      NaProblem<Rank> const& p = a.problem;
      pre_blocks.push_back(Pre::blocks(int64_t(p.batch) * p.num_tokens() * p.heads));
      dkv_tiles.push_back(box_grid_x<typename DkvTraits::RowBox>(p));
      dq_tiles.push_back(box_grid_x<typename DqTraits::RowBox>(p));
      cost.push_back(p.window_size());
      flat.push_back(1);
      heads = std::max(heads, int(p.heads));
      heads_kv = std::max(heads_kv, int(p.heads_kv));
      batch = std::max(batch, int(p.batch));
    }
    GroupedPlan<Params> plan(params, ws);
    int64_t xpre = 0, xkv = 0, xq = 0;
    launch->preprocess = plan.add_schedule(pre_blocks, flat, &xpre);  // dK/dV params: lse2 / delta rows
    launch->dkdv = plan.add_schedule(dkv_tiles, cost, &xkv);
    launch->dq = plan.add_schedule(dq_tiles, cost, &xq);
    launch->dq.problems += args.count;  // the dQ parameters follow the dK/dV ones
    launch->preprocess_grid = dim3(static_cast<unsigned>(xpre));
    launch->dkdv_grid = dim3(static_cast<unsigned>(xkv), static_cast<unsigned>(heads_kv), static_cast<unsigned>(batch));
    launch->dq_grid = dim3(static_cast<unsigned>(xq), static_cast<unsigned>(heads), static_cast<unsigned>(batch));
    *upload = plan.upload(stream);
    return true;
  }

  // The three launches with the given (possibly internal-linkage) traits and preprocess tag.
  template <class DkvT = DkvTraits, class DqT = DqTraits, class Tag = void>
  static cudaError_t launch(Launch const& l, cudaStream_t stream) {
    fna_hopper_bwd_preprocess_grouped_kernel<Rank, Element, HeadDim, Tag>
        <<<l.preprocess_grid, Pre::kThreads, 0, stream>>>(l.preprocess);
    cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess)
      err = launch_backward_kernel<DkvT>(fna_hopper_bwd_grouped_kernel<DkvT>, l.dkdv_grid, l.dkdv, stream);
    if (err == cudaSuccess)
      err = launch_backward_kernel<DqT>(fna_hopper_bwd_grouped_kernel<DqT>, l.dq_grid, l.dq, stream);
    return err;
  }

  static cutlass::Status run(Arguments const& args, void* workspace, cudaStream_t stream = nullptr) {
    cutlass::Status st = can_implement(args);
    if (st != cutlass::Status::kSuccess) return st;
    if (workspace == nullptr) return cutlass::Status::kErrorWorkspaceNull;
    Launch l;
    cudaError_t upload = cudaSuccess;
    if (!prepare(args, workspace, stream, &l, &upload)) return cutlass::Status::kErrorNotSupported;
    if (upload != cudaSuccess || launch(l, stream) != cudaSuccess) return cutlass::Status::kErrorInternal;
    return cutlass::Status::kSuccess;
  }
};

}  // namespace hopper
}  // namespace fastna
