// Device-level API of the fused backward over a packed batch of samples of different shapes and
// window parameters (sm80-class kernels): three launches for the whole batch, as the dense
// Backward (delta preprocess over the packed rows, dK/dV, dQ).
//
// Each sample is a batch-1 BackwardArguments whose views and lse / dlse pointers point at its
// rows of the packed tensors, token_offset[s] its first row; `packed` describes the packed out,
// dout, lse and dlse as one batch-1 1D problem of total_tokens rows (the preprocess reads them
// row by row, whatever sample a row belongs to).  The workspace holds the tables and the fp32
// delta [total_tokens, H].
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <cstdint>
#include <vector>

#include "fastna/common/varlen_plan.hpp"
#include "fastna/sm80/backward.hpp"

namespace fastna {
namespace fused {

// The packed rows the delta preprocess reads: out and dout [total, H, Dv] (token and head
// strides in elements), lse and the optional dlse fp32 contiguous [total, H].
template <class Element>
struct PackedRows {
  Element const* out = nullptr;
  Element const* dout = nullptr;
  int64_t stride_token = 0, stride_head = 0;  // shared by out and dout
  float const* lse = nullptr;
  float const* dlse = nullptr;
  int64_t total_tokens = 0;
};

template <int Rank, class Element, int HeadDim, class QBox = typename DefaultBox<Rank>::type,
          class KBox = typename DefaultBox<Rank>::type>
class BackwardVarlen {
 public:
  using Dense = Backward<Rank, Element, HeadDim, QBox, KBox>;
  using DqTraits = typename Dense::DqTraits;
  using DkvTraits = typename Dense::DkvTraits;
  using Params = BackwardParams<Rank, Element>;
  using Sample = BackwardArguments<Rank, Element>;

  struct Arguments {
    Sample const* samples = nullptr;        // host array
    int64_t const* token_offset = nullptr;  // host array: each sample's first packed row
    int32_t count = 0;
    PackedRows<Element> packed;
  };

  struct Launch {
    Params preprocess;  // the packed rows as one flat problem
    int64_t preprocess_blocks = 0;
    VarlenParams<Params> dkdv, dq;
    dim3 dkdv_grid, dq_grid;
  };

  static Verdict can_implement(Arguments const& args) {
    Verdict v = check_varlen_samples(args.samples, args.count);
    if (v.is_ok() && args.token_offset == nullptr) v = Verdict::invalid("varlen backward needs token_offset");
    if (v.is_ok() && (args.packed.total_tokens <= 0 || args.packed.total_tokens > 0x7fffffff))
      v = Verdict::invalid("varlen backward: total_tokens " + std::to_string(args.packed.total_tokens) +
                           " out of range [1, 2^31 - 1]");
    if (v.is_ok() && (args.packed.out == nullptr || args.packed.dout == nullptr || args.packed.lse == nullptr))
      v = Verdict::invalid("varlen backward needs the packed out, dout and lse");
    int64_t xq = 0, xkv = 0;
    for (int32_t s = 0; v.is_ok() && s < args.count; ++s) {
      v = for_sample(Dense::can_implement(args.samples[s]), s);
      const int64_t n = args.samples[s].problem.num_tokens();
      if (v.is_ok() && (args.token_offset[s] < 0 || args.token_offset[s] + n > args.packed.total_tokens))
        v = Verdict::invalid("varlen sample " + std::to_string(s) + " rows leave the packed tensors");
      xq += box_grid_x<QBox>(args.samples[s].problem);
      xkv += box_grid_x<KBox>(args.samples[s].problem);
    }
    if (v.is_ok() && (xq > 0x7fffffff || xkv > 0x7fffffff))
      v = Verdict::invalid("too many tiles for one varlen grid (more than 2^31 - 1 CTAs)");
    if (v.is_ok() && (args.packed.total_tokens * args.samples[0].problem.heads + 3) / 4 > 0x7fffffff)
      v = Verdict::invalid("too many (token, head) rows for the delta preprocess grid");
    return v;
  }

  static size_t delta_offset(Arguments const& args) { return varlen_tables_bytes<Params>(args.count, 2); }

  static size_t get_workspace_size(Arguments const& args) {
    return delta_offset(args) +
           sizeof(float) * size_t(args.packed.total_tokens) * size_t(args.samples[0].problem.heads);
  }

  static cudaError_t prepare(Arguments const& args, void* workspace, cudaStream_t stream, Launch* launch) {
    char* ws = static_cast<char*>(workspace);
    float* delta = reinterpret_cast<float*>(ws + delta_offset(args));
    const int heads = args.samples[0].problem.heads;
    std::vector<Params> params;
    std::vector<int64_t> q_tiles, kv_tiles, cost;
    for (int32_t s = 0; s < args.count; ++s) {
      params.push_back(Dense::to_params(args.samples[s], delta + args.token_offset[s] * heads));
      q_tiles.push_back(box_grid_x<QBox>(args.samples[s].problem));
      kv_tiles.push_back(box_grid_x<KBox>(args.samples[s].problem));
      cost.push_back(args.samples[s].problem.window_size());
    }
    VarlenPlan<Params> plan(params, ws);
    int64_t xkv = 0, xq = 0;
    launch->dkdv = plan.add_schedule(kv_tiles, cost, &xkv);
    launch->dq = plan.add_schedule(q_tiles, cost, &xq);
    launch->dkdv_grid = dim3(static_cast<unsigned>(xkv), static_cast<unsigned>(args.samples[0].problem.heads_kv), 1);
    launch->dq_grid = dim3(static_cast<unsigned>(xq), static_cast<unsigned>(heads), 1);
    launch->preprocess = flat_preprocess_params(args, delta);
    launch->preprocess_blocks = (args.packed.total_tokens * heads + 3) / 4;
    return plan.upload(stream);
  }

  static cutlass::Status run(Arguments const& args, void* workspace, cudaStream_t stream = nullptr) {
    cutlass::Status st = can_implement(args);
    if (st != cutlass::Status::kSuccess) return st;
    if (workspace == nullptr) return cutlass::Status::kErrorWorkspaceNull;
    Launch launch;
    if (prepare(args, workspace, stream, &launch) != cudaSuccess) return cutlass::Status::kErrorInternal;
    fna_bwd_preprocess_kernel<Rank, Element, HeadDim>
        <<<static_cast<unsigned>(launch.preprocess_blocks), 128, 0, stream>>>(launch.preprocess);
    {
      auto kernel = fna_bwd_dkdv_varlen_kernel<DkvTraits>;
      constexpr int smem = static_cast<int>(Dense::kSmemDkv);
      if (smem > 48 * 1024 &&
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return cutlass::Status::kErrorInternal;
      kernel<<<launch.dkdv_grid, DkvTraits::kThreads, smem, stream>>>(launch.dkdv);
    }
    {
      auto kernel = fna_bwd_dq_varlen_kernel<DqTraits>;
      constexpr int smem = static_cast<int>(Dense::kSmemDq);
      if (smem > 48 * 1024 &&
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return cutlass::Status::kErrorInternal;
      kernel<<<launch.dq_grid, DqTraits::kThreads, smem, stream>>>(launch.dq);
    }
    return cudaGetLastError() == cudaSuccess ? cutlass::Status::kSuccess : cutlass::Status::kErrorInternal;
  }

 private:
  // The preprocess reads only the problem's batch / heads / token count, out, dout, lse, dlse
  // and delta: the packed rows as a batch-1 problem of total_tokens rows along axis 0.
  static Params flat_preprocess_params(Arguments const& args, float* delta) {
    Params p{};
    p.problem = args.samples[0].problem;
    p.problem.batch = 1;
    for (int a = 0; a < Rank; ++a) p.problem.axis[a].length = 1;
    p.problem.axis[0].length = static_cast<int32_t>(args.packed.total_tokens);
    auto flat = [&](Element const* ptr) {
      TokenTensor<Element const, Rank> t;
      t.ptr = ptr;
      t.stride_spatial[0] = args.packed.stride_token;
      t.stride_head = args.packed.stride_head;
      return t;
    };
    p.out = flat(args.packed.out);
    p.dout = flat(args.packed.dout);
    p.lse = args.packed.lse;
    p.dlse = args.packed.dlse;
    p.delta = delta;
    return p;
  }
};

}  // namespace fused
}  // namespace fastna
