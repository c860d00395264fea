// A neighborhood-attention problem: shapes, per-axis parameters and strided tensor views.
//
// Tensors follow the heads-last layout [B, *spatial, H, D].  Views carry element strides so
// that slices of a fused qkv projection run without a copy.
#pragma once

#include <cstdint>

#include "fastna/common/index_math.hpp"

namespace fastna {

template <int Rank>
struct NaProblem {
  static_assert(Rank >= 1 && Rank <= 3, "fastna supports 1D, 2D and 3D neighborhoods");
  static constexpr int kRank = Rank;

  int32_t batch = 0;
  int32_t heads = 0;      // H (query heads)
  int32_t heads_kv = 0;   // H_kv, divides H
  int32_t dim = 0;        // D (query/key head dim)
  int32_t dim_v = 0;      // Dv (value head dim)
  int32_t num_extra = 0;  // additional KV tokens seen by every query
  float scale = 1.f;
  AxisParams axis[Rank];

  FASTNA_HOST_DEVICE int64_t num_tokens() const {
    int64_t n = 1;
    for (int a = 0; a < Rank; ++a) n *= axis[a].length;
    return n;
  }
  // Window positions per query: prod(K).  Causal windows use a prefix of each axis' K slots.
  FASTNA_HOST_DEVICE int32_t window_size() const {
    int32_t n = 1;
    for (int a = 0; a < Rank; ++a) n *= axis[a].kernel;
    return n;
  }
  FASTNA_HOST_DEVICE int32_t kv_head(int32_t h) const { return h / (heads / heads_kv); }
};

// A strided view of a [B, *spatial, H, D] tensor (Rank + 3 dimensions); strides in elements.
template <typename T, int Rank>
struct TokenTensor {
  T* ptr = nullptr;
  int64_t stride_batch = 0;
  int64_t stride_spatial[Rank] = {};
  int64_t stride_head = 0;
  int64_t stride_dim = 1;

  FASTNA_HOST_DEVICE T* at(int32_t b, const int32_t (&coord)[Rank], int32_t h) const {
    int64_t off = b * stride_batch + h * stride_head;
    for (int a = 0; a < Rank; ++a) off += coord[a] * stride_spatial[a];
    return ptr + off;
  }
};

// A strided view of a [B, N, H, D] tensor of additional tokens; strides in elements.
template <typename T>
struct ExtraTensor {
  T* ptr = nullptr;
  int64_t stride_batch = 0;
  int64_t stride_token = 0;
  int64_t stride_head = 0;
  int64_t stride_dim = 1;

  FASTNA_HOST_DEVICE T* at(int32_t b, int32_t n, int32_t h) const {
    return ptr + b * stride_batch + n * stride_token + h * stride_head;
  }
};

// Row-major flattening of a spatial coordinate.
template <int Rank>
FASTNA_HOST_DEVICE int64_t flatten(const int32_t (&coord)[Rank], const AxisParams (&axis)[Rank]) {
  int64_t idx = 0;
  for (int a = 0; a < Rank; ++a) idx = idx * axis[a].length + coord[a];
  return idx;
}

template <int Rank>
FASTNA_HOST_DEVICE void unflatten(int64_t idx, const AxisParams (&axis)[Rank], int32_t (&coord)[Rank]) {
  for (int a = Rank - 1; a >= 0; --a) {
    coord[a] = static_cast<int32_t>(idx % axis[a].length);
    idx /= axis[a].length;
  }
}

}  // namespace fastna
