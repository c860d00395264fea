// Rounding fp32 to TF32 for the sm80-class mma.sync .tf32 kernels (fused forward, GEMM-based NA).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/tfloat32.h>

#include <cstdint>

namespace fastna {

// fp32 -> TF32, round to nearest (ties away from zero; inf / NaN kept).  mma .tf32 would
// otherwise just drop the 13 low mantissa bits: a truncation whose error is twice as large and
// always towards zero, so it does not average out over a dot product.
__device__ __forceinline__ cutlass::tfloat32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return cutlass::tfloat32_t::bitcast(r);
}

// Rounds a register fragment of TF32-typed fp32 bits to TF32 in place.
template <class Frag>
__device__ __forceinline__ void round_to_tf32(Frag&& frag) {
  CUTE_UNROLL
  for (int i = 0; i < cute::size(frag); ++i) frag(i) = to_tf32(__uint_as_float(frag(i).raw()));
}

}  // namespace fastna
