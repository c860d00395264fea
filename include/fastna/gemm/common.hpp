// Shared pieces of the GEMM-based (unfused) neighborhood-attention kernels: the attention-weight
// view, the stride-1 window of the legacy ops, CTA -> box enumeration, the traits (fp16 / bf16
// and fp32 on TF32 tensor cores) and the global -> shared box loader.
//
// Semantics: docs/SEMANTICS.md section 8 (legacy qk / av, no stride), in the heads-last layout of
// section 1.  Attention weights are [B, N, H, W(+E)] with N the row-major flattened spatial
// index and slot w < W = prod(K) the window position (k_1..k_r) row-major, key (start_a + k_a)
// group-local on axis a.  Causal slots outside the window hold -inf after PN and are never read
// by NN / IN.
#pragma once

#include <cute/tensor.hpp>
#include <cute/arch/copy_sm75.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cute/atom/copy_atom.hpp>
#include <cutlass/numeric_types.h>
#include <cutlass/tfloat32.h>

#include <cstdint>

#include "fastna/common/box_tile.hpp"  // tiles_per_group
#include "fastna/common/cp_async.hpp"
#include "fastna/common/sm80_tile_traits.hpp"
#include "fastna/common/index_math.hpp"
#include "fastna/common/problem.hpp"
#include "fastna/common/tf32.hpp"

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


// Element-dependent tile configuration shared by PN, NN and IN.
//
// 16-bit inputs: the fused forward's traits unchanged (mma.sync m16n8k16, ldmatrix, the
// configuration verified on a GPU), plus the P tile atom.
template <int Rank, class Element, int HeadDim, class RowBox, class InnerBox>
struct TileTraits : fused::ForwardTraits<Rank, Element, HeadDim, RowBox, InnerBox> {
  using Base = fused::ForwardTraits<Rank, Element, HeadDim, RowBox, InnerBox>;
  static constexpr bool kTf32 = false;
  using SmemElement = Element;  // how the MMA copies see shared memory
  static constexpr int kPCols = (Base::kBlockN % 64 == 0) ? 64 : 32;
  using SmemAtomP = decltype(cute::composition(
      cute::Swizzle<(kPCols == 64 ? 3 : 2), 3, 3>{},
      cute::Layout<cute::Shape<cute::_8, cute::Int<kPCols>>, cute::Stride<cute::Int<kPCols>, cute::_1>>{}));
  // X operand of NN / IN (V, K, Q, dO by box): the K / V layout, read with ldmatrix.trans.
  using SmemLayoutX = typename Base::SmemLayoutKV;
  using SmemLayoutXt = typename Base::SmemLayoutVt;
};

// fp32 inputs: TF32 tensor cores (m16n8k8, fp32 accumulate), as NATTEN's fp32 GEMM path and
// torch's allow_tf32 matmuls.  Operands stay fp32 in global and shared memory; fragments are
// rounded to TF32 in registers (round_to_tf32).  Shared-memory rows are 32 floats (128 B) with
// 16-byte chunks XOR-swizzled by row (Swizzle<3,2,3>) so cp.async writes whole chunks and
// ldmatrix reads conflict-free.  K-major operands (Q, K, P) are read with ldmatrix .b16 x4,
// each 8x8 b16 matrix being 8 rows x 4 fp32; the MN-major X operand of NN / IN (V, K, Q, dO seen
// as (head dim, token)) cannot use ldmatrix.trans (it transposes 16-bit elements), so it is read
// with plain 32-bit shared loads.
template <int Rank_, int HeadDim_, class QBox_, class KBox_>
struct TileTraits<Rank_, float, HeadDim_, QBox_, KBox_> {
  using Element = float;
  using SmemElement = cutlass::tfloat32_t;
  using QBox = QBox_;
  using KBox = KBox_;
  static constexpr bool kTf32 = true;
  static constexpr int kRank = Rank_;
  static constexpr int kHeadDim = HeadDim_;
  static_assert(QBox::kRank == kRank && KBox::kRank == kRank, "box rank must match problem rank");
  static_assert(kHeadDim % 32 == 0 && kHeadDim <= 256, "head dim: multiple of 32 up to 256");

  static constexpr int kBlockM = QBox::kSize;
  static constexpr int kBlockN = KBox::kSize;
  static_assert(kBlockM % 16 == 0 && kBlockM <= 128, "row box: 16..128 tokens, multiple of 16");
  static_assert(kBlockN % 16 == 0, "inner box: multiple of 16 tokens");
  static constexpr int kWarps = kBlockM >= 64 ? 4 : kBlockM / 16;
  static_assert(kBlockM % (16 * kWarps) == 0, "row box must split into 16-row MMA tiles per warp");
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kStages = 2;

  // N tile 16 = two m16n8k8 atoms: one ldmatrix x4 then covers B's 16 tokens x 8 fp32.
  using TiledMma = cute::TiledMMA<cute::MMA_Atom<cute::SM80_16x8x8_F32TF32TF32F32_TN>,
                                  cute::Layout<cute::Shape<cute::Int<kWarps>, cute::_1, cute::_1>>,
                                  cute::Tile<cute::Int<16 * kWarps>, cute::_16, cute::_8>>;

  using SmemAtom = decltype(cute::composition(
      cute::Swizzle<3, 2, 3>{}, cute::Layout<cute::Shape<cute::_8, cute::_32>, cute::Stride<cute::_32, cute::_1>>{}));
  using SmemLayoutQ = decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}));
  using SmemLayoutKV = decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>>{}));
  using SmemLayoutVt = decltype(cute::composition(
      SmemLayoutKV{}, cute::make_layout(cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>>{}, cute::GenRowMajor{})));

  using SmemCopyAtom = cute::Copy_Atom<cute::SM75_U32x4_LDSM_N, cutlass::tfloat32_t>;
  using SmemCopyAtomT = cute::Copy_Atom<cute::UniversalCopy<cutlass::tfloat32_t>, cutlass::tfloat32_t>;

  static constexpr int kElemsQ = kBlockM * kHeadDim;
  static constexpr int kElemsKV = kBlockN * kHeadDim;

  // Global -> shared: 16-byte chunks of 4 floats, consecutive threads along one token's row.
  static constexpr int kChunkElems = 4;
  static constexpr int kChunksPerRow = kHeadDim / kChunkElems;
  static_assert(kThreads % kChunksPerRow == 0, "chunk mapping: threads must cover whole rows");
  static constexpr int kRowsPerPass = kThreads / kChunksPerRow;

  static_assert(kBlockN % 32 == 0, "inner box: multiple of 32 tokens (P smem atom)");
  static constexpr int kPCols = 32;
  using SmemAtomP = SmemAtom;

  // X operand of NN / IN, read MN-major with 32-bit loads: per load a warp reads tokens t0..t0+3
  // (lane % 4) x head-dim columns d0..d0+7 (lane / 4).  With Swizzle<3,2,3> (16-byte chunk ^= row)
  // those 32 words fall in 16 banks (2-way conflict); Swizzle<2,3,2> (chunk ^= 2 * (row % 4))
  // spreads the 4 tokens' two chunks over 8 chunks = 32 banks.  cp.async still writes whole
  // 16-byte chunks (the swizzle moves bits >= 3 of the float index only).
  using SmemAtomX = decltype(cute::composition(
      cute::Swizzle<2, 3, 2>{}, cute::Layout<cute::Shape<cute::_8, cute::_32>, cute::Stride<cute::_32, cute::_1>>{}));
  using SmemLayoutX = decltype(cute::tile_to_shape(SmemAtomX{}, cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>>{}));
  using SmemLayoutXt = decltype(cute::composition(
      SmemLayoutX{}, cute::make_layout(cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>>{}, cute::GenRowMajor{})));
};

// Traits of the gather GEMM (NN and IN): acc[rows x D] += P[rows x inner] * X[inner x D], with P
// gathered from the attention weights into shared memory and X = V / K / dO / Q loaded by box.
// RowBox = the CTA's output tokens (NN: queries, IN: keys), InnerBox = the reduction tokens
// (NN: keys, IN: queries).  Same MMA, X smem layout (as K/V) and copies as PN.
template <int Rank, class Element, int HeadDim, class RowBox, class InnerBox>
struct GatherTraits : TileTraits<Rank, Element, HeadDim, RowBox, InnerBox> {
  using Base = TileTraits<Rank, Element, HeadDim, RowBox, InnerBox>;
  using Base::kBlockM;
  using Base::kBlockN;
  static_assert(kBlockN % 32 == 0, "inner box: multiple of 32 tokens (P smem swizzle atom)");
  // P: (row, inner) with inner (the MMA K mode) contiguous, read with ldmatrix like Q.
  using SmemLayoutP =
      decltype(cute::tile_to_shape(typename Base::SmemAtomP{}, cute::Shape<cute::Int<kBlockM>, cute::Int<kBlockN>>{}));
  static constexpr int kElemsP = kBlockM * kBlockN;
  static constexpr int kStages = 2;
  static constexpr size_t kSmemBytes =
      sizeof(Element) * size_t(kStages) * (size_t(kElemsP) + size_t(Base::kElemsKV));
};

// Traits of PN (S = Q K^T): smem = Q + 2 stages of K.
template <int Rank, class Element, int HeadDim, class QBox, class KBox>
struct PNTraits : TileTraits<Rank, Element, HeadDim, QBox, KBox> {
  using Base = TileTraits<Rank, Element, HeadDim, QBox, KBox>;
  static constexpr int kStages = 2;
  static constexpr size_t kSmemBytes =
      sizeof(Element) * (size_t(Base::kElemsQ) + size_t(kStages) * size_t(Base::kElemsKV));
};

// Shared memory as the MMA copies read it (TF32 view of fp32 bits; identity for 16-bit).
template <class Traits>
__device__ __forceinline__ typename Traits::SmemElement* mma_smem(typename Traits::Element* p) {
  return reinterpret_cast<typename Traits::SmemElement*>(p);
}

// Loads one box of tokens (rows) x HeadDim (cols) into swizzled shared memory with cp.async
// (zero-filled outside `limit`): the fused forward's loader (16-byte chunks of
// Traits::kChunkElems elements).
template <class Traits, class Box, class SmemLayout, int Rank, class T>
__device__ __forceinline__ void load_box(TokenTensor<T, Rank> const& t, int b, int h,
                                         typename Traits::Element* smem, int const (&origin)[Rank],
                                         int const (&limit)[Rank], int const (&group)[Rank],
                                         AxisParams const (&axis)[Rank], int tid) {
  fused::detail::load_box<Traits, Box, SmemLayout>(t, b, h, smem, origin, limit, group, axis, tid);
}

// cp.async of one 4-byte element (zero-filled when !pred; gmem must still be a valid address).
__device__ __forceinline__ void cp_async_4_zfill(void* smem, void const* gmem, bool pred) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_size = pred ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(src_size));
}

// Converts an attention weight to float (half_t / bfloat16_t / float).
template <class T>
__device__ __forceinline__ float to_float(T x) { return static_cast<float>(x); }

}  // namespace gemm_na
}  // namespace fastna
