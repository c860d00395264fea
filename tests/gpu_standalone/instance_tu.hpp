// What the harnesses' instance TUs share (instance.cu, and test_fused_bwd.cu, test_hopper_fwd.cu,
// test_hopper_bwd.cu, test_gemm_na.cu compiled with -DINST_RANK=.. -DINST_ELEM=f16|bf16|f32
// -DINST_DIM=.. [-DINST_TAG=_vN]): the element type Elem, the symbol-pasting CAT, TokenTensor
// views over raw device pointers and the ops' Arguments built from them.
#pragma once
#include <cutlass/numeric_types.h>

#include <cstdint>

#include "fastna/common/problem.hpp"

#define f16 cutlass::half_t
#define bf16 cutlass::bfloat16_t
#define f32 float
using Elem = INST_ELEM;
#undef f16
#undef bf16
#undef f32
#ifndef INST_TAG
#define INST_TAG
#endif
// CAT(a, .., g): the instance's symbol, e.g. CAT(fused_fwd_r, INST_RANK, _, INST_ELEM, _d, INST_DIM, INST_TAG).
#define CAT_(a, b, c, d, e, f, g) a##b##c##d##e##f##g
#define CAT(a, b, c, d, e, f, g) CAT_(a, b, c, d, e, f, g)

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

// A forward's Arguments (fused::Forward and hopper::Forward share them) over strided buffers.
template <class Args, int R>
static Args forward_arguments(const fastna::NaProblem<R>& p, const void* q, const int64_t* sq, const void* k,
                              const int64_t* sk, const void* v, const int64_t* sv, void* out, const int64_t* so,
                              float* lse) {
  Args args;
  args.problem = p;
  args.q = token_view<Elem const, R>(q, sq);
  args.k = token_view<Elem const, R>(k, sk);
  args.v = token_view<Elem const, R>(v, sv);
  args.out = token_view<Elem, R>(out, so);
  args.lse = lse;
  return args;
}

// A backward's Arguments (fused::Backward and hopper::Backward share them) over contiguous
// buffers: sq the strides of the query-shaped tensors (q, out, dout, dq), sk of the key-shaped
// ones (k, v, dk, dv).
template <class Args, int R>
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
