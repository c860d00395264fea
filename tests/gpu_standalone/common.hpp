// Shared declarations of the standalone fused-forward GPU test (tests/gpu_standalone).
#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include "fastna/common/problem.hpp"

// Type-erased call into one forward instance <FAMILY>_fwd_r<R>_<E>_d<D><TAG> (the sm80-class
// Forward<Rank, Element, HeadDim> compiled in instance.cu; test_hopper_fwd.cu's hopper ones).
// Strides: element strides of [B, *spatial, H, D] (Rank + 3 entries each).
// Returns 0 on success, 1 if can_implement refused, 2 on a launch error.
#define FASTNA_FWD_ENTRY_DECL(FAMILY, R, E, D, TAG)                                                         \
  int FAMILY##_fwd_r##R##_##E##_d##D##TAG(const fastna::NaProblem<R>& p, const void* q, const int64_t* sq, \
                                          const void* k, const int64_t* sk, const void* v, const int64_t* sv, \
                                          void* out, const int64_t* so, float* lse, cudaStream_t stream);
#define FASTNA_TEST_DECL(R, E, D) FASTNA_FWD_ENTRY_DECL(fused, R, E, D, )
#define FASTNA_TEST_DECL_V(R, E, D, TAG) FASTNA_FWD_ENTRY_DECL(fused, R, E, D, TAG)

#define FASTNA_TEST_FOR_ALL(X) \
  X(1, f16, 32) X(1, f16, 64) X(1, f16, 128) X(1, bf16, 32) X(1, bf16, 64) X(1, bf16, 128) \
  X(2, f16, 32) X(2, f16, 64) X(2, f16, 128) X(2, bf16, 32) X(2, bf16, 64) X(2, bf16, 128) \
  X(3, f16, 32) X(3, f16, 64) X(3, f16, 128) X(3, bf16, 32) X(3, bf16, 64) X(3, bf16, 128)

FASTNA_TEST_FOR_ALL(FASTNA_TEST_DECL)

// Non-default box variants (see instance.cu): _v1 = query 16x8 / KV 8x8, _v2 = query 16x8 / KV 4x8,
// _v3 = tile q128w8 (8 warps, 128-query box, 64-key KV box, 3 stages; ranks 1, 2 at D 64, 128),
// _v4 = rank 1 only, 128-query box on 4 warps x 32 rows, 32-key KV box, 3 stages (harness only).
#define FASTNA_TEST_FOR_VARIANTS(X) \
  X(2, f16, 128, _v1) X(2, bf16, 128, _v1) X(2, f16, 128, _v2) X(2, bf16, 128, _v2) \
  X(1, f16, 64, _v3) X(1, f16, 128, _v3) X(1, bf16, 64, _v3) X(1, bf16, 128, _v3)   \
  X(2, f16, 64, _v3) X(2, f16, 128, _v3) X(2, bf16, 64, _v3) X(2, bf16, 128, _v3)   \
  X(1, f16, 128, _v4) X(1, bf16, 128, _v4)
FASTNA_TEST_FOR_VARIANTS(FASTNA_TEST_DECL_V)
