// Standalone GPU test + benchmark of fastna::hopper::Forward (sm90a), side by side with the
// sm80-class fastna::fused::Forward.  Build/run: tests/gpu_standalone/run_hopper.sh.
//
// This file is compiled twice over: with -DINST_RANK/-DINST_ELEM/-DINST_DIM it is one hopper
// instance (hopper_fwd_r<R>_<elem>_d<D>); without, it is the driver.  The sm80 instances come
// from instance.cu (fused_fwd_r<R>_<elem>_d<D>, common.hpp).
//
// Correctness: random non-zero inputs, out and lse poisoned with NaN, CPU reference in double
// that is literal docs/SEMANTICS.md section 5 (per query, every key, fastna::is_neighbor on every axis).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

#include "common.hpp"
#include "fastna/common/problem.hpp"

#define FASTNA_HOPPER_DECL(R, E, D) FASTNA_FWD_ENTRY_DECL(hopper, R, E, D, )
#define FASTNA_HOPPER_DECL_V(R, E, D, TAG) FASTNA_FWD_ENTRY_DECL(hopper, R, E, D, TAG)
// Hopper instances built by run_hopper.sh (keep in sync with its HOPPER_INSTS).
#define FASTNA_HOPPER_FOR_ALL(X)                                                      \
  X(1, f16, 32) X(1, bf16, 32) X(2, f16, 32) X(2, bf16, 32) X(3, f16, 32) X(3, bf16, 32) \
  X(1, f16, 64) X(1, f16, 128) X(1, bf16, 64) X(1, bf16, 128)                         \
  X(2, f16, 64) X(2, f16, 128) X(2, bf16, 64) X(2, bf16, 128)                         \
  X(3, f16, 64) X(3, f16, 128) X(3, bf16, 64) X(3, bf16, 128)                         \
  X(1, bf16, 256) X(2, bf16, 256) X(3, bf16, 256)
#ifdef FASTNA_HOPPER_SMALL_SET
// A quicker build (run_hopper.sh with HOPPER_SET=small): head dim 32 everywhere, D=64/128 for
// regressions; cases without a built instance are skipped.
#undef FASTNA_HOPPER_FOR_ALL
#define FASTNA_HOPPER_FOR_ALL(X)                                                             \
  X(1, f16, 32) X(1, bf16, 32) X(2, f16, 32) X(2, bf16, 32) X(3, f16, 32) X(3, bf16, 32) \
  X(2, bf16, 64) X(1, bf16, 128) X(2, bf16, 128) X(3, bf16, 128)
#endif
#ifdef FASTNA_HOPPER_R1_SET
// The 1D set (run_hopper.sh with HOPPER_SET=r1): the bf16 D=128 default and its variants 7, 11, 12.
#undef FASTNA_HOPPER_FOR_ALL
#define FASTNA_HOPPER_FOR_ALL(X) X(1, bf16, 128)
#endif
FASTNA_HOPPER_FOR_ALL(FASTNA_HOPPER_DECL)
// bf16 variants (INST_VARIANT): 1 Signal::kThread (cp.async K/V loads; the default is TMA), 2 pingpong schedule (TMA), 3 the
// other of serial / overlap (serial at D >= 64, overlap at D=32 whose default is serial; TMA),
// 5 (D=32) the D=64-style configuration: 128-key boxes, one CTA per SM (TMA), 6 (2D) 8x8 KV boxes,
// 7 one tile per CTA (the 1D default is persistent at one CTA per SM), 8 persistent (2D, D=32: defaults are not),
// 11 overlap only (the 1D default takes
// pingpong where both warpgroups need the same boxes), 12 no L2 prefetch of the next tile's Q.
// g_max_ctas > 0 caps the persistent grid (tests: many tiles per CTA on small problems).
#define FASTNA_HOPPER_FOR_VARIANTS(X)                                                              \
  X(1, bf16, 128, _v1) X(2, bf16, 128, _v1) X(3, bf16, 128, _v1) X(1, bf16, 128, _v2) X(2, bf16, 128, _v2) \
  X(3, bf16, 128, _v2) X(1, bf16, 128, _v3) X(2, bf16, 128, _v3) X(3, bf16, 128, _v3) \
  X(1, bf16, 32, _v1) X(2, bf16, 32, _v1) X(3, bf16, 32, _v1) X(2, bf16, 32, _v5) \
  X(2, bf16, 32, _v3) X(2, bf16, 64, _v6) X(1, bf16, 128, _v7) X(2, bf16, 128, _v8) X(2, bf16, 32, _v8) \
  X(1, bf16, 128, _v11) X(1, bf16, 128, _v12)
#ifdef FASTNA_HOPPER_SMALL_SET
#undef FASTNA_HOPPER_FOR_VARIANTS
#define FASTNA_HOPPER_FOR_VARIANTS(X) \
  X(1, bf16, 32, _v1) X(2, bf16, 32, _v1) X(3, bf16, 32, _v1) X(1, bf16, 128, _v1) X(1, bf16, 128, _v2) \
  X(1, bf16, 128, _v7)
#endif
#ifdef FASTNA_HOPPER_R1_SET
#undef FASTNA_HOPPER_FOR_VARIANTS
#define FASTNA_HOPPER_FOR_VARIANTS(X) X(1, bf16, 128, _v7) X(1, bf16, 128, _v11) X(1, bf16, 128, _v12)
#endif
FASTNA_HOPPER_FOR_VARIANTS(FASTNA_HOPPER_DECL_V)
extern int g_max_ctas;  // defined by the driver
// sm80 instances (instance.cu, declared in common.hpp) compared in the benchmark.
#if defined(FASTNA_HOPPER_SMALL_SET)
#define FASTNA_SM80_FOR_BENCH(X) X(2, bf16, 32) X(2, bf16, 64)
#elif defined(FASTNA_HOPPER_R1_SET)
#define FASTNA_SM80_FOR_BENCH(X)
#else
#define FASTNA_SM80_FOR_BENCH(X) X(1, bf16, 128) X(2, bf16, 128) X(3, bf16, 128) X(2, bf16, 32) X(2, bf16, 64)
#endif

#ifdef INST_RANK
// ------------------------------------------------------------------ one hopper instance
#include "fastna/sm90/forward.hpp"
#include "instance_tu.hpp"
#ifndef INST_VARIANT
#define INST_VARIANT 0
#endif


int CAT(hopper_fwd_r, INST_RANK, _, INST_ELEM, _d, INST_DIM, INST_TAG)(const fastna::NaProblem<INST_RANK>& p, const void* q,
                                                             const int64_t* sq, const void* k, const int64_t* sk,
                                                             const void* v, const int64_t* sv, void* out,
                                                             const int64_t* so, float* lse, cudaStream_t stream) {
  namespace hp = fastna::hopper;
#if INST_VARIANT != 0
  using Base = hp::Forward<INST_RANK, Elem, INST_DIM>;
  using QB = typename Base::Traits::QBox;
  using KB = typename Base::Traits::KBox;
  constexpr int kSt = Base::Traits::kStages;
#endif
#if INST_VARIANT == 1
  using Op = hp::Forward<INST_RANK, Elem, INST_DIM, QB, KB, kSt, hp::Schedule::kOverlap, hp::Signal::kThread>;
#elif INST_VARIANT == 2
  using Op = hp::Forward<INST_RANK, Elem, INST_DIM, QB, KB, kSt, hp::Schedule::kPingpong>;
#elif INST_VARIANT == 3
  // The other schedule than the default: serial where the default is overlap, overlap at D=32.
  using Op = hp::Forward<INST_RANK, Elem, INST_DIM, QB, KB, kSt,
                         Base::Traits::kSchedule == hp::Schedule::kSerial ? hp::Schedule::kOverlap
                                                                          : hp::Schedule::kSerial>;
#elif INST_VARIANT == 6
  using Op = hp::Forward<INST_RANK, Elem, INST_DIM, QB, fastna::fused::Box<INST_RANK, 8, 8>>;
#elif INST_VARIANT == 7 || INST_VARIANT == 8
  using Op = hp::Forward<INST_RANK, Elem, INST_DIM, QB, KB, kSt, Base::Traits::kSchedule, hp::Signal::kTma, 0,
                         INST_VARIANT == 8 ? 1 : 0>;
#elif INST_VARIANT == 11 || INST_VARIANT == 12
  using Op = hp::Forward<INST_RANK, Elem, INST_DIM, QB, KB, kSt, Base::Traits::kSchedule, hp::Signal::kTma, 0, -1,
                         INST_VARIANT != 11, INST_VARIANT != 12>;
#elif INST_VARIANT == 5
  using KB5 = typename hp::DefaultKBox<INST_RANK, 64>::type;
  using Op = hp::Forward<INST_RANK, Elem, INST_DIM, QB, KB5, hp::DefaultStages<INST_DIM, KB5::kSize>::value,
                         hp::Schedule::kOverlap, hp::Signal::kTma, 1>;
#else
  using Op = hp::Forward<INST_RANK, Elem, INST_DIM>;
#endif
  auto args = forward_arguments<typename Op::Arguments>(p, q, sq, k, sk, v, sv, out, so, lse);
  if (Op::can_implement(args) != cutlass::Status::kSuccess) return 1;
  return Op::run(args, stream, nullptr, g_max_ctas) == cutlass::Status::kSuccess ? 0 : 2;
}

#else
// ------------------------------------------------------------------ driver
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fastna/common/index_math.hpp"
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "case.hpp"
#include "fwd_check.hpp"
#include "half_bits.hpp"

#include "harness.hpp"


// kHopper: default instance; kVariant: the bf16 D=128 variant g_variant (1..4); kSm80: fused::Forward.
enum class Impl { kHopper, kSm80, kVariant };
static int g_variant = 0;
int g_max_ctas = 0;
static const char* variant_name(int v) {
  static const char* names[] = {"hopper", "cpasync", "pingpong", "altsched", "(dropped)", "kv128x1", "kv8x8",
                                "nopersist", "persist", "(dropped)", "(dropped)", "overlap", "noprefq"};
  return names[v];
}

template <int R>
static int dispatch(Impl impl, const Case& c, const fastna::NaProblem<R>& p, const void* q, const int64_t* sq,
                    const void* k, const int64_t* sk, const void* v, const int64_t* sv, void* o, const int64_t* so,
                    float* lse) {
  const char* e = c.bf16 ? "bf16" : "f16";
#define XH(RR, EE, DD)                                                                                   \
  if (impl == Impl::kHopper && RR == R && c.D == DD && std::strcmp(e, #EE) == 0)                        \
    return hopper_fwd_r##RR##_##EE##_d##DD(*reinterpret_cast<const fastna::NaProblem<RR>*>(&p), q, sq, k, sk, v, sv, o, \
                                           so, lse, 0);
  FASTNA_HOPPER_FOR_ALL(XH)
#undef XH
#define XV(RR, EE, DD, TAG)                                                                              \
  if (impl == Impl::kVariant && RR == R && c.D == DD && std::strcmp(e, #EE) == 0 &&                     \
      std::strcmp(#TAG + 2, std::to_string(g_variant).c_str()) == 0)                                    \
    return hopper_fwd_r##RR##_##EE##_d##DD##TAG(*reinterpret_cast<const fastna::NaProblem<RR>*>(&p), q, sq, k, sk, v, sv, \
                                                o, so, lse, 0);
  FASTNA_HOPPER_FOR_VARIANTS(XV)
#undef XV
#define XS(RR, EE, DD)                                                                                   \
  if (impl == Impl::kSm80 && RR == R && c.D == DD && std::strcmp(e, #EE) == 0)                          \
    return fused_fwd_r##RR##_##EE##_d##DD(*reinterpret_cast<const fastna::NaProblem<RR>*>(&p), q, sq, k, sk, v, sv, o, \
                                          so, lse, 0);
  FASTNA_SM80_FOR_BENCH(XS)
#undef XS
  return 3;  // no instance
}


// Whether the default hopper instance (rank, dtype, D) is built.
static bool has_hopper(int rank, bool bf16, int D) {
  bool found = false;
#define XHAS(RR, EE, DD) found = found || (RR == rank && DD == D && (std::strcmp(#EE, "bf16") == 0) == bf16);
  FASTNA_HOPPER_FOR_ALL(XHAS)
#undef XHAS
  return found;
}

// Whether the variant instance (rank, dtype, D, g_variant) is built.
static bool has_variant(int rank, bool bf16, int D, int v) {
  bool found = false;
#define XHAS(RR, EE, DD, TAG) \
  found = found || (RR == rank && DD == D && (std::strcmp(#EE, "bf16") == 0) == bf16 && std::atoi(#TAG + 2) == v);
  FASTNA_HOPPER_FOR_VARIANTS(XHAS)
#undef XHAS
  return found;
}

template <int R>
static bool run_case(const Case& c, Impl impl) {
  auto p = make_problem<R>(c);
  const int64_t N = p.num_tokens();
  const int B = c.B, H = c.H, Hk = c.Hkv, D = c.D;
  NonzeroUniform rnd(977 + c.D + 13 * c.H + int(N) + 5 * c.rank, 1.5f);
  const size_t qe = size_t(B) * N * H * D, kve = size_t(B) * N * Hk * D;
  std::vector<uint16_t> rq(qe), rk(kve), rv(kve);
  for (auto& x : rq) x = to_bits(rnd(), c.bf16);
  for (auto& x : rk) x = to_bits(rnd(), c.bf16);
  for (auto& x : rv) x = to_bits(rnd(), c.bf16);
  int64_t sq[6], sk[6];
  strides_for<R>(c, H, sq);
  strides_for<R>(c, Hk, sk);
  uint16_t *dq, *dk, *dv, *dout;
  float* dlse;
  CK(cudaMalloc(&dq, qe * 2));
  CK(cudaMalloc(&dk, kve * 2));
  CK(cudaMalloc(&dv, kve * 2));
  CK(cudaMalloc(&dout, qe * 2));
  CK(cudaMalloc(&dlse, size_t(B) * N * H * 4));
  CK(cudaMemcpy(dq, rq.data(), qe * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dk, rk.data(), kve * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dv, rv.data(), kve * 2, cudaMemcpyHostToDevice));
  CK(cudaMemset(dout, 0xff, qe * 2));                 // NaN poison
  CK(cudaMemset(dlse, 0xff, size_t(B) * N * H * 4));  // NaN poison
  const int rc = dispatch<R>(impl, c, p, dq, sq, dk, sk, dv, sk, dout, sq, dlse);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  std::vector<uint16_t> out(qe);
  std::vector<float> lse(size_t(B) * N * H);
  CK(cudaMemcpy(out.data(), dout, qe * 2, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(lse.data(), dlse, lse.size() * 4, cudaMemcpyDeviceToHost));
  cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); cudaFree(dlse);
  if (rc != 0) {
    std::printf("%-52s FAIL (dispatch rc=%d)\n", c.name.c_str(), rc);
    return false;
  }

  // CPU reference in double.
  auto fq = [&](int b, int64_t n, int h, int d) { return from_bits(rq[((size_t(b) * N + n) * H + h) * D + d], c.bf16); };
  auto fk = [&](int b, int64_t n, int h, int d) { return from_bits(rk[((size_t(b) * N + n) * Hk + h) * D + d], c.bf16); };
  auto fv = [&](int b, int64_t n, int h, int d) { return from_bits(rv[((size_t(b) * N + n) * Hk + h) * D + d], c.bf16); };
  const FwdErrors err = forward_errors(c, p, fq, fk, fv, out, lse);
  const double rel = err.rel, lse_err = err.lse_err;
  const bool nonfinite = err.nonfinite;
  const double tol = c.bf16 ? 1e-2 : 3e-3;
  const bool pass = !nonfinite && rel < tol && lse_err < 2e-3;
  std::printf("%-52s%s %s D=%-3d rel_l2=%.3e lse_maxabs=%.3e %s%s\n", c.name.c_str(),
              impl == Impl::kVariant ? (std::string(" ") + variant_name(g_variant)).c_str() : "", c.bf16 ? "bf16" : "fp16", D, rel,
              lse_err, pass ? "PASS" : "FAIL", nonfinite ? " (non-finite output)" : "");
  return pass;
}

static bool run_any(const Case& c, Impl impl = Impl::kHopper) {
  if (c.rank == 1) return run_case<1>(c, impl);
  if (c.rank == 2) return run_case<2>(c, impl);
  return run_case<3>(c, impl);
}

// ------------------------------------------------------------------ benchmark
// Device-side fill: a hash of the index mapped to a roughly normal value (sum of 4 uniforms),
// so 10^8-element inputs take milliseconds instead of host minutes.
__global__ void fill_kernel(uint16_t* p, size_t n, uint32_t seed, bool bf16) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    float acc = 0.f;
    uint32_t x = uint32_t(i) * 2654435761u ^ (uint32_t(i >> 32) + seed) * 40503u;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      x ^= x >> 15; x *= 2246822519u; x ^= x >> 13; x *= 3266489917u; x ^= x >> 16;
      acc += float(x & 0xffffff) * (1.f / 16777216.f) - 0.5f;
    }
    const float v = acc * 1.7320508f;  // unit variance
    if (bf16) {
      __nv_bfloat16 h = __float2bfloat16_rn(v);
      p[i] = *reinterpret_cast<uint16_t*>(&h);
    } else {
      __half h = __float2half_rn(v);
      p[i] = *reinterpret_cast<uint16_t*>(&h);
    }
  }
}

template <int R>
static double bench_one(Impl impl, const Case& c, int iters, uint16_t* dq, uint16_t* dk, uint16_t* dv, uint16_t* dout) {
  auto p = make_problem<R>(c);
  const int64_t N = p.num_tokens();
  int64_t sq[6], sk[6];
  strides_for<R>(c, c.H, sq);
  strides_for<R>(c, c.Hkv, sk);
  auto launch = [&]() { return dispatch<R>(impl, c, p, dq, sq, dk, sk, dv, sk, dout, sq, nullptr); };
  const char* who = impl == Impl::kHopper ? "hopper" : (impl == Impl::kSm80 ? "sm80" : variant_name(g_variant));
  const int rc = launch();
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  if (rc != 0) {
    std::printf("BENCH %-44s %-8s rc=%d\n", c.name.c_str(), who, rc);
    return 0;
  }
  launch();
  const std::vector<float> ms = time_launches(iters, launch);
  CK(cudaGetLastError());
  const double med = median_of(ms);
  const double flops = 4.0 * double(c.B) * N * double(p.window_size()) * c.D * c.H;
  std::printf("BENCH %-44s %-8s median %9.3f ms (min %9.3f)  %6.1f TFLOP/s\n", c.name.c_str(), who, med, ms[0],
              flops / (med * 1e-3) / 1e12);
  return med;
}

// Every implementation on the same buffers: default hopper, the bf16 D=128 variants, sm80.
static const char* g_only = nullptr;  // --only SUBSTR: benchmark cases whose name contains it

template <int R>
static void bench_all(const Case& c, int iters) {
  if (g_only != nullptr && c.name.find(g_only) == std::string::npos) return;
  auto p = make_problem<R>(c);
  const int64_t N = p.num_tokens();
  const size_t qe = size_t(c.B) * N * c.H * c.D, kve = size_t(c.B) * N * c.Hkv * c.D;
  uint16_t *dq = device_u16(qe), *dk = device_u16(kve), *dv = device_u16(kve), *dout = device_u16(qe);
  fill_kernel<<<1024, 256>>>(dq, qe, 1u, c.bf16);
  fill_kernel<<<1024, 256>>>(dk, kve, 2u, c.bf16);
  fill_kernel<<<1024, 256>>>(dv, kve, 3u, c.bf16);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  const double t_h = bench_one<R>(Impl::kHopper, c, iters, dq, dk, dv, dout);
  for (g_variant = 1; g_variant <= 12; ++g_variant)
    if (has_variant(R, c.bf16, c.D, g_variant)) bench_one<R>(Impl::kVariant, c, iters, dq, dk, dv, dout);
  g_variant = 0;
  const double t_s = bench_one<R>(Impl::kSm80, c, iters, dq, dk, dv, dout);
  if (t_h > 0 && t_s > 0)
    std::printf("RATIO %-44s hopper %.3f ms vs sm80 %.3f ms: %.2fx\n", c.name.c_str(), t_h, t_s, t_s / t_h);
  cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout);
}

int main(int argc, char** argv) {
  const RunParts parts = parse_run_parts(argc, argv);
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--only") && i + 1 < argc) g_only = argv[++i];
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines survive a timeout kill
  print_device();

  int fails = 0, total = 0;
  if (parts.test) {
    std::vector<Case> cs;
    for (int D : {32, 64, 128, 256})
      for (int bf : {0, 1}) {
        if (D == 256 && !bf) continue;  // D=256: bf16 instances only
        const std::string tag = std::string(" D") + std::to_string(D);
        // 1D: multi-box, ring wrap-around (many KV tiles), odd/even K, stride, dilation, causal, GQA
        cs.push_back(mk("1d L1000 K301" + tag, 1, {1000}, {301}, {1}, {1}, {0}, 1, 2, 2, D, bf));
        cs.push_back(mk("1d L331 K8 s3 d2 (even K, unequal groups)" + tag, 1, {331}, {8}, {3}, {2}, {0}, 2, 2, 2, D, bf));
        cs.push_back(mk("1d L700 K100 d3 causal GQA4/2" + tag, 1, {700}, {100}, {1}, {3}, {1}, 1, 4, 2, D, bf));
        cs.push_back(mk("1d L200 K200 (self-attn)" + tag, 1, {200}, {200}, {1}, {1}, {0}, 1, 2, 2, D, bf));
        cs.push_back(mk("1d L600 K64 s64 causal (blocked)" + tag, 1, {600}, {64}, {64}, {1}, {1}, 1, 2, 1, D, bf));
        cs.push_back(mk("1d L900 K256 s32 d2 causal" + tag, 1, {900}, {256}, {32}, {2}, {1}, 1, 1, 1, D, bf));
        // Large windows: both warpgroups need the same boxes (the 1D default takes pingpong).
        cs.push_back(mk("1d L2000 K1500 GQA2/1 (pingpong)" + tag, 1, {2000}, {1500}, {1}, {1}, {0}, 1, 2, 1, D, bf));
        cs.push_back(mk("1d L2560 K1024 s256 (pingpong)" + tag, 1, {2560}, {1024}, {256}, {1}, {0}, 1, 1, 1, D, bf));
        // 2D
        cs.push_back(mk("2d 40x37 K13x20" + tag, 2, {40, 37}, {13, 20}, {1, 1}, {1, 1}, {0, 0}, 1, 2, 2, D, bf));
        cs.push_back(mk("2d 45x33 K6x9 s2x3 d2x3 GQA4/1" + tag, 2, {45, 33}, {6, 9}, {2, 3}, {2, 3}, {0, 0}, 1, 4, 1, D, bf));
        for (int cc = 0; cc < 4; ++cc)
          cs.push_back(mk("2d 35x29 K10x7 s1x2 d1x2 causal=(" + std::to_string(cc & 1) + "," +
                              std::to_string((cc >> 1) & 1) + ")" + tag,
                          2, {35, 29}, {10, 7}, {1, 2}, {1, 2}, {cc & 1, (cc >> 1) & 1}, 1, 2, 2, D, bf));
        cs.push_back(mk("2d 24x24 K24x24 (self-attn)" + tag, 2, {24, 24}, {24, 24}, {1, 1}, {1, 1}, {0, 0}, 1, 1, 1, D, bf));
        cs.push_back(mk("2d 34x30 K16x8 s16x8 causal=(1,1) (blocked)" + tag, 2, {34, 30}, {16, 8}, {16, 8}, {1, 1}, {1, 1}, 2, 1, 1, D, bf));
        // 3D
        cs.push_back(mk("3d 9x13x19 K5x6x11" + tag, 3, {9, 13, 19}, {5, 6, 11}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 2, 2, D, bf));
        cs.push_back(mk("3d 8x12x21 K4x3x8 s2x1x3 d1x2x2 causal=(1,0,0)" + tag, 3, {8, 12, 21}, {4, 3, 8}, {2, 1, 3}, {1, 2, 2}, {1, 0, 0}, 1, 2, 1, D, bf));
        for (int cc = 0; cc < 8; ++cc)
          cs.push_back(mk("3d 7x9x17 K3x4x9 s1x2x1 d2x1x1 causal=(" + std::to_string(cc & 1) + "," +
                              std::to_string((cc >> 1) & 1) + "," + std::to_string((cc >> 2) & 1) + ")" + tag,
                          3, {7, 9, 17}, {3, 4, 9}, {1, 2, 1}, {2, 1, 1}, {cc & 1, (cc >> 1) & 1, (cc >> 2) & 1}, 1, 1, 1, D, bf));
        cs.push_back(mk("3d 7x10x19 K3x5x9 B2 GQA2/1 (batch crossing)" + tag, 3, {7, 10, 19}, {3, 5, 9}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 2, 2, 1, D, bf));
        cs.push_back(mk("3d 6x7x9 K6x7x9 (self-attn) GQA2/1" + tag, 3, {6, 7, 9}, {6, 7, 9}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 2, 1, D, bf));
        cs.push_back(mk("3d 10x9x26 K4x4x12 s2x2x3 d1x1x2 causal=(0,1,0)" + tag, 3, {10, 9, 26}, {4, 4, 12}, {2, 2, 3}, {1, 1, 2}, {0, 1, 0}, 1, 2, 2, D, bf));
      }
    for (auto& c : cs) {
      if (!has_hopper(c.rank, c.bf16, c.D)) continue;
      ++total;
      if (!run_any(c)) ++fails;
    }
    for (g_variant = 1; g_variant <= 12; ++g_variant)
      for (auto& c : cs)
        if (g_variant != 4 && has_variant(c.rank, c.bf16, c.D, g_variant)) {
          ++total;
          if (!run_any(c, Impl::kVariant)) ++fails;
        }
    g_variant = 0;
    // Persistent CTAs over many tiles each: the default instances again on a grid of 3 CTAs
    // (ring stages and phases carried across tiles, heads and batch items, empty tiles skipped).
    g_max_ctas = 3;
    for (auto& c : cs) {
      if (!has_hopper(c.rank, c.bf16, c.D)) continue;
      ++total;
      std::printf("[grid<=3] ");
      if (!run_any(c)) ++fails;
    }
    for (int v : {2, 8, 9, 10, 11, 12}) {
      g_variant = v;
      for (auto& c : cs)
        if (has_variant(c.rank, c.bf16, c.D, v)) {
          ++total;
          std::printf("[grid<=3] ");
          if (!run_any(c, Impl::kVariant)) ++fails;
        }
    }
    g_variant = 0;
    g_max_ctas = 0;
    std::printf("SUMMARY: %d/%d passed\n", total - fails, total);
  }
  if (parts.bench) {
    // Small-window anchors (docs/PERFORMANCE.md section 2): nat, dinat (B=32, 4 heads, D=32), nat-13.
    bench_all<2>(mk("nat 56x56 K7x7 B32 H4 D32", 2, {56, 56}, {7, 7}, {1, 1}, {1, 1}, {0, 0}, 32, 4, 4, 32, true), 50);
    bench_all<2>(mk("dinat 56x56 K7x7 d4x4 B32 H4 D32", 2, {56, 56}, {7, 7}, {1, 1}, {4, 4}, {0, 0}, 32, 4, 4, 32, true), 50);
    bench_all<2>(mk("nat-13 64x64 K13x13 B4 H8 D64", 2, {64, 64}, {13, 13}, {1, 1}, {1, 1}, {0, 0}, 4, 8, 8, 64, true), 50);
    // Anchor cases (docs/PERFORMANCE.md section 2): B=1, bf16, D=128.
    bench_all<1>(mk("1d 32768 K2048 H1", 1, {32768}, {2048}, {1}, {1}, {0}, 1, 1, 1, 128, true), 30);
    bench_all<1>(mk("1d-strided 32768 K2048 s256 H1", 1, {32768}, {2048}, {256}, {1}, {0}, 1, 1, 1, 128, true), 30);
    // Per-CTA fixed cost vs per-KV-box cost: the same grid (256 CTAs) with 8 / 32 / 64 boxes each.
    for (int kk : {1024, 4096, 8192})
      bench_all<1>(mk("1d-strided 32768 K" + std::to_string(kk) + " s256 H1 (sweep)", 1, {32768}, {kk}, {256}, {1}, {0}, 1,
                      1, 1, 128, true),
                   30);
    bench_all<2>(mk("flux 256x256 K80x80 H24", 2, {256, 256}, {80, 80}, {1, 1}, {1, 1}, {0, 0}, 1, 24, 24, 128, true), 5);
    bench_all<2>(mk("flux-strided 256x256 K80x80 s16x16 H24", 2, {256, 256}, {80, 80}, {16, 16}, {1, 1}, {0, 0}, 1, 24, 24, 128, true), 5);
    bench_all<3>(mk("hunyuan 30x48x80 K18x24x24 H24", 3, {30, 48, 80}, {18, 24, 24}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 24, 24, 128, true), 3);
    bench_all<3>(mk("hunyuan-strided 30x48x80 K18x24x24 s16x8x8 H24", 3, {30, 48, 80}, {18, 24, 24}, {16, 8, 8}, {1, 1, 1}, {0, 0, 0}, 1, 24, 24, 128, true), 3);
    bench_all<3>(mk("video-causal-t 16x48x80 K8x16x24 cT H16", 3, {16, 48, 80}, {8, 16, 24}, {1, 1, 1}, {1, 1, 1}, {1, 0, 0}, 1, 16, 16, 128, true), 3);
    bench_all<1>(mk("dense-equiv 1d 8192 K8192 H16", 1, {8192}, {8192}, {1}, {1}, {0}, 1, 16, 16, 128, true), 10);
  }
  return fails == 0 ? 0 : 1;
}
#endif
