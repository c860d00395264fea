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

#include <cuda_runtime.h>
#include <cutlass/numeric_types.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "fastna/fused/kernel.hpp"  // ForwardParams, detail::cp_async_16_zfill, quad_max / quad_sum
#include "fastna/fused/small_window_traits.hpp"
#include "fastna/index_math.hpp"
#include "fastna/problem.hpp"

namespace fastna {
namespace fused {
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

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads)
    fna_small_window_kernel(ForwardParams<Traits::kRank, typename Traits::Element> const params) {
  using Element = typename Traits::Element;
  using Patch = typename Traits::Patch;
  using Slots = typename Traits::Slots;
  using WarpGrid = typename Traits::WarpGrid;
  constexpr int R = Traits::kRank;
  constexpr int kNTiles = Traits::kNTiles;
  constexpr int kRowBytes = Traits::kRowBytes;
  constexpr int kChunks = Traits::kChunks;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  const uint32_t smem_k = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t smem_v = smem_k + Traits::kSmemKeys * kRowBytes;

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const NaProblem<R>& prob = params.problem;
  const int h = blockIdx.y;
  const int b = blockIdx.z;
  const int h_kv = prob.kv_head(h);

  // ---- the CTA's query tile: blockIdx.x enumerates (group, tile) per axis, last axis fastest ----
  int group[R], q0[R], glen[R];
  {
    int bx = blockIdx.x;
#pragma unroll
    for (int a = R - 1; a >= 0; --a) {
      const int tpg = params.tiles_per_group[a];
      const int n = prob.axis[a].dilation * tpg;
      const int idx = bx % n;
      bx /= n;
      group[a] = idx / tpg;
      q0[a] = (idx % tpg) * Traits::tile(a);
    }
    bool empty = false;
#pragma unroll
    for (int a = 0; a < R; ++a) {
      glen[a] = group_length(prob.axis[a], group[a]);
      empty = empty || (q0[a] >= glen[a]);
    }
    if (empty) return;  // a tile of a shorter dilation group: uniform over the CTA
  }

  // ---- 1. the CTA halo of K and V into shared memory ----
  int clo[R], cext[R];
  int n_halo = 1;
#pragma unroll
  for (int a = 0; a < R; ++a) {
    const Range kr = key_range_for_query_tile(
        prob.axis[a], Range{q0[a], imin(q0[a] + Traits::tile(a), glen[a])}, glen[a]);
    clo[a] = kr.begin;
    cext[a] = kr.size();
    n_halo *= cext[a];
  }
  {
    float inv_ext[R];
#pragma unroll
    for (int a = 0; a < R; ++a) inv_ext[a] = 1.f / static_cast<float>(cext[a]);
    const int chunk = tid % kChunks;
    for (int row = tid / kChunks; row < n_halo; row += Traits::kThreads / kChunks) {
      int coord[R];
      int rest = row;
#pragma unroll
      for (int a = R - 1; a > 0; --a) {
        const int quo = small_detail::div_small(rest, inv_ext[a]);
        coord[a] = (clo[a] + rest - quo * cext[a]) * prob.axis[a].dilation + group[a];
        rest = quo;
      }
      coord[0] = (clo[0] + rest) * prob.axis[0].dilation + group[0];
      const uint32_t dst = row * kRowBytes + ((chunk ^ Traits::swizzle(row)) << 4);
      detail::cp_async_16_zfill(smem_raw + dst, params.k.at(b, coord, h_kv) + chunk * 8, true);
      detail::cp_async_16_zfill(smem_raw + Traits::kSmemKeys * kRowBytes + dst,
                                params.v.at(b, coord, h_kv) + chunk * 8, true);
    }
    asm volatile("cp.async.commit_group;\n" ::);
  }

  // ---- 2. this warp's patch, halo, and its threads' query rows ----
  int wpos[R];
  WarpGrid::unflatten(warp, wpos);
  int pw[R];  // patch origin
  bool warp_active = true;
#pragma unroll
  for (int a = 0; a < R; ++a) {
    pw[a] = q0[a] + wpos[a] * Patch::extent(a);
    warp_active = warp_active && (pw[a] < glen[a]);
  }
  int wlo[R], wext[R];
#pragma unroll
  for (int a = 0; a < R; ++a) {
    const Range kr = key_range_for_query_tile(
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
      const Range w = window_local(prob.axis[a], i, glen[a]);
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
    for (int a = R - 2; a >= 0; --a) hstride[a] = hstride[a + 1] * cext[a + 1];
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

  asm volatile("cp.async.wait_group 0;\n" ::);
  __syncthreads();
  if (!warp_active) return;

  // ---- 3. S = Q K^T over the warp's key slots ----
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
  }

  // ---- mask: slot n = 8 t + 2 qd + j has last-axis coordinate 8 (t % kTilesPerLastRow) +
  // 2 qd + j and outer coordinates from t alone (compile-time) ----
  constexpr int kTpr = Traits::kTilesPerLastRow;
  float row_max[2];
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

  // ---- one softmax pass; P (16-bit) is the A operand of O = P V ----
  const float scale_log2 = params.scale_log2;
  float row_sum[2] = {0.f, 0.f};
  const float mscaled[2] = {row_max[0] * scale_log2, row_max[1] * scale_log2};
  uint32_t pf[kNTiles][2];
#pragma unroll
  for (int t = 0; t < kNTiles; ++t) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float p0 = exp2f(s[t][2 * r] * scale_log2 - mscaled[r]);
      const float p1 = exp2f(s[t][2 * r + 1] * scale_log2 - mscaled[r]);
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

}  // namespace fused
}  // namespace fastna
