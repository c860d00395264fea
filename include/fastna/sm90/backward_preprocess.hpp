// The sm90a backward's first launch: delta = rowsum(dO * O) - dlse and lse2 = lse * log2(e)
// per (query, head), written head-major (backward_kernel.hpp's header describes the layout).
#pragma once

#include <cutlass/numeric_types.h>

#include <cmath>
#include <cstdint>

#include "fastna/common/backward_params.hpp"  // fused::detail::out_dout_row_dot
#include "fastna/common/grouped_schedule.hpp"
#include "fastna/common/index_math.hpp"
#include "fastna/common/problem.hpp"
#include "fastna/sm90/backward_traits.hpp"    // HopperBwdParams

namespace fastna {
namespace hopper {

// ------------------------------------------------------------------ preprocess
// A group of HeadDim / 8 lanes per (batch, token, head) row (16-byte loads along the head dim), each
// group kUnroll rows with all their loads issued before the first use; a CTA covers kRowsPerCta
// consecutive rows (contiguous in memory for contiguous tensors).  dlse (a gradient into the
// logsumexp) is folded into delta as in the sm80 preprocess.
#define FASTNA_HOPPER_BWD_PREPROCESS_SHAPE 1  // launch shape below (test harness: older BASE_INCLUDEs lack it)
template <int HeadDim>
struct BwdPreprocessShape {
  static constexpr int kThreads = 128;
  static constexpr int kLanes = HeadDim / 8;           // lanes per row
  static constexpr int kGroups = kThreads / kLanes;    // row groups per CTA
  static constexpr int kUnroll = 2;                    // rows per group
  static constexpr int kRowsPerCta = kGroups * kUnroll;
  static_assert(HeadDim % 8 == 0 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "head dim: 8 x a power of two <= 256");
  static unsigned blocks(int64_t rows) { return static_cast<unsigned>((rows + kRowsPerCta - 1) / kRowsPerCta); }
};

// The rows of CTA `block` (blockIdx.x in a dense grid) of the problem hp describes.
template <int Rank, class Element, int HeadDim>
__device__ __forceinline__ void hopper_bwd_preprocess_rows(HopperBwdParams<Rank, Element> const& hp, unsigned block) {
  using Shape = BwdPreprocessShape<HeadDim>;
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  if constexpr (Rank == 1) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");  // see kPdl
#endif
  constexpr int kLanes = Shape::kLanes;
  constexpr int kUnroll = Shape::kUnroll;
  auto const& params = hp.base;
  const NaProblem<Rank>& p = params.problem;
  const int64_t n_tokens = p.num_tokens();
  const int64_t rows = int64_t(p.batch) * n_tokens * p.heads;
  const bool narrow = rows <= int64_t(0x7fffffff);  // 32-bit index math (uniform over the grid)
  const int sub = threadIdx.x % kLanes;
  const int64_t row0 = int64_t(block) * Shape::kRowsPerCta + threadIdx.x / kLanes;

  int64_t row[kUnroll];
  int b[kUnroll], h[kUnroll];
  int32_t coord[kUnroll][Rank];
  uint4 ov[kUnroll], gv[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    row[u] = row0 + u * Shape::kGroups;
    b[u] = h[u] = 0;
    for (int a = 0; a < Rank; ++a) coord[u][a] = 0;
    if (row[u] >= rows) continue;
    if (narrow) {
      uint32_t t = static_cast<uint32_t>(row[u]);
      h[u] = static_cast<int>(t % uint32_t(p.heads));
      t /= uint32_t(p.heads);
#pragma unroll
      for (int a = Rank - 1; a >= 0; --a) {
        coord[u][a] = static_cast<int32_t>(t % uint32_t(p.axis[a].length));
        t /= uint32_t(p.axis[a].length);
      }
      b[u] = static_cast<int>(t);
    } else {
      const int64_t t = row[u] / p.heads;
      h[u] = static_cast<int>(row[u] % p.heads);
      unflatten(t % n_tokens, p.axis, coord[u]);
      b[u] = static_cast<int>(t / n_tokens);
    }
    ov[u] = *reinterpret_cast<uint4 const*>(params.out.at(b[u], coord[u], h[u]) + sub * 8);
    gv[u] = *reinterpret_cast<uint4 const*>(params.dout.at(b[u], coord[u], h[u]) + sub * 8);
  }
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    float acc = 0.f;
    if (row[u] < rows) {
      Element const* oe = reinterpret_cast<Element const*>(&ov[u]);
      Element const* ge = reinterpret_cast<Element const*>(&gv[u]);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc += static_cast<float>(oe[i]) * static_cast<float>(ge[i]);
    }
    // Every lane takes part (rows past the end add zeros): the groups are aligned lane ranges.
#pragma unroll
    for (int m = kLanes / 2; m >= 1; m >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, m);
    if (sub != 0 || row[u] >= rows) continue;
    int const (&c)[Rank] = coord[u];
    const int64_t o = detail::head_major_index(p, b[u], h[u], c, hp.last_pad);
    hp.delta_t[o] = params.dlse != nullptr ? acc - params.dlse[row[u]] : acc;
    hp.lse2_t[o] = params.lse[row[u]] * fused::detail::kLog2e;
    // The last axis' pad [L, Lp) lies inside the dK/dV kernel's lse2 / delta boxes (TMA zero-fills
    // only past Lp): define it (delta 0, lse2 +inf: P = 0) so that dS = P (dP - delta) is exactly 0
    // there without a mask test (the workspace is uninitialized memory).
    const int last_len = p.axis[Rank - 1].length;
    if (c[Rank - 1] == last_len - 1) {
      for (int x = last_len; x < hp.last_pad; ++x) {
        hp.delta_t[o + (x - c[Rank - 1])] = 0.f;
        hp.lse2_t[o + (x - c[Rank - 1])] = INFINITY;
      }
    }
  }
}

template <int Rank, class Element, int HeadDim, class Tag = void>
__global__ void __launch_bounds__(BwdPreprocessShape<HeadDim>::kThreads)
    fna_hopper_bwd_preprocess_kernel(__grid_constant__ HopperBwdParams<Rank, Element> const hp) {
  hopper_bwd_preprocess_rows<Rank, Element, HeadDim>(hp, blockIdx.x);
}

// Grouped: x over every problem's preprocess CTAs (GroupedSchedule); the problems' dK/dV
// parameters (they hold the lse2 / delta rows).
template <int Rank, class Element, int HeadDim, class Tag = void>
__global__ void __launch_bounds__(BwdPreprocessShape<HeadDim>::kThreads)
    fna_hopper_bwd_preprocess_grouped_kernel(GroupedParams<HopperBwdParams<Rank, Element>> const params) {
  int32_t problem, block;
  params.schedule.locate(blockIdx.x, problem, block);
  hopper_bwd_preprocess_rows<Rank, Element, HeadDim>(params.problems[problem], block);
}

}  // namespace hopper
}  // namespace fastna
