// Fused neighborhood-attention forward kernel (sm80-class: mma.sync + cp.async + ldmatrix).
// fp16 / bf16 on m16n8k16 tensor cores, fp32 on TF32 ones (m16n8k8; ElementConfig<float>).
//
// One CTA = one query box (group-local coordinates of one dilation group) x one head x one
// batch.  The KV loop visits the box of keys that the queries need (per-axis
// key_range_for_query_tile), in KV boxes, double-buffered through cp.async.  S = Q K^T and
// O += P V run on tensor cores; the online softmax (FlashAttention-2 style) stays in registers.
// KV tiles that every query of the box fully sees (tile_fully_inside on every axis) skip the
// neighbor predicate; the others apply it per element.
#pragma once

#include <cute/tensor.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cutlass/numeric_types.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "fastna/common/box_tile.hpp"
#include "fastna/common/cp_async.hpp"
#include "fastna/common/forward_params.hpp"
#include "fastna/common/sm80_tile_traits.hpp"
#include "fastna/sm80/score_tile.hpp"
#include "fastna/common/sm80_tile_gemm.hpp"
#include "fastna/common/index_math.hpp"
#include "fastna/common/problem.hpp"
#include "fastna/common/tf32.hpp"
#include "fastna/common/grouped_schedule.hpp"
#include "fastna/common/warp_reduce.hpp"

namespace fastna {
namespace fused {

namespace detail {

// Loads K and V of column tile j of `cta` (a BoxTile whose columns are KV boxes) into one
// buffer of the K / V stages.
template <class Traits, class Params, class Tile>
__device__ __forceinline__ void load_kv_tile(Params const& params, Tile const& cta, int j, int b, int h_kv,
                                             typename Traits::Element* smem_k, typename Traits::Element* smem_v,
                                             int tid) {
  using KBox = typename Traits::KBox;
  using Layout = typename Traits::SmemLayoutKV;
  int origin[Traits::kRank];
  cta.col_origin(j, origin);
  load_box<Traits, KBox, Layout>(params.k, b, h_kv, smem_k, origin, cta.clim, cta.group, params.problem.axis, tid);
  load_box<Traits, KBox, Layout>(params.v, b, h_kv, smem_v, origin, cta.clim, cta.group, params.problem.axis, tid);
}

// A probability as the P V MMA's A operand: the input type (16-bit), or TF32 rounded to nearest.
template <class SmemElement>
__device__ __forceinline__ SmemElement to_operand(float p) {
  if constexpr (std::is_same_v<SmemElement, cutlass::tfloat32_t>) {
    return to_tf32(p);
  } else {
    return static_cast<SmemElement>(p);
  }
}

}  // namespace detail

// One CTA's work: query box `tile_x` (BoxTile numbering) of head h, batch b.  The kernels below
// choose the CTA: the dense grid directly, the grouped grid through its schedule.
template <class Traits>
__device__ __forceinline__ void forward_cta(ForwardParams<Traits::kRank, typename Traits::Element> const& params,
                                            int tile_x, int h, int b) {
  using namespace cute;
  using Element = typename Traits::Element;
  using SmemElement = typename Traits::SmemElement;  // Element, or tfloat32_t over fp32 bits
  using QBox = typename Traits::QBox;
  using KBox = typename Traits::KBox;
  constexpr int R = Traits::kRank;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  Element* smem_q = reinterpret_cast<Element*>(smem_raw);
  Element* smem_k = smem_q + Traits::kElemsQ;                      // [stage][kBlockN x D]
  Element* smem_v = smem_k + Traits::kStages * Traits::kElemsKV;   // [stage][kBlockN x D]

  const int tid = threadIdx.x;
  const NaProblem<R>& prob = params.problem;
  const int h_kv = prob.kv_head(h);

  // ---- which query box (rows) and the KV boxes (columns) its queries need ----
  const BoxTile<R, QBox, KBox, false> cta(prob, params.tiles_per_group, tile_x);
  if (cta.empty) return;
  const int n_kv = cta.n_col;

  // ---- prologue: Q and the first K/V tiles ----
  detail::load_box<Traits, QBox, typename Traits::SmemLayoutQ>(params.q, b, h, smem_q, cta.r0, cta.rlim, cta.group,
                                                              prob.axis, tid);
  detail::load_kv_tile<Traits>(params, cta, 0, b, h_kv, smem_k, smem_v, tid);
  cp_async_fence();
  // Deeper pipelines (kStages > 2): KV boxes 1 .. kStages - 2 too, one cp.async group each
  // (empty groups past the last box keep the group count uniform).
  if constexpr (Traits::kStages > 2) {
#pragma unroll
    for (int s = 1; s < Traits::kStages - 1; ++s) {
      if (s < n_kv) {
        detail::load_kv_tile<Traits>(params, cta, s, b, h_kv, smem_k + s * Traits::kElemsKV,
                                     smem_v + s * Traits::kElemsKV, tid);
      }
      cp_async_fence();
    }
  }

  // ---- MMA partitions ----
  typename Traits::TiledMma tiled_mma;
  auto thr_mma = tiled_mma.get_thread_slice(tid);
  // Shared memory as the MMA copies read it (TF32 view of the fp32 bits; identity for 16-bit).
  auto mma_smem = [](Element* p) { return make_smem_ptr(reinterpret_cast<SmemElement*>(p)); };
  Tensor sQ = make_tensor(mma_smem(smem_q), typename Traits::SmemLayoutQ{});
  Tensor sK0 = make_tensor(mma_smem(smem_k), typename Traits::SmemLayoutKV{});
  Tensor sVt0 = make_tensor(mma_smem(smem_v), typename Traits::SmemLayoutVt{});

  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);    // (MMA, MMA_M, MMA_K)
  Tensor tSrK = thr_mma.partition_fragment_B(sK0);   // (MMA, MMA_N, MMA_K)
  Tensor tOrVt = thr_mma.partition_fragment_B(sVt0); // (MMA, MMA_D, MMA_Kn)
  Tensor acc_o = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  clear(acc_o);

  // Q: A (cp.a), K: B (cp.b), V: B transposed (cp.bt: ldmatrix.trans for 16-bit; TF32 reads it
  // with plain loads through thr_mma in the mainloop).
  const detail::OperandCopies<Traits> cp(tid);
  Tensor tSsQ = cp.thr_a.partition_S(sQ);
  Tensor tSrQ_v = cp.thr_a.retile_D(tSrQ);
  Tensor tSrK_v = cp.thr_b.retile_D(tSrK);
  Tensor tOrVt_v = cp.thr_bt.retile_D(tOrVt);

  // Coordinates of this thread's accumulator elements inside the (query, key) tile.
  Tensor cS = make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{});
  Tensor tScS = thr_mma.partition_C(cS);

  // Accumulator fragment ((2,2), M, N), compact: flat i = v0 + 2*v1 + 4*m + 4*M*n,
  // row slot r = v1 + 2*m, so i = v0 + 2*r + 4*M*n.
  constexpr int kM = decltype(size<1>(tScS))::value;
  constexpr int kN = decltype(size<2>(tScS))::value;
  constexpr int kRows = 2 * kM;
  constexpr int kMo = decltype(size<1>(acc_o))::value;
  constexpr int kNo = decltype(size<2>(acc_o))::value;
  static_assert(kMo == kM, "row partition of S and O must agree");

  // Windows (group-local, per axis) of this thread's query rows.
  int wbeg[kRows][R], wend[kRows][R];
  detail::row_windows<QBox>(tScS, cta, prob.axis, wbeg, wend);

  float row_max[kRows], row_sum[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    row_max[r] = -INFINITY;
    row_sum[r] = 0.f;
  }
  const float scale_log2 = params.scale_log2;

  // ---- mainloop over KV boxes ----
  // kStages == 2: prefetch box j + 1 into the other buffer, wait for box j, barrier; a second
  // barrier at the end of the iteration frees box j's buffer for the next prefetch.
  // kStages > 2: wait for box j (groups committed so far: kStages - 1 + j, box j is group j),
  // barrier (every warp is done with box j - 1, whose buffer (j - 1) % kStages is the one box
  // j + kStages - 1 goes to), then prefetch that box: one barrier per KV box.
  int stage = 0;                        // buffer of box j (kStages > 2)
  [[maybe_unused]] int fill = Traits::kStages - 1;  // buffer of box j + kStages - 1 (kStages > 2)
  for (int j = 0; j < n_kv; ++j) {
    if constexpr (Traits::kStages == 2) {
      stage = j & 1;
      if (j + 1 < n_kv) {
        const int ns = stage ^ 1;
        detail::load_kv_tile<Traits>(params, cta, j + 1, b, h_kv, smem_k + ns * Traits::kElemsKV,
                                     smem_v + ns * Traits::kElemsKV, tid);
      }
      cp_async_fence();
      cp_async_wait<1>();
      __syncthreads();
    } else {
      cp_async_wait<Traits::kStages - 2>();
      __syncthreads();
      if (j + Traits::kStages - 1 < n_kv) {
        detail::load_kv_tile<Traits>(params, cta, j + Traits::kStages - 1, b, h_kv, smem_k + fill * Traits::kElemsKV,
                                     smem_v + fill * Traits::kElemsKV, tid);
      }
      cp_async_fence();
    }

    Tensor sK = make_tensor(mma_smem(smem_k + stage * Traits::kElemsKV), typename Traits::SmemLayoutKV{});
    Tensor sVt = make_tensor(mma_smem(smem_v + stage * Traits::kElemsKV), typename Traits::SmemLayoutVt{});
    Tensor tSsK = cp.thr_b.partition_S(sK);

    // S = Q K^T
    Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_s);
    detail::gemm_ss<Traits::kTf32>(tiled_mma, cp.a, tSsQ, tSrQ_v, tSrQ, cp.b, tSsK, tSrK_v, tSrK, acc_s);

    // Neighborhood mask, only for KV boxes not fully inside every query's window.
    int origin[R];
    cta.col_origin(j, origin);
    if (!cta.col_tile_inside(prob.axis, origin)) detail::mask_outside_windows<KBox>(acc_s, tScS, origin, wbeg, wend);

    // Online softmax (base-2 exponent, scale folded in).
    float mscaled[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float mx = row_max[r];
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        mx = fmaxf(mx, acc_s(2 * r + 4 * kM * n));
        mx = fmaxf(mx, acc_s(1 + 2 * r + 4 * kM * n));
      }
      mx = detail::quad_max(mx);
      mscaled[r] = (mx == -INFINITY) ? 0.f : mx * scale_log2;
      const float corr = exp2f(row_max[r] * scale_log2 - mscaled[r]);
      row_max[r] = mx;
      row_sum[r] *= corr;
#pragma unroll
      for (int n = 0; n < kNo; ++n) {
        acc_o(2 * r + 4 * kM * n) *= corr;
        acc_o(1 + 2 * r + 4 * kM * n) *= corr;
      }
    }
    Tensor rP = make_tensor<SmemElement>(acc_s.layout());
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < kN; ++n) {
#pragma unroll
        for (int v0 = 0; v0 < 2; ++v0) {
          const int i = v0 + 2 * r + 4 * kM * n;
          const float p = exp2f(acc_s(i) * scale_log2 - mscaled[r]);
          sum += p;
          rP(i) = detail::to_operand<SmemElement>(p);
        }
      }
      row_sum[r] += sum;
    }

    // O += P V with P straight from the S accumulator ((2,2),M,N): value (v0, v1) of an
    // m16n8 tile = row g + 8 v1, key 2t + v0 (g = lane / 4, t = lane % 4).
    if constexpr (!Traits::kTf32) {
      // m16n8k16 A operand ((2,2,2),M,N/2): two n8 tiles are one k16 block, keys in order.
      Tensor tOrP = detail::as_k16_a_operand<kM, kN>(rP);
      Tensor tOsVt = cp.thr_bt.partition_S(sVt);
      detail::gemm_rs(tiled_mma, tOrP, cp.bt, tOsVt, tOrVt_v, tOrVt, acc_o);
    } else {
      // m16n8k8 A operand ((2,2),M,N): value (a0, a1) = row g + 8 a0, K slot t + 4 a1; slot
      // t + 4 a1 holds key 2t + a1 (the accumulator's v0 = a1, v1 = a0), and sVt reads V in
      // that key order (ForwardTraits::SmemLayoutVt).  V: 32-bit shared loads, then TF32.
      Tensor tOrP = make_tensor(rP.data(),
                                make_layout(make_shape(make_shape(_2{}, _2{}), Int<kM>{}, Int<kN>{}),
                                            make_stride(make_stride(_2{}, _1{}), _4{}, Int<4 * kM>{})));
      Tensor tOsVt = thr_mma.partition_B(sVt);
#pragma unroll
      for (int kk = 0; kk < size<2>(tOrP); ++kk) {
        copy(tOsVt(_, _, kk), tOrVt(_, _, kk));
        round_to_tf32(tOrVt(_, _, kk));
        gemm(tiled_mma, tOrP(_, _, kk), tOrVt(_, _, kk), acc_o);
      }
    }
    if constexpr (Traits::kStages == 2) {
      __syncthreads();  // this stage is refilled by the next iteration's prefetch
    } else {
      stage = (stage + 1 == Traits::kStages) ? 0 : stage + 1;
      fill = (fill + 1 == Traits::kStages) ? 0 : fill + 1;
    }
  }
  cp_async_wait<0>();

  // ---- epilogue: normalize, lse, stage O (Element) through shared memory, 16-byte stores ----
  const float scale = prob.scale;
  Tensor cO = make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{});
  Tensor tOcO = thr_mma.partition_C(cO);
  Tensor sO = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutQ{});
  const int64_t n_tokens = prob.num_tokens();
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const float l = detail::quad_sum(row_sum[r]);
    const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
    for (int n = 0; n < kNo; ++n) {
#pragma unroll
      for (int v0 = 0; v0 < 2; ++v0) {
        const int i = v0 + 2 * r + 4 * kM * n;
        sO(get<0>(tOcO(i)), get<1>(tOcO(i))) = static_cast<Element>(acc_o(i) * inv);
      }
    }
    if (params.lse != nullptr && (tid % 4) == 0) {
      const int row = get<0>(tOcO(2 * r));
      int off[R];
      QBox::unflatten(row, off);
      int coord[R];
      if (box_token(cta.r0, off, cta.rlim, cta.group, prob.axis, coord)) {
        const float lse = (l > 0.f) ? row_max[r] * scale + logf(l) : -INFINITY;
        params.lse[(int64_t(b) * n_tokens + flatten(coord, prob.axis)) * prob.heads + h] = lse;
      }
    }
  }
  __syncthreads();
  {
    const int chunk = tid % Traits::kChunksPerRow;
    const int row0 = tid / Traits::kChunksPerRow;
#pragma unroll
    for (int r = row0; r < kBlockM; r += Traits::kRowsPerPass) {
      int off[R];
      QBox::unflatten(r, off);
      int coord[R];
      if (box_token(cta.r0, off, cta.rlim, cta.group, prob.axis, coord)) {
        const uint4 val =
            *reinterpret_cast<uint4 const*>(smem_q + typename Traits::SmemLayoutQ{}(r, chunk * Traits::kChunkElems));
        *reinterpret_cast<uint4*>(params.out.at(b, coord, h) + chunk * Traits::kChunkElems) = val;
      }
    }
  }
}

// One CTA per (query box, head, batch): grid forward_grid_shape.
template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads)
    fna_forward_kernel(ForwardParams<Traits::kRank, typename Traits::Element> const params) {
  forward_cta<Traits>(params, blockIdx.x, blockIdx.y, blockIdx.z);
}

// Several problems in one grid (GroupedSchedule: x over every problem's query boxes, y the
// largest head count, z the largest batch).
template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads)
    fna_forward_grouped_kernel(GroupedParams<ForwardParams<Traits::kRank, typename Traits::Element>> const params) {
  int32_t problem, tile_x;
  params.schedule.locate(blockIdx.x, problem, tile_x);
  auto const& p = params.problems[problem];
  if (int(blockIdx.y) >= p.problem.heads || int(blockIdx.z) >= p.problem.batch) return;
  forward_cta<Traits>(p, tile_x, blockIdx.y, blockIdx.z);
}

}  // namespace fused
}  // namespace fastna
