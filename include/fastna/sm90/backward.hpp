// Device-level API of the sm90a (Hopper) fused neighborhood-attention backward pass.
//
//   using Op = fastna::hopper::Backward<2, cutlass::bfloat16_t, 128>;
//   Op::Arguments args{problem, q, k, v, out, dout, lse, dq, dk, dv};   // fused::Backward's
//   if (Op::can_implement(args) == cutlass::Status::kSuccess) {
//     void* ws;  cudaMalloc(&ws, Op::get_workspace_size(args));
//     Op::run(args, stream, ws);
//   }
//
// Same semantics and Arguments as fastna::fused::Backward (the sm80 backward); deterministic, no
// atomics.  Additional restrictions (can_implement returns kErrorNotSupported, callers run the
// sm80 backward instead): dilation 1 on every axis and a layout every TMA tensor map accepts
// (16-byte aligned strides; in 3D with B > 1 a batch stride of L0 * stride0), head dim 64 or 128,
// a compute-capability 9.0 device (kErrorArchMismatch).  Workspace: lse2 and delta, fp32
// head-major [B, H, L0, .., L_last rounded up to 4] each.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>
#include <cutlass/cuda_host_adapter.hpp>
#include <cutlass/cutlass.h>

#include <cstdint>
#include <type_traits>

#include "fastna/common/box_tile.hpp"  // tiles_per_group
#include "fastna/common/problem_checks.hpp"
#include "fastna/common/backward_params.hpp"  // Arguments, checks and parameters shared with the sm80 op
#include "fastna/common/box.hpp"
#include "fastna/sm90/backward_kernel.hpp"
#include "fastna/sm90/kernel_traits.hpp"
#include "fastna/sm90/tile_order.hpp"
#include "fastna/common/tma.hpp"
#include "fastna/common/problem.hpp"

namespace fastna {
namespace hopper {

// Host: tensor map of a token view [B, *spatial, heads, D] with box (64, 1, Box extents, 1): the
// forward's (tma.hpp) for any head count; the backward takes no dilation.
template <class Element, int Rank, class Box>
bool make_token_map(TokenTensor<Element const, Rank> const& t, NaProblem<Rank> const& p, int heads, int head_dim,
                    CUtensorMap* map, TmaDims* dims) {
  for (int a = 0; a < Rank; ++a)
    if (p.axis[a].dilation != 1) return false;
  return make_kv_tensor_map<Element, Rank, Box, 64>(t, p, heads, head_dim, map, dims);
}

// Host: fp32 head-major [B, H, L0, .., Lp_last] tensor map with box (column tile extents, 1, 1),
// the last extent widened by 4 (boxes start at origins rounded down to 4: 16-byte aligned).
template <int Rank, class ColBox>
bool make_head_major_map(float const* ptr, NaProblem<Rank> const& p, int last_pad, CUtensorMap* map) {
  cuuint64_t size[5] = {1, 1, 1, 1, 1};
  cuuint64_t stride[4] = {0, 0, 0, 0};
  cuuint32_t box[5] = {1, 1, 1, 1, 1};
  cuuint32_t estride[5] = {1, 1, 1, 1, 1};
  int d = 0;
  for (int a = Rank - 1; a >= 0; --a, ++d) {
    size[d] = a == Rank - 1 ? last_pad : p.axis[a].length;
    box[d] = ColBox::extent(a) + (a == Rank - 1 ? 4 : 0);
  }
  size[d++] = p.heads;
  size[d++] = p.batch;
  cuuint64_t st = 4;
  for (int i = 1; i < 5; ++i) {
    st *= size[i - 1];
    stride[i - 1] = st;
  }
  for (int i = 0; i < 4; ++i)
    if (stride[i] % 16 != 0 || stride[i] >= (cuuint64_t(1) << 40)) return false;
  if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) return false;
  return detail::encode_tiled(map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 5, const_cast<void*>(static_cast<void const*>(ptr)),
                              size, stride, box, estride, CU_TENSOR_MAP_SWIZZLE_NONE,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_128B) == CUDA_SUCCESS;
}

// ColBox: the query tiles of the dK/dV kernel; DqColBox: the key tiles of the dQ kernel.
// One launch of a backward main kernel (dK/dV or dQ per T::kDq, dense or grouped), with
// programmatic dependent launch where T::kPdl: the kernels rely on the order preprocess,
// dK/dV, dQ in the stream (BackwardTraits::kPdl).
template <class T, class Kernel, class KernelParams>
cudaError_t launch_backward_kernel(Kernel kernel, dim3 grid, KernelParams const& params, cudaStream_t stream) {
  constexpr int smem = static_cast<int>(T::kSmemBytes);
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(T::kThreads, 1, 1);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = T::kPdl ? 1 : 0;
  err = cudaLaunchKernelEx(&cfg, kernel, params);
  return err != cudaSuccess ? err : cudaGetLastError();
}

template <int Rank, class Element, int HeadDim, class RowBox = typename DefaultQBox<Rank>::type,
          class ColBox = typename DefaultBwdColBox<Rank>::type, bool SkipEmpty = false,
          class DqColBox = typename DefaultBwdDqColBox<Rank>::type, bool Pdl = (Rank == 1)>
class Backward {
 public:
  using DkvTraits = BackwardTraits<Rank, Element, HeadDim, RowBox, ColBox, false,
                                   DefaultBwdStages<HeadDim, ColBox::kSize, false>::value, SkipEmpty, Pdl>;
  using DqTraits = BackwardTraits<Rank, Element, HeadDim, RowBox, DqColBox, true,
                                  DefaultBwdStages<HeadDim, DqColBox::kSize, true>::value, SkipEmpty, Pdl>;
  using Arguments = fused::BackwardArguments<Rank, Element>;
  using Params = HopperBwdParams<Rank, Element>;
  // The sm80 backward's boxes: its conditions and the base parameters are computed for them.
  using Sm80Box = typename fused::DefaultBox<Rank>::type;

  static int last_pad(NaProblem<Rank> const& p) { return (p.axis[Rank - 1].length + 3) / 4 * 4; }

  // Everything can_implement checks except the tensors' maps (to_params encodes them and returns
  // false where one cannot be made): the sm80 backward's conditions, no dilation, a compute
  // capability 9.0 device.
  static Verdict can_implement_problem(NaProblem<Rank> const& p) {
    Verdict v = fused::check_backward_problem<HeadDim, Sm80Box, Sm80Box>(p);
    if (!v.is_ok()) return v;
    for (int a = 0; a < Rank; ++a)
      if (p.axis[a].dilation != 1) return Verdict::unsupported("the sm90a backward takes no dilation");
    return check_device_is(9, 0, "the sm90a backward");
  }

  static Verdict can_implement(Arguments const& args) {
    Verdict v = can_implement_problem(args.problem);
    if (v.is_ok()) v = fused::check_backward_tensors(args);
    if (!v.is_ok()) return v;
    // The tensor maps of the six token views (workspace maps are checked in to_params).
    Params probe{};
    if (!token_maps(args, &probe)) return Verdict::unsupported("no TMA tensor map describes these token views");
    return Verdict::ok();
  }

  static size_t get_workspace_size(Arguments const& args) {
    NaProblem<Rank> const& p = args.problem;
    size_t n = size_t(p.batch) * p.heads * last_pad(p);
    for (int a = 0; a < Rank - 1; ++a) n *= p.axis[a].length;
    return 2 * sizeof(float) * n;
  }

  // Encodes the token tensor maps of both kernels into `dkv` / `dq` (the same TmaDims).
  static bool token_maps(Arguments const& args, Params* dkv, Params* dq = nullptr) {
    NaProblem<Rank> const& p = args.problem;
    const int H = p.heads, Hk = p.heads_kv;
    TmaDims d[6];
    bool ok = make_token_map<Element, Rank, RowBox>(args.k, p, Hk, HeadDim, &dkv->tma_a1, &d[0]) &&
              make_token_map<Element, Rank, RowBox>(args.v, p, Hk, HeadDim, &dkv->tma_a2, &d[1]) &&
              make_token_map<Element, Rank, ColBox>(args.q, p, H, HeadDim, &dkv->tma_b1, &d[2]) &&
              make_token_map<Element, Rank, ColBox>(args.dout, p, H, HeadDim, &dkv->tma_b2, &d[3]);
    if (ok && dq != nullptr) {
      ok = make_token_map<Element, Rank, RowBox>(args.q, p, H, HeadDim, &dq->tma_a1, &d[4]) &&
           make_token_map<Element, Rank, RowBox>(args.dout, p, H, HeadDim, &dq->tma_a2, &d[5]) &&
           make_token_map<Element, Rank, DqColBox>(args.k, p, Hk, HeadDim, &dq->tma_b1, &d[4]) &&
           make_token_map<Element, Rank, DqColBox>(args.v, p, Hk, HeadDim, &dq->tma_b2, &d[5]);
    }
    for (int i = 1; ok && i < (dq ? 6 : 4); ++i)
      ok = d[i].batch_dim == d[0].batch_dim && d[i].batch_mul == d[0].batch_mul;
    if (ok) {
      dkv->tma_dims = d[0];
      if (dq) dq->tma_dims = d[0];
    }
    return ok;
  }


  // Both kernels' parameters; false when a tensor map cannot be encoded.
  static bool to_params(Arguments const& args, void* workspace, Params* dkv, Params* dq) {
    *dkv = Params{};
    *dq = Params{};
    if (!token_maps(args, dkv, dq)) return false;
    NaProblem<Rank> const& p = args.problem;
    const int lp = last_pad(p);
    const size_t half = get_workspace_size(args) / (2 * sizeof(float));
    float* lse2 = static_cast<float*>(workspace);
    float* delta = lse2 + half;
    if (!make_head_major_map<Rank, ColBox>(lse2, p, lp, &dkv->tma_lse) ||
        !make_head_major_map<Rank, ColBox>(delta, p, lp, &dkv->tma_delta))
      return false;
    for (Params* pp : {dkv, dq}) {
      pp->base = fused::backward_params<Sm80Box, Sm80Box>(args, nullptr);
      pp->lse2_t = lse2;
      pp->delta_t = delta;
      pp->last_pad = lp;
    }
    for (int a = 0; a < Rank; ++a) {
      const int32_t rows = tiles_per_group(p.axis[a], RowBox::extent(a));
      dkv->row_tiles_per_group[a] = dq->row_tiles_per_group[a] = rows;
      dkv->col_tiles_per_group[a] = tiles_per_group(p.axis[a], ColBox::extent(a));
      dq->col_tiles_per_group[a] = tiles_per_group(p.axis[a], DqColBox::extent(a));
    }
    if constexpr (Rank == 1) {  // longest row tiles first (tile_order.hpp)
      dkv->order_count =
          detail::lpt_row_order(p.axis[0], RowBox::extent(0), ColBox::extent(0), false, dkv->order, kBwdOrderCap);
      dq->order_count =
          detail::lpt_row_order(p.axis[0], RowBox::extent(0), DqColBox::extent(0), true, dq->order, kBwdOrderCap);
    }
    return true;
  }

  static dim3 grid(NaProblem<Rank> const& p, bool dq) {
    return dim3(static_cast<unsigned>(box_grid_x<RowBox>(p)), static_cast<unsigned>(dq ? p.heads : p.heads_kv),
                static_cast<unsigned>(p.batch));
  }

  static cutlass::Status run(Arguments const& args, cudaStream_t stream, void* workspace) {
    cutlass::Status st = can_implement(args);
    if (st != cutlass::Status::kSuccess) return st;
    if (workspace == nullptr) return cutlass::Status::kErrorWorkspaceNull;
    Params dkv, dq;
    if (!to_params(args, workspace, &dkv, &dq)) return cutlass::Status::kErrorNotSupported;
    return launch<DkvTraits, DqTraits, void>(args.problem, dkv, dq, stream);
  }

  // The three launches with the given (possibly internal-linkage) traits and preprocess tag.
  template <class DkvT, class DqT, class Tag>
  static cutlass::Status launch(NaProblem<Rank> const& p, Params const& dkv, Params const& dq, cudaStream_t stream) {
    const int64_t rows = int64_t(p.batch) * p.num_tokens() * p.heads;
    using Pre = BwdPreprocessShape<HeadDim>;
    fna_hopper_bwd_preprocess_kernel<Rank, Element, HeadDim, Tag><<<Pre::blocks(rows), Pre::kThreads, 0, stream>>>(dkv);
    if (cudaGetLastError() != cudaSuccess) return cutlass::Status::kErrorInternal;
    if (launch_main<DkvT>(p, dkv, stream) != cudaSuccess) return cutlass::Status::kErrorInternal;
    if (launch_main<DqT>(p, dq, stream) != cudaSuccess) return cutlass::Status::kErrorInternal;
    return cutlass::Status::kSuccess;
  }

  // One main kernel (dK/dV or dQ per T::kDq), with programmatic dependent launch where T::kPdl.
  // Under PDL the kernels rely on the order preprocess, dK/dV, dQ in the stream (BackwardTraits::kPdl).
#define FASTNA_HOPPER_BWD_LAUNCH_MAIN 1  // test harness: older BASE_INCLUDEs launch the kernels themselves
  template <class T>
  static cudaError_t launch_main(NaProblem<Rank> const& p, Params const& params, cudaStream_t stream) {
    return launch_backward_kernel<T>(fna_hopper_bwd_kernel<T>, grid(p, T::kDq), params, stream);
  }
};

}  // namespace hopper
}  // namespace fastna
