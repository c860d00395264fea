// Arguments, checks and kernel parameters of the fused backward ops (sm80 and sm90 families),
// and the delta preprocess's row reduction both families run.
#pragma once

#include <cstdint>

#include "fastna/common/box_tile.hpp"  // tiles_per_group
#include "fastna/common/problem.hpp"
#include "fastna/common/problem_checks.hpp"

namespace fastna {
namespace fused {

template <int Rank, class Element>
struct BackwardParams {
  NaProblem<Rank> problem;
  TokenTensor<Element const, Rank> q, k, v, out, dout;
  TokenTensor<Element, Rank> dq, dk, dv;
  float const* lse = nullptr;        // fp32 [B, N, H], natural log (forward's output)
  float const* dlse = nullptr;       // optional fp32 [B, N, H]: gradient flowing into lse (null = 0)
  float* delta = nullptr;            // fp32 [B, N, H] workspace: rowsum(dO * O) - dlse
  int32_t q_tiles_per_group[Rank];   // dQ grid: ceil(ceil(L/d) / query box extent)
  int32_t kv_tiles_per_group[Rank];  // dK/dV grid: ceil(ceil(L/d) / KV box extent)
  float scale_log2;                  // scale * log2(e)
};

// A backward op's arguments: the forward's inputs, out and lse, dout; dq, dk, dv like q, k, v.
template <int Rank, class Element>
struct BackwardArguments {
  NaProblem<Rank> problem;
  TokenTensor<Element const, Rank> q;
  TokenTensor<Element const, Rank> k;
  TokenTensor<Element const, Rank> v;
  TokenTensor<Element const, Rank> out;
  TokenTensor<Element const, Rank> dout;
  float const* lse = nullptr;  // fp32 contiguous [B, N, H]
  TokenTensor<Element, Rank> dq;
  TokenTensor<Element, Rank> dk;
  TokenTensor<Element, Rank> dv;
  // Optional fp32 contiguous [B, N, H]: the gradient flowing into lse (nullptr = zero).
  float const* dlse = nullptr;
};

// The problem part of a fused backward's can_implement: the fused problem checks, grids of
// QBox (dQ) and KBox (dK/dV) tiles and of the delta preprocess (4 rows a CTA) that fit.
template <int HeadDim, class QBox, class KBox, int Rank>
Verdict check_backward_problem(NaProblem<Rank> const& p) {
  Verdict v = check_fused_problem<HeadDim>(p);
  if (v.is_ok()) v = check_grid_x<QBox>(p);
  if (v.is_ok()) v = check_grid_x<KBox>(p);
  if (v.is_ok() && (int64_t(p.batch) * p.num_tokens() * p.heads + 3) / 4 > 0x7fffffff)
    v = Verdict::invalid("too many (batch, token, head) rows for the delta preprocess grid");
  return v;
}

// The tensor part: lse present, 16-byte rows of every token tensor.
template <int Rank, class Element>
Verdict check_backward_tensors(BackwardArguments<Rank, Element> const& args) {
  if (args.lse == nullptr) return Verdict::invalid("lse is required by the backward");
  Verdict v = check_rows_16b(args.q, "q");
  if (v.is_ok()) v = check_rows_16b(args.k, "k");
  if (v.is_ok()) v = check_rows_16b(args.v, "v");
  if (v.is_ok()) v = check_rows_16b(args.out, "out");
  if (v.is_ok()) v = check_rows_16b(args.dout, "dout");
  if (v.is_ok()) v = check_rows_16b(args.dq, "dq");
  if (v.is_ok()) v = check_rows_16b(args.dk, "dk");
  if (v.is_ok()) v = check_rows_16b(args.dv, "dv");
  return v;
}

// Kernel parameters for query tiles QBox and key tiles KBox; workspace: fp32 [B, N, H] delta.
template <class QBox, class KBox, int Rank, class Element>
BackwardParams<Rank, Element> backward_params(BackwardArguments<Rank, Element> const& args, void* workspace) {
  BackwardParams<Rank, Element> params;
  params.problem = args.problem;
  params.q = args.q;
  params.k = args.k;
  params.v = args.v;
  params.out = args.out;
  params.dout = args.dout;
  params.dq = args.dq;
  params.dk = args.dk;
  params.dv = args.dv;
  params.lse = args.lse;
  params.dlse = args.dlse;
  params.delta = static_cast<float*>(workspace);
  for (int a = 0; a < Rank; ++a) {
    params.q_tiles_per_group[a] = tiles_per_group(args.problem.axis[a], QBox::extent(a));
    params.kv_tiles_per_group[a] = tiles_per_group(args.problem.axis[a], KBox::extent(a));
  }
  params.scale_log2 = args.problem.scale * 1.4426950408889634f;
  return params;
}

namespace detail {
constexpr float kLog2e = 1.4426950408889634f;

// The preprocess's row: one warp per (batch, token, head) row of [B, N, H], 16-byte loads along
// the head dim; `block` numbers the CTA's rows (blockIdx.x in a dense grid).  Calls
// finish(row, b, h, coord, dot) with dot = rowsum(dO * O) in every lane; a warp past the last
// row returns at once.
template <int HeadDim, int Rank, class Element, class Finish>
__device__ __forceinline__ void out_dout_row_dot(BackwardParams<Rank, Element> const& params, unsigned block,
                                                 Finish&& finish) {
  constexpr int kChunks = HeadDim / 8;
  static_assert(kChunks <= 32, "head dim <= 256");
  const int lane = threadIdx.x % 32;
  const NaProblem<Rank>& p = params.problem;
  const int64_t n_tokens = p.num_tokens();
  const int64_t rows = int64_t(p.batch) * n_tokens * p.heads;
  const int64_t row = int64_t(block) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  const int h = static_cast<int>(row % p.heads);
  const int64_t t = row / p.heads;
  const int64_t n = t % n_tokens;
  const int b = static_cast<int>(t / n_tokens);
  int32_t coord[Rank];
  unflatten(n, p.axis, coord);
  float acc = 0.f;
  if (lane < kChunks) {
    const uint4 ov = *reinterpret_cast<uint4 const*>(params.out.at(b, coord, h) + lane * 8);
    const uint4 gv = *reinterpret_cast<uint4 const*>(params.dout.at(b, coord, h) + lane * 8);
    Element const* oe = reinterpret_cast<Element const*>(&ov);
    Element const* ge = reinterpret_cast<Element const*>(&gv);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc += static_cast<float>(oe[i]) * static_cast<float>(ge[i]);
  }
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, m);
  finish(row, b, h, coord, acc);
}

template <int HeadDim, int Rank, class Element, class Finish>
__device__ __forceinline__ void out_dout_row_dot(BackwardParams<Rank, Element> const& params, Finish&& finish) {
  out_dout_row_dot<HeadDim>(params, blockIdx.x, static_cast<Finish&&>(finish));
}
}  // namespace detail

}  // namespace fused
}  // namespace fastna
