// The tile GEMM loops of the sm80 kernels (fused forward / backward, GEMM-based PN and gather):
// one mma.sync tile GEMM, slice by slice along K (mode 2 of the fragments), the operands read
// from shared memory by their tiled copies just before each slice's MMA.
//
// Arguments per shared-memory operand X: copy_x (the tiled copy), sX (its source partition of
// shared memory), rX_v (the register fragment retiled for the copy) and rX (the fragment the MMA
// reads; the same registers).
#pragma once

#include <cute/tensor.hpp>

#include "fastna/tf32.hpp"

namespace fastna {
namespace fused {
namespace detail {

// acc += A B^T with both operands from shared memory; Tf32: rounded to TF32 in registers.
template <bool Tf32 = false, class Mma, class CopyA, class SA, class RAv, class RA, class CopyB, class SB, class RBv,
          class RB, class Acc>
__device__ __forceinline__ void gemm_ss(Mma const& mma, CopyA const& copy_a, SA const& sA, RAv& rA_v, RA& rA,
                                        CopyB const& copy_b, SB const& sB, RBv& rB_v, RB& rB, Acc& acc) {
  using cute::_;
#pragma unroll
  for (int kk = 0; kk < cute::size<2>(rA); ++kk) {
    cute::copy(copy_a, sA(_, _, kk), rA_v(_, _, kk));
    cute::copy(copy_b, sB(_, _, kk), rB_v(_, _, kk));
    if constexpr (Tf32) {
      round_to_tf32(rA(_, _, kk));
      round_to_tf32(rB(_, _, kk));
    }
    cute::gemm(mma, rA(_, _, kk), rB(_, _, kk), acc);
  }
}

// acc += A B^T with A already in registers (rA) and B from shared memory.
template <class Mma, class RA, class CopyB, class SB, class RBv, class RB, class Acc>
__device__ __forceinline__ void gemm_rs(Mma const& mma, RA const& rA, CopyB const& copy_b, SB const& sB, RBv& rB_v,
                                        RB& rB, Acc& acc) {
  using cute::_;
#pragma unroll
  for (int kk = 0; kk < cute::size<2>(rA); ++kk) {
    cute::copy(copy_b, sB(_, _, kk), rB_v(_, _, kk));
    cute::gemm(mma, rA(_, _, kk), rB(_, _, kk), acc);
  }
}

}  // namespace detail
}  // namespace fused
}  // namespace fastna
