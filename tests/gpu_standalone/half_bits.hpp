// fp16/bf16 <-> raw 16-bit conversions for the standalone GPU harnesses: inputs are generated
// on the host as bit patterns so the CPU reference sees exactly the values the kernel reads.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

static inline uint16_t to_bits(float x, bool bf16) {
  uint16_t u;
  if (bf16) {
    __nv_bfloat16 h = __float2bfloat16_rn(x);
    std::memcpy(&u, &h, 2);
  } else {
    __half h = __float2half_rn(x);
    std::memcpy(&u, &h, 2);
  }
  return u;
}

static inline float from_bits(uint16_t u, bool bf16) {
  if (bf16) {
    __nv_bfloat16 h;
    std::memcpy(&h, &u, 2);
    return __bfloat162float(h);
  }
  __half h;
  std::memcpy(&h, &u, 2);
  return __half2float(h);
}
