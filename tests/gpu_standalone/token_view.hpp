// The harnesses' instance TUs (instance.cu, test_fused_bwd.cu, test_hopper_fwd.cu,
// test_hopper_bwd.cu with -DINST_*): a fastna::TokenTensor over a raw device pointer.
#pragma once
#include <cstdint>

#include "fastna/problem.hpp"

// View of p with element strides s = [B, *spatial, H, D] (R + 3 entries); T may be const.
template <class T, int R>
static fastna::TokenTensor<T, R> token_view(const void* p, const int64_t* s) {
  fastna::TokenTensor<T, R> t;
  t.ptr = reinterpret_cast<T*>(const_cast<void*>(p));
  t.stride_batch = s[0];
  for (int a = 0; a < R; ++a) t.stride_spatial[a] = s[1 + a];
  t.stride_head = s[R + 1];
  t.stride_dim = s[R + 2];
  return t;
}
