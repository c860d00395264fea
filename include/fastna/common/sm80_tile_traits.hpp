// Compile-time configuration of the fused neighborhood-attention forward kernel (sm80-class).
//
// The CTA owns a multi-dimensional box of queries (QBox) inside one dilation group and walks
// the box of keys its queries need in KV tiles that are boxes too (KBox).  A box is flattened
// row-major (last axis fastest) into the M (queries) or N (keys) dimension of the tile GEMMs.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>
#include <cutlass/tfloat32.h>

#include <type_traits>

#include "fastna/common/box.hpp"
#include "fastna/common/problem.hpp"

namespace fastna {
namespace fused {

template <class Element> struct MmaAtomFor;
template <> struct MmaAtomFor<cutlass::half_t> { using type = cute::SM80_16x8x16_F32F16F16F32_TN; };
template <> struct MmaAtomFor<cutlass::bfloat16_t> { using type = cute::SM80_16x8x16_F32BF16BF16F32_TN; };

// Element-dependent pieces of a tile (shared-memory atom, MMA atom, smem -> register copies,
// global -> shared chunking).
//
// 16-bit inputs: mma.sync m16n8k16 (fp32 accumulate); rows of 32 or 64 elements with 16-byte
// chunks XOR-swizzled by row; Q / K read with ldmatrix, V with ldmatrix.trans.
template <class Element, int HeadDim>
struct ElementConfig {
  static constexpr bool kTf32 = false;
  using SmemElement = Element;  // how the MMA copies see shared memory
  using MmaAtom = typename MmaAtomFor<Element>::type;
  static constexpr int kTileK = 16;  // K extent of one MMA tile
  static constexpr int kSmemCols = (HeadDim % 64 == 0) ? 64 : 32;
  using SmemAtom = decltype(cute::composition(
      cute::Swizzle<(kSmemCols == 64 ? 3 : 2), 3, 3>{},
      cute::Layout<cute::Shape<cute::_8, cute::Int<kSmemCols>>, cute::Stride<cute::Int<kSmemCols>, cute::_1>>{}));
  using SmemCopyAtom = cute::Copy_Atom<cute::SM75_U32x4_LDSM_N, Element>;
  using SmemCopyAtomT = cute::Copy_Atom<cute::SM75_U16x8_LDSM_T, Element>;
  static constexpr int kChunkElems = 8;  // elements per 16-byte cp.async chunk
};

// fp32 inputs: TF32 tensor cores (mma.sync m16n8k8, fp32 accumulate, fp32 softmax), as torch's
// allow_tf32 matmuls.  fp32 stays fp32 in global and shared memory; operand fragments are rounded
// to TF32 in registers (round_to_tf32).  Rows of 32 floats (128 B), 16-byte chunks XOR-swizzled
// by row (Swizzle<3,2,3>): cp.async writes whole chunks, ldmatrix (.b16 x4: each 8x8 b16 matrix
// is 8 rows x 4 fp32, exactly a TF32 A / B fragment of K-major data) reads Q and K
// conflict-free.  V, the MN-major B operand of O = P V, cannot use ldmatrix.trans (it transposes
// 16-bit elements); it is read with 32-bit shared loads through SmemLayoutVt's key permutation
// (see ForwardTraits).
template <int HeadDim>
struct ElementConfig<float, HeadDim> {
  static constexpr bool kTf32 = true;
  using SmemElement = cutlass::tfloat32_t;
  using MmaAtom = cute::SM80_16x8x8_F32TF32TF32F32_TN;
  static constexpr int kTileK = 8;
  static constexpr int kSmemCols = 32;
  using SmemAtom = decltype(cute::composition(
      cute::Swizzle<3, 2, 3>{}, cute::Layout<cute::Shape<cute::_8, cute::_32>, cute::Stride<cute::_32, cute::_1>>{}));
  using SmemCopyAtom = cute::Copy_Atom<cute::SM75_U32x4_LDSM_N, cutlass::tfloat32_t>;
  using SmemCopyAtomT = cute::Copy_Atom<cute::UniversalCopy<cutlass::tfloat32_t>, cutlass::tfloat32_t>;
  static constexpr int kChunkElems = 4;
};

// Warps_: warps per CTA, each owning kBlockM / Warps_ query rows; 0 = automatic (16 rows per
// warp for query boxes of 16..64 tokens, 4 warps for larger ones).  Stages_: K/V buffers in
// shared memory (2 = double buffering with a barrier before and after each KV box, the
// original pipeline; 3+ = a (Stages_ - 1)-deep cp.async prefetch with one barrier per KV box).
// The defaults (0, 2) are the original tiles.
template <int Rank_, class Element_, int HeadDim_, class QBox_, class KBox_, int Warps_ = 0, int Stages_ = 2>
struct ForwardTraits {
  using Element = Element_;
  using QBox = QBox_;
  using KBox = KBox_;
  static constexpr int kRank = Rank_;
  static constexpr int kHeadDim = HeadDim_;
  static_assert(QBox::kRank == kRank && KBox::kRank == kRank, "box rank must match problem rank");
  static_assert(kHeadDim % 32 == 0 && kHeadDim <= 256, "head dim: multiple of 32 up to 256 (v1)");

  static constexpr int kBlockM = QBox::kSize;  // queries per CTA
  static constexpr int kBlockN = KBox::kSize;  // keys per KV tile
  static_assert(kBlockM % 16 == 0 && kBlockM <= 128, "query box: 16..128 tokens, multiple of 16");
  static_assert(kBlockN % 16 == 0, "key box: multiple of 16 tokens");
  // Each warp owns 16 (query box of 16..64 tokens) or kBlockM / 4 (larger boxes) query rows,
  // unless Warps_ says otherwise.
  static_assert(Warps_ >= 0 && Warps_ <= 8, "warps per CTA: 0 (automatic) or 1..8");
  static constexpr int kWarps = Warps_ > 0 ? Warps_ : (kBlockM >= 64 ? 4 : kBlockM / 16);
  static_assert(kBlockM % (16 * kWarps) == 0, "query box must split into 16-row MMA tiles per warp");
  static constexpr int kThreads = 32 * kWarps;
  static_assert(Stages_ >= 2 && Stages_ <= 4, "K/V stages: 2..4");
  static constexpr int kStages = Stages_;      // K/V buffers (2 = double buffering)

  using Config = ElementConfig<Element, kHeadDim>;
  static constexpr bool kTf32 = Config::kTf32;
  using SmemElement = typename Config::SmemElement;

  // N tile 16: one ldmatrix x4 covers B's 16 tokens (x 16 halves, or x 8 fp32 = two TF32 atoms).
  using TiledMma = cute::TiledMMA<cute::MMA_Atom<typename Config::MmaAtom>,
                                  cute::Layout<cute::Shape<cute::Int<kWarps>, cute::_1, cute::_1>>,
                                  cute::Tile<cute::Int<16 * kWarps>, cute::_16, cute::Int<Config::kTileK>>>;

  // Shared memory: rows = tokens, columns = head dim, 16-byte chunks XOR-swizzled by row.
  static constexpr int kSmemCols = Config::kSmemCols;
  using SmemAtom = typename Config::SmemAtom;
  using SmemLayoutQ = decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}));
  using SmemLayoutKV = decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>>{}));
  // V seen as (head dim, key): the B operand of O = P V.
  //
  // 16-bit: keys in order.  The S accumulator of a thread ((2,2) values of an m16n8 tile: rows
  // g, g + 8, keys 2t, 2t + 1; g = lane / 4, t = lane % 4) is then exactly its A fragment of the
  // m16n8k16 P V MMA.
  // TF32: the m16n8k8 A fragment holds rows g, g + 8 at K slots t, t + 4, not keys 2t, 2t + 1.
  // The P V product sums over keys, so any key order works when P and V agree: the kernel reads
  // the accumulator's keys (2t, 2t + 1) of each 8-key block as the K slots (t, t + 4) (tOrP: no
  // data movement), and V is read with the same order: slot s of an 8-key block is key
  // 2 (s % 4) + s / 4, the (4, 2) : (2, 1) layout below.  A warp's 32-bit V loads then touch
  // keys 2t (+ 1) x 8 consecutive head-dim columns: 4 rows x 2 chunks, conflict-free under
  // Swizzle<3,2,3> (8 distinct chunks of 4 banks).
  using VtKeyOrder = std::conditional_t<
      kTf32, cute::Layout<cute::Shape<cute::_4, cute::_2, cute::Int<kBlockN / 8>>, cute::Stride<cute::_2, cute::_1, cute::_8>>,
      cute::Layout<cute::Int<kBlockN>>>;
  using SmemLayoutVt = decltype(cute::composition(
      SmemLayoutKV{}, cute::make_layout(cute::make_shape(cute::Int<kHeadDim>{}, VtKeyOrder{}.shape()),
                                        cute::make_stride(cute::Int<kBlockN>{}, VtKeyOrder{}.stride()))));

  using SmemCopyAtom = typename Config::SmemCopyAtom;
  using SmemCopyAtomT = typename Config::SmemCopyAtomT;

  static constexpr int kElemsQ = kBlockM * kHeadDim;
  static constexpr int kElemsKV = kBlockN * kHeadDim;
  static constexpr size_t kSmemBytes = sizeof(Element) * (size_t(kElemsQ) + size_t(2 * kStages) * kElemsKV);
  static_assert(kSmemBytes <= 227 * 1024, "shared memory: more than an SM has (fewer stages or a smaller box)");

  // Global -> shared copies: 16-byte chunks, consecutive threads along one token's head dim.
  static constexpr int kChunkElems = Config::kChunkElems;
  static constexpr int kChunksPerRow = kHeadDim / kChunkElems;
  static_assert(kThreads % kChunksPerRow == 0, "chunk mapping: threads must cover whole rows");
  static constexpr int kRowsPerPass = kThreads / kChunksPerRow;
};

}  // namespace fused
}  // namespace fastna
