// Compile-time configuration of the small-window fused forward (fused/small_window_kernel.hpp).
//
// Small neighborhoods (NAT / DiNAT: 7x7 windows, head dim 32) waste most of a 64-query x 64-key
// tile: a query box of 8x8 needs a 14x14 key halo, and boxes of keys aligned to 8x8 visit 256
// keys per query for 49 real ones.  This kernel instead gives every warp a 16-query patch whose
// whole key halo fits one register tile: an 8x2 patch of a 7x7 window needs 14 rows x 8
// columns = 112 keys, one S = Q K^T tile of 16 x 112, one softmax pass (no online rescaling)
// and one O = P V.  The key slots of the tile are a fixed grid (Slots) over the warp's halo,
// so the coordinates of every accumulator column are compile-time constants (plus the lane's
// fixed offset in the last axis), and the neighbor mask is two bit tests per element.  The
// CTA's warps share their union of halos through shared memory, gathered per lane by ldmatrix.
#pragma once

#include <cutlass/numeric_types.h>

#include "fastna/common/sm80_tile_traits.hpp"
#include "fastna/small/shape.hpp"

namespace fastna {
namespace fused {

// Patch: the 16 queries of a warp (Box, kSize 16).  Slots: the key slots of a warp's halo per
// axis (last extent a multiple of 8 and at most 64: one mma n-tile never spans two rows of the
// last axis); their product (multiple of 16) is the N of the S tile.  WarpGrid: warps per CTA
// per axis.  A problem fits when every warp halo fits Slots (host check: SmallWindowForward).
// MinCtasPerSm: __launch_bounds__' minimum CTAs per SM (caps registers; 0 = no minimum).
// PatchesPerWarp: patches a warp computes one after the other, side by side along the last axis
// (amortizes the CTA's setup and halo load over more queries).  Tma: on sm90, one TMA copy per
// tensor loads the CTA halo (a box of halo_cap keys per axis, zero-filled past the ends) instead
// of every thread's cp.async loop; head dims 32 and 64 (one swizzle atom per row).
template <int Rank_, class Element_, int HeadDim_, class Patch_, class Slots_, class WarpGrid_, int MinCtasPerSm_ = 0,
          int PatchesPerWarp_ = 1, bool Tma_ = false>
struct SmallWindowTraits {
  using Element = Element_;
  using Patch = Patch_;
  using Slots = Slots_;
  using WarpGrid = WarpGrid_;
  static constexpr int kRank = Rank_;
  static constexpr int kHeadDim = HeadDim_;
  static_assert(Patch::kRank == kRank && Slots::kRank == kRank && WarpGrid::kRank == kRank, "box ranks");
  static_assert(kRank <= 2, "ranks 1 and 2 (small_window_shape.hpp: no 3D configuration)");
  static_assert(Patch::kSize == 16, "a warp owns 16 queries (the M of one mma.sync tile)");
  static_assert(kHeadDim == 32 || kHeadDim == 64 || kHeadDim == 128, "head dim 32, 64 or 128");
  static_assert(sizeof(Element) == 2, "fp16 / bf16 operands");

  static constexpr int kSlotsLast = Slots::extent(kRank - 1);
  static_assert(kSlotsLast % 8 == 0 && kSlotsLast <= 64, "last-axis slots: multiple of 8, at most 64");
  static constexpr int kKeys = Slots::kSize;            // N of the S tile
  static_assert(kKeys % 16 == 0, "key slots: whole k16 steps of O = P V");
  static constexpr int kNTiles = kKeys / 8;             // n8 tiles of S
  static constexpr int kTilesPerLastRow = kSlotsLast / 8;
  static constexpr int kDimTiles = kHeadDim / 8;        // n8 tiles of O
  static constexpr int kQkSteps = kHeadDim / 16;        // k16 steps of S = Q K^T
  static constexpr int kPvSteps = kKeys / 16;           // k16 steps of O = P V

  static constexpr int kMinCtasPerSm = MinCtasPerSm_;
  static constexpr int kPatchesPerWarp = PatchesPerWarp_;
  static constexpr int kWarps = WarpGrid::kSize;
  static constexpr int kThreads = 32 * kWarps;
  // Queries of the CTA per axis.
  static constexpr int tile(int a) {
    return Patch::extent(a) * WarpGrid::extent(a) * (a == kRank - 1 ? kPatchesPerWarp : 1);
  }
  // Shared memory keeps the CTA's halo: at most (tile - 1) + span per axis, where a warp halo of
  // (patch - 1) + span fits Slots, i.e. span <= slots - patch + 1.
  static constexpr int halo_cap(int a) { return tile(a) + Slots::extent(a) - Patch::extent(a); }
  static constexpr int kSmemKeys = halo_cap(0) * (kRank > 1 ? halo_cap(1) : 1) * (kRank > 2 ? halo_cap(2) : 1);

  // Shared rows of HeadDim elements in 16-byte chunks, XOR-swizzled so that 8 consecutive rows
  // at one chunk hit 8 different bank groups (64-byte rows: two rows per 128-byte line).
  static constexpr int kRowBytes = kHeadDim * 2;
  static constexpr int kChunks = kRowBytes / 16;
  // TMA writes swizzled boxes relative to 1024-byte aligned addresses (SW64 / SW128 patterns
  // equal swizzle() below): K at 0, V at kVOffset, the mbarrier after them, plus alignment slack.
  static constexpr bool kTma = Tma_ && (kHeadDim == 32 || kHeadDim == 64);
  static constexpr int kVOffset = kTma ? (kSmemKeys * kRowBytes + 1023) / 1024 * 1024 : kSmemKeys * kRowBytes;
  static constexpr int kSmemBytes = kTma ? 2 * kVOffset + 16 + 1024 : 2 * kSmemKeys * kRowBytes;
  static_assert(kSmemBytes <= 227 * 1024, "key halo does not fit shared memory");
  FASTNA_HOST_DEVICE static constexpr int swizzle(int row) {
    return kRowBytes == 64 ? ((row >> 1) & 3) : (row & 7);
  }
};

// The instantiated configurations (generator tile "small"), from small_window_shape.hpp.
template <int Rank, int HeadDim> struct DefaultSmallWindow;
template <int HeadDim> struct DefaultSmallWindow<1, HeadDim> {
  using S = SmallWindowShape<1>;
  using Patch = Box<1, S::patch[0]>;
  using Slots = Box<1, S::slots[0]>;
  using WarpGrid = Box<1, S::warps[0]>;
  static constexpr int kMinCtasPerSm = S::template min_ctas<HeadDim>;
  static constexpr int kPatchesPerWarp = S::patches_per_warp;
};
template <int HeadDim> struct DefaultSmallWindow<2, HeadDim> {
  using S = SmallWindowShape<2>;
  using Patch = Box<2, S::patch[0], S::patch[1]>;
  using Slots = Box<2, S::slots[0], S::slots[1]>;
  using WarpGrid = Box<2, S::warps[0], S::warps[1]>;
  static constexpr int kMinCtasPerSm = S::template min_ctas<HeadDim>;
  static constexpr int kPatchesPerWarp = S::patches_per_warp;
};

}  // namespace fused
}  // namespace fastna
