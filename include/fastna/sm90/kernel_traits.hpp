// Compile-time configuration of the sm90a (Hopper) fused neighborhood-attention forward kernel.
//
// A CTA owns a 128-token query box (fastna::fused::Box, flattened row-major) inside one
// dilation group.  Two consumer warpgroups each own 64 query rows (wgmma M = 64) and one
// producer warpgroup streams K/V boxes into a multi-stage shared-memory ring with cp.async.
// The query box is split along its first axis so that each warpgroup's 64 rows are themselves
// a box: that lets a warpgroup skip masking on KV tiles fully inside its own rows' windows.
#pragma once

#include <cute/tensor.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/arch/mma_sm90.hpp>
#include <cutlass/numeric_types.h>

#include "fastna/common/box.hpp"  // fastna::fused::Box
#include "fastna/common/problem.hpp"

namespace fastna {
namespace hopper {

using fused::Box;

// Default boxes: 128 query tokens and 128 keys per KV tile (3D 2x8x8 beat 4x4x8 by 7-18% on the
// hunyuan / video anchors, H100, docs/PERFORMANCE.md section 11.2; 2D 16x8 beat 8x16 by 9% on flux).  The last extent is a multiple of
// 8 so a thread's accumulator columns (8*v2 + 2*quad + v0) decompose into compile-time box
// offsets (see mask.hpp).
template <int Rank> struct DefaultQBox;
template <> struct DefaultQBox<1> { using type = Box<1, 128>; };
template <> struct DefaultQBox<2> { using type = Box<2, 16, 8>; };
template <> struct DefaultQBox<3> { using type = Box<3, 2, 8, 8>; };
// Head dim 32 (NAT/DiNAT-style small windows) and 256 use 64-key boxes: at D=32 the consumers
// must fit 104 registers (two CTAs per SM, kCtasPerSm) and a 7x7 window's 22x14 key halo is
// covered by six 8x8 boxes (384 keys) of which each warpgroup visits only the four its own rows
// see (256 keys per query instead of 512); at D=256 a 128-key stage would not fit shared memory.
template <int Rank, bool Small> struct KBoxFor;
template <> struct KBoxFor<1, false> { using type = Box<1, 128>; };
template <> struct KBoxFor<2, false> { using type = Box<2, 16, 8>; };
template <> struct KBoxFor<3, false> { using type = Box<3, 2, 8, 8>; };
template <> struct KBoxFor<1, true> { using type = Box<1, 64>; };
template <> struct KBoxFor<2, true> { using type = Box<2, 8, 8>; };
template <> struct KBoxFor<3, true> { using type = Box<3, 1, 8, 8>; };
template <int Rank, int HeadDim = 64>
struct DefaultKBox {
  using type = typename KBoxFor<Rank, HeadDim == 32 || HeadDim == 256>::type;
};

// Swizzle atoms: 128-byte rows when the head dim allows it (64 elements of 16 bits), else
// 64-byte rows (D=32: one SW64 atom column, (8 tokens, 32) K-major / (32, 8 tokens) MN-major --
// the same physical layout for K and V, and what a TMA box with a 64-byte inner extent and
// CU_TENSOR_MAP_SWIZZLE_64B writes).
template <class Element, int HeadDim>
struct SmemAtoms {
  static_assert(HeadDim % 32 == 0, "head dim: multiple of 32");
  using K = std::conditional_t<HeadDim % 64 == 0, cute::GMMA::Layout_K_SW128_Atom<Element>,
                               cute::GMMA::Layout_K_SW64_Atom<Element>>;
  using MN = std::conditional_t<HeadDim % 64 == 0, cute::GMMA::Layout_MN_SW128_Atom<Element>,
                                cute::GMMA::Layout_MN_SW64_Atom<Element>>;
  // Columns per swizzle atom = inner extent of one TMA copy (D=128: two copies per box).
  static constexpr int kInner = HeadDim % 64 == 0 ? 64 : 32;
};

// Consumer schedules.
enum class Schedule {
  kSerial = 0,    // S = QK^T, softmax, O += PV, one after the other
  kOverlap = 1,   // software pipeline: softmax of KV box j while O += P V of box j-1 runs
  kPingpong = 2,  // kOverlap, and the two consumer warpgroups take turns issuing their wgmmas so
                  // that one's softmax runs under the other's matrix work
};

// How the pipeline's mbarriers are signalled (fewer arrivals on one shared-memory word per box).
enum class Signal {
  kThread = 0,  // every consumer thread releases a stage; every producer thread arrives through
                // cp.async.mbarrier.arrive (completion tracked by the barrier)
  kConsumerWarp = 1,  // consumers: one arrival per warp; producer as kThread
  kTma = 3,           // K/V boxes by TMA (one thread, transaction bytes) when the problem allows
                      // it (tma.hpp), else as kThread; consumers as kConsumerWarp
};

template <int Rank_, class Element_, int HeadDim_, class QBox_, class KBox_, int Stages_,
          Schedule Schedule_ = Schedule::kOverlap, Signal Signal_ = Signal::kThread, int CtasPerSm_ = 0,
          int Persistent_ = -1, bool PrefetchQ_ = true>
struct ForwardTraits {
  using Element = Element_;
  using QBox = QBox_;
  using KBox = KBox_;
  static constexpr int kRank = Rank_;
  static constexpr int kHeadDim = HeadDim_;
  static constexpr int kStages = Stages_;
  static constexpr Schedule kSchedule = Schedule_;
  static constexpr Signal kSignal = Signal_;
  static_assert(QBox::kRank == kRank && KBox::kRank == kRank, "box rank must match problem rank");
  static_assert(kHeadDim == 32 || kHeadDim == 64 || kHeadDim == 128 || kHeadDim == 256, "head dim 32/64/128/256");

  static constexpr int kBlockM = QBox::kSize;
  static constexpr int kBlockN = KBox::kSize;
  static_assert(kBlockM == 128, "query box: 128 tokens (2 warpgroups x 64 rows)");
  static_assert(QBox::extent(0) % 2 == 0, "query box splits in halves along its first axis");
  static_assert(kBlockN % 16 == 0 && kBlockN <= 256, "KV box: multiple of 16, at most 256 keys");
  static_assert(KBox::extent(kRank - 1) % 8 == 0 && KBox::extent(kRank - 1) <= 256,
                "KV box: last extent a multiple of 8");
  static_assert(KBox::extent(kRank - 1) <= 64 || kRank == 1, "KV box: last extent <= 64 in 2D/3D");
  static_assert(kBlockN / KBox::extent(kRank - 1) <= 32, "KV box: at most 32 outer positions");

  static constexpr int kConsumerWarpgroups = 2;
  static constexpr int kThreads = 128 * (kConsumerWarpgroups + 1);
  // CTAs per SM (__launch_bounds__ min blocks).  Head dim 32: two, so that one CTA's prologue
  // (barrier init, Q load, first KV box) and epilogue hide under the other's math -- small-window
  // CTAs (nat: 6 KV boxes of 64 keys) are mostly latency.  Needs 64-key boxes (S, P and O
  // accumulators: 32 + 16 + 16 registers).
  // CtasPerSm_ = 0: this default; 1 or 2 to override (benchmark variants).
  static constexpr int kCtasPerSm = CtasPerSm_ != 0 ? CtasPerSm_ : (kHeadDim == 32 ? 2 : 1);
  // Persistent CTAs (at most kCtasPerSm per SM, each looping over query tiles; the producer loads
  // the next tile's Q and first KV boxes under the current tile's last boxes and epilogue).
  // Persistent_ = -1: on in 1D at one CTA per SM (H100: 1d-strided 5% faster, 1d 4%); off in
  // 2D / 3D (static round-robin tiles were 3-32% slower on flux / hunyuan / video-causal-t, whose
  // tile costs differ -- masked and skipped boxes, causal -- where the hardware's dynamic CTA
  // order balances better) and at two CTAs per SM (head dim 32: the other CTA already hides a
  // CTA's prologue / epilogue; nat was 10% slower).  0 / 1 force it.  Forward::grid_shape also
  // launches one tile per CTA when the problem has more than kPersistentMaxWaves waves.
  static constexpr bool kPersistent = Persistent_ < 0 ? (kCtasPerSm == 1 && kRank == 1) : Persistent_ != 0;
  static constexpr int kPersistentMaxWaves = 4;
  // Persistent CTAs with TMA K/V: the Q-loading producer warps prefetch the next tile's Q box
  // into L2 right after issuing this tile's, so the copy that follows the q_empty barrier (the
  // tile's last S = Q K^T) reads L2 instead of DRAM.
  static constexpr bool kPrefetchQ = PrefetchQ_ && kPersistent;
  // Register split after setmaxnreg: 128 * kProducerRegs + 256 * kConsumerRegs <= 384 * R, with
  // R = 168 (one CTA per SM) or 80 (two) the per-thread count the launch bounds give every warp.
  // ptxas compiles every warp's code within the launch-bound count R (168 / 80), so consumer
  // counts above R buy nothing; the producer gets 56 (its per-tile Q / cp.async address math
  // spilled at 32-40 once CTAs became persistent).
  static constexpr int kProducerRegs = kCtasPerSm == 2 ? 32 : 56;
  static constexpr int kConsumerRegs = kCtasPerSm == 2 ? 104 : 224;
  static_assert(128 * kProducerRegs + 256 * kConsumerRegs <= kThreads * ((65536 / (kThreads * kCtasPerSm)) / 8 * 8),
                "setmaxnreg split exceeds the registers the launch bounds give the CTA");
  // Two CTAs per SM leave the consumers 104 registers: 64-key boxes fit without spills at D=32
  // (128-key boxes spill; benchmark variant only).

  using MmaAtomQK = decltype(cute::GMMA::ss_op_selector<Element, Element, float,
                                                         cute::Shape<cute::_64, cute::Int<kBlockN>, cute::Int<kHeadDim>>>());
  using MmaAtomPV = decltype(cute::GMMA::rs_op_selector<Element, Element, float,
                                                         cute::Shape<cute::_64, cute::Int<kHeadDim>, cute::Int<kBlockN>>,
                                                         cute::GMMA::Major::K, cute::GMMA::Major::MN>());
  using WarpgroupLayout = cute::Layout<cute::Shape<cute::Int<kConsumerWarpgroups>, cute::_1, cute::_1>>;
  using TiledMmaQK = decltype(cute::make_tiled_mma(MmaAtomQK{}, WarpgroupLayout{}));
  using TiledMmaPV = decltype(cute::make_tiled_mma(MmaAtomPV{}, WarpgroupLayout{}));

  // Q, K: (token, head dim), head dim contiguous (K-major for S = Q K^T).
  // V: stored token-major like K but addressed as (head dim, token): MN-major B of O = P V.
  using SmemLayoutQ = decltype(cute::tile_to_shape(typename SmemAtoms<Element, kHeadDim>::K{},
                                                   cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}));
  using SmemLayoutK = decltype(cute::tile_to_shape(typename SmemAtoms<Element, kHeadDim>::K{},
                                                   cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>, cute::Int<kStages>>{}));
  // Atoms token-first, so that each 64-column half of V is one dense (token, 64) block, the
  // same as K's halves: what a TMA box with a 128-byte inner extent writes.
  using SmemLayoutVt = decltype(cute::tile_to_shape(typename SmemAtoms<Element, kHeadDim>::MN{},
                                                    cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>, cute::Int<kStages>>{},
                                                    cute::Step<cute::_2, cute::_1, cute::_3>{}));

  static constexpr int kElemsQ = kBlockM * kHeadDim;
  static constexpr int kElemsKV = kBlockN * kHeadDim;  // one stage of K or V

  // Shared memory: Q | K stages | V stages | mbarriers.  1024-byte aligned buffers (the period
  // of the 128-byte swizzle, which the wgmma descriptors assume).
  static constexpr size_t kOffQ = 0;
  static constexpr size_t kOffK = kOffQ + sizeof(Element) * size_t(kElemsQ);
  static constexpr size_t kOffV = kOffK + sizeof(Element) * size_t(kStages) * kElemsKV;
  static constexpr size_t kOffBar = kOffV + sizeof(Element) * size_t(kStages) * kElemsKV;
  static constexpr int kNumBarriers = 2 + 3 * kStages;  // q_full, k_full[S], v_full[S], empty[S], q_empty
  static constexpr size_t kSmemBytes = kOffBar + 8 * kNumBarriers;
  static_assert(kOffK % 1024 == 0 && kOffV % 1024 == 0, "buffers must stay 1024-byte aligned");
  static_assert(kSmemBytes <= 227 * 1024, "shared memory: at most 227 KB per CTA");
  static_assert(kCtasPerSm == 1 || kSmemBytes * kCtasPerSm <= 227 * 1024, "shared memory: two CTAs per SM");
  static constexpr int kTmaInner = SmemAtoms<Element, kHeadDim>::kInner;

  // Producer copies: 16-byte chunks, consecutive threads along one token's head dim.
  static constexpr int kProducerThreads = 128;
  static constexpr int kChunksPerRow = kHeadDim / 8;
  static_assert(kProducerThreads % kChunksPerRow == 0, "chunk mapping: threads must cover whole rows");
  static constexpr int kRowsPerPass = kProducerThreads / kChunksPerRow;
};

// Default consumer schedule: serial at head dim 32 (nat / dinat, H100: 7% faster than overlap
// with two CTAs per SM -- the other CTA fills the gaps, and the serial loop issues fewer
// instructions), overlap elsewhere.
template <int HeadDim>
struct DefaultSchedule {
  static constexpr Schedule value = HeadDim == 32 ? Schedule::kSerial : Schedule::kOverlap;
};

// As many stages as fit 227 KB, at most 4.  The overlapped schedule releases stage j-1 only
// after the softmax of box j, so it needs 3 stages for a load to hide under a whole box of work
// (D=128 with 128-key boxes: Q 32 KB + 3 x 64 KB).
template <int HeadDim, int BlockN, int ElemBytes = 2>
struct DefaultStages {
  static constexpr int kFree = 227 * 1024 - 128 * HeadDim * ElemBytes - 1024;
  static constexpr int kFit = kFree / (2 * BlockN * HeadDim * ElemBytes);
  static constexpr int value = kFit > 4 ? 4 : kFit;
};

}  // namespace hopper
}  // namespace fastna
