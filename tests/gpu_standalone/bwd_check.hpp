// The standalone backward harnesses' check of one case (test_fused_bwd.cu, test_hopper_bwd.cu):
// random non-zero inputs, a literal double-precision reference (out, lse, dq, dk, dv over every
// query's neighbors by fastna::is_neighbor), the GPU backward run twice into NaN-poisoned
// gradients, then relative L2 errors against the reference and bitwise equality of the two runs
// (determinism).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "case.hpp"
#include "fastna/common/index_math.hpp"
#include "half_bits.hpp"
#include "harness.hpp"

// One backward of problem p on contiguous tensors (q/k/v/o/dout/lse in, dq/dk/dv out); with
// ws_bytes != nullptr only reports the workspace size.  Returns 0 on success.
template <int R>
using BwdDispatch = int (*)(const Case&, const fastna::NaProblem<R>&, const int64_t* sq, const int64_t* sk,
                            const void* q, const void* k, const void* v, const void* o, const void* dout,
                            const float* lse, void* dq, void* dk, void* dv, void* ws, size_t* ws_bytes,
                            cudaStream_t stream);
// Why a nonzero dispatch rc is an expected refusal that counts as a pass (nullptr: it is a failure).
using BwdRefusal = const char* (*)(const Case&, int rc);

static const char* no_refusal(const Case&, int) { return nullptr; }

template <int R>
static int check_backward_case(const Case& c, BwdDispatch<R> dispatch, BwdRefusal refused) {
  auto p = make_problem<R>(c);
  const int64_t N = p.num_tokens();
  const int B = c.B, H = c.H, Hk = c.Hkv, D = c.D;
  NonzeroUniform rnd(4321 + c.D + 7 * c.H + int(N), 1.f);
  const size_t qe = size_t(B) * N * H * D, ke = size_t(B) * N * Hk * D;
  // logical [B][N][h][D] == contiguous layout
  std::vector<uint16_t> rq(qe), rk(ke), rv(ke), rdo(qe), ro(qe);
  std::vector<float> hq(qe), hk(ke), hv(ke), hdo(qe);
  for (size_t i = 0; i < qe; ++i) { rq[i] = to_bits(rnd(), c.bf16); hq[i] = from_bits(rq[i], c.bf16); }
  for (size_t i = 0; i < ke; ++i) { rk[i] = to_bits(rnd(), c.bf16); hk[i] = from_bits(rk[i], c.bf16); }
  for (size_t i = 0; i < ke; ++i) { rv[i] = to_bits(rnd(), c.bf16); hv[i] = from_bits(rv[i], c.bf16); }
  for (size_t i = 0; i < qe; ++i) { rdo[i] = to_bits(rnd(), c.bf16); hdo[i] = from_bits(rdo[i], c.bf16); }

  // ---- CPU reference (double), literal ----
  std::vector<float> lse(size_t(B) * N * H);
  std::vector<double> gq(qe, 0.0), gk(ke, 0.0), gv(ke, 0.0);
  const double scale = p.scale;
  std::vector<int64_t> nb;
  std::vector<double> P, dP, o(D);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int hk_ = p.kv_head(h);
      for (int64_t i = 0; i < N; ++i) {
        neighbors_of(p, i, N, nb);
        const size_t qi = ((size_t(b) * N + i) * H + h) * D;
        P.assign(nb.size(), 0.0);
        dP.assign(nb.size(), 0.0);
        double mx = -1e300;
        for (size_t t = 0; t < nb.size(); ++t) {
          const size_t kj = ((size_t(b) * N + nb[t]) * Hk + hk_) * D;
          double s = 0;
          for (int x = 0; x < D; ++x) s += double(hq[qi + x]) * double(hk[kj + x]);
          P[t] = s * scale;
          mx = std::max(mx, P[t]);
        }
        double l = 0;
        for (size_t t = 0; t < nb.size(); ++t) { P[t] = std::exp(P[t] - mx); l += P[t]; }
        for (size_t t = 0; t < nb.size(); ++t) P[t] /= l;
        lse[(size_t(b) * N + i) * H + h] = float(mx + std::log(l));
        std::fill(o.begin(), o.end(), 0.0);
        double sum_pdp = 0;
        for (size_t t = 0; t < nb.size(); ++t) {
          const size_t vj = ((size_t(b) * N + nb[t]) * Hk + hk_) * D;
          double d = 0;
          for (int x = 0; x < D; ++x) {
            o[x] += P[t] * double(hv[vj + x]);
            d += double(hdo[qi + x]) * double(hv[vj + x]);
          }
          dP[t] = d;
          sum_pdp += P[t] * d;
        }
        for (int x = 0; x < D; ++x) ro[qi + x] = to_bits(o[x], c.bf16);
        for (size_t t = 0; t < nb.size(); ++t) {
          const size_t kj = ((size_t(b) * N + nb[t]) * Hk + hk_) * D;
          const double ds = P[t] * (dP[t] - sum_pdp);
          for (int x = 0; x < D; ++x) {
            gv[kj + x] += P[t] * double(hdo[qi + x]);
            gq[qi + x] += scale * ds * double(hk[kj + x]);
            gk[kj + x] += scale * ds * double(hq[qi + x]);
          }
        }
      }
    }

  // ---- GPU ----
  int64_t sq[6], sk[6];
  strides_for<R>(c, H, sq);
  strides_for<R>(c, Hk, sk);
  uint16_t *dq_in, *dk_in, *dv_in, *do_in, *o_in, *gdq, *gdk, *gdv;
  float* dlse;
  void* ws = nullptr;
  CK(cudaMalloc(&dq_in, qe * 2)); CK(cudaMalloc(&do_in, qe * 2)); CK(cudaMalloc(&o_in, qe * 2));
  CK(cudaMalloc(&dk_in, ke * 2)); CK(cudaMalloc(&dv_in, ke * 2));
  CK(cudaMalloc(&gdq, qe * 2)); CK(cudaMalloc(&gdk, ke * 2)); CK(cudaMalloc(&gdv, ke * 2));
  CK(cudaMalloc(&dlse, lse.size() * 4));
  CK(cudaMemcpy(dq_in, rq.data(), qe * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dk_in, rk.data(), ke * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dv_in, rv.data(), ke * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(do_in, rdo.data(), qe * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(o_in, ro.data(), qe * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dlse, lse.data(), lse.size() * 4, cudaMemcpyHostToDevice));
  size_t ws_bytes = 0;
  dispatch(c, p, sq, sk, dq_in, dk_in, dv_in, o_in, do_in, dlse, gdq, gdk, gdv, nullptr, &ws_bytes, 0);
  CK(cudaMalloc(&ws, std::max<size_t>(ws_bytes, 16)));
  CK(cudaMemset(ws, 0xff, ws_bytes));
  std::vector<uint16_t> out_q[2], out_k[2], out_v[2];
  int rc = 0;
  for (int rep = 0; rep < 2 && rc == 0; ++rep) {
    CK(cudaMemset(gdq, 0xff, qe * 2));  // NaN poison
    CK(cudaMemset(gdk, 0xff, ke * 2));
    CK(cudaMemset(gdv, 0xff, ke * 2));
    rc = dispatch(c, p, sq, sk, dq_in, dk_in, dv_in, o_in, do_in, dlse, gdq, gdk, gdv, ws, nullptr, 0);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    out_q[rep].resize(qe); out_k[rep].resize(ke); out_v[rep].resize(ke);
    CK(cudaMemcpy(out_q[rep].data(), gdq, qe * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(out_k[rep].data(), gdk, ke * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(out_v[rep].data(), gdv, ke * 2, cudaMemcpyDeviceToHost));
  }
  cudaFree(dq_in); cudaFree(dk_in); cudaFree(dv_in); cudaFree(do_in); cudaFree(o_in);
  cudaFree(gdq); cudaFree(gdk); cudaFree(gdv); cudaFree(dlse); cudaFree(ws);
  if (rc != 0) {
    if (const char* why = refused(c, rc)) {
      std::printf("%-52s %s D=%-3d PASS (refused: %s)\n", c.name.c_str(), c.bf16 ? "bf16" : "fp16", D, why);
      return 0;
    }
    std::printf("%-52s FAIL (dispatch rc=%d)\n", c.name.c_str(), rc);
    return 1;
  }
  bool nonfinite = false;
  auto rel = [&](const std::vector<uint16_t>& g, const std::vector<double>& r) {
    double e2 = 0, r2 = 0;
    for (size_t i = 0; i < r.size(); ++i) {
      const double x = from_bits(g[i], c.bf16);
      if (!std::isfinite(x)) nonfinite = true;
      e2 += (x - r[i]) * (x - r[i]);
      r2 += r[i] * r[i];
    }
    return std::sqrt(e2 / std::max(r2, 1e-300));
  };
  const double eq = rel(out_q[0], gq), ek = rel(out_k[0], gk), ev = rel(out_v[0], gv);
  const bool det = out_q[0] == out_q[1] && out_k[0] == out_k[1] && out_v[0] == out_v[1];
  const double tol = c.bf16 ? 1e-2 : 3e-3;
  const bool pass = !nonfinite && det && eq < tol && ek < tol && ev < tol;
  std::printf("%-52s %s D=%-3d dq=%.2e dk=%.2e dv=%.2e %s%s%s\n", c.name.c_str(), c.bf16 ? "bf16" : "fp16", D, eq, ek,
              ev, pass ? "PASS" : "FAIL", nonfinite ? " (non-finite)" : "", det ? "" : " (non-deterministic)");
  return pass ? 0 : 1;
}

// The test cases both backward harnesses run (test_hopper_bwd.cu adds larger ones; head dims 32
// there become 64).
static std::vector<Case> bwd_test_cases() {
  std::vector<Case> cs;
  // 1D
  cs.push_back(mk("1d L100 K7", 1, {100}, {7}, {1}, {1}, {0}, 1, 2, 2, 64, false));
  cs.push_back(mk("1d L131 K8 s3 d2 (even K, unequal groups) B2", 1, {131}, {8}, {3}, {2}, {0}, 2, 2, 2, 128, true));
  cs.push_back(mk("1d L200 K33 d3 causal GQA4/2", 1, {200}, {33}, {1}, {3}, {1}, 1, 4, 2, 64, false));
  cs.push_back(mk("1d L77 K77 (self-attn)", 1, {77}, {77}, {1}, {1}, {0}, 1, 2, 2, 128, true));
  cs.push_back(mk("1d L90 K16 s16 causal (blocked) GQA2/1", 1, {90}, {16}, {16}, {1}, {1}, 1, 2, 1, 128, true));
  cs.push_back(mk("1d L300 K64 s8 d2 causal", 1, {300}, {64}, {8}, {2}, {1}, 1, 1, 1, 64, false));
  cs.push_back(mk("1d L150 K13 s5 GQA3/1", 1, {150}, {13}, {5}, {1}, {0}, 2, 3, 1, 128, true));
  cs.push_back(mk("1d L600 K200 (full tiles)", 1, {600}, {200}, {1}, {1}, {0}, 1, 2, 2, 64, false));
  // 2D
  cs.push_back(mk("2d 20x23 K5x7", 2, {20, 23}, {5, 7}, {1, 1}, {1, 1}, {0, 0}, 1, 2, 2, 64, false));
  cs.push_back(mk("2d 30x17 K6x4 s2x3 d2x3 GQA4/1", 2, {30, 17}, {6, 4}, {2, 3}, {2, 3}, {0, 0}, 1, 4, 1, 128, true));
  for (int cc = 0; cc < 4; ++cc) {
    static char nm[4][64];
    std::snprintf(nm[cc], 64, "2d 19x21 K7x6 s1x2 d1x2 causal=(%d,%d)", cc & 1, (cc >> 1) & 1);
    cs.push_back(mk(nm[cc], 2, {19, 21}, {7, 6}, {1, 2}, {1, 2}, {cc & 1, (cc >> 1) & 1}, 1, 2, 2,
                    (cc & 1) ? 128 : 64, cc & 1));
  }
  cs.push_back(mk("2d 16x16 K16x16 (self-attn)", 2, {16, 16}, {16, 16}, {1, 1}, {1, 1}, {0, 0}, 1, 2, 2, 128, false));
  cs.push_back(mk("2d 33x40 K9x12 s3x4 GQA2/1", 2, {33, 40}, {9, 12}, {3, 4}, {1, 1}, {0, 0}, 1, 2, 1, 64, false));
  cs.push_back(mk("2d 24x26 K8x8 s8x8 causal=(1,1) (blocked) B2", 2, {24, 26}, {8, 8}, {8, 8}, {1, 1}, {1, 1}, 2, 2, 2, 128, true));
  cs.push_back(mk("2d 64x48 K33x21 (full tiles)", 2, {64, 48}, {33, 21}, {1, 1}, {1, 1}, {0, 0}, 1, 1, 1, 64, false));
  cs.push_back(mk("2d 45x38 K13x13 d2x3", 2, {45, 38}, {13, 11}, {1, 1}, {2, 3}, {0, 0}, 1, 2, 2, 128, false));
  // 3D
  cs.push_back(mk("3d 9x10x11 K3x5x4", 3, {9, 10, 11}, {3, 5, 4}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 2, 2, 32, false));
  cs.push_back(mk("3d 8x12x13 K4x3x5 s2x1x3 d1x2x2 causal=(1,0,0) GQA2/1", 3, {8, 12, 13}, {4, 3, 5}, {2, 1, 3}, {1, 2, 2}, {1, 0, 0}, 1, 2, 1, 64, true));
  for (int cc = 0; cc < 8; ++cc) {
    static char nm[8][72];
    std::snprintf(nm[cc], 72, "3d 7x9x10 K3x4x5 s1x2x1 d2x1x1 causal=(%d,%d,%d)", cc & 1, (cc >> 1) & 1, (cc >> 2) & 1);
    const bool bf = (cc >> 1) & 1;
    cs.push_back(mk(nm[cc], 3, {7, 9, 10}, {3, 4, 5}, {1, 2, 1}, {2, 1, 1}, {cc & 1, (cc >> 1) & 1, (cc >> 2) & 1}, 1, 2, 2,
                    bf ? 64 : 32, bf));
  }
  cs.push_back(mk("3d 6x7x9 K6x7x9 (self-attn) GQA2/1", 3, {6, 7, 9}, {6, 7, 9}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 2, 1, 64, true));
  cs.push_back(mk("3d 12x12x12 K9x9x9 (full tiles)", 3, {12, 12, 12}, {9, 9, 9}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 1, 1, 32, false));
  return cs;
}

// Checks every case that has an instance (have(c)) and whose name contains `only` and not `skip`
// (null: no filter): run(std::integral_constant<int, rank>, c) returns 1 on a failure.  Prints
// a SKIP line per case without an instance and the SUMMARY line; returns the failures.
template <class Have, class Run>
static int run_backward_cases(const std::vector<Case>& cs, Have&& have, Run&& run, const char* only = nullptr,
                              const char* skip = nullptr) {
  int fails = 0, total = 0, skipped = 0;
  for (const auto& c : cs) {
    if (only && c.name.find(only) == std::string::npos) continue;
    if (skip && c.name.find(skip) != std::string::npos) continue;
    if (!have(c)) {
      std::printf("%-52s SKIP (no instance)\n", c.name.c_str());
      ++skipped;
      continue;
    }
    ++total;
    fails += c.rank == 1   ? run(std::integral_constant<int, 1>{}, c)
             : c.rank == 2 ? run(std::integral_constant<int, 2>{}, c)
                           : run(std::integral_constant<int, 3>{}, c);
  }
  std::printf("SUMMARY: %d/%d passed (%d skipped)\n", total - fails, total, skipped);
  std::fflush(stdout);
  return fails;
}

// The tensors of a backward benchmark of case c (contiguous; 16-bit but lse): q, o, dout, dq
// [B, N, H, D], k, v, dk, dv [B, N, Hkv, D], lse [B, N, H].  q, k, v and dout hold normal(0, sigma)
// values (one seeded draw, offset per tensor); with synthetic_out (no forward fills them) o does
// too and lse is zero.
struct BwdBenchTensors {
  uint16_t *q, *k, *v, *o, *dout, *dq, *dk, *dv;
  float* lse;

  BwdBenchTensors(const Case& c, int64_t N, float sigma, bool synthetic_out) {
    const size_t qe = size_t(c.B) * N * c.H * c.D, ke = size_t(c.B) * N * c.Hkv * c.D;
    CK(cudaMalloc(&q, qe * 2)); CK(cudaMalloc(&o, qe * 2)); CK(cudaMalloc(&dout, qe * 2)); CK(cudaMalloc(&dq, qe * 2));
    CK(cudaMalloc(&k, ke * 2)); CK(cudaMalloc(&v, ke * 2)); CK(cudaMalloc(&dk, ke * 2)); CK(cudaMalloc(&dv, ke * 2));
    CK(cudaMalloc(&lse, size_t(c.B) * N * c.H * 4));
    if (synthetic_out) CK(cudaMemset(lse, 0, size_t(c.B) * N * c.H * 4));
    std::vector<uint16_t> h(std::max(qe, ke) + 4);
    std::mt19937 rng(7);
    std::normal_distribution<float> Nd(0.f, sigma);
    for (auto& x : h) x = to_bits(Nd(rng), c.bf16);
    CK(cudaMemcpy(q, h.data(), qe * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dout, h.data() + 3, qe * 2, cudaMemcpyHostToDevice));
    if (synthetic_out) CK(cudaMemcpy(o, h.data() + 4, qe * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(k, h.data() + 1, ke * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(v, h.data() + 2, ke * 2, cudaMemcpyHostToDevice));
  }
  void release() {
    cudaFree(q); cudaFree(k); cudaFree(v); cudaFree(o); cudaFree(dout); cudaFree(dq); cudaFree(dk); cudaFree(dv);
    cudaFree(lse);
  }
};
