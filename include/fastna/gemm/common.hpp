// Shared pieces of the GEMM-based (unfused) neighborhood-attention kernels: the attention-weight
// view, the stride-1 window of the legacy ops, CTA -> box enumeration and the traits.
//
// Semantics: DESIGN.md section 2 (legacy qk / av, no stride), in the heads-last layout of
// section 1.  Attention weights are [B, N, H, W(+E)] with N the row-major flattened spatial
// index and slot w < W = prod(K) the window position (k_1..k_r) row-major, key (start_a + k_a)
// group-local on axis a.  Causal slots outside the window hold -inf after PN and are never read
// by NN / IN.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include <cstdint>

#include "fastna/fused/kernel_traits.hpp"
#include "fastna/index_math.hpp"
#include "fastna/problem.hpp"

namespace fastna {
namespace gemm_na {

using fused::Box;
using fused::DefaultBox;

// Attention weights [B, N, H, W(+E)]; slot stride 1, other strides in elements.
// Contiguous [B, N, H, Wt]: stride_head = Wt, stride_token = H * Wt, stride_batch = N * H * Wt.
template <class T>
struct AttnView {
  T* ptr = nullptr;
  int64_t stride_batch = 0;
  int64_t stride_token = 0;  // flattened spatial index n
  int64_t stride_head = 0;
  FASTNA_HOST_DEVICE int64_t offset(int32_t b, int64_t n, int32_t h) const {
    return int64_t(b) * stride_batch + n * stride_token + int64_t(h) * stride_head;
  }
};

// Window of group-local query i (0 <= i < glen) for stride 1: window_local with s = 1 without
// the divisions (legacy ops have no stride; the device APIs reject stride != 1).
//   non-causal: leader = min(i, glen - 1) = i, start = clamp(i - K/2, 0, glen - K), end = start + K
//   causal:     leader = i, start = max(i - K + 1, 0), end = min(i + 1, glen) = i + 1
FASTNA_HOST_DEVICE Range window_s1(AxisParams const& p, int32_t i, int32_t glen) {
  if (p.causal) return Range{imax(i - p.kernel + 1, 0), i + 1};
  const int32_t start = imax(imin(i - p.kernel / 2, glen - p.kernel), 0);
  return Range{start, start + p.kernel};
}

// Number of boxes of `extent` along the longest dilation group of an axis.
FASTNA_HOST_DEVICE int32_t tiles_per_group(AxisParams const& ax, int32_t extent) {
  const int32_t max_group = (ax.length + ax.dilation - 1) / ax.dilation;
  return (max_group + extent - 1) / extent;
}

// Traits of the gather GEMM (NN and IN): acc[rows x D] += P[rows x inner] * X[inner x D], with P
// gathered from the attention weights into shared memory and X = V / K / dO / Q loaded by box.
// RowBox = the CTA's output tokens (NN: queries, IN: keys), InnerBox = the reduction tokens
// (NN: keys, IN: queries).  Reuses the fused forward's MMA, X smem layout (as K/V) and copies.
template <int Rank, class Element, int HeadDim, class RowBox, class InnerBox>
struct GatherTraits : fused::ForwardTraits<Rank, Element, HeadDim, RowBox, InnerBox> {
  using Base = fused::ForwardTraits<Rank, Element, HeadDim, RowBox, InnerBox>;
  using Base::kBlockM;
  using Base::kBlockN;
  static_assert(kBlockN % 32 == 0, "inner box: multiple of 32 tokens (P smem swizzle atom)");
  static constexpr int kPCols = (kBlockN % 64 == 0) ? 64 : 32;
  using SmemAtomP = decltype(cute::composition(
      cute::Swizzle<(kPCols == 64 ? 3 : 2), 3, 3>{},
      cute::Layout<cute::Shape<cute::_8, cute::Int<kPCols>>, cute::Stride<cute::Int<kPCols>, cute::_1>>{}));
  // P: (row, inner) with inner (the MMA K mode) contiguous, read with ldmatrix like Q.
  using SmemLayoutP = decltype(cute::tile_to_shape(SmemAtomP{}, cute::Shape<cute::Int<kBlockM>, cute::Int<kBlockN>>{}));
  static constexpr int kElemsP = kBlockM * kBlockN;
  static constexpr int kStages = 2;
  static constexpr size_t kSmemBytes =
      sizeof(Element) * size_t(kStages) * (size_t(kElemsP) + size_t(Base::kElemsKV));
};

// Traits of PN (S = Q K^T): the fused forward's traits; smem = Q + 2 stages of K.
template <int Rank, class Element, int HeadDim, class QBox, class KBox>
struct PNTraits : fused::ForwardTraits<Rank, Element, HeadDim, QBox, KBox> {
  using Base = fused::ForwardTraits<Rank, Element, HeadDim, QBox, KBox>;
  static constexpr int kStages = 2;
  static constexpr size_t kSmemBytes =
      sizeof(Element) * (size_t(Base::kElemsQ) + size_t(kStages) * size_t(Base::kElemsKV));
};

// Converts an attention weight to float (half_t / bfloat16_t / float).
template <class T>
__device__ __forceinline__ float to_float(T x) { return static_cast<float>(x); }

}  // namespace gemm_na
}  // namespace fastna
