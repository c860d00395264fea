// The standalone backward harnesses' check of one case (test_fused_bwd.cu, test_hopper_bwd.cu):
// random non-zero inputs, a literal double-precision reference (out, lse, dq, dk, dv over every
// query's neighbors by fastna::is_neighbor), the GPU backward run twice into NaN-poisoned
// gradients, then relative L2 errors against the reference and bitwise equality of the two runs
// (determinism).  The includer defines CK (exit on a CUDA error).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "case.hpp"
#include "fastna/index_math.hpp"
#include "half_bits.hpp"

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
  std::mt19937 rng(4321 + c.D + 7 * c.H + int(N));
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  auto rnd = [&]() {
    float x;
    do x = U(rng); while (std::fabs(x) < 1e-3f);
    return x;
  };
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
        int ci[3];
        fastna::unflatten(i, p.axis, *reinterpret_cast<int32_t(*)[R]>(ci));
        nb.clear();
        for (int64_t j = 0; j < N; ++j) {
          int cj[3];
          fastna::unflatten(j, p.axis, *reinterpret_cast<int32_t(*)[R]>(cj));
          bool ok = true;
          for (int a = 0; a < R && ok; ++a) ok = fastna::is_neighbor(p.axis[a], ci[a], cj[a]);
          if (ok) nb.push_back(j);
        }
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
