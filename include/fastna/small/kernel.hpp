// Small-window fused neighborhood-attention forward kernel (sm80-class: mma.sync m16n8k16,
// cp.async, ldmatrix; fp16 / bf16, fp32 accumulate).  Why it exists and its shapes:
// small_window_traits.hpp.
//
// One CTA = one tile of queries (WarpGrid x Patch, group-local coordinates of one dilation
// group) x one head x one batch item:
//   1. all threads copy the CTA's key halo (the union of its queries' windows, per axis
//      key_range_for_query_tile) of K and V into shared memory, rows swizzled by 16-byte chunk;
//   2. each warp reads its 16 queries' Q fragments straight from global memory meanwhile;
//   3. each warp computes S = Q K^T over its own halo's key slots in one 16 x kKeys register
//      tile (ldmatrix gathers the slots' rows from the CTA halo: each lane addresses one key),
//      masks it, takes one softmax pass and O = P V with P straight from the S registers;
//   4. O / rowsum and the lse go to global memory.
// Key slots outside a warp's actual halo (borders, shorter groups) read a clamped row of the
// halo (finite data) and are masked, like every key outside a query's window.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>
#include <cutlass/numeric_types.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "fastna/common/device_math.hpp"
#include "fastna/common/cp_async.hpp"        // detail::cp_async_16_zfill
#include "fastna/common/forward_params.hpp"  // ForwardParams
#include "fastna/common/grouped_schedule.hpp"
#include "fastna/common/warp_reduce.hpp"     // quad_max / quad_sum
#include "fastna/small/traits.hpp"
#include "fastna/common/index_math.hpp"
#include "fastna/common/problem.hpp"

namespace fastna {
namespace fused {
// Kernel parameters: the fused forward's, plus the K / V tensor maps of the sm90 TMA halo copy
// (read by the Traits::kTma kernel only; use_tma says whether the maps could be made, so which
// of the two kernels the host launches: SmallWindowForward::run).
template <int Rank, class Element>
struct SmallWindowParams {
  ForwardParams<Rank, Element> fwd;
  CUtensorMap tma_k;
  CUtensorMap tma_v;
  int use_tma = 0;
};

namespace small_detail {

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a * b on an m16n8k16 tile, fp32 accumulate.
template <class Element>
__device__ __forceinline__ void mma_16816(float (&d)[4], uint32_t const (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<Element, cutlass::bfloat16_t>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// d += a * b on an m16n8k8 tile (bf16), fp32 accumulate.
__device__ __forceinline__ void mma_1688_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t b0) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(b0));
}

// Two floats as one 32-bit register of two 16-bit elements (lo in the low half).
template <class Element>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t r;
  if constexpr (std::is_same_v<Element, cutlass::bfloat16_t>) {
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  } else {
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  }
  return r;
}

// x / n for 0 <= x < 2^16 and 1 <= n <= 2^10 without an integer division: (x + 0.5) / n is at
// least 0.5 / n away from an integer, far more than the float product's rounding error.
__device__ __forceinline__ int div_small(int x, float inv_n) {
  return static_cast<int>((static_cast<float>(x) + 0.5f) * inv_n);
}

}  // namespace small_detail

// One CTA tile: its batch item, head, dilation group, query origin and group length per axis,
// and the key halo (origin, extent per axis) its queries need.
template <int R>
struct SmallWindowTile {
  int b, h;
  int group[R], q0[R], glen[R];
  int clo[R], cext[R];
  bool empty;  // a tile of a shorter dilation group
};

// Query tile bx (blockIdx.x's order: (group, tile) per axis, last axis fastest) of head h,
// batch item b.
template <class Traits>
__device__ __forceinline__ SmallWindowTile<Traits::kRank> small_window_tile(
    ForwardParams<Traits::kRank, typename Traits::Element> const& params, int bx, int h, int b) {
  constexpr int R = Traits::kRank;
  const NaProblem<R>& prob = params.problem;
  SmallWindowTile<R> t;
  t.h = h;
  t.b = b;
#pragma unroll
  for (int a = R - 1; a >= 0; --a) {
    const int tpg = params.tiles_per_group[a];
    if (prob.axis[a].dilation == 1) {  // uniform: no division by the dilation's group count
      const int idx = a > 0 ? bx % tpg : bx;
      bx = a > 0 ? bx / tpg : 0;
      t.group[a] = 0;
      t.q0[a] = idx * Traits::tile(a);
    } else {
      const int n = prob.axis[a].dilation * tpg;
      const int idx = a > 0 ? bx % n : bx;
      bx = a > 0 ? bx / n : 0;
      t.group[a] = idx / tpg;
      t.q0[a] = (idx % tpg) * Traits::tile(a);
    }
  }
  t.empty = false;
#pragma unroll
  for (int a = 0; a < R; ++a) {
    t.glen[a] = group_length_fast(prob.axis[a], t.group[a]);
    t.empty = t.empty || (t.q0[a] >= t.glen[a]);
    const Range kr = key_range_fast(prob.axis[a], Range{t.q0[a], imin(t.q0[a] + Traits::tile(a), t.glen[a])},
                                    t.glen[a]);
    t.clo[a] = kr.begin;
    t.cext[a] = kr.size();
  }
  return t;
}

// All threads: cp.async of the tile's K and V halo into `smem` (K rows, then V rows at
// kVOffset bytes further), rows swizzled by 16-byte chunk; the caller commits the group.
template <class Traits>
__device__ __forceinline__ void small_window_load_halo(
    ForwardParams<Traits::kRank, typename Traits::Element> const& params,
    SmallWindowTile<Traits::kRank> const& t, unsigned char* smem, int tid) {
  constexpr int R = Traits::kRank;
  constexpr int kChunks = Traits::kChunks;
  constexpr int kRowBytes = Traits::kRowBytes;
  const NaProblem<R>& prob = params.problem;
  const int h_kv = prob.kv_head(t.h);
  int n_halo = 1;
#pragma unroll
  for (int a = 0; a < R; ++a) n_halo *= t.cext[a];
  const int chunk = tid % kChunks;
  constexpr int kStep = Traits::kThreads / kChunks;  // halo rows per pass
  {
    // Walk the halo rows with running coordinates and pointers (no per-row division or
    // 64-bit multiply): row r + kStep is kStep / ext further along the last axis and wraps
    // into the next row of axis 0 at most once per step.
    using T = typename Traits::Element;
    AxisParams const& al = prob.axis[R - 1];
    const int ext = t.cext[R - 1];
    const int64_t sk = int64_t(al.dilation) * params.k.stride_spatial[R - 1];
    const int64_t sv = int64_t(al.dilation) * params.v.stride_spatial[R - 1];
    T const* kp = params.k.ptr + t.b * params.k.stride_batch + h_kv * params.k.stride_head + chunk * 8 +
                  int64_t(t.clo[R - 1] * al.dilation + t.group[R - 1]) * params.k.stride_spatial[R - 1];
    T const* vp = params.v.ptr + t.b * params.v.stride_batch + h_kv * params.v.stride_head + chunk * 8 +
                  int64_t(t.clo[R - 1] * al.dilation + t.group[R - 1]) * params.v.stride_spatial[R - 1];
    int row = tid / kChunks;
    if constexpr (R == 1) {
      kp += row * sk;
      vp += row * sv;
      for (; row < n_halo; row += kStep, kp += kStep * sk, vp += kStep * sv) {
        const uint32_t dst = row * kRowBytes + ((chunk ^ Traits::swizzle(row)) << 4);
        detail::cp_async_16_zfill(smem + dst, kp, true);
        detail::cp_async_16_zfill(smem + Traits::kVOffset + dst, vp, true);
      }
    } else {
      AxisParams const& a0 = prob.axis[0];
      const int64_t sk0 = int64_t(a0.dilation) * params.k.stride_spatial[0];
      const int64_t sv0 = int64_t(a0.dilation) * params.v.stride_spatial[0];
      kp += int64_t(t.clo[0] * a0.dilation + t.group[0]) * params.k.stride_spatial[0];
      vp += int64_t(t.clo[0] * a0.dilation + t.group[0]) * params.v.stride_spatial[0];
      const float inv_ext = 1.f / static_cast<float>(ext);
      int c0 = small_detail::div_small(row, inv_ext);
      int c1 = row - c0 * ext;
      kp += c0 * sk0 + c1 * sk;
      vp += c0 * sv0 + c1 * sv;
      const int dq = small_detail::div_small(kStep, inv_ext);
      const int dr = kStep - dq * ext;
      const int64_t step_k = dq * sk0 + dr * sk, wrap_k = sk0 - ext * sk;
      const int64_t step_v = dq * sv0 + dr * sv, wrap_v = sv0 - ext * sv;
      for (; row < n_halo; row += kStep) {
        const uint32_t dst = row * kRowBytes + ((chunk ^ Traits::swizzle(row)) << 4);
        detail::cp_async_16_zfill(smem + dst, kp, true);
        detail::cp_async_16_zfill(smem + Traits::kVOffset + dst, vp, true);
        c1 += dr;
        kp += step_k;
        vp += step_v;
        if (c1 >= ext) {
          c1 -= ext;
          kp += wrap_k;
          vp += wrap_v;
        }
      }
    }
  }
}

// One warp's patch (16 queries from `pw`, the patch origin) of a tile whose halo is (or is being)
// loaded at `smem`: S = Q K^T, mask, softmax, O = P V and the stores.  When `first`, the patch
// calls sync_halo() (the wait for the halo) after its setup and before it reads shared memory:
// every warp calls it exactly once, through its first patch.
template <class Traits, class SyncHalo>
__device__ __forceinline__ void small_window_patch(ForwardParams<Traits::kRank, typename Traits::Element> const& params,
                                                   SmallWindowTile<Traits::kRank> const& tile, unsigned char* smem,
                                                   int const (&pw)[Traits::kRank], int lane, bool first,
                                                   bool tma_layout, SyncHalo& sync_halo) {
  using Element = typename Traits::Element;
  using Patch = typename Traits::Patch;
  using Slots = typename Traits::Slots;
  constexpr int R = Traits::kRank;
  constexpr int kNTiles = Traits::kNTiles;
  constexpr int kRowBytes = Traits::kRowBytes;
  constexpr int kChunks = Traits::kChunks;
  const uint32_t smem_k = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const uint32_t smem_v = smem_k + Traits::kVOffset;
  const NaProblem<R>& prob = params.problem;
  const int b = tile.b;
  const int h = tile.h;
  int const (&group)[R] = tile.group;
  int const (&glen)[R] = tile.glen;
  int const (&clo)[R] = tile.clo;
  int const (&cext)[R] = tile.cext;

  // ---- 2. the patch's key halo and this thread's two query rows ----
  bool warp_active = true;
#pragma unroll
  for (int a = 0; a < R; ++a) warp_active = warp_active && (pw[a] < glen[a]);
  int wlo[R], wext[R];
#pragma unroll
  for (int a = 0; a < R; ++a) {
    const Range kr = key_range_fast(
        prob.axis[a], Range{imin(pw[a], glen[a] - 1), imin(pw[a] + Patch::extent(a), glen[a])}, glen[a]);
    wlo[a] = kr.begin;
    wext[a] = kr.size();
  }

  const int g = lane >> 2;  // accumulator row (and row + 8)
  const int qd = lane & 3;  // accumulator column pair
  int qcoord[2][R];         // absolute coordinates of the two query rows
  bool row_valid[2];
  int ws[2][R], wl[2][R];   // window start (relative to the warp halo) and length per axis
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    int off[R];
    Patch::unflatten(g + 8 * r, off);
    row_valid[r] = true;
#pragma unroll
    for (int a = 0; a < R; ++a) {
      int i = pw[a] + off[a];
      row_valid[r] = row_valid[r] && (i < glen[a]);
      i = imin(i, glen[a] - 1);
      qcoord[r][a] = i * prob.axis[a].dilation + group[a];
      const Range w = window_fast(prob.axis[a], i, glen[a]);
      ws[r][a] = w.begin - wlo[a];
      wl[r][a] = w.size();
    }
  }

  // Q fragments (A operand of m16n8k16): rows g and g + 8, columns 16 kk + 2 qd (+ 8).
  uint32_t qf[Traits::kQkSteps][4];
  {
    Element const* q_row0 = params.q.at(b, qcoord[0], h) + 2 * qd;
    Element const* q_row1 = params.q.at(b, qcoord[1], h) + 2 * qd;
#pragma unroll
    for (int kk = 0; kk < Traits::kQkSteps; ++kk) {
      qf[kk][0] = *reinterpret_cast<uint32_t const*>(q_row0 + 16 * kk);
      qf[kk][1] = *reinterpret_cast<uint32_t const*>(q_row1 + 16 * kk);
      qf[kk][2] = *reinterpret_cast<uint32_t const*>(q_row0 + 16 * kk + 8);
      qf[kk][3] = *reinterpret_cast<uint32_t const*>(q_row1 + 16 * kk + 8);
    }
  }

  // Shared-memory byte offset (swizzle folded in) of the key slot 8 t + (lane % 8) this lane
  // addresses in ldmatrix for n8 tile t; chunk c of it is at koff[t] ^ (c << 4).
  uint32_t koff[kNTiles];
  {
    int base = 0;  // halo row of the warp halo's origin, and per-axis row strides
    int hstride[R];
    hstride[R - 1] = 1;
#pragma unroll
    for (int a = R - 2; a >= 0; --a) hstride[a] = hstride[a + 1] * (tma_layout ? Traits::halo_cap(a + 1) : cext[a + 1]);
#pragma unroll
    for (int a = 0; a < R; ++a) base += (wlo[a] - clo[a]) * hstride[a];
#pragma unroll
    for (int t = 0; t < kNTiles; ++t) {
      const int n = 8 * t + (lane & 7);  // slot; its coordinates inside the warp halo:
      int row = base;
      int rest = n;
#pragma unroll
      for (int a = R - 1; a >= 0; --a) {
        const int s = rest % Slots::extent(a);  // compile-time divisors
        rest /= Slots::extent(a);
        row += imin(s, wext[a] - 1) * hstride[a];
      }
      koff[t] = static_cast<uint32_t>(row * kRowBytes + (Traits::swizzle(row) << 4));
    }
  }

  if (first) sync_halo();
  if (!warp_active) return;

  // ---- 3. S = Q K^T over the warp's key slots ----
  // bf16 2D (slot rows <= 16, 8 slot columns): the neighbor mask rides on the tensor cores as
  // two more products, S += M_row B_row + M_col B_col, where B_row[u][key] = -2^60 when the
  // key's slot row is u and M_row[query][u] = 2^60 when u is outside the query's window rows
  // (likewise for the 8 slot columns): a key outside the window gets <= -2^120 added, so its
  // probability is exactly 0, with no per-element select.  (fp16 cannot hold 2^60: select.)
  constexpr bool kMmaMask = R == 2 && std::is_same_v<Element, cutlass::bfloat16_t> && Slots::extent(0) <= 16 &&
                            Slots::extent(1) == 8;
  constexpr uint32_t kBigA = 0x5D80u;  // bf16 2^60
  constexpr uint32_t kBigB = 0xDD80u;  // bf16 -2^60
  uint32_t mrow[4] = {0u, 0u, 0u, 0u}, mcol[2] = {0u, 0u}, bcol = 0u;
  if constexpr (kMmaMask) {
    auto outside = [&](int u, int r, int a) { return static_cast<unsigned>(u - ws[r][a]) >= static_cast<unsigned>(wl[r][a]); };
    auto pair = [&](int u, int r, int a) {
      return (outside(u, r, a) ? kBigA : 0u) | (outside(u + 1, r, a) ? (kBigA << 16) : 0u);
    };
    mrow[0] = pair(2 * qd, 0, 0);
    mrow[1] = pair(2 * qd, 1, 0);
    mrow[2] = pair(2 * qd + 8, 0, 0);
    mrow[3] = pair(2 * qd + 8, 1, 0);
    mcol[0] = pair(2 * qd, 0, 1);
    mcol[1] = pair(2 * qd, 1, 1);
    bcol = (2 * qd == g ? kBigB : 0u) | (2 * qd + 1 == g ? (kBigB << 16) : 0u);  // key column = g
  }
  float s[kNTiles][4];
#pragma unroll
  for (int t = 0; t < kNTiles; ++t) {
#pragma unroll
    for (int i = 0; i < 4; ++i) s[t][i] = 0.f;
#pragma unroll
    for (int c0 = 0; c0 < kChunks; c0 += 4) {
      uint32_t kf[4];
      small_detail::ldsm_x4(kf, smem_k + (koff[t] ^ ((c0 + (lane >> 3)) << 4)));
      small_detail::mma_16816<Element>(s[t], qf[c0 / 2], kf[0], kf[1]);
      small_detail::mma_16816<Element>(s[t], qf[c0 / 2 + 1], kf[2], kf[3]);
    }
    if constexpr (kMmaMask) {
      // B_row of tile t (slot row t): -2^60 at dim t; this thread holds dims 2 qd (+1) and 2 qd + 8 (+1).
      const uint32_t half = (t & 1) ? (kBigB << 16) : kBigB;
      const uint32_t b0 = (t < 8 && qd == (t >> 1)) ? half : 0u;
      const uint32_t b1 = (t >= 8 && qd == ((t - 8) >> 1)) ? half : 0u;
      small_detail::mma_16816<Element>(s[t], mrow, b0, b1);
      small_detail::mma_1688_bf16(s[t], mcol[0], mcol[1], bcol);
    }
  }

  // ---- mask: slot n = 8 t + 2 qd + j has last-axis coordinate 8 (t % kTilesPerLastRow) +
  // 2 qd + j and outer coordinates from t alone (compile-time) ----
  constexpr int kTpr = Traits::kTilesPerLastRow;
  float row_max[2];
  if constexpr (kMmaMask) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = s[0][2 * r];
#pragma unroll
      for (int t = 0; t < kNTiles; ++t) mx = fmaxf(mx, fmaxf(s[t][2 * r], s[t][2 * r + 1]));
      row_max[r] = detail::quad_max(mx);
    }
  } else {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    // Window of the last axis as a bit set over slot columns, shifted to this lane's pair.
    const uint64_t run = (wl[r][R - 1] >= 64) ? ~0ull : ((1ull << wl[r][R - 1]) - 1ull);
    const uint64_t cols = (run << ws[r][R - 1]) >> (2 * qd);
    // Outer axes: one bit set per axis over its slot coordinates.
    uint32_t outer[R > 1 ? R - 1 : 1];
#pragma unroll
    for (int a = 0; a + 1 < R; ++a) outer[a] = ((1u << wl[r][a]) - 1u) << ws[r][a];
    float mx = -INFINITY;
#pragma unroll
    for (int t = 0; t < kNTiles; ++t) {
      bool outer_ok = true;
      int o = t / kTpr;
#pragma unroll
      for (int a = R - 2; a >= 0; --a) {
        outer_ok = outer_ok && ((outer[a] >> (o % Slots::extent(a))) & 1u);
        o /= Slots::extent(a);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const bool ok = outer_ok && ((cols >> (8 * (t % kTpr) + j)) & 1ull);
        float& x = s[t][2 * r + j];
        x = ok ? x : -INFINITY;
        mx = fmaxf(mx, x);
      }
    }
    row_max[r] = detail::quad_max(mx);
  }
  }

  // ---- one softmax pass; P (16-bit) is the A operand of O = P V ----
  const float scale_log2 = params.scale_log2;
  float row_sum[2] = {0.f, 0.f};
  const float mscaled[2] = {row_max[0] * scale_log2, row_max[1] * scale_log2};
  uint32_t pf[kNTiles][2];
#pragma unroll
  for (int t = 0; t < kNTiles; ++t) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float p0 = exp2_approx(s[t][2 * r] * scale_log2 - mscaled[r]);
      const float p1 = exp2_approx(s[t][2 * r + 1] * scale_log2 - mscaled[r]);
      row_sum[r] += p0 + p1;
      pf[t][r] = small_detail::pack2<Element>(p0, p1);
    }
  }

  float o[Traits::kDimTiles][4];
#pragma unroll
  for (int c = 0; c < Traits::kDimTiles; ++c) {
#pragma unroll
    for (int i = 0; i < 4; ++i) o[c][i] = 0.f;
  }
  const bool odd_block = (lane >> 3) & 1;  // ldmatrix.trans matrices 1, 3: the second 8 keys
#pragma unroll
  for (int ks = 0; ks < Traits::kPvSteps; ++ks) {
    const uint32_t a[4] = {pf[2 * ks][0], pf[2 * ks][1], pf[2 * ks + 1][0], pf[2 * ks + 1][1]};
    const uint32_t voff = odd_block ? koff[2 * ks + 1] : koff[2 * ks];
#pragma unroll
    for (int c = 0; c < kChunks; c += 2) {
      uint32_t vf[4];
      small_detail::ldsm_x4_trans(vf, smem_v + (voff ^ ((c + (lane >> 4)) << 4)));
      small_detail::mma_16816<Element>(o[c], a, vf[0], vf[1]);
      small_detail::mma_16816<Element>(o[c + 1], a, vf[2], vf[3]);
    }
  }

  // ---- 4. epilogue ----
  const int64_t n_tokens = prob.num_tokens();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float l = detail::quad_sum(row_sum[r]);
    if (!row_valid[r]) continue;
    const float inv = 1.f / l;  // every valid query sees at least itself-or-a-neighbor: l >= 1
    Element* out_row = params.out.at(b, qcoord[r], h) + 2 * qd;
#pragma unroll
    for (int c = 0; c < Traits::kDimTiles; ++c) {
      *reinterpret_cast<uint32_t*>(out_row + 8 * c) =
          small_detail::pack2<Element>(o[c][2 * r] * inv, o[c][2 * r + 1] * inv);
    }
    if (params.lse != nullptr && qd == 0) {
      params.lse[(int64_t(b) * n_tokens + flatten(qcoord[r], prob.axis)) * prob.heads + h] =
          row_max[r] * prob.scale + logf(l);
    }
  }
}

// One warp's share of a tile: kPatchesPerWarp patches side by side along the last axis.
template <class Traits, class SyncHalo>
__device__ __forceinline__ void small_window_warp(ForwardParams<Traits::kRank, typename Traits::Element> const& params,
                                                  SmallWindowTile<Traits::kRank> const& tile, unsigned char* smem,
                                                  int warp, int lane, bool tma_layout, SyncHalo&& sync_halo) {
  constexpr int R = Traits::kRank;
  int wpos[R];
  Traits::WarpGrid::unflatten(warp, wpos);
#pragma unroll
  for (int pp = 0; pp < Traits::kPatchesPerWarp; ++pp) {
    int pw[R];
#pragma unroll
    for (int a = 0; a < R; ++a) {
      const int patch = a == R - 1 ? wpos[a] * Traits::kPatchesPerWarp + pp : wpos[a];
      pw[a] = tile.q0[a] + patch * Traits::Patch::extent(a);
    }
    small_window_patch<Traits>(params, tile, smem, pw, lane, pp == 0, tma_layout, sync_halo);
  }
}

// The kernel body: one tile per CTA (grid = query tiles x heads x batch).  (A persistent
// variant, CTAs striding over tiles with a double-buffered halo, measured 10-30% slower on
// nat / dinat: docs/PERFORMANCE.md section 11.4.)
template <class Traits>
__device__ __forceinline__ void small_window_forward(
    SmallWindowParams<Traits::kRank, typename Traits::Element> const& kparams, unsigned tile_x, unsigned h,
    unsigned b) {
  constexpr int R = Traits::kRank;
  ForwardParams<R, typename Traits::Element> const& params = kparams.fwd;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int tid = threadIdx.x;
  const SmallWindowTile<R> t = small_window_tile<Traits>(params, tile_x, h, b);
  if (t.empty) return;  // uniform over the CTA
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (Traits::kTma) {
    {
      unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
      const uint32_t bar = static_cast<uint32_t>(__cvta_generic_to_shared(smem + 2 * Traits::kVOffset));
      if (tid == 0) {
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(bar));
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
      }
      __syncthreads();
      if (tid == 0) {
        constexpr uint32_t kBytes = 2u * Traits::kSmemKeys * Traits::kRowBytes;
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(kBytes) : "memory");
        // Coordinates (innermost first): head-dim 0, kv head, the spatial axes last to first, batch.
        int c[5] = {0, params.problem.kv_head(t.h), 0, 0, 0};
#pragma unroll
        for (int a = 0; a < R; ++a) c[2 + a] = t.clo[R - 1 - a] * params.problem.axis[R - 1 - a].dilation + t.group[R - 1 - a];
        c[2 + R] = t.b;
        const uint32_t dst_k = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
        CUtensorMap const* maps[2] = {&kparams.tma_k, &kparams.tma_v};
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          asm volatile(
              "cp.async.bulk.tensor.5d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5, "
              "%6}], [%7];\n" ::"r"(dst_k + i * Traits::kVOffset),
              "l"(reinterpret_cast<uint64_t>(maps[i])), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]), "r"(c[4]), "r"(bar)
              : "memory");
        }
      }
      small_window_warp<Traits>(params, t, smem, tid >> 5, tid & 31, true, [bar] {
        uint32_t done = 0;
        while (!done) {
          asm volatile(
              "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0;\n selp.u32 %0, 1, 0, p;\n}\n"
              : "=r"(done)
              : "r"(bar)
              : "memory");
        }
      });
    }
    return;
  }
#endif
  // cp.async (also what a Tma kernel compiled for an arch without TMA runs).
  small_window_load_halo<Traits>(params, t, smem_raw, tid);
  asm volatile("cp.async.commit_group;\n" ::);
  small_window_warp<Traits>(params, t, smem_raw, tid >> 5, tid & 31, false, [] {
    // "memory": the patch's Q loads stay before the wait (issued under the halo's latency).
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
    __syncthreads();
  });
}

// Entry points: __launch_bounds__ with Traits::kMinCtasPerSm as its minimum, or without one
// when it is 0 (ptxas then budgets registers by its own heuristic; a minimum of 1 lets it take
// up to 255 and costs occupancy).  small_window_kernel<Traits>() is the one to launch.
template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads)
    fna_small_window_kernel(__grid_constant__ SmallWindowParams<Traits::kRank, typename Traits::Element> const params) {
  small_window_forward<Traits>(params, blockIdx.x, blockIdx.y, blockIdx.z);
}
template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, (Traits::kMinCtasPerSm > 0 ? Traits::kMinCtasPerSm : 1))
    fna_small_window_kernel_min_ctas(
        __grid_constant__ SmallWindowParams<Traits::kRank, typename Traits::Element> const params) {
  small_window_forward<Traits>(params, blockIdx.x, blockIdx.y, blockIdx.z);
}

template <class Traits>
constexpr auto small_window_kernel() {
  if constexpr (Traits::kMinCtasPerSm > 0) {
    return &fna_small_window_kernel_min_ctas<Traits>;
  } else {
    return &fna_small_window_kernel<Traits>;
  }
}

// Grouped (GroupedSchedule: x over every problem's query tiles, y / z the largest head / batch
// count).  The cp.async halo only: the problems' tensor maps would live in global memory.
template <class Traits>
__device__ __forceinline__ void small_window_grouped(
    GroupedParams<SmallWindowParams<Traits::kRank, typename Traits::Element>> const& params) {
  static_assert(!Traits::kTma, "the grouped small-window kernel copies the halo with cp.async");
  int32_t problem, tile_x;
  params.schedule.locate(blockIdx.x, problem, tile_x);
  auto const& p = params.problems[problem];
  if (int(blockIdx.y) >= p.fwd.problem.heads || int(blockIdx.z) >= p.fwd.problem.batch) return;
  small_window_forward<Traits>(p, tile_x, blockIdx.y, blockIdx.z);
}
template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads) fna_small_window_grouped_kernel(
    GroupedParams<SmallWindowParams<Traits::kRank, typename Traits::Element>> const params) {
  small_window_grouped<Traits>(params);
}
template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, (Traits::kMinCtasPerSm > 0 ? Traits::kMinCtasPerSm : 1))
    fna_small_window_grouped_kernel_min_ctas(
        GroupedParams<SmallWindowParams<Traits::kRank, typename Traits::Element>> const params) {
  small_window_grouped<Traits>(params);
}

template <class Traits>
constexpr auto small_window_grouped_kernel() {
  if constexpr (Traits::kMinCtasPerSm > 0) {
    return &fna_small_window_grouped_kernel_min_ctas<Traits>;
  } else {
    return &fna_small_window_grouped_kernel<Traits>;
  }
}

}  // namespace fused
}  // namespace fastna
