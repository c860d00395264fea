// Device math shared by the fused kernels (sm80 small-window, sm90a forward and backward).
#pragma once

namespace fastna {

// 2^x on the MUFU (ex2.approx.ftz): softmax exponents, whose arguments are logits minus a row
// maximum or a saved lse (<= 0 up to rounding) or -inf (gives 0).
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace fastna
