// Host-side conditions of the device ops' can_implement, each in one place: grid limits, the
// token-tensor layout cp.async reads, and the problem checks of the fused ops.  Every check
// returns a Verdict whose reason names the failing condition and its values.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>
#include <cutlass/numeric_types.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "fastna/common/box_tile.hpp"
#include "fastna/common/problem.hpp"
#include "fastna/common/verdict.hpp"

namespace fastna {

// Grid y and z (heads, batch) of every fused and GEMM-based kernel.
constexpr int32_t kMaxGridYZ = 65535;

// CTAs along a grid's x: every (dilation group, box of Box) per axis, tiles_per_group boxes a
// group.
template <class Box, int Rank>
int64_t box_grid_x(NaProblem<Rank> const& p) {
  int64_t x = 1;
  for (int a = 0; a < Rank; ++a) x *= int64_t(p.axis[a].dilation) * tiles_per_group(p.axis[a], Box::extent(a));
  return x;
}

template <class Box, int Rank>
Verdict check_grid_x(NaProblem<Rank> const& p) {
  if (box_grid_x<Box>(p) > 0x7fffffff)
    return Verdict::invalid("too many query tiles for one grid (more than 2^31 - 1 CTAs)");
  return Verdict::ok();
}

template <class T>
char const* element_name() {
  using E = std::remove_const_t<T>;
  if constexpr (std::is_same_v<E, float>) return "float32";
  if constexpr (std::is_same_v<E, cutlass::half_t>) return "float16";
  if constexpr (std::is_same_v<E, cutlass::bfloat16_t>) return "bfloat16";
  return "this dtype";
}

// Whether 16-byte chunks (cp.async, TMA) cover t's token rows: head dim contiguous, pointer and
// every batch / spatial / head stride 16-byte aligned; the reason names the failing one (dims:
// batch, spatial..., head).
template <class T, int Rank>
Verdict check_rows_16b(TokenTensor<T, Rank> const& t, char const* name) {
  const std::string n(name);
  if (t.ptr == nullptr) return Verdict::invalid(n + " is required");
  if (t.stride_dim != 1)
    return Verdict::misaligned("stride_dim != 1 (" + n + " has stride " + std::to_string(t.stride_dim) +
                               " along the head dim; make it contiguous there)");
  if (reinterpret_cast<uintptr_t>(t.ptr) % 16 != 0)
    return Verdict::misaligned(n + " data pointer is not 16-byte aligned");
  constexpr int64_t kVec = 16 / sizeof(T);
  int64_t strides[Rank + 2];
  strides[0] = t.stride_batch;
  for (int a = 0; a < Rank; ++a) strides[1 + a] = t.stride_spatial[a];
  strides[Rank + 1] = t.stride_head;
  for (int i = 0; i < Rank + 2; ++i)
    if (strides[i] % kVec != 0)
      return Verdict::misaligned(n + " strides must be multiples of " + std::to_string(kVec) +
                                 " elements (16 bytes) for " + element_name<T>() + ", got stride " +
                                 std::to_string(strides[i]) + " on dim " + std::to_string(i));
  return Verdict::ok();
}

// Positive batch and heads, heads_kv dividing heads, at most kMaxGridYZ of batch and heads.
template <int Rank>
Verdict check_heads_and_batch(NaProblem<Rank> const& p) {
  if (p.batch <= 0 || p.heads <= 0 || p.heads_kv <= 0 || p.heads % p.heads_kv != 0)
    return Verdict::invalid("batch (" + std::to_string(p.batch) + "), heads (" + std::to_string(p.heads) +
                            ") and heads_kv (" + std::to_string(p.heads_kv) +
                            ") must be positive with heads a multiple of heads_kv");
  if (p.batch > kMaxGridYZ || p.heads > kMaxGridYZ)
    return Verdict::invalid("batch (" + std::to_string(p.batch) + ") and heads (" + std::to_string(p.heads) +
                            ") must be <= " + std::to_string(kMaxGridYZ));
  return Verdict::ok();
}

inline std::string axis_text(int a, AxisParams const& ax) {
  return "axis " + std::to_string(a) + ": length " + std::to_string(ax.length) + ", kernel " +
         std::to_string(ax.kernel) + ", stride " + std::to_string(ax.stride) + ", dilation " +
         std::to_string(ax.dilation);
}

// The problem checks of the fused ops (head dim HeadDim for q/k and v): check_heads_and_batch,
// no extra tokens, a positive finite scale, and per axis a valid window: 1 <= stride <= kernel,
// kernel * dilation <= length.
template <int HeadDim, int Rank>
Verdict check_fused_problem(NaProblem<Rank> const& p) {
  Verdict v = check_heads_and_batch(p);
  if (!v.is_ok()) return v;
  if (p.dim_v != p.dim)
    return Verdict::invalid("Dv != D (D=" + std::to_string(p.dim) + ", Dv=" + std::to_string(p.dim_v) + ")");
  if (p.dim != HeadDim)
    return Verdict::invalid("head dim " + std::to_string(p.dim) + " != the instance's " + std::to_string(HeadDim));
  if (p.num_extra != 0) return Verdict::unsupported("additional KV tokens not supported yet");
  if (!(p.scale > 0.f) || !std::isfinite(p.scale))
    return Verdict::invalid("scale must be positive and finite, got " + std::to_string(p.scale));
  for (int a = 0; a < Rank; ++a) {
    AxisParams const& ax = p.axis[a];
    if (ax.length <= 0 || ax.kernel < 1 || ax.dilation < 1 || ax.stride < 1 || ax.stride > ax.kernel ||
        int64_t(ax.kernel) * ax.dilation > ax.length)
      return Verdict::invalid(axis_text(a, ax) + " (need 1 <= stride <= kernel, kernel * dilation <= length)");
  }
  return Verdict::ok();
}

// Whether the current device is exactly compute capability major.minor (sm_90a kernels).
inline Verdict check_device_is(int want_major, int want_minor, char const* what) {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return {cutlass::Status::kErrorInternal, "cannot query the CUDA device"};
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  if (major != want_major || minor != want_minor)
    return {cutlass::Status::kErrorArchMismatch, std::string(what) + " runs only on compute capability " +
                                                     std::to_string(want_major) + "." + std::to_string(want_minor) +
                                                     ", this device is " + std::to_string(major) + "." +
                                                     std::to_string(minor)};
  return Verdict::ok();
}

}  // namespace fastna
