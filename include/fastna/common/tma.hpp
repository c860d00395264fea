// TMA (bulk tensor copy) loads of KV boxes.
//
// A KV box is a box of the [B, *spatial, H, D] view -- strided by the dilation on every axis
// (the box's keys of one dilation group are d apart) -- so one tensor map covers it: dims
// (innermost first) D, H, the spatial axes last to first, B -- at most 5, so in 3D the batch is
// merged into the first spatial axis (needs stride_batch == L0 * stride0; keys a box reads past
// L0 belong to the next batch item but lie outside every window, so are masked).  Dilation d is
// the map's element stride on that axis (box extent E * d, coordinate loc * d + group; TMA needs
// d <= 8 and E * d <= 256, else the kernel falls back to cp.async).  The inner box extent is
// Inner elements (64: 128 bytes, SW128; 32 at head dim 32: 64 bytes, SW64), the span of one
// swizzle atom column: a D=128 box is two copies, one per 64-column half, which is exactly how
// the K-major / MN-major smem layouts of kernel_traits.hpp store the halves.  Keys past an axis
// end are zero-filled by the TMA unit.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>
#include <cutlass/cuda_host_adapter.hpp>

#include <cstdint>
#include <type_traits>

#include "fastna/common/problem.hpp"

namespace fastna {
namespace hopper {

namespace detail {

// cuTensorMapEncodeTiled through the runtime's driver entry point, looked up once (CUTLASS's
// call_cuTensorMapEncodeTiled looks it up on every call: ~10 maps per backward made that a
// visible host cost on small problems).
inline CUresult encode_tiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, void* addr,
                             cuuint64_t const* size, cuuint64_t const* stride, cuuint32_t const* box,
                             cuuint32_t const* estride, CUtensorMapSwizzle swizzle, CUtensorMapL2promotion l2) {
  using Fn = decltype(&cuTensorMapEncodeTiled);
  static Fn const fn = []() -> Fn {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      return nullptr;
    return reinterpret_cast<Fn>(p);
  }();
  if (fn == nullptr) return CUDA_ERROR_NOT_SUPPORTED;
  return fn(map, type, rank, addr, size, stride, box, estride, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, l2,
            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

}  // namespace detail

struct TmaDims {
  // Batch folded into the outermost used coordinate: coordinate = origin + b * batch_mul.
  int batch_dim = 0;
  int batch_mul = 1;
};

// Host: tensor map of one token view (K or V: heads = H_kv; the backward also maps Q and dO).
// False (use cp.async) when the head dim is not a multiple of Inner, a dilation is above 8 or
// makes a box extent exceed 256, or the strides do not fit.
template <class Element, int Rank, class KBox, int Inner = 64>
bool make_kv_tensor_map(TokenTensor<Element const, Rank> const& t, NaProblem<Rank> const& p, int heads,
                        int head_dim, CUtensorMap* map, TmaDims* dims) {
  static_assert(sizeof(Element) == 2, "16-bit elements");
  static_assert(Inner == 64 || Inner == 32, "inner box: one SW128 (64) or SW64 (32) atom column");
  if (head_dim % Inner != 0) return false;
  for (int a = 0; a < Rank; ++a)
    if (p.axis[a].dilation > 8 || KBox::extent(a) * p.axis[a].dilation > 256) return false;
  cuuint64_t size[5] = {1, 1, 1, 1, 1};
  cuuint64_t stride[4] = {0, 0, 0, 0};  // bytes, dims 1..4
  cuuint32_t box[5] = {Inner, 1, 1, 1, 1};
  cuuint32_t estride[5] = {1, 1, 1, 1, 1};
  size[0] = head_dim;
  size[1] = heads;
  stride[0] = t.stride_head * 2;
  int d = 2;
  for (int a = Rank - 1; a >= 0; --a, ++d) {
    size[d] = p.axis[a].length;
    stride[d - 1] = t.stride_spatial[a] * 2;
    box[d] = KBox::extent(a) * p.axis[a].dilation;
    estride[d] = p.axis[a].dilation;
  }
  if (Rank < 3) {
    size[d] = p.batch;
    stride[d - 1] = t.stride_batch * 2;
    dims->batch_dim = d;
    dims->batch_mul = 1;
    ++d;
  } else {
    // Batch folded into the first spatial axis: needs batch stride = L0 * stride0 (moot for B=1).
    if (p.batch > 1 && t.stride_batch != int64_t(p.axis[0].length) * t.stride_spatial[0]) return false;
    size[4] = cuuint64_t(p.axis[0].length) * p.batch;
    dims->batch_dim = 4;
    dims->batch_mul = p.axis[0].length;
  }
  for (; d < 5; ++d) size[d] = 1;
  // A dimension of extent 1 is never stepped along, so callers may give it any stride (fastna's
  // Python layer passes 0). The encoder wants real ones: use the packed stride there.
  if (size[1] == 1) stride[0] = cuuint64_t(head_dim) * 2;
  for (int i = 2; i < 5; ++i)
    if (size[i] == 1) stride[i - 1] = stride[i - 2] * size[i - 1];
  for (int i = 0; i < 4; ++i)
    if (stride[i] % 16 != 0 || stride[i] >= (cuuint64_t(1) << 40)) return false;
  if (reinterpret_cast<uintptr_t>(t.ptr) % 16 != 0) return false;
  const CUtensorMapDataType type = std::is_same<Element, cutlass::bfloat16_t>::value
                                       ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                       : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  return detail::encode_tiled(map, type, 5, const_cast<void*>(static_cast<void const*>(t.ptr)), size, stride, box,
                              estride, Inner == 64 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_256B) == CUDA_SUCCESS;
}

namespace detail {

// Device: one 5-D TMA copy completing on an mbarrier (transaction bytes).
__device__ __forceinline__ void tma_load_5d(CUtensorMap const* map, uint64_t* bar, void* smem, int c0, int c1, int c2,
                                            int c3, int c4) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const uint32_t m = static_cast<uint32_t>(__cvta_generic_to_shared(bar));
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5, %6}], "
      "[%7];" ::"r"(s),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4), "r"(m)
      : "memory");
}

}  // namespace detail
}  // namespace hopper
}  // namespace fastna
