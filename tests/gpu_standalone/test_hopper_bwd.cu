// Standalone GPU test + benchmark of fastna::hopper::Backward (sm90a), side by side with the
// sm80 fastna::fused::Backward.  Build/run: tests/gpu_standalone/run_hopper_bwd.sh.
//
// This one file is compiled several times: with -DINST_RANK=.. -DINST_ELEM=.. -DINST_DIM=.. it is
// one hopper Backward instance (hopper_bwd_r<R>_<elem>_d<D>); without, it is the driver.  The sm80
// instances (fused_bwd_r2_bf16_d128, ..) come from test_fused_bwd.cu compiled with -DINST_*.
// Cases the Hopper backward does not take (dilation) must be refused by can_implement (rc 1):
// they count as passed "(refused)" -- the binding runs the sm80 backward for them.
//
// Correctness: random inputs (never zeros), gradients poisoned with NaN, lse computed by the CPU
// reference, CPU reference of the gradients in double written literally from docs/SEMANTICS.md section 5
// (per query: softmax over its neighbors found with is_neighbor on every axis).
#include <cuda_runtime.h>
#include <cstdint>
#include "fastna/common/problem.hpp"

// Type-erased call into one Backward<Rank, Element, HeadDim> instance.  The driver declares every
// instance weak: a build of a subset (run_hopper_bwd.sh HOPPER_INSTS / VARIANTS / SM80_INSTS)
// links, and cases without their instance are skipped.  sq: strides of the
// q-shaped tensors (q, out, dout, dq); sk: of the kv-shaped ones (k, v, dk, dv); Rank + 3 each.
// Returns 0 on success, 1 if can_implement refused, 2 on a launch error.
#define FASTNA_BWD_DECL(R, E, D) FASTNA_BWD_DECL_V(R, E, D, )
#define FASTNA_BWD_DECL_V1(R, E, D) FASTNA_BWD_DECL_V(R, E, D, _v1)
#define FASTNA_BWD_DECL_V2(R, E, D) FASTNA_BWD_DECL_V(R, E, D, _v2)
#define FASTNA_BWD_DECL_BASE(R, E, D) FASTNA_BWD_DECL_V(R, E, D, _base)
#define FASTNA_BWD_DECL_V(R, E, D, TAG)                                                                \
  extern "C" FASTNA_WEAK int hopper_bwd_r##R##_##E##_d##D##TAG(int which, const fastna::NaProblem<R>& p, const int64_t* sq, const int64_t* sk,   \
                                  const void* q, const void* k, const void* v, const void* o,            \
                                  const void* dout, const float* lse, void* dq, void* dk, void* dv,     \
                                  void* workspace, size_t* ws_bytes, cudaStream_t stream);

// which: bit 0 preprocess, bit 1 dK/dV kernel, bit 2 dQ kernel (7 = the whole backward).
#define FASTNA_BWD_INSTANCES(X)                                                               \
  X(1, f16, 64) X(1, f16, 128) X(1, bf16, 64) X(1, bf16, 128) X(2, f16, 64) X(2, f16, 128) \
  X(2, bf16, 64) X(2, bf16, 128) X(3, f16, 64) X(3, f16, 128) X(3, bf16, 64) X(3, bf16, 128)
#ifdef INST_RANK
#define FASTNA_WEAK
#else
#define FASTNA_WEAK __attribute__((weak))
#endif
FASTNA_BWD_INSTANCES(FASTNA_BWD_DECL)
// Variant 1 (INST_VARIANT=1, symbols *_v1): SkipEmpty = true (warpgroups skip column tiles outside
// their own rows' column range), for every instance above.
FASTNA_BWD_INSTANCES(FASTNA_BWD_DECL_V1)
// Variant 2 (INST_VARIANT=2, symbols *_v2): the default without programmatic dependent launch
// (BackwardTraits::kPdl; before it existed: 64-key dQ tiles).
FASTNA_BWD_INSTANCES(FASTNA_BWD_DECL_V2)
// Variant "base" (symbols *_base): the library default compiled against another include folder
// (run_hopper_bwd.sh BASE_INCLUDE, e.g. a checkout of the last measured commit): same-run baseline.
// That TU is compiled with -Dfastna=fastna_base, so its kernels' template symbols differ from the
// current ones (same names otherwise: the linker would keep one); the instances are extern "C".
FASTNA_BWD_INSTANCES(FASTNA_BWD_DECL_BASE)
// sm80 instances (test_fused_bwd.cu) for the benchmark.
#define FASTNA_SM80_BWD_DECL(R, E, D)                                                                  \
  FASTNA_WEAK int fused_bwd_r##R##_##E##_d##D(const fastna::NaProblem<R>& p, const int64_t* sq, const int64_t* sk,   \
                                  const void* q, const void* k, const void* v, const void* o,            \
                                  const void* dout, const float* lse, void* dq, void* dk, void* dv,     \
                                  void* workspace, size_t* ws_bytes, cudaStream_t stream);
FASTNA_SM80_BWD_DECL(1, bf16, 128)
FASTNA_SM80_BWD_DECL(2, bf16, 128)
FASTNA_SM80_BWD_DECL(3, bf16, 128)

#ifdef INST_RANK
// ------------------------------------------------------------------ one instance
#include <cstdlib>
#include <type_traits>

#include "fastna/sm90/backward.hpp"
#include "instance_tu.hpp"
#ifndef INST_VARIANT
#define INST_VARIANT 0
#endif


int CAT(hopper_bwd_r, INST_RANK, _, INST_ELEM, _d, INST_DIM, INST_TAG)(int which, const fastna::NaProblem<INST_RANK>& p, const int64_t* sq,
                                                            const int64_t* sk, const void* q, const void* k,
                                                            const void* v, const void* o, const void* dout,
                                                            const float* lse, void* dq, void* dk, void* dv,
                                                            void* workspace, size_t* ws_bytes, cudaStream_t stream) {
  constexpr int R = INST_RANK;
  using QBox = typename fastna::hopper::DefaultQBox<R>::type;
  using ColBox = typename fastna::hopper::DefaultBwdColBox<R>::type;
#if INST_VARIANT == 0
  using Op = fastna::hopper::Backward<R, Elem, INST_DIM>;  // the library default
#elif INST_VARIANT == 1
  using Op = fastna::hopper::Backward<R, Elem, INST_DIM, QBox, ColBox, true>;
#elif defined(FASTNA_HOPPER_BWD_LAUNCH_MAIN)
  using Op = fastna::hopper::Backward<R, Elem, INST_DIM, QBox, ColBox, false,
                                      typename fastna::hopper::DefaultBwdDqColBox<R>::type, false>;  // no PDL
#else
  using Op = fastna::hopper::Backward<R, Elem, INST_DIM, QBox, ColBox, false, ColBox>;
#endif
  auto args = backward_arguments<typename Op::Arguments>(p, sq, sk, q, k, v, o, dout, lse, dq, dk, dv);
  if (ws_bytes != nullptr) {
    *ws_bytes = Op::get_workspace_size(args);
    return 0;
  }
  if (Op::can_implement(args) != cutlass::Status::kSuccess) return 1;
  typename Op::Params dkv, pdq;
  if (!Op::to_params(args, workspace, &dkv, &pdq)) return 1;
  if (const char* dbg = std::getenv("FASTNA_BWD_DEBUG")) dkv.debug = pdq.debug = std::atoi(dbg);
  const int64_t rows = int64_t(p.batch) * p.num_tokens() * p.heads;
  if (which & 1)
#ifdef FASTNA_HOPPER_BWD_PREPROCESS_SHAPE
    fastna::hopper::fna_hopper_bwd_preprocess_kernel<R, Elem, INST_DIM>
        <<<fastna::hopper::BwdPreprocessShape<INST_DIM>::blocks(rows), fastna::hopper::BwdPreprocessShape<INST_DIM>::kThreads, 0,
           stream>>>(dkv);
#else  // a BASE_INCLUDE from before the preprocess shape (one warp per row)
    fastna::hopper::fna_hopper_bwd_preprocess_kernel<R, Elem, INST_DIM>
        <<<static_cast<unsigned>((rows + 3) / 4), 128, 0, stream>>>(dkv);
#endif
#ifdef FASTNA_HOPPER_BWD_LAUNCH_MAIN
  // which = 5 (preprocess + dQ, timing only): under PDL dQ relies on the dK/dV kernel between them
  // for its inputs (BackwardTraits::kPdl), so its values are not meaningful there.
  if ((which & 2) && Op::template launch_main<typename Op::DkvTraits>(p, dkv, stream) != cudaSuccess) return 2;
  if ((which & 4) && Op::template launch_main<typename Op::DqTraits>(p, pdq, stream) != cudaSuccess) return 2;
#else
  if (which & 2) {
    using T = typename Op::DkvTraits;
    auto kernel = fastna::hopper::fna_hopper_bwd_kernel<T>;
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(T::kSmemBytes));
    kernel<<<Op::grid(p, false), T::kThreads, T::kSmemBytes, stream>>>(dkv);
  }
  if (which & 4) {
    using T = typename Op::DqTraits;
    auto kernel = fastna::hopper::fna_hopper_bwd_kernel<T>;
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(T::kSmemBytes));
    kernel<<<Op::grid(p, true), T::kThreads, T::kSmemBytes, stream>>>(pdq);
  }
#endif
  return cudaGetLastError() == cudaSuccess ? 0 : 2;
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

#include "fastna/common/index_math.hpp"

#include "harness.hpp"

#include "bwd_check.hpp"
#include "case.hpp"
#include "half_bits.hpp"





static int g_which = 7;
static int g_variant = 0;  // 1: the *_v1 instances (SkipEmpty), 2: *_v2 (no PDL), 3: *_base
static const char* g_only = nullptr;  // --only SUBSTR: test cases whose name contains it
static const char* g_skip = nullptr;  // --skip SUBSTR
static const char* g_bench = nullptr;  // --bench SUBSTR: benchmark cases whose name contains it
// The instance of (rank, dtype, head dim) for variant g_variant; nullptr if not built.
template <int R>
using BwdFn = int (*)(int, const fastna::NaProblem<R>&, const int64_t*, const int64_t*, const void*, const void*,
                      const void*, const void*, const void*, const float*, void*, void*, void*, void*, size_t*,
                      cudaStream_t);
template <int R>
static BwdFn<R> instance(const Case& c, int variant) {
  const char* e = c.bf16 ? "bf16" : "f16";
#define X(RR, EE, DD)                                                                             \
  if constexpr (RR == R)                                                                          \
    if (c.D == DD && std::strcmp(e, #EE) == 0)                                                    \
      return variant == 3   ? hopper_bwd_r##RR##_##EE##_d##DD##_base                              \
             : variant == 2 ? hopper_bwd_r##RR##_##EE##_d##DD##_v2                                  \
             : variant == 1 ? hopper_bwd_r##RR##_##EE##_d##DD##_v1 : hopper_bwd_r##RR##_##EE##_d##DD;
  FASTNA_BWD_INSTANCES(X)
#undef X
  return nullptr;
}

template <int R>
static int dispatch(const Case& c, const fastna::NaProblem<R>& p, const int64_t* sq, const int64_t* sk,
                    const void* q, const void* k, const void* v, const void* o, const void* dout, const float* lse,
                    void* dq, void* dk, void* dv, void* ws, size_t* ws_bytes, cudaStream_t st) {
  BwdFn<R> f = instance<R>(c, g_variant);
  if (f == nullptr) return 3;  // no instance
  return f(g_which, p, sq, sk, q, k, v, o, dout, lse, dq, dk, dv, ws, ws_bytes, st);
}

static bool have_instance(const Case& c) {
  if (c.rank == 1) return instance<1>(c, g_variant) != nullptr;
  if (c.rank == 2) return instance<2>(c, g_variant) != nullptr;
  return instance<3>(c, g_variant) != nullptr;
}

// The Hopper backward refuses dilation (can_implement, rc 1): the binding runs the sm80 one.
static const char* dilation_refusal(const Case& c, int rc) {
  bool dil = false;
  for (int a = 0; a < c.rank; ++a) dil = dil || c.Dil[a] > 1;
  return rc == 1 && dil ? "dilation, sm80 backward runs it" : nullptr;
}

template <int R>
static int run_case(const Case& c) {
  return check_backward_case<R>(c, dispatch<R>, dilation_refusal);
}

// ------------------------------------------------------------------ benchmark
// bf16 D=128; lse = 0, out = random (timing only).  Hopper: the whole backward, then the
// preprocess alone, preprocess + dK/dV, preprocess + dQ; sm80 backward (all three launches).
static int sm80_bwd(int R, const void* p, const int64_t* sq, const int64_t* sk, const void* q, const void* k,
                    const void* v, const void* o, const void* dout, const float* lse, void* dq, void* dk, void* dv,
                    void* ws, size_t* wsb) {
  if ((R == 1 && !fused_bwd_r1_bf16_d128) || (R == 2 && !fused_bwd_r2_bf16_d128) || (R == 3 && !fused_bwd_r3_bf16_d128))
    return 3;  // not built
  if (R == 1) return fused_bwd_r1_bf16_d128(*static_cast<const fastna::NaProblem<1>*>(p), sq, sk, q, k, v, o, dout, lse, dq, dk, dv, ws, wsb, 0);
  if (R == 2) return fused_bwd_r2_bf16_d128(*static_cast<const fastna::NaProblem<2>*>(p), sq, sk, q, k, v, o, dout, lse, dq, dk, dv, ws, wsb, 0);
  return fused_bwd_r3_bf16_d128(*static_cast<const fastna::NaProblem<3>*>(p), sq, sk, q, k, v, o, dout, lse, dq, dk, dv, ws, wsb, 0);
}

template <int R>
static void bench(const Case& c, int iters) {
  auto p = make_problem<R>(c);
  const int64_t N = p.num_tokens();
  BwdBenchTensors t(c, N, 0.5f, true);
  uint16_t *q = t.q, *k = t.k, *v = t.v, *o = t.o, *dout = t.dout, *dq = t.dq, *dk = t.dk, *dv = t.dv;
  float* lse = t.lse;
  int64_t sq[6], sk[6];
  strides_for<R>(c, c.H, sq);
  strides_for<R>(c, c.Hkv, sk);
  size_t wsh = 0, wss = 0;
  const int variant0 = g_variant;
  for (int var = 0; var < 4; ++var) {  // the largest workspace of the built variants (the same today)
    size_t w = 0;
    g_variant = var;
    dispatch<R>(c, p, sq, sk, q, k, v, o, dout, lse, dq, dk, dv, nullptr, &w, 0);
    wsh = std::max(wsh, w);
  }
  g_variant = variant0;
  sm80_bwd(R, &p, sq, sk, q, k, v, o, dout, lse, dq, dk, dv, nullptr, &wss);
  void* ws;
  CK(cudaMalloc(&ws, std::max<size_t>(std::max(wsh, wss), 16)));
  auto time_it = [&](auto&& fn) -> double {
    if (fn() != 0) return -1.0;
    CK(cudaDeviceSynchronize());
    fn();
    const std::vector<float> ms = time_launches(iters, fn);
    CK(cudaGetLastError());
    return median_of(ms);
  };
  auto hop = [&](int which) {
    return [&, which]() {
      g_which = which;
      return dispatch<R>(c, p, sq, sk, q, k, v, o, dout, lse, dq, dk, dv, ws, nullptr, 0);
    };
  };
  const double t_s = time_it([&]() { return sm80_bwd(R, &p, sq, sk, q, k, v, o, dout, lse, dq, dk, dv, ws, nullptr); });
  const double win = 2.0 * double(c.B) * N * double(p.window_size()) * c.D * c.H;
  std::printf("BENCH %-44s sm80 %8.3f ms%s\n", c.name.c_str(), t_s, t_s < 0 ? " (not built)" : "");
  static const char* names[4] = {"default", "v1 SkipEmpty", "v2 no PDL", "base (BASE_INCLUDE)"};
  double t_def = -1.0;
  static const int order[4] = {3, 0, 1, 2};  // the baseline first, then the default
  for (int oi = 0; oi < 4; ++oi) {
    const int var = order[oi];
    if (instance<R>(c, var) == nullptr) continue;
    g_variant = var;
    const double t_h = time_it(hop(7));
    const double t_pre = time_it(hop(1));
    const double t_dkv = time_it(hop(3));
    const double t_dq = time_it(hop(5));
    if (var == 3) t_def = t_h;
    // Issued-FLOP view: window FLOPs per GEMM (2 N |window| D H); dK/dV 4 GEMMs, dQ 3.
    std::printf("BENCH %-44s %-20s %8.3f ms (pre %.3f, dkdv %.3f, dq %.3f) | dkdv %.0f dq %.0f TFLOP/s (window) | "
                "%.0f TFLOP/s at 5 GEMMs | base/this %.3f\n",
                c.name.c_str(), names[var], t_h, t_pre, t_dkv - t_pre, t_dq - t_pre,
                4 * win / ((t_dkv - t_pre) * 1e-3) / 1e12, 3 * win / ((t_dq - t_pre) * 1e-3) / 1e12,
                5 * win / (t_h * 1e-3) / 1e12, t_def > 0 ? t_def / t_h : 0.0);
  }
  g_which = 7;
  g_variant = variant0;
  t.release();
  cudaFree(ws);
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const RunParts parts = parse_run_parts(argc, argv);
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--only") && i + 1 < argc) g_only = argv[++i];
    if (!std::strcmp(argv[i], "--skip") && i + 1 < argc) g_skip = argv[++i];
    if (!std::strcmp(argv[i], "--variant") && i + 1 < argc) g_variant = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--bench") && i + 1 < argc) g_bench = argv[++i];
  }
  if (const char* w = std::getenv("FASTNA_BWD_WHICH")) g_which = std::atoi(w);
  print_device();
  int fails = 0;
  if (parts.test) {
    std::vector<Case> cs = bwd_test_cases();
    // Larger cases: many column tiles per CTA (ring wrap-around), full tiles, GQA, batch.
    cs.push_back(mk("1d L1000 K255 s4 GQA2/1 B2", 1, {1000}, {255}, {4}, {1}, {0}, 2, 2, 1, 128, true));
    cs.push_back(mk("1d L700 K301 causal", 1, {700}, {301}, {1}, {1}, {1}, 1, 1, 1, 64, false));
    // Row tiles in LPT order (tile_order.hpp): dK/dV heavy near the ends, dQ light at a causal start.
    cs.push_back(mk("1d L2048 K512 GQA2/1 (LPT order)", 1, {2048}, {512}, {1}, {1}, {0}, 1, 2, 1, 64, true));
    cs.push_back(mk("1d L1536 K384 s3 causal B2 (LPT order)", 1, {1536}, {384}, {3}, {1}, {1}, 2, 1, 1, 128, false));
    cs.push_back(mk("2d 40x48 K21x17 GQA2/1 B2", 2, {40, 48}, {21, 17}, {1, 1}, {1, 1}, {0, 0}, 2, 2, 1, 128, true));
    cs.push_back(mk("2d 36x44 K13x15 s2x3 causal=(1,0)", 2, {36, 44}, {13, 15}, {2, 3}, {1, 1}, {1, 0}, 1, 2, 2, 64, false));
    cs.push_back(mk("3d 10x16x24 K5x7x9 causal=(1,0,0) B2", 3, {10, 16, 24}, {5, 7, 9}, {1, 1, 1}, {1, 1, 1}, {1, 0, 0}, 2, 2, 2, 128, true));
    cs.push_back(mk("3d 6x20x18 K3x9x9 s1x2x3 GQA2/1 B2", 3, {6, 20, 18}, {3, 9, 9}, {1, 2, 3}, {1, 1, 1}, {0, 0, 0}, 2, 2, 1, 64, true));
    for (auto& c : cs)
      if (c.D == 32) c.D = 64;  // the Hopper backward: head dims 64 and 128
    cs.push_back(mk("1d L600 K200 (full tiles) bf16 128", 1, {600}, {200}, {1}, {1}, {0}, 1, 2, 2, 128, true));
    cs.push_back(mk("1d L600 K200 (full tiles) f16 128", 1, {600}, {200}, {1}, {1}, {0}, 1, 2, 2, 128, false));
    cs.push_back(mk("1d L600 K200 (full tiles) bf16 64", 1, {600}, {200}, {1}, {1}, {0}, 1, 2, 2, 64, true));
    fails = run_backward_cases(
        cs, have_instance, [](auto rank, const Case& c) { return run_case<decltype(rank)::value>(c); }, g_only, g_skip);
  }
  if (parts.bench) {
    // The anchor cases of docs/PERFORMANCE.md section 2 (bf16, D=128, B=1); --bench SUBSTR picks some.
    auto want = [](const char* n) { return g_bench == nullptr || std::strstr(n, g_bench) != nullptr; };
    if (want("1d 32768 K2048 H1")) bench<1>(mk("1d 32768 K2048 H1", 1, {32768}, {2048}, {1}, {1}, {0}, 1, 1, 1, 128, true), 20);
    if (want("1d-strided 32768 K2048 s256 H1"))
      bench<1>(mk("1d-strided 32768 K2048 s256 H1", 1, {32768}, {2048}, {256}, {1}, {0}, 1, 1, 1, 128, true), 20);
    if (want("flux 256x256 K80x80 H24"))
      bench<2>(mk("flux 256x256 K80x80 H24", 2, {256, 256}, {80, 80}, {1, 1}, {1, 1}, {0, 0}, 1, 24, 24, 128, true), 5);
    if (want("flux-strided 256x256 K80x80 s16x16 H24"))
      bench<2>(mk("flux-strided 256x256 K80x80 s16x16 H24", 2, {256, 256}, {80, 80}, {16, 16}, {1, 1}, {0, 0}, 1, 24, 24, 128,
                  true), 5);
    if (want("hunyuan 30x48x80 K18x24x24 H24"))
      bench<3>(mk("hunyuan 30x48x80 K18x24x24 H24", 3, {30, 48, 80}, {18, 24, 24}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 24, 24,
                  128, true), 3);
    if (want("hunyuan-strided 30x48x80 K18x24x24 s16x8x8 H24"))
      bench<3>(mk("hunyuan-strided 30x48x80 K18x24x24 s16x8x8 H24", 3, {30, 48, 80}, {18, 24, 24}, {16, 8, 8}, {1, 1, 1},
                  {0, 0, 0}, 1, 24, 24, 128, true), 3);
    if (want("video-causal-t 16x48x80 K8x16x24 cT H16"))
      bench<3>(mk("video-causal-t 16x48x80 K8x16x24 cT H16", 3, {16, 48, 80}, {8, 16, 24}, {1, 1, 1}, {1, 1, 1}, {1, 0, 0}, 1, 16,
                  16, 128, true), 3);
  }
  return fails == 0 ? 0 : 1;
}
#endif
