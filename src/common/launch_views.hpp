// The kernel-side views of the binding's LaunchParams, shared by every generated instance's glue
// (src/<family>/*launch.cuh): the problem description and the [B, *spatial, H, D] token tensors.
// Separate from launch_params.hpp, which the bindings include without the kernel headers.
#pragma once

#include "fastna/common/problem.hpp"
#include "common/launch_params.hpp"

namespace fastna {
namespace binding {

template <int Rank>
NaProblem<Rank> problem_of(const LaunchParams& lp) {
  NaProblem<Rank> p;
  p.batch = lp.batch;
  p.heads = lp.heads;
  p.heads_kv = lp.heads_kv;
  p.dim = lp.dim;
  p.dim_v = lp.dim_v;
  p.num_extra = lp.num_extra;
  p.scale = lp.scale;
  for (int a = 0; a < Rank; ++a) p.axis[a] = lp.axis[a];
  return p;
}

// Strides in the order batch, spatial..., head, dim; an absent tensor gives a null view.
template <typename E, int Rank>
TokenTensor<E, Rank> token_view(const TensorArg& t) {
  TokenTensor<E, Rank> v;
  v.ptr = reinterpret_cast<E*>(t.ptr);
  if (!t.present()) return v;
  v.stride_batch = t.strides[0];
  for (int a = 0; a < Rank; ++a) v.stride_spatial[a] = t.strides[1 + a];
  v.stride_head = t.strides[Rank + 1];
  v.stride_dim = t.strides[Rank + 2];
  return v;
}

}  // namespace binding
}  // namespace fastna
