// Arguments, checks and kernel parameters of the fused forward ops (the sm80, sm90 and
// small-window families share them: the same problem, token views and per-axis tile counts).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fastna/common/box_tile.hpp"  // tiles_per_group
#include "fastna/common/problem.hpp"
#include "fastna/common/problem_checks.hpp"

namespace fastna {
namespace fused {

// A forward op's arguments: q, k, v [B, *spatial, H(_kv), D] strided views, out like q.
template <int Rank, class Element>
struct ForwardArguments {
  NaProblem<Rank> problem;
  TokenTensor<Element const, Rank> q;
  TokenTensor<Element const, Rank> k;
  TokenTensor<Element const, Rank> v;
  TokenTensor<Element, Rank> out;
  float* lse = nullptr;  // optional, fp32 contiguous [B, N, H]
};

// The problem part of a fused forward's can_implement: the fused problem checks and a grid of
// QBox query tiles that fits.
template <int HeadDim, class QBox, int Rank>
Verdict check_forward_problem(NaProblem<Rank> const& p) {
  Verdict v = check_fused_problem<HeadDim>(p);
  if (v.is_ok()) v = check_grid_x<QBox>(p);
  return v;
}

// The tensor part: 16-byte rows for cp.async / TMA.
template <int Rank, class Element>
Verdict check_forward_tensors(ForwardArguments<Rank, Element> const& args) {
  Verdict v = check_rows_16b(args.q, "q");
  if (v.is_ok()) v = check_rows_16b(args.k, "k");
  if (v.is_ok()) v = check_rows_16b(args.v, "v");
  if (v.is_ok()) v = check_rows_16b(args.out, "out");
  return v;
}

// One CTA per (query box, head, batch).
template <class QBox, int Rank>
dim3 forward_grid_shape(NaProblem<Rank> const& p) {
  return dim3(static_cast<unsigned>(box_grid_x<QBox>(p)), static_cast<unsigned>(p.heads),
              static_cast<unsigned>(p.batch));
}

template <int Rank, class Element>
struct ForwardParams {
  NaProblem<Rank> problem;
  TokenTensor<Element const, Rank> q, k, v;
  TokenTensor<Element, Rank> out;
  float* lse = nullptr;             // optional fp32 [B, N, H]
  int32_t tiles_per_group[Rank];    // ceil(ceil(L/d) / box extent)
  float scale_log2;                 // scale * log2(e)

  // From a device op's Arguments (problem, q, k, v, out, lse); Box: the CTA's query box.
  template <class Box, class Arguments>
  static ForwardParams from_arguments(Arguments const& args) {
    ForwardParams params;
    params.problem = args.problem;
    params.q = args.q;
    params.k = args.k;
    params.v = args.v;
    params.out = args.out;
    params.lse = args.lse;
    for (int a = 0; a < Rank; ++a)
      params.tiles_per_group[a] = ::fastna::tiles_per_group(args.problem.axis[a], Box::extent(a));
    params.scale_log2 = args.problem.scale * 1.4426950408889634f;
    return params;
  }
};

}  // namespace fused
}  // namespace fastna
