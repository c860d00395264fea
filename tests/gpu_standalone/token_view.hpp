// The harnesses' instance TUs (instance.cu, test_fused_bwd.cu, test_hopper_fwd.cu,
// test_hopper_bwd.cu, test_gemm_na.cu with -DINST_*): a fastna::TokenTensor over a raw device
// pointer, and the backward's Arguments from raw pointers.
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

// A backward's Arguments (fused::Backward and hopper::Backward share them) over contiguous
// buffers: sq the strides of the query-shaped tensors (q, out, dout, dq), sk of the key-shaped
// ones (k, v, dk, dv).
template <class Args, class Elem, int R>
static Args backward_arguments(const fastna::NaProblem<R>& p, const int64_t* sq, const int64_t* sk, const void* q,
                               const void* k, const void* v, const void* o, const void* dout, const float* lse,
                               void* dq, void* dk, void* dv) {
  Args args;
  args.problem = p;
  args.q = token_view<Elem const, R>(q, sq);
  args.k = token_view<Elem const, R>(k, sk);
  args.v = token_view<Elem const, R>(v, sk);
  args.out = token_view<Elem const, R>(o, sq);
  args.dout = token_view<Elem const, R>(dout, sq);
  args.lse = lse;
  args.dq = token_view<Elem, R>(dq, sq);
  args.dk = token_view<Elem, R>(dk, sk);
  args.dv = token_view<Elem, R>(dv, sk);
  return args;
}
