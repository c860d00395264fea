// Standalone GPU test + benchmark of fastna::fused::Forward (no torch, no CMake).
// Build/run: tests/gpu_standalone/run.sh  (needs CUTLASS headers: CUTLASS_INCLUDE=...).
//
// Correctness: random inputs (never zeros), output poisoned with NaN, CPU reference in double
// that is literal docs/SEMANTICS.md section 5 (per query, every key, is_neighbor on every axis).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "case.hpp"
#include "common.hpp"
#include "fwd_check.hpp"
#include "fastna/common/index_math.hpp"
#include "fastna/common/problem.hpp"

#include "harness.hpp"

#include "half_bits.hpp"




// 0: default boxes; 1/2: the 2D D=128 variants, 3: q128w8, 4: 1D D=128 4-warp 128x32 (common.hpp)
static int g_variant = 0;
static const char* vtag(int v) {
  static const char* t[] = {"", "_v1", "_v2", "_v3", "_v4"};
  return t[v];
}
static const char* vlabel(int v) {
  static const char* t[] = {"   ", " v1", " v2", " v3", " v4"};
  return t[v];
}

template <int R>
static int dispatch(const Case& c, const fastna::NaProblem<R>& p, const void* q, const int64_t* sq,
                    const void* k, const int64_t* sk, const void* v, const int64_t* sv, void* o,
                    const int64_t* so, float* lse, cudaStream_t st) {
  const char* e = c.bf16 ? "bf16" : "f16";
#define XV(RR, EE, DD, TAG)                                                                           \
  if (g_variant != 0 && RR == R && c.D == DD && std::strcmp(e, #EE) == 0 && std::strcmp(#TAG, vtag(g_variant)) == 0) \
    return fused_fwd_r##RR##_##EE##_d##DD##TAG(*reinterpret_cast<const fastna::NaProblem<RR>*>(&p), q, sq, k, sk, v, sv, o, so, lse, st);
  FASTNA_TEST_FOR_VARIANTS(XV)
#undef XV
  if (g_variant != 0) return 4;  // no such variant
#define X(RR, EE, DD)                                                                 \
  if (RR == R && c.D == DD && std::strcmp(e, #EE) == 0)                              \
    return fused_fwd_r##RR##_##EE##_d##DD(*reinterpret_cast<const fastna::NaProblem<RR>*>(&p), q, sq, k, sk, v, sv, o, so, lse, st);
  FASTNA_TEST_FOR_ALL(X)
#undef X
  return 3;  // no instance
}

struct Buffers {
  int64_t N;
  std::vector<float> q, k, v;  // rounded values, logical [B, N, H(kv), D]
  uint16_t *dqkv = nullptr, *dout = nullptr;
  float* dlse = nullptr;
  std::vector<int64_t> sq, sk, sv, so;
  const uint16_t *pq, *pk, *pv;
};


template <int R>
static bool run_case(const Case& c, bool verbose) {
  auto p = make_problem<R>(c);
  const int64_t N = p.num_tokens();
  const int B = c.B, H = c.H, Hk = c.Hkv, D = c.D;
  NonzeroUniform rnd(1234 + c.D + 7 * c.H + int(N), 1.f);
  // host logical copies (rounded), [B][N][h][D]
  std::vector<float> hq(size_t(B) * N * H * D), hk(size_t(B) * N * Hk * D), hv(size_t(B) * N * Hk * D);
  int64_t sq[6], sk[6], sv[6], so[6];
  size_t q_elems, kv_elems;
  int64_t q_off = 0, k_off = 0, v_off = 0;
  if (c.packed) {
    int tot = H + 2 * Hk;
    strides_for<R>(c, tot, sq);
    std::memcpy(sk, sq, sizeof(sq));
    std::memcpy(sv, sq, sizeof(sq));
    q_off = 0;
    k_off = int64_t(H) * D;
    v_off = int64_t(H + Hk) * D;
    q_elems = size_t(B) * N * tot * D;
    kv_elems = 0;
  } else {
    strides_for<R>(c, H, sq);
    strides_for<R>(c, Hk, sk);
    strides_for<R>(c, Hk, sv);
    q_elems = size_t(B) * N * H * D;
    kv_elems = size_t(B) * N * Hk * D;
    k_off = int64_t(q_elems);
    v_off = int64_t(q_elems + kv_elems);
  }
  strides_for<R>(c, H, so);
  const size_t total = c.packed ? q_elems : q_elems + 2 * kv_elems;
  std::vector<uint16_t> raw(total);
  for (auto& x : raw) x = to_bits(rnd(), c.bf16);
  auto idx = [&](const int64_t* s, int b, int64_t n, int h, int d) {
    int co[3];
    int64_t t = n;
    for (int a = R - 1; a >= 0; --a) {
      co[a] = int(t % c.L[a]);
      t /= c.L[a];
    }
    int64_t o = int64_t(b) * s[0] + int64_t(h) * s[R + 1] + d;
    for (int a = 0; a < R; ++a) o += int64_t(co[a]) * s[1 + a];
    return o;
  };
  for (int b = 0; b < B; ++b)
    for (int64_t n = 0; n < N; ++n)
      for (int d = 0; d < D; ++d) {
        for (int h = 0; h < H; ++h)
          hq[((size_t(b) * N + n) * H + h) * D + d] = from_bits(raw[q_off + idx(sq, b, n, h, d)], c.bf16);
        for (int h = 0; h < Hk; ++h) {
          hk[((size_t(b) * N + n) * Hk + h) * D + d] = from_bits(raw[k_off + idx(sk, b, n, h, d)], c.bf16);
          hv[((size_t(b) * N + n) * Hk + h) * D + d] = from_bits(raw[v_off + idx(sv, b, n, h, d)], c.bf16);
        }
      }
  uint16_t *dbuf, *dout;
  float* dlse;
  const size_t out_elems = size_t(B) * N * H * D;
  CK(cudaMalloc(&dbuf, total * 2));
  CK(cudaMalloc(&dout, out_elems * 2));
  CK(cudaMalloc(&dlse, size_t(B) * N * H * 4));
  CK(cudaMemcpy(dbuf, raw.data(), total * 2, cudaMemcpyHostToDevice));
  CK(cudaMemset(dout, 0xff, out_elems * 2));           // NaN poison
  CK(cudaMemset(dlse, 0xff, size_t(B) * N * H * 4));   // NaN poison
  int rc = dispatch<R>(c, p, dbuf + q_off, sq, dbuf + k_off, sk, dbuf + v_off, sv, dout, so, dlse, 0);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  if (rc != 0) {
    std::printf("%-44s FAIL (dispatch rc=%d)\n", c.name.c_str(), rc);
    cudaFree(dbuf); cudaFree(dout); cudaFree(dlse);
    return false;
  }
  std::vector<uint16_t> out(out_elems);
  std::vector<float> lse(size_t(B) * N * H);
  CK(cudaMemcpy(out.data(), dout, out_elems * 2, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(lse.data(), dlse, lse.size() * 4, cudaMemcpyDeviceToHost));
  cudaFree(dbuf); cudaFree(dout); cudaFree(dlse);

  // CPU reference in double (fwd_check.hpp) on the rounded host copies.
  const FwdErrors err = forward_errors(
      c, p, [&](int b, int64_t n, int h, int d) { return hq[((size_t(b) * N + n) * H + h) * D + d]; },
      [&](int b, int64_t n, int h, int d) { return hk[((size_t(b) * N + n) * Hk + h) * D + d]; },
      [&](int b, int64_t n, int h, int d) { return hv[((size_t(b) * N + n) * Hk + h) * D + d]; }, out, lse);
  const double rel = err.rel, lse_err = err.lse_err;
  const bool nonfinite = err.nonfinite;
  const double tol = c.bf16 ? 1e-2 : 3e-3;
  const bool pass = !nonfinite && rel < tol && lse_err < 1e-3;
  std::printf("%-44s%s %s D=%-3d rel_l2=%.3e lse_maxabs=%.3e %s%s\n", c.name.c_str(), vlabel(g_variant), c.bf16 ? "bf16" : "fp16", D,
              rel, lse_err, pass ? "PASS" : "FAIL", nonfinite ? " (non-finite output)" : "");
  (void)verbose;
  return pass;
}

static bool run_any(const Case& c) {
  if (c.rank == 1) return run_case<1>(c, false);
  if (c.rank == 2) return run_case<2>(c, false);
  return run_case<3>(c, false);
}

// ---------------------------------------------------------------- benchmark
template <int R>
static void bench(const Case& c, int iters) {
  auto p = make_problem<R>(c);
  const int64_t N = p.num_tokens();
  const size_t qe = size_t(c.B) * N * c.H * c.D, kve = size_t(c.B) * N * c.Hkv * c.D;
  uint16_t *dq = device_u16(qe), *dk = device_u16(kve), *dv = device_u16(kve), *dout = device_u16(qe);
  {
    std::vector<uint16_t> h(std::max(qe, kve));
    std::mt19937 rng(7);
    std::normal_distribution<float> Nd(0.f, 1.f);
    for (auto& x : h) x = to_bits(Nd(rng), c.bf16);
    CK(cudaMemcpy(dq, h.data(), qe * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dk, h.data(), kve * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dv, h.data() + 1, (kve - 1) * 2, cudaMemcpyHostToDevice));
  }
  int64_t sq[6], sk[6];
  strides_for<R>(c, c.H, sq);
  strides_for<R>(c, c.Hkv, sk);
  auto launch = [&]() { return dispatch<R>(c, p, dq, sq, dk, sk, dv, sk, dout, sq, nullptr, 0); };
  int rc = launch();
  CK(cudaDeviceSynchronize());
  if (rc != 0) { std::printf("bench %s: rc=%d\n", c.name.c_str(), rc); return; }
  for (int i = 0; i < 3; ++i) launch();
  const std::vector<float> ms = time_launches(iters, launch);
  const double med = median_of(ms);
  const double flops = 4.0 * double(c.B) * N * double(p.window_size()) * c.D * c.H;
  std::printf("BENCH %-40s%s %s D=%d  median %.3f ms  (min %.3f)  %.1f TFLOP/s (4*B*N*window*D*H)\n", c.name.c_str(),
              vlabel(g_variant), c.bf16 ? "bf16" : "fp16", c.D, med, ms[0], flops / (med * 1e-3) / 1e12);
  cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout);
}

int main(int argc, char** argv) {
  const RunParts parts = parse_run_parts(argc, argv);
  // --v3: only the q128w8 (v3) and 1D 4-warp (v4) tests (and the default tile on the same cases)
  // and the benchmarks that compare them with the default / q16x8_kv4x8 tiles
  bool only_v3 = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--v3")) only_v3 = true;
  }
  print_device();

  int fails = 0, total = 0;
  if (parts.test) {
    std::vector<Case> cs;
    // 1D
    cs.push_back(mk("1d L100 K7", 1, {100}, {7}, {1}, {1}, {0}, 1, 2, 2, 64, false));
    cs.push_back(mk("1d L131 K8 s3 d2 (even K, unequal groups)", 1, {131}, {8}, {3}, {2}, {0}, 2, 2, 2, 128, true));
    cs.push_back(mk("1d L200 K33 d3 causal GQA4/2", 1, {200}, {33}, {1}, {3}, {1}, 1, 4, 2, 32, false));
    cs.push_back(mk("1d L77 K77 (self-attn)", 1, {77}, {77}, {1}, {1}, {0}, 1, 2, 2, 64, false));
    cs.push_back(mk("1d L90 K16 s16 causal (blocked)", 1, {90}, {16}, {16}, {1}, {1}, 1, 2, 1, 64, true));
    cs.push_back(mk("1d L300 K64 s8 d2 causal", 1, {300}, {64}, {8}, {2}, {1}, 1, 1, 1, 128, false));
    cs.push_back(mk("1d L150 K13 s5 packed-qkv", 1, {150}, {13}, {5}, {1}, {0}, 2, 3, 1, 32, true, true));
    // 2D
    cs.push_back(mk("2d 20x23 K5x7", 2, {20, 23}, {5, 7}, {1, 1}, {1, 1}, {0, 0}, 1, 2, 2, 64, false));
    cs.push_back(mk("2d 30x17 K6x4 s2x3 d2x3 GQA4/1", 2, {30, 17}, {6, 4}, {2, 3}, {2, 3}, {0, 0}, 1, 4, 1, 128, true));
    for (int cc = 0; cc < 4; ++cc) {
      static char nm[4][64];
      std::snprintf(nm[cc], 64, "2d 19x21 K7x6 s1x2 d1x2 causal=(%d,%d)", cc & 1, (cc >> 1) & 1);
      cs.push_back(mk(nm[cc], 2, {19, 21}, {7, 6}, {1, 2}, {1, 2}, {cc & 1, (cc >> 1) & 1}, 1, 2, 2, 32, cc & 1));
    }
    cs.push_back(mk("2d 16x16 K16x16 (self-attn)", 2, {16, 16}, {16, 16}, {1, 1}, {1, 1}, {0, 0}, 1, 2, 2, 128, false));
    cs.push_back(mk("2d 33x40 K9x12 s3x4 packed-qkv", 2, {33, 40}, {9, 12}, {3, 4}, {1, 1}, {0, 0}, 1, 2, 1, 64, true, true));
    cs.push_back(mk("2d 24x26 K8x8 s8x8 causal=(1,1) (blocked)", 2, {24, 26}, {8, 8}, {8, 8}, {1, 1}, {1, 1}, 2, 2, 2, 128, false));
    // 3D
    cs.push_back(mk("3d 9x10x11 K3x5x4", 3, {9, 10, 11}, {3, 5, 4}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 2, 2, 64, false));
    cs.push_back(mk("3d 8x12x13 K4x3x5 s2x1x3 d1x2x2 causal=(1,0,0)", 3, {8, 12, 13}, {4, 3, 5}, {2, 1, 3}, {1, 2, 2}, {1, 0, 0}, 1, 2, 1, 128, true));
    for (int cc = 0; cc < 8; ++cc) {
      static char nm[8][72];
      std::snprintf(nm[cc], 72, "3d 7x9x10 K3x4x5 d2x1x1 causal=(%d,%d,%d)", cc & 1, (cc >> 1) & 1, (cc >> 2) & 1);
      cs.push_back(mk(nm[cc], 3, {7, 9, 10}, {3, 4, 5}, {1, 2, 1}, {2, 1, 1}, {cc & 1, (cc >> 1) & 1, (cc >> 2) & 1}, 1, 2, 2, 32, (cc >> 1) & 1));
    }
    cs.push_back(mk("3d 6x7x9 K6x7x9 (self-attn) GQA2/1", 3, {6, 7, 9}, {6, 7, 9}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 2, 1, 128, true));
    cs.push_back(mk("3d 10x9x12 K4x4x6 s2x2x3 packed-qkv", 3, {10, 9, 12}, {4, 4, 6}, {2, 2, 3}, {1, 1, 2}, {0, 1, 0}, 1, 2, 2, 64, false, true));
    // Larger cases for the 128-query tile (several KV boxes per CTA, so its 3-stage pipeline runs
    // full, partial and single-box loops; border masking on both sides, odd strides).
    cs.push_back(mk("1d L1000 K255 causal GQA4/2", 1, {1000}, {255}, {1}, {1}, {1}, 1, 4, 2, 128, true));
    cs.push_back(mk("1d L2049 K513 s4 d2 (unequal groups)", 1, {2049}, {513}, {4}, {2}, {0}, 2, 2, 2, 64, false));
    cs.push_back(mk("1d L777 K777 (self-attn)", 1, {777}, {777}, {1}, {1}, {0}, 1, 2, 1, 128, false));
    cs.push_back(mk("1d L1500 K300 s37 causal", 1, {1500}, {300}, {37}, {1}, {1}, 1, 2, 2, 64, true));
    cs.push_back(mk("1d L4096 K2048 s256 (strided anchor, small)", 1, {4096}, {2048}, {256}, {1}, {0}, 1, 1, 1, 128, true));
    cs.push_back(mk("1d L333 K129 d2 packed-qkv", 1, {333}, {129}, {1}, {2}, {0}, 2, 2, 1, 128, true, true));
    cs.push_back(mk("2d 45x50 K21x17 d1x2 causal=(1,0) GQA2/1", 2, {45, 50}, {21, 17}, {1, 1}, {1, 2}, {1, 0}, 1, 2, 1, 128, true));
    cs.push_back(mk("2d 40x40 K40x40 (self-attn)", 2, {40, 40}, {40, 40}, {1, 1}, {1, 1}, {0, 0}, 1, 2, 2, 64, false));
    cs.push_back(mk("2d 37x29 K11x13 s3x2 d2x1", 2, {37, 29}, {11, 13}, {3, 2}, {2, 1}, {0, 0}, 2, 2, 2, 64, true));
    cs.push_back(mk("2d 33x35 K16x12 s8x4 causal=(0,1) packed-qkv", 2, {33, 35}, {16, 12}, {8, 4}, {1, 1}, {0, 1}, 1, 3, 1, 128, false, true));
    for (auto& c : cs) {
      if (only_v3 && !(c.rank <= 2 && (c.D == 64 || c.D == 128))) continue;
      ++total;
      if (!run_any(c)) ++fails;
    }
    // the non-default box variants on every 2D D=128 case; q128w8 on every rank-1/2, D=64/128
    // case; variant 4 on every 1D D=128 case
    for (int var = only_v3 ? 3 : 1; var <= 4; ++var) {
      g_variant = var;
      for (auto& c : cs)
        if ((var <= 2 && c.rank == 2 && c.D == 128) || (var == 3 && c.rank <= 2 && (c.D == 64 || c.D == 128)) ||
            (var == 4 && c.rank == 1 && c.D == 128)) {
          ++total;
          if (!run_any(c)) ++fails;
        }
      g_variant = 0;
    }
    std::printf("SUMMARY: %d/%d passed\n", total - fails, total);
  }
  if (parts.bench) {
    for (int var = 0; var <= 3; ++var) {
      if (only_v3 && var == 1) continue;
      g_variant = var;
      if (!only_v3) {
        bench<2>(mk("2d 128x128 K13x13 H8", 2, {128, 128}, {13, 13}, {1, 1}, {1, 1}, {0, 0}, 1, 8, 8, 128, false), 20);
        bench<2>(mk("2d 128x128 K13x13 H8", 2, {128, 128}, {13, 13}, {1, 1}, {1, 1}, {0, 0}, 1, 8, 8, 128, true), 20);
      }
      bench<2>(mk("flux 256x256 K80x80 H24", 2, {256, 256}, {80, 80}, {1, 1}, {1, 1}, {0, 0}, 1, 24, 24, 128, true), 7);
      bench<2>(mk("flux-strided 256x256 K80x80 s16 H24", 2, {256, 256}, {80, 80}, {16, 16}, {1, 1}, {0, 0}, 1, 24, 24, 128, true), 7);
      bench<2>(mk("dense-equiv 2d 64x64 K64x64 H16", 2, {64, 64}, {64, 64}, {1, 1}, {1, 1}, {0, 0}, 1, 16, 16, 128, true), 10);
    }
    // The 1D anchors (docs/PERFORMANCE.md section 2: B=1, 1 head, D=128, bf16): default tile vs q128w8
    // (v3) vs the 4-warp 128x32 tile (v4, D=128 only).
    for (int var : {0, 3, 4}) {
      g_variant = var;
      bench<1>(mk("1d 32768 K2048 H1 (B=1)", 1, {32768}, {2048}, {1}, {1}, {0}, 1, 1, 1, 128, true), 50);
      bench<1>(mk("1d-strided 32768 K2048 s256 H1 (B=1)", 1, {32768}, {2048}, {256}, {1}, {0}, 1, 1, 1, 128, true), 50);
      bench<1>(mk("1d 32768 K2048 H24 (B=1)", 1, {32768}, {2048}, {1}, {1}, {0}, 1, 24, 24, 128, true), 10);
      if (var != 4) bench<1>(mk("1d 32768 K2048 H1 (B=1) D64", 1, {32768}, {2048}, {1}, {1}, {0}, 1, 1, 1, 64, true), 50);
      bench<1>(mk("dense-equiv 1d 8192 K8192 H16", 1, {8192}, {8192}, {1}, {1}, {0}, 1, 16, 16, 128, true), 10);
    }
    g_variant = 0;
  }
  return fails == 0 ? 0 : 1;
}
