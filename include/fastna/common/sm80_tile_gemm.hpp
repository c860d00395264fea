// The tile GEMM loops of the sm80 kernels (fused forward / backward, GEMM-based PN and gather):
// one mma.sync tile GEMM, slice by slice along K (mode 2 of the fragments), the operands read
// from shared memory by their tiled copies just before each slice's MMA.
//
// Arguments per shared-memory operand X: copy_x (the tiled copy), sX (its source partition of
// shared memory), rX_v (the register fragment retiled for the copy) and rX (the fragment the MMA
// reads; the same registers).
#pragma once

#include <cute/tensor.hpp>

#include "fastna/common/tf32.hpp"

namespace fastna {
namespace fused {
namespace detail {

// The shared -> register copies of a kernel's operands on its Traits::TiledMma, each with this
// thread's slice (partition_S of shared memory, retile_D of a register fragment): a = A rows and
// b = B rows (Traits::SmemCopyAtom, ldmatrix), bt = B read transposed (Traits::SmemCopyAtomT:
// ldmatrix.trans; plain 32-bit loads for TF32).  The copies hold no state.
template <class Traits>
struct OperandCopies {
  using Mma = typename Traits::TiledMma;
  using CopyA = decltype(cute::make_tiled_copy_A(typename Traits::SmemCopyAtom{}, Mma{}));
  using CopyB = decltype(cute::make_tiled_copy_B(typename Traits::SmemCopyAtom{}, Mma{}));
  using CopyBt = decltype(cute::make_tiled_copy_B(typename Traits::SmemCopyAtomT{}, Mma{}));
  CopyA a;
  CopyB b;
  CopyBt bt;
  decltype(CopyA{}.get_thread_slice(0)) thr_a;
  decltype(CopyB{}.get_thread_slice(0)) thr_b;
  decltype(CopyBt{}.get_thread_slice(0)) thr_bt;

  __device__ __forceinline__ explicit OperandCopies(int tid)
      : thr_a(a.get_thread_slice(tid)), thr_b(b.get_thread_slice(tid)), thr_bt(bt.get_thread_slice(tid)) {}
};

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
