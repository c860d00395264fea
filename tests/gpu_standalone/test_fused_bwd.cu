// Standalone GPU test + benchmark of fastna::fused::Backward (no torch, no CMake).
// Build/run: tests/gpu_standalone/run_bwd.sh (needs CUTLASS headers: CUTLASS_INCLUDE=...).
//
// This one file is compiled several times: with -DINST_RANK=.. -DINST_ELEM=.. -DINST_DIM=.. it is
// one Backward instance (a TU each, built in parallel); without, it is the test driver.
//
// Correctness: random inputs (never zeros), gradients poisoned with NaN, lse computed by the CPU
// reference, CPU reference of the gradients in double written literally from docs/SEMANTICS.md section 5
// (per query: softmax over its neighbors found with is_neighbor on every axis).
#include <cuda_runtime.h>
#include <cstdint>
#include "fastna/common/problem.hpp"

// Type-erased call into one Backward<Rank, Element, HeadDim> instance.  sq: strides of the
// q-shaped tensors (q, out, dout, dq); sk: of the kv-shaped ones (k, v, dk, dv); Rank + 3 each.
// Returns 0 on success, 1 if can_implement refused, 2 on a launch error.
#define FASTNA_BWD_DECL(R, E, D)                                                                       \
  int fused_bwd_r##R##_##E##_d##D(const fastna::NaProblem<R>& p, const int64_t* sq, const int64_t* sk,   \
                                  const void* q, const void* k, const void* v, const void* o,            \
                                  const void* dout, const float* lse, void* dq, void* dk, void* dv,     \
                                  void* workspace, size_t* ws_bytes, cudaStream_t stream);

#ifndef FASTNA_BWD_INSTANCES
#define FASTNA_BWD_INSTANCES(X) \
  X(2, f16, 64) X(1, bf16, 128) X(3, f16, 32) X(2, f16, 128) X(2, bf16, 128) X(1, f16, 64) X(3, bf16, 64)
#endif
FASTNA_BWD_INSTANCES(FASTNA_BWD_DECL)

#ifdef INST_RANK
// ------------------------------------------------------------------ one instance
#include "fastna/sm80/backward.hpp"
#include "instance_tu.hpp"


int CAT(fused_bwd_r, INST_RANK, _, INST_ELEM, _d, INST_DIM, )(const fastna::NaProblem<INST_RANK>& p, const int64_t* sq,
                                                            const int64_t* sk, const void* q, const void* k,
                                                            const void* v, const void* o, const void* dout,
                                                            const float* lse, void* dq, void* dk, void* dv,
                                                            void* workspace, size_t* ws_bytes, cudaStream_t stream) {
  constexpr int R = INST_RANK;
  using Op = fastna::fused::Backward<R, Elem, INST_DIM>;
  auto args = backward_arguments<typename Op::Arguments>(p, sq, sk, q, k, v, o, dout, lse, dq, dk, dv);
  if (ws_bytes != nullptr) {
    *ws_bytes = Op::get_workspace_size(args);
    return 0;
  }
  if (Op::can_implement(args) != cutlass::Status::kSuccess) return 1;
  return Op::run(args, stream, workspace) == cutlass::Status::kSuccess ? 0 : 2;
}

#else
// ------------------------------------------------------------------ driver
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common.hpp"  // the forward's instances (used by the benchmark to produce out and lse)
#include "fastna/common/index_math.hpp"

#include "harness.hpp"

#include "bwd_check.hpp"
#include "case.hpp"
#include "half_bits.hpp"





template <int R>
static int dispatch(const Case& c, const fastna::NaProblem<R>& p, const int64_t* sq, const int64_t* sk,
                    const void* q, const void* k, const void* v, const void* o, const void* dout, const float* lse,
                    void* dq, void* dk, void* dv, void* ws, size_t* ws_bytes, cudaStream_t st) {
  const char* e = c.bf16 ? "bf16" : "f16";
#define X(RR, EE, DD)                                                                                \
  if (RR == R && c.D == DD && std::strcmp(e, #EE) == 0)                                             \
    return fused_bwd_r##RR##_##EE##_d##DD(*reinterpret_cast<const fastna::NaProblem<RR>*>(&p), sq, sk, q, k, v, o, \
                                          dout, lse, dq, dk, dv, ws, ws_bytes, st);
  FASTNA_BWD_INSTANCES(X)
#undef X
  return 3;  // no instance
}

static bool have_instance(const Case& c) {
  const char* e = c.bf16 ? "bf16" : "f16";
#define X(RR, EE, DD) \
  if (RR == c.rank && c.D == DD && std::strcmp(e, #EE) == 0) return true;
  FASTNA_BWD_INSTANCES(X)
#undef X
  return false;
}

template <int R>
static int run_case(const Case& c) {
  return check_backward_case<R>(c, dispatch<R>, no_refusal);
}

// ------------------------------------------------------------------ benchmark
// The forward (tests/gpu_standalone/instance.cu, 2D D=128) produces out and lse, then the
// backward (all three launches) is timed with CUDA events; median of `iters`.
template <int R>
static void bench(const Case& c, int iters) {
  auto p = make_problem<R>(c);
  const int64_t N = p.num_tokens();
  BwdBenchTensors t(c, N, 1.f, false);  // the forward below fills o and lse
  uint16_t *q = t.q, *k = t.k, *v = t.v, *o = t.o, *dout = t.dout, *dq = t.dq, *dk = t.dk, *dv = t.dv;
  float* lse = t.lse;
  int64_t sq[6], sk[6];
  strides_for<R>(c, c.H, sq);
  strides_for<R>(c, c.Hkv, sk);
  int frc = 3;
  if (R == 2 && c.D == 128) {
    auto& p2 = *reinterpret_cast<const fastna::NaProblem<2>*>(&p);
    auto fwd = [&]() {
      return c.bf16 ? fused_fwd_r2_bf16_d128(p2, q, sq, k, sk, v, sk, o, sq, lse, 0)
                    : fused_fwd_r2_f16_d128(p2, q, sq, k, sk, v, sk, o, sq, lse, 0);
    };
    frc = fwd();
    CK(cudaDeviceSynchronize());
    if (frc != 0) { std::printf("bench %s: forward rc=%d\n", c.name.c_str(), frc); return; }
  }
  size_t ws_bytes = 0;
  dispatch<R>(c, p, sq, sk, q, k, v, o, dout, lse, dq, dk, dv, nullptr, &ws_bytes, 0);
  void* ws;
  CK(cudaMalloc(&ws, ws_bytes));
  auto launch = [&]() { return dispatch<R>(c, p, sq, sk, q, k, v, o, dout, lse, dq, dk, dv, ws, nullptr, 0); };
  int rc = launch();
  CK(cudaDeviceSynchronize());
  if (rc != 0) { std::printf("bench %s: rc=%d\n", c.name.c_str(), rc); return; }
  launch();
  auto time_it = [&](auto&& fn) { return median_of(time_launches(iters, fn)); };
  const double bwd = time_it(launch);
  double fwd = 0;
  if (frc == 0) {
    auto& p2 = *reinterpret_cast<const fastna::NaProblem<2>*>(&p);
    fwd = time_it([&]() {
      return c.bf16 ? fused_fwd_r2_bf16_d128(p2, q, sq, k, sk, v, sk, o, sq, lse, 0)
                    : fused_fwd_r2_f16_d128(p2, q, sq, k, sk, v, sk, o, sq, lse, 0);
    });
  }
  CK(cudaGetLastError());
  // backward FLOPs: 5 GEMMs of the window (QK^T recomputed twice: dK/dV and dQ kernels -> 6 here)
  const double win = 2.0 * double(c.B) * N * double(p.window_size()) * c.D * c.H;
  std::printf("BENCH %-44s %s D=%d  bwd median %.3f ms (%.1f TFLOP/s at 5 GEMMs, %.1f issued at 7)  fwd %.3f ms  bwd/fwd %.2f\n",
              c.name.c_str(), c.bf16 ? "bf16" : "fp16", c.D, bwd, 5 * win / (bwd * 1e-3) / 1e12,
              7 * win / (bwd * 1e-3) / 1e12, fwd, fwd > 0 ? bwd / fwd : 0.0);
  t.release();
  cudaFree(ws);
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const RunParts parts = parse_run_parts(argc, argv);
  print_device();
  int fails = 0;
  if (parts.test) {
    std::vector<Case> cs = bwd_test_cases();
    fails = run_backward_cases(
        cs, have_instance, [](auto rank, const Case& c) { return run_case<decltype(rank)::value>(c); });
  }
  if (parts.bench) {
    bench<2>(mk("2d 128x128 K13x13 H8", 2, {128, 128}, {13, 13}, {1, 1}, {1, 1}, {0, 0}, 1, 8, 8, 128, false), 20);
    bench<2>(mk("2d 128x128 K13x13 H8", 2, {128, 128}, {13, 13}, {1, 1}, {1, 1}, {0, 0}, 1, 8, 8, 128, true), 20);
    bench<2>(mk("flux 256x256 K80x80 H24", 2, {256, 256}, {80, 80}, {1, 1}, {1, 1}, {0, 0}, 1, 24, 24, 128, true), 5);
    bench<2>(mk("flux-strided 256x256 K80x80 s16 H24", 2, {256, 256}, {80, 80}, {16, 16}, {1, 1}, {0, 0}, 1, 24, 24, 128, true), 5);
  }
  return fails == 0 ? 0 : 1;
}
#endif
