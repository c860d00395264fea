// Compile-time configuration (boxes, stages, shared-memory layout) and kernel parameters of the
// sm90a backward kernels (backward_kernel.hpp, backward_preprocess.hpp).
#pragma once

#include <cute/tensor.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cutlass/numeric_types.h>

#include <cstdint>

#include "fastna/common/backward_params.hpp"  // fused::BackwardParams
#include "fastna/common/tma.hpp"              // TmaDims
#include "fastna/sm90/kernel_traits.hpp"      // Box, SmemAtoms, DefaultQBox
#include "fastna/sm90/tile_order.hpp"         // kBwdOrderCap

namespace fastna {
namespace hopper {

// Column tiles of the backward (64 positions; last extent a multiple of 8 for RowMask).
template <int Rank> struct DefaultBwdColBox;
template <> struct DefaultBwdColBox<1> { using type = Box<1, 64>; };
template <> struct DefaultBwdColBox<2> { using type = Box<2, 8, 8>; };
template <> struct DefaultBwdColBox<3> { using type = Box<3, 1, 8, 8>; };

// Key tiles of the dQ kernel: 128 keys (the forward's KV boxes).  The dQ kernel holds no dV
// accumulator, so S / dP of 128 columns fit its registers (S, dP, dQ: 3 x 64 per thread): half
// the column iterations of 64-key tiles, and S / dP as m64n128 wgmmas (fewer shared-memory bytes
// per FLOP than m64n64).
template <int Rank> struct DefaultBwdDqColBox;
template <> struct DefaultBwdDqColBox<1> { using type = Box<1, 128>; };
template <> struct DefaultBwdDqColBox<2> { using type = Box<2, 16, 8>; };
template <> struct DefaultBwdDqColBox<3> { using type = Box<3, 2, 8, 8>; };

template <int Rank_, class Element_, int HeadDim_, class RowBox_, class ColBox_, bool Dq_, int Stages_,
          bool SkipEmpty_ = false, bool Pdl_ = false>
struct BackwardTraits {
  using Element = Element_;
  using RowBox = RowBox_;
  using ColBox = ColBox_;
  static constexpr int kRank = Rank_;
  static constexpr int kHeadDim = HeadDim_;
  static constexpr int kStages = Stages_;
  static constexpr bool kDq = Dq_;
  // A warpgroup skips the column tiles outside its own rows' column range (the union over the
  // row box is wider by the box extent): exactly the tiles whose every pair is masked, so the
  // results are unchanged.  Off: slower on the H100 (docs/PERFORMANCE.md section 11.3, session 4: the
  // extra live registers spill in 2D / 3D; hunyuan -11%, flux +7%).
  static constexpr bool kSkipEmpty = SkipEmpty_;
  // Programmatic dependent launch (Backward::launch_main; rank 1 by default): the dK/dV kernel may
  // be scheduled while the preprocess runs and waits for it (griddepcontrol.wait) before anything
  // else, then lets the dQ kernel be scheduled (launch_dependents), so that dQ CTAs take the SMs
  // that dK/dV's last CTAs leave idle.  dQ reads only the preprocess' output (complete once every
  // dK/dV CTA has passed its wait, i.e. before any dQ CTA starts; read past L1) and waits for the
  // dK/dV grid before it exits, so that its completion still implies the whole backward's.
  static constexpr bool kPdl = Pdl_;
  static_assert(RowBox::kRank == kRank && ColBox::kRank == kRank, "box rank must match problem rank");
  static_assert(kHeadDim == 64 || kHeadDim == 128, "Hopper backward: head dim 64 or 128 (TMA, SW128)");

  static constexpr int kBlockM = RowBox::kSize;  // rows: 2 warpgroups x 64
  static constexpr int kBlockN = ColBox::kSize;  // columns per streamed tile
  static_assert(kBlockM == 128, "row box: 128 tokens");
  static_assert(RowBox::extent(0) % 2 == 0, "row box splits in halves along its first axis");
  static_assert(kBlockN % 16 == 0 && kBlockN <= 128, "column tile: multiple of 16, at most 128");
  static_assert(ColBox::extent(kRank - 1) % 8 == 0, "column tile: last extent a multiple of 8");
  static_assert(ColBox::extent(kRank - 1) <= 64 || kRank == 1, "column tile: last extent <= 64 in 2D/3D");
  static_assert(kBlockN / ColBox::extent(kRank - 1) <= 32, "column tile: at most 32 outer positions");

  static constexpr int kConsumerWarpgroups = 2;
  static constexpr int kThreads = 128 * (kConsumerWarpgroups + 1);
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;

  // S = A1 B1^T and dP = A2 B2^T (both K-major); G += dS B (B read MN-major: (head dim, column)).
  using MmaAtomS = decltype(cute::GMMA::ss_op_selector<Element, Element, float,
                                                        cute::Shape<cute::_64, cute::Int<kBlockN>, cute::Int<kHeadDim>>>());
  using MmaAtomG = decltype(cute::GMMA::rs_op_selector<Element, Element, float,
                                                        cute::Shape<cute::_64, cute::Int<kHeadDim>, cute::Int<kBlockN>>,
                                                        cute::GMMA::Major::K, cute::GMMA::Major::MN>());
  using WarpgroupLayout = cute::Layout<cute::Shape<cute::Int<kConsumerWarpgroups>, cute::_1, cute::_1>>;
  using TiledMmaS = decltype(cute::make_tiled_mma(MmaAtomS{}, WarpgroupLayout{}));
  using TiledMmaG = decltype(cute::make_tiled_mma(MmaAtomG{}, WarpgroupLayout{}));

  using SmemLayoutA = decltype(cute::tile_to_shape(typename SmemAtoms<Element, kHeadDim>::K{},
                                                   cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}));
  using SmemLayoutB = decltype(cute::tile_to_shape(typename SmemAtoms<Element, kHeadDim>::K{},
                                                   cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>, cute::Int<kStages>>{}));
  // The same bytes as SmemLayoutB read as (head dim, column): token-first MN-major atoms, so each
  // 64-column half is one dense (token, 64) block, what a TMA box with a 128-byte inner extent
  // writes (as the forward's V, kernel_traits.hpp).
  using SmemLayoutBt = decltype(cute::tile_to_shape(typename SmemAtoms<Element, kHeadDim>::MN{},
                                                    cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>, cute::Int<kStages>>{},
                                                    cute::Step<cute::_2, cute::_1, cute::_3>{}));

  static constexpr int kElemsA = kBlockM * kHeadDim;
  static constexpr int kElemsB = kBlockN * kHeadDim;  // one stage of B1 or B2

  // Shared memory: A1 | A2 | B1 stages | B2 stages | lse2 stages | delta stages | mbarriers.
  static constexpr size_t kOffA1 = 0;
  static constexpr size_t kOffA2 = kOffA1 + sizeof(Element) * size_t(kElemsA);
  static constexpr size_t kOffB1 = kOffA2 + sizeof(Element) * size_t(kElemsA);
  static constexpr size_t kOffB2 = kOffB1 + sizeof(Element) * size_t(kStages) * kElemsB;
  static constexpr size_t kOffLse = kOffB2 + sizeof(Element) * size_t(kStages) * kElemsB;
  // lse2 / delta boxes: the last axis widened by 4 (the box starts at the tile origin rounded
  // down to a multiple of 4 floats: a TMA box must start 16-byte aligned in global memory).
  static constexpr int kStatRow = ColBox::extent(kRank - 1) + 4;
  static constexpr int kStatOuter = kBlockN / ColBox::extent(kRank - 1);
  static constexpr int kStatStage = (kStatOuter * kStatRow + 31) / 32 * 32;  // floats, 128-byte multiple
  static constexpr size_t kOffDelta = kOffLse + (kDq ? 0 : sizeof(float) * size_t(kStages) * kStatStage);
  static constexpr size_t kOffBar = kOffDelta + (kDq ? 0 : sizeof(float) * size_t(kStages) * kStatStage);
  static constexpr int kNumBarriers = 1 + 2 * kStages;  // resident, full[S], empty[S]
  static constexpr size_t kSmemBytes = kOffBar + 8 * kNumBarriers;
  static_assert(kOffA2 % 1024 == 0 && kOffB1 % 1024 == 0 && kOffB2 % 1024 == 0, "1024-byte aligned buffers");
  static_assert(kOffLse % 128 == 0, "TMA destinations: 128-byte aligned");
  static_assert(kStatRow <= 256, "TMA box extent");
  static_assert(kSmemBytes <= 227 * 1024, "shared memory: at most 227 KB per CTA");

  static constexpr uint32_t kBytesB = sizeof(Element) * kElemsB;
  static constexpr uint32_t kBytesStage = 2 * kBytesB + (kDq ? 0 : 2 * sizeof(float) * kStatOuter * kStatRow);
};

template <int HeadDim, int BlockN, bool Dq>
struct DefaultBwdStages {
  static constexpr int kFree = 227 * 1024 - 2 * 128 * HeadDim * 2 - 1024;
  static constexpr int kFit = kFree / (2 * BlockN * HeadDim * 2 + (Dq ? 0 : 2 * 4 * 2 * BlockN));
  static constexpr int value = kFit > 4 ? 4 : kFit;
};

// Kernel parameters: the sm80 backward's, the tensor maps, and the head-major lse2 / delta.
template <int Rank, class Element>
struct HopperBwdParams {
  CUtensorMap tma_a1, tma_a2;   // resident rows: dK/dV: K, V (row box); dQ: Q, dO
  CUtensorMap tma_b1, tma_b2;   // streamed columns: dK/dV: Q, dO (column tile); dQ: K, V
  CUtensorMap tma_lse, tma_delta;  // fp32 head-major, column tile (dK/dV only)
  fused::BackwardParams<Rank, Element> base;
  TmaDims tma_dims;             // batch folding of the token maps (same for all four)
  float* lse2_t = nullptr;      // [B, H, L0, .., Lp_last]
  float* delta_t = nullptr;
  int last_pad = 0;             // Lp_last: the last axis' length rounded up to 4
  int32_t row_tiles_per_group[Rank];
  int32_t col_tiles_per_group[Rank];
  int debug = 0;                // bit 0: never skip the mask (diagnostics)
  // Rank 1: CTA blockIdx.x < order_count takes row tile order[blockIdx.x] (longest first,
  // tile_order.hpp); 0: blockIdx order.
  int order_count = 0;
  uint16_t order[Rank == 1 ? kBwdOrderCap : 1];
};
static_assert(sizeof(HopperBwdParams<1, cutlass::bfloat16_t>) <= 4096, "kernel parameters: at most 4 KB");

namespace detail {

// Index of (b, h, coord) in the head-major [B, H, L0, .., Lp_last] lse2 / delta buffers.
template <int Rank>
__device__ __forceinline__ int64_t head_major_index(NaProblem<Rank> const& p, int b, int h, int const (&coord)[Rank],
                                                    int last_pad) {
  int64_t idx = int64_t(b) * p.heads + h;
#pragma unroll
  for (int a = 0; a < Rank - 1; ++a) idx = idx * p.axis[a].length + coord[a];
  return idx * last_pad + coord[Rank - 1];
}

}  // namespace detail

}  // namespace hopper
}  // namespace fastna
