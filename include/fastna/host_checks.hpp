// Host-side pieces of the device ops' can_implement / launch code (sm80 fused forward and
// backward, the GEMM-based ops, the sm90a backward): the x extent of a box grid, the token-tensor
// layout cp.async reads, and the problem checks of the fused ops.
#pragma once

#include <cutlass/cutlass.h>

#include <cmath>
#include <cstdint>

#include "fastna/box_tile.hpp"
#include "fastna/problem.hpp"

namespace fastna {

// CTAs along a grid's x: every (dilation group, box of Box) per axis, tiles_per_group boxes a
// group.
template <class Box, int Rank>
int64_t box_grid_x(NaProblem<Rank> const& p) {
  int64_t x = 1;
  for (int a = 0; a < Rank; ++a) x *= int64_t(p.axis[a].dilation) * tiles_per_group(p.axis[a], Box::extent(a));
  return x;
}

// Whether 16-byte chunks (cp.async) cover t's token rows: head dim contiguous, pointer and every
// batch / spatial / head stride 16-byte aligned.
template <class T, int Rank>
bool rows_in_16_byte_chunks(TokenTensor<T, Rank> const& t) {
  if (t.ptr == nullptr || t.stride_dim != 1) return false;
  if (reinterpret_cast<uintptr_t>(t.ptr) % 16 != 0) return false;
  constexpr int64_t kVec = 16 / sizeof(T);
  if (t.stride_batch % kVec != 0 || t.stride_head % kVec != 0) return false;
  for (int a = 0; a < Rank; ++a)
    if (t.stride_spatial[a] % kVec != 0) return false;
  return true;
}

// The problem checks of the fused ops (head dim HeadDim for q/k and v): positive batch and heads
// with heads_kv dividing heads, at most 65535 of each (grid y / z), no extra tokens, a positive
// finite scale, and per axis a valid window: 1 <= stride <= kernel, kernel * dilation <= length.
template <int HeadDim, int Rank>
cutlass::Status check_fused_problem(NaProblem<Rank> const& p) {
  if (p.batch <= 0 || p.heads <= 0 || p.heads_kv <= 0 || p.heads % p.heads_kv != 0)
    return cutlass::Status::kErrorInvalidProblem;
  if (p.batch > 65535 || p.heads > 65535) return cutlass::Status::kErrorInvalidProblem;
  if (p.dim != HeadDim || p.dim_v != HeadDim) return cutlass::Status::kErrorInvalidProblem;
  if (p.num_extra != 0) return cutlass::Status::kErrorNotSupported;
  if (!(p.scale > 0.f) || !std::isfinite(p.scale)) return cutlass::Status::kErrorInvalidProblem;
  for (int a = 0; a < Rank; ++a) {
    AxisParams const& ax = p.axis[a];
    if (ax.length <= 0 || ax.kernel < 1 || ax.dilation < 1 || ax.stride < 1 || ax.stride > ax.kernel ||
        int64_t(ax.kernel) * ax.dilation > ax.length)
      return cutlass::Status::kErrorInvalidProblem;
  }
  return cutlass::Status::kSuccess;
}

}  // namespace fastna
