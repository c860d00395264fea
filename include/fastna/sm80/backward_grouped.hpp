// Device-level API of the grouped fused backward (sm80-class kernels): several problems -- each
// its own shape, windows, batch, heads and tensor views -- in three launches, as the dense
// Backward (delta preprocess, dK/dV, dQ), whatever the number of problems.
//
// Each problem is a BackwardArguments the dense Backward takes (lse: its own fp32 [B, N, H]
// rows, contiguous).  The workspace holds the tables and every problem's fp32 delta rows.
// Problems must not share dk / dv rows (each writes its dK / dV completely); a caller whose
// problems read the same key/value heads gives each its own dk / dv and sums them.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fastna/common/grouped_plan.hpp"
#include "fastna/sm80/backward.hpp"

namespace fastna {
namespace fused {

template <int Rank, class Element, int HeadDim, class QBox = typename DefaultBox<Rank>::type,
          class KBox = typename DefaultBox<Rank>::type>
class BackwardGrouped {
 public:
  using Dense = Backward<Rank, Element, HeadDim, QBox, KBox>;
  using DqTraits = typename Dense::DqTraits;
  using DkvTraits = typename Dense::DkvTraits;
  using Params = BackwardParams<Rank, Element>;
  using Problem = BackwardArguments<Rank, Element>;

  static constexpr int kPreprocessThreads = 128;
  static constexpr int kPreprocessRows = kPreprocessThreads / 32;  // a warp a row

  struct Arguments {
    Problem const* problems = nullptr;  // host array
    int32_t count = 0;
  };

  struct Launch {
    GroupedParams<Params> preprocess, dkdv, dq;
    dim3 preprocess_grid, dkdv_grid, dq_grid;
  };

  static Verdict can_implement(Arguments const& args) {
    Verdict v = check_grouped(
        args.problems, args.count, [](Problem const& p) { return Dense::can_implement(p); },
        [](Problem const& p) { return box_grid_x<QBox>(p.problem) + box_grid_x<KBox>(p.problem); });
    if (v.is_ok()) {
      int64_t blocks = 0;
      for (int32_t i = 0; i < args.count; ++i) blocks += preprocess_blocks(args.problems[i].problem);
      if (blocks > 0x7fffffff) v = Verdict::invalid("too many (batch, token, head) rows for one grouped preprocess grid");
    }
    return v;
  }

  // The tables, then each problem's delta rows (fp32 [B, N, H], 16-byte aligned).
  static size_t get_workspace_size(Arguments const& args) {
    size_t bytes = grouped_tables_bytes<Params>(args.count, 3);
    for (int32_t i = 0; i < args.count; ++i) bytes += delta_bytes(args.problems[i].problem);
    return bytes;
  }

  static cudaError_t prepare(Arguments const& args, void* workspace, cudaStream_t stream, Launch* launch) {
    char* ws = static_cast<char*>(workspace);
    size_t delta_at = grouped_tables_bytes<Params>(args.count, 3);
    std::vector<Params> params;
    std::vector<int64_t> rows, q_tiles, kv_tiles, cost, flat_cost;
    int heads = 1, heads_kv = 1, batch = 1;
    for (int32_t i = 0; i < args.count; ++i) {
      NaProblem<Rank> const& p = args.problems[i].problem;
      params.push_back(Dense::to_params(args.problems[i], ws + delta_at));
      delta_at += delta_bytes(p);
      rows.push_back(preprocess_blocks(p));
      q_tiles.push_back(box_grid_x<QBox>(p));
      kv_tiles.push_back(box_grid_x<KBox>(p));
      cost.push_back(p.window_size());
      flat_cost.push_back(1);
      heads = std::max(heads, p.heads);
      heads_kv = std::max(heads_kv, p.heads_kv);
      batch = std::max(batch, p.batch);
    }
    GroupedPlan<Params> plan(params, ws);
    int64_t xpre = 0, xkv = 0, xq = 0;
    launch->preprocess = plan.add_schedule(rows, flat_cost, &xpre);
    launch->dkdv = plan.add_schedule(kv_tiles, cost, &xkv);
    launch->dq = plan.add_schedule(q_tiles, cost, &xq);
    launch->preprocess_grid = dim3(static_cast<unsigned>(xpre));
    launch->dkdv_grid = dim3(static_cast<unsigned>(xkv), static_cast<unsigned>(heads_kv), static_cast<unsigned>(batch));
    launch->dq_grid = dim3(static_cast<unsigned>(xq), static_cast<unsigned>(heads), static_cast<unsigned>(batch));
    return plan.upload(stream);
  }

  static cutlass::Status run(Arguments const& args, void* workspace, cudaStream_t stream = nullptr) {
    cutlass::Status st = can_implement(args);
    if (st != cutlass::Status::kSuccess) return st;
    if (workspace == nullptr) return cutlass::Status::kErrorWorkspaceNull;
    Launch launch;
    if (prepare(args, workspace, stream, &launch) != cudaSuccess) return cutlass::Status::kErrorInternal;
    fna_bwd_preprocess_grouped_kernel<Rank, Element, HeadDim>
        <<<launch.preprocess_grid, kPreprocessThreads, 0, stream>>>(launch.preprocess);
    {
      auto kernel = fna_bwd_dkdv_grouped_kernel<DkvTraits>;
      constexpr int smem = static_cast<int>(Dense::kSmemDkv);
      if (smem > 48 * 1024 &&
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return cutlass::Status::kErrorInternal;
      kernel<<<launch.dkdv_grid, DkvTraits::kThreads, smem, stream>>>(launch.dkdv);
    }
    {
      auto kernel = fna_bwd_dq_grouped_kernel<DqTraits>;
      constexpr int smem = static_cast<int>(Dense::kSmemDq);
      if (smem > 48 * 1024 &&
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return cutlass::Status::kErrorInternal;
      kernel<<<launch.dq_grid, DqTraits::kThreads, smem, stream>>>(launch.dq);
    }
    return cudaGetLastError() == cudaSuccess ? cutlass::Status::kSuccess : cutlass::Status::kErrorInternal;
  }

  static int64_t preprocess_blocks(NaProblem<Rank> const& p) {
    return (int64_t(p.batch) * p.num_tokens() * p.heads + kPreprocessRows - 1) / kPreprocessRows;
  }

 private:
  static size_t delta_bytes(NaProblem<Rank> const& p) {
    return grouped_align(sizeof(float) * size_t(p.batch) * size_t(p.num_tokens()) * size_t(p.heads));
  }
};

}  // namespace fused
}  // namespace fastna
