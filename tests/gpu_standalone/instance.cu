// One Forward instance per translation unit: compile with -DINST_RANK=2 -DINST_ELEM=bf16 -DINST_DIM=128.
#include "common.hpp"
#include "fastna/sm80/forward.hpp"
#include "instance_tu.hpp"

// Optional non-default boxes (2D benchmark variants): -DINST_VARIANT=1 -DINST_TAG=_v1
//   variant 1: query box 16x8 (128 queries, 4 warps x 32 rows), KV box 8x8
//   variant 2: query box 16x8, KV box 4x8 (32 keys)
//   variant 3: tile "q128w8" (ranks 1 and 2): query box 128 / 16x8 on 8 warps of 16 rows,
//              KV box 64 / 8x8, 3 K/V stages (any INST_DIM)
//   variant 4: rank 1 only (harness only): query box 128 on 4 warps of 32 rows, KV box 32, 3 stages


int CAT(fused_fwd_r, INST_RANK, _, INST_ELEM, _d, INST_DIM, INST_TAG)(
    const fastna::NaProblem<INST_RANK>& p, const void* q, const int64_t* sq, const void* k, const int64_t* sk,
    const void* v, const int64_t* sv, void* out, const int64_t* so, float* lse, cudaStream_t stream) {
#if defined(INST_VARIANT) && INST_VARIANT == 1
  using Op = fastna::fused::Forward<INST_RANK, Elem, INST_DIM, fastna::fused::Box<2, 16, 8>, fastna::fused::Box<2, 8, 8>>;
#elif defined(INST_VARIANT) && INST_VARIANT == 2
  using Op = fastna::fused::Forward<INST_RANK, Elem, INST_DIM, fastna::fused::Box<2, 16, 8>, fastna::fused::Box<2, 4, 8>>;
#elif defined(INST_VARIANT) && INST_VARIANT == 3 && INST_RANK == 1
  using Op = fastna::fused::Forward<1, Elem, INST_DIM, fastna::fused::Box<1, 128>, fastna::fused::Box<1, 64>, 8, 3>;
#elif defined(INST_VARIANT) && INST_VARIANT == 3 && INST_RANK == 2
  using Op = fastna::fused::Forward<2, Elem, INST_DIM, fastna::fused::Box<2, 16, 8>, fastna::fused::Box<2, 8, 8>, 8, 3>;
#elif defined(INST_VARIANT) && INST_VARIANT == 4 && INST_RANK == 1
  // harness only (not in the generator): the 1D analogue of q16x8_kv4x8, query box 128 on 4
  // warps of 32 rows (K/V fragments reused over two 16-row MMA tiles), KV box 32, 3 stages
  using Op = fastna::fused::Forward<1, Elem, INST_DIM, fastna::fused::Box<1, 128>, fastna::fused::Box<1, 32>, 4, 3>;
#elif defined(INST_VARIANT)
#error "unknown INST_VARIANT for this INST_RANK"
#else
  using Op = fastna::fused::Forward<INST_RANK, Elem, INST_DIM>;
#endif
  auto args = forward_arguments<typename Op::Arguments>(p, q, sq, k, sk, v, sv, out, so, lse);
  if (Op::can_implement(args) != cutlass::Status::kSuccess) return 1;
  return Op::run(args, stream) == cutlass::Status::kSuccess ? 0 : 2;
}
