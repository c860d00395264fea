// Standalone GPU test + benchmark of the GEMM-based NA kernels fastna::gemm_na::{PN, NN, IN}
// (no torch, no CMake).  Build/run: tests/gpu_standalone/run_gemm.sh (CUTLASS_INCLUDE=...).
//
// This file is compiled twice over: with -DINST_RANK=r -DINST_ELEM=f16|bf16|f32 -DINST_DIM=d it is
// one instance TU (PN, NN and IN of that rank / dtype / head dim, attention weights in the input
// dtype; f32 runs on TF32 tensor cores); without them it is the test driver (main), which runs
// every config in each dtype built (-DGEMM_WITH_F16/BF16/F32=0|1, all by default).
//
// Correctness: random non-zero inputs, outputs poisoned with NaN, CPU reference in double written
// literally from docs/SEMANTICS.md section 8 (per query: per-axis window, slots row-major over K, key
// (start_a + k_a) group-local, rpb[h, j' - i' + K - 1], causal slots past the window end -inf).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "fastna/common/problem.hpp"

#define FASTNA_GEMM_DECL(R, E, D)                                                                           \
  int gemm_pn_r##R##_##E##_d##D(const fastna::NaProblem<R>& p, const void* q, const int64_t* sq, const void* k, \
                                const int64_t* sk, void* attn, const void* rpb, cudaStream_t st);              \
  int gemm_nn_r##R##_##E##_d##D(const fastna::NaProblem<R>& p, const void* attn, const void* x,                \
                                const int64_t* sx, void* out, const int64_t* so, cudaStream_t st);             \
  int gemm_in_r##R##_##E##_d##D(const fastna::NaProblem<R>& p, const void* attn, const void* x,                \
                                const int64_t* sx, void* out, const int64_t* so, cudaStream_t st);

#ifndef GEMM_WITH_F16
#define GEMM_WITH_F16 1
#endif
#ifndef GEMM_WITH_BF16
#define GEMM_WITH_BF16 1
#endif
#ifndef GEMM_WITH_F32
#define GEMM_WITH_F32 1
#endif
// keep in sync with run_gemm.sh (ranks 1-3 x head dims 32/64/128 per dtype)
#define FASTNA_GEMM_FOR_DT(X, E) \
  X(1, E, 32) X(1, E, 64) X(1, E, 128) X(2, E, 32) X(2, E, 64) X(2, E, 128) X(3, E, 32) X(3, E, 64) X(3, E, 128)
#if GEMM_WITH_F16
#define FASTNA_GEMM_F16(X) FASTNA_GEMM_FOR_DT(X, f16)
#else
#define FASTNA_GEMM_F16(X)
#endif
#if GEMM_WITH_BF16
#define FASTNA_GEMM_BF16(X) FASTNA_GEMM_FOR_DT(X, bf16)
#else
#define FASTNA_GEMM_BF16(X)
#endif
#if GEMM_WITH_F32
#define FASTNA_GEMM_F32(X) FASTNA_GEMM_FOR_DT(X, f32)
#else
#define FASTNA_GEMM_F32(X)
#endif
#define FASTNA_GEMM_FOR_ALL(X) FASTNA_GEMM_F16(X) FASTNA_GEMM_BF16(X) FASTNA_GEMM_F32(X)

#ifdef INST_RANK
// =========================================================================== instance TU
#include "fastna/gemm/device.hpp"
#include "instance_tu.hpp"
constexpr int R = INST_RANK;

// contiguous [B, N, H, prod(K)]
template <class T>
static fastna::gemm_na::AttnView<T> attn_view(const fastna::NaProblem<R>& p, const void* a) {
  fastna::gemm_na::AttnView<T> v;
  v.ptr = reinterpret_cast<T*>(const_cast<void*>(a));
  v.stride_head = p.window_size();
  v.stride_token = v.stride_head * p.heads;
  v.stride_batch = v.stride_token * p.num_tokens();
  return v;
}

int CAT(gemm_pn_r, INST_RANK, _, INST_ELEM, _d, INST_DIM, )(const fastna::NaProblem<R>& p, const void* q,
                                                         const int64_t* sq, const void* k, const int64_t* sk,
                                                         void* attn, const void* rpb, cudaStream_t st) {
  using Op = fastna::gemm_na::PN<R, Elem, INST_DIM>;
  typename Op::Arguments args;
  args.problem = p;
  args.q = token_view<Elem const, R>(q, sq);
  args.k = token_view<Elem const, R>(k, sk);
  args.attn = attn_view<Elem>(p, attn);
  args.rpb = reinterpret_cast<Elem const*>(rpb);
  if (Op::can_implement(args) != cutlass::Status::kSuccess) return 1;
  return Op::run(args, st) == cutlass::Status::kSuccess ? 0 : 2;
}

template <class Op>
static int run_gather(const fastna::NaProblem<R>& p, const void* attn, const void* x, const int64_t* sx, void* out,
                      const int64_t* so, cudaStream_t st) {
  typename Op::Arguments args;
  args.problem = p;
  args.attn = attn_view<Elem const>(p, attn);
  args.x = token_view<Elem const, R>(x, sx);
  args.out = token_view<Elem, R>(out, so);
  args.head_dim = INST_DIM;
  if (Op::can_implement(args) != cutlass::Status::kSuccess) return 1;
  return Op::run(args, st) == cutlass::Status::kSuccess ? 0 : 2;
}

int CAT(gemm_nn_r, INST_RANK, _, INST_ELEM, _d, INST_DIM, )(const fastna::NaProblem<R>& p, const void* attn,
                                                         const void* x, const int64_t* sx, void* out,
                                                         const int64_t* so, cudaStream_t st) {
  return run_gather<fastna::gemm_na::NN<R, Elem, INST_DIM>>(p, attn, x, sx, out, so, st);
}
int CAT(gemm_in_r, INST_RANK, _, INST_ELEM, _d, INST_DIM, )(const fastna::NaProblem<R>& p, const void* attn,
                                                         const void* x, const int64_t* sx, void* out,
                                                         const int64_t* so, cudaStream_t st) {
  return run_gather<fastna::gemm_na::IN<R, Elem, INST_DIM>>(p, attn, x, sx, out, so, st);
}

#else
// =========================================================================== test driver
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

FASTNA_GEMM_FOR_ALL(FASTNA_GEMM_DECL)

#include "harness.hpp"

#include "half_bits.hpp"

struct Case {
  std::string name;
  int rank;
  int B, H, Hkv, D;
  int L[3], K[3], Dil[3];
  bool C[3];
  bool bf16;
  bool rpb;
  bool f32;  // run in fp32 (TF32 kernels) instead of the 16-bit dtype above
};

static const char* dt_name(const Case& c) { return c.f32 ? "f32" : (c.bf16 ? "bf16" : "f16"); }
static size_t esize(const Case& c) { return c.f32 ? 4 : 2; }
static bool dtype_built(const Case& c) {
  return c.f32 ? GEMM_WITH_F32 : (c.bf16 ? GEMM_WITH_BF16 : GEMM_WITH_F16);
}
// Host values are floats exactly representable in the case's dtype; the device gets that dtype.
static float quantize(float x, const Case& c) { return c.f32 ? x : from_bits(to_bits(x, c.bf16), c.bf16); }
static void* upload(const std::vector<float>& v, const Case& c) {
  if (v.empty()) return nullptr;
  const size_t es = esize(c);
  std::vector<unsigned char> bytes(v.size() * es);
  for (size_t i = 0; i < v.size(); ++i) {
    if (c.f32) {
      std::memcpy(&bytes[i * 4], &v[i], 4);
    } else {
      const uint16_t u = to_bits(v[i], c.bf16);
      std::memcpy(&bytes[i * 2], &u, 2);
    }
  }
  void* d = nullptr;
  CK(cudaMalloc(&d, bytes.size()));
  CK(cudaMemcpy(d, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
  return d;
}
static std::vector<float> download(const void* d, size_t n, const Case& c) {
  std::vector<unsigned char> bytes(n * esize(c));
  CK(cudaMemcpy(bytes.data(), d, bytes.size(), cudaMemcpyDeviceToHost));
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    if (c.f32) {
      std::memcpy(&v[i], &bytes[i * 4], 4);
    } else {
      uint16_t u;
      std::memcpy(&u, &bytes[i * 2], 2);
      v[i] = from_bits(u, c.bf16);
    }
  }
  return v;
}


template <int R>
static fastna::NaProblem<R> make_problem(const Case& c) {
  fastna::NaProblem<R> p;
  p.batch = c.B;
  p.heads = c.H;
  p.heads_kv = c.Hkv;
  p.dim = c.D;
  p.dim_v = c.D;
  p.num_extra = 0;
  p.scale = 1.f;
  for (int a = 0; a < R; ++a) {
    p.axis[a].length = c.L[a];
    p.axis[a].kernel = c.K[a];
    p.axis[a].stride = 1;
    p.axis[a].dilation = c.Dil[a];
    p.axis[a].causal = c.C[a];
  }
  return p;
}

enum Op { kPN, kNN, kIN };
template <int R>
static int dispatch(Op op, const Case& c, const fastna::NaProblem<R>& p, const void* a0, const int64_t* s0,
                    const void* a1, const int64_t* s1, void* o, const void* rpb, cudaStream_t st) {
  const char* e = dt_name(c);
#define X(RR, EE, DD)                                                                                          \
  if (RR == R && c.D == DD && std::strcmp(e, #EE) == 0) {                                                      \
    auto& pp = *reinterpret_cast<const fastna::NaProblem<RR>*>(&p);                                            \
    if (op == kPN) return gemm_pn_r##RR##_##EE##_d##DD(pp, a0, s0, a1, s1, o, rpb, st);                         \
    if (op == kNN) return gemm_nn_r##RR##_##EE##_d##DD(pp, a0, a1, s1, o, s0, st);                              \
    return gemm_in_r##RR##_##EE##_d##DD(pp, a0, a1, s1, o, s0, st);                                             \
  }
  FASTNA_GEMM_FOR_ALL(X)
#undef X
  return 3;
}

// [B, *spatial, heads, D] contiguous element strides
template <int R>
static void strides_for(const Case& c, int heads, int64_t* s) {
  int64_t st = c.D;
  s[R + 2] = 1;
  s[R + 1] = st;
  st *= heads;
  for (int a = R - 1; a >= 0; --a) {
    s[1 + a] = st;
    st *= c.L[a];
  }
  s[0] = st;
}

// ---- literal docs/SEMANTICS.md section 8 (stride 1): neighbor table of one query ----
struct Nbr {
  std::vector<int64_t> key;  // flattened key index per slot, -1 = invalid (causal, past the end)
  std::vector<int64_t> rel;  // rpb offset (row-major over 2K-1) per slot
};
template <int R>
static void neighbors(const Case& c, int64_t i, Nbr& nb) {
  int ci[3], st[3], en[3], g[3], il[3];
  {
    int64_t t = i;
    for (int a = R - 1; a >= 0; --a) { ci[a] = int(t % c.L[a]); t /= c.L[a]; }
  }
  for (int a = 0; a < R; ++a) {
    const int L = c.L[a], K = c.K[a], d = c.Dil[a];
    g[a] = ci[a] % d;
    il[a] = ci[a] / d;
    const int Lg = (L - g[a] + d - 1) / d;  // ceil((L - g) / d)
    if (!c.C[a]) {
      const int left = K / 2;
      const int leader = std::min(il[a] / 1 * 1 + 1 / 2, Lg - 1);
      st[a] = std::max(0, std::min(leader - left, Lg - K));
      en[a] = st[a] + K;
    } else {
      const int leader = std::min(il[a] / 1 * 1 + 1 - 1, Lg - 1);
      st[a] = std::max(leader - K + 1, 0);
      en[a] = std::min(il[a] + 1, Lg);
    }
  }
  int W = 1;
  for (int a = 0; a < R; ++a) W *= c.K[a];
  nb.key.assign(W, -1);
  nb.rel.assign(W, 0);
  for (int w = 0; w < W; ++w) {
    int k[3], t = w;
    for (int a = R - 1; a >= 0; --a) { k[a] = t % c.K[a]; t /= c.K[a]; }
    bool valid = true;
    int64_t key = 0, rel = 0;
    for (int a = 0; a < R; ++a) {
      const int jl = st[a] + k[a];
      valid = valid && jl < en[a];
      key = key * c.L[a] + (int64_t(jl) * c.Dil[a] + g[a]);
      rel = rel * (2 * c.K[a] - 1) + (jl - il[a] + c.K[a] - 1);
    }
    if (valid) {
      nb.key[w] = key;
      nb.rel[w] = rel;
    }
  }
}

static const char* status(bool pass) { return pass ? "PASS" : "FAIL"; }

template <int R>
static int run_case(const Case& c) {
  auto p = make_problem<R>(c);
  const int64_t N = p.num_tokens();
  const int B = c.B, H = c.H, Hk = c.Hkv, D = c.D, W = p.window_size(), G = H / Hk;
  NonzeroUniform rnd(99 + D + 13 * H + int(N) + 7 * W, 1.f);
  auto fill = [&](std::vector<float>& val, size_t n) {
    val.resize(n);
    for (size_t t = 0; t < n; ++t) val[t] = quantize(rnd(), c);
  };
  std::vector<float> q, k, x, v, rpb, at;
  fill(q, size_t(B) * N * H * D);   // q  [B, N, H, D]
  fill(k, size_t(B) * N * Hk * D);  // k  [B, N, Hkv, D]
  fill(v, size_t(B) * N * Hk * D);  // v  [B, N, Hkv, D]
  fill(x, size_t(B) * N * H * D);   // x  [B, N, H, D] (IN: Q or dO)
  int rpb_size = 1;
  for (int a = 0; a < R; ++a) rpb_size *= 2 * c.K[a] - 1;
  if (c.rpb) fill(rpb, size_t(H) * rpb_size);
  fill(at, size_t(B) * N * H * W);  // attn input of NN / IN; -inf in invalid slots
  std::vector<Nbr> nbs(N);
  for (int64_t i = 0; i < N; ++i) neighbors<R>(c, i, nbs[i]);
  for (int b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i)
      for (int h = 0; h < H; ++h)
        for (int w = 0; w < W; ++w)
          if (nbs[i].key[w] < 0) at[((size_t(b) * N + i) * H + h) * W + w] = -INFINITY;

  int64_t sq[6], sk[6];
  strides_for<R>(c, H, sq);
  strides_for<R>(c, Hk, sk);
  void *dq = upload(q, c), *dk = upload(k, c), *dv = upload(v, c), *dx = upload(x, c), *drpb = upload(rpb, c),
       *da = upload(at, c);
  void *dattn, *dout, *dkout;
  const size_t es = esize(c);
  const size_t attn_n = size_t(B) * N * H * W, out_n = size_t(B) * N * H * D, kout_n = size_t(B) * N * Hk * D;
  CK(cudaMalloc(&dattn, attn_n * es));
  CK(cudaMalloc(&dout, out_n * es));
  CK(cudaMalloc(&dkout, kout_n * es));
  CK(cudaMemset(dattn, 0xff, attn_n * es));  // NaN poison (all-ones is NaN in every dtype)
  CK(cudaMemset(dout, 0xff, out_n * es));
  CK(cudaMemset(dkout, 0xff, kout_n * es));
  int rc_pn = dispatch<R>(kPN, c, p, dq, sq, dk, sk, dattn, c.rpb ? drpb : nullptr, 0);
  int rc_nn = dispatch<R>(kNN, c, p, da, sq, dv, sk, dout, nullptr, 0);      // out [B,N,H,D] <- v
  int rc_in = dispatch<R>(kIN, c, p, da, sk, dx, sq, dkout, nullptr, 0);     // out [B,N,Hkv,D] <- x
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  const std::vector<float> g_attn = download(dattn, attn_n, c), g_out = download(dout, out_n, c),
                           g_kout = download(dkout, kout_n, c);
  for (void* d : {dq, dk, dv, dx, drpb, da, dattn, dout, dkout})
    if (d) cudaFree(d);

  // ---- PN reference ----
  double e2 = 0, r2 = 0;
  long bad_inf = 0, nonfinite = 0;
  for (int b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i)
      for (int h = 0; h < H; ++h) {
        const int hk = h / G;
        const float* qi = &q[((size_t(b) * N + i) * H + h) * D];
        for (int w = 0; w < W; ++w) {
          const float gv = g_attn[((size_t(b) * N + i) * H + h) * W + w];
          const int64_t j = nbs[i].key[w];
          if (j < 0) {
            if (!(std::isinf(gv) && gv < 0)) ++bad_inf;
            continue;
          }
          const float* kj = &k[((size_t(b) * N + j) * Hk + hk) * D];
          double s = 0;
          for (int t = 0; t < D; ++t) s += double(qi[t]) * double(kj[t]);
          if (c.rpb) s += rpb[size_t(h) * rpb_size + nbs[i].rel[w]];
          if (!std::isfinite(gv)) { ++nonfinite; continue; }
          e2 += (gv - s) * (gv - s);
          r2 += s * s;
        }
      }
  // fp32 runs on TF32 tensor cores: operands rounded to 10 mantissa bits (rel. 2^-11 each).
  const double tol = c.f32 ? 2e-3 : (c.bf16 ? 1e-2 : 3e-3);
  const double rel_pn = std::sqrt(e2 / std::max(r2, 1e-30));
  const bool pass_pn = rc_pn == 0 && bad_inf == 0 && nonfinite == 0 && rel_pn < tol;

  // ---- NN reference: out_i = sum_w attn[i, w] v_{n(i,w)} over valid slots ----
  e2 = r2 = 0;
  long nf_nn = 0;
  std::vector<double> acc(D);
  for (int b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i)
      for (int h = 0; h < H; ++h) {
        const int hk = h / G;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int w = 0; w < W; ++w) {
          const int64_t j = nbs[i].key[w];
          if (j < 0) continue;
          const double a = at[((size_t(b) * N + i) * H + h) * W + w];
          const float* vj = &v[((size_t(b) * N + j) * Hk + hk) * D];
          for (int t = 0; t < D; ++t) acc[t] += a * vj[t];
        }
        for (int t = 0; t < D; ++t) {
          const double gv = g_out[((size_t(b) * N + i) * H + h) * D + t];
          if (!std::isfinite(gv)) { ++nf_nn; continue; }
          e2 += (gv - acc[t]) * (gv - acc[t]);
          r2 += acc[t] * acc[t];
        }
      }
  const double rel_nn = std::sqrt(e2 / std::max(r2, 1e-30));
  const bool pass_nn = rc_nn == 0 && nf_nn == 0 && rel_nn < tol;

  // ---- IN reference: out_j[hk] = sum_{h in group} sum_{(i,w): n(i,w) = j} attn[i, h, w] x_i[h] ----
  std::vector<double> kref(kout_n, 0.0);
  for (int b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i)
      for (int h = 0; h < H; ++h) {
        const int hk = h / G;
        const float* xi = &x[((size_t(b) * N + i) * H + h) * D];
        for (int w = 0; w < W; ++w) {
          const int64_t j = nbs[i].key[w];
          if (j < 0) continue;
          const double a = at[((size_t(b) * N + i) * H + h) * W + w];
          double* o = &kref[((size_t(b) * N + j) * Hk + hk) * D];
          for (int t = 0; t < D; ++t) o[t] += a * xi[t];
        }
      }
  e2 = r2 = 0;
  long nf_in = 0;
  for (size_t t = 0; t < kout_n; ++t) {
    const double gv = g_kout[t];
    if (!std::isfinite(gv)) { ++nf_in; continue; }
    e2 += (gv - kref[t]) * (gv - kref[t]);
    r2 += kref[t] * kref[t];
  }
  const double rel_in = std::sqrt(e2 / std::max(r2, 1e-30));
  const bool pass_in = rc_in == 0 && nf_in == 0 && rel_in < tol;

  std::printf("%-52s %s D=%-3d PN %s (rel %.2e, rc %d, -inf bad %ld, nonfinite %ld) | NN %s (rel %.2e, rc %d, nf %ld) | "
              "IN %s (rel %.2e, rc %d, nf %ld)\n",
              c.name.c_str(), dt_name(c), D, status(pass_pn), rel_pn, rc_pn, bad_inf, nonfinite,
              status(pass_nn), rel_nn, rc_nn, nf_nn, status(pass_in), rel_in, rc_in, nf_in);
  return int(!pass_pn) + int(!pass_nn) + int(!pass_in);
}

static int run_any(const Case& c) {
  if (c.rank == 1) return run_case<1>(c);
  if (c.rank == 2) return run_case<2>(c);
  return run_case<3>(c);
}

static Case mk(const char* name, int rank, std::vector<int> L, std::vector<int> K, std::vector<int> Dil,
               std::vector<int> C, int B, int H, int Hkv, int D, bool bf16, bool rpb) {
  Case c{};
  c.name = name;
  c.rank = rank;
  c.B = B; c.H = H; c.Hkv = Hkv; c.D = D; c.bf16 = bf16; c.rpb = rpb; c.f32 = false;
  for (int a = 0; a < 3; ++a) {
    c.L[a] = a < rank ? L[a] : 1;
    c.K[a] = a < rank ? K[a] : 1;
    c.Dil[a] = a < rank ? Dil[a] : 1;
    c.C[a] = a < rank ? bool(C[a]) : false;
  }
  return c;
}

// ---------------------------------------------------------------- benchmark
template <int R>
static void bench(const Case& c, int iters) {
  auto p = make_problem<R>(c);
  const int64_t N = p.num_tokens();
  const int W = p.window_size();
  const size_t qe = size_t(c.B) * N * c.H * c.D, kve = size_t(c.B) * N * c.Hkv * c.D, ae = size_t(c.B) * N * c.H * W;
  void *dq, *dk, *dattn, *dout, *dkout;
  const size_t es = esize(c);
  CK(cudaMalloc(&dattn, ae * es));
  CK(cudaMalloc(&dout, qe * es));
  CK(cudaMalloc(&dkout, kve * es));
  {
    std::vector<float> h(qe);
    std::mt19937 rng(7);
    std::normal_distribution<float> Nd(0.f, 1.f);
    for (auto& x : h) x = Nd(rng);
    dq = upload(h, c);
    h.resize(kve);
    dk = upload(h, c);
  }
  int64_t sq[6], sk[6];
  strides_for<R>(c, c.H, sq);
  strides_for<R>(c, c.Hkv, sk);
  const char* names[3] = {"PN (qk)", "NN (av)", "IN (dk/dv)"};
  for (int op = 0; op < 3; ++op) {
    auto launch = [&]() {
      if (op == kPN) return dispatch<R>(kPN, c, p, dq, sq, dk, sk, dattn, nullptr, 0);
      if (op == kNN) return dispatch<R>(kNN, c, p, dattn, sq, dk, sk, dout, nullptr, 0);
      return dispatch<R>(kIN, c, p, dattn, sk, dq, sq, dkout, nullptr, 0);
    };
    int rc = launch();
    CK(cudaDeviceSynchronize());
    if (rc != 0) { std::printf("bench %s %s: rc=%d\n", c.name.c_str(), names[op], rc); continue; }
    for (int i = 0; i < 3; ++i) launch();
    const std::vector<float> ms = time_launches(iters, launch);
    const double med = median_of(ms);
    const double flops = 2.0 * double(c.B) * N * double(W) * c.D * c.H;
    std::printf("BENCH %-44s %s D=%d %-10s median %.4f ms (min %.4f)  %.2f TFLOP/s (2*B*N*W*D*H)\n", c.name.c_str(),
                dt_name(c), c.D, names[op], med, ms[0], flops / (med * 1e-3) / 1e12);
  }
  cudaFree(dq); cudaFree(dk); cudaFree(dattn); cudaFree(dout); cudaFree(dkout);
}

int main(int argc, char** argv) {
  const RunParts parts = parse_run_parts(argc, argv);
  print_device();
  int fails = 0, total = 0;
  if (parts.test) {
    std::vector<Case> cs;
    // name, rank, L, K, dilation, causal, B, H, Hkv, D, bf16, rpb
    cs.push_back(mk("1d L37 K7 rpb", 1, {37}, {7}, {1}, {0}, 2, 2, 2, 32, false, true));
    cs.push_back(mk("1d L100 K8 d3 (even K, unequal groups)", 1, {100}, {8}, {3}, {0}, 1, 2, 2, 64, true, false));
    cs.push_back(mk("1d L70 K9 d2 causal", 1, {70}, {9}, {2}, {1}, 1, 2, 2, 128, false, false));
    cs.push_back(mk("1d L50 K13 d3 rpb GQA2/1", 1, {50}, {13}, {3}, {0}, 1, 2, 1, 128, true, true));
    cs.push_back(mk("1d L130 K64 d2 causal GQA4/2", 1, {130}, {64}, {2}, {1}, 1, 4, 2, 64, true, false));
    cs.push_back(mk("1d L29 K29 (self-attn)", 1, {29}, {29}, {1}, {0}, 1, 2, 2, 32, true, false));
    cs.push_back(mk("2d 20x23 K5x7 rpb", 2, {20, 23}, {5, 7}, {1, 1}, {0, 0}, 1, 2, 2, 32, false, true));
    cs.push_back(mk("2d 14x14 K7x7 d2x2 rpb (dinat-like)", 2, {14, 14}, {7, 7}, {2, 2}, {0, 0}, 2, 2, 2, 128, false, true));
    cs.push_back(mk("2d 30x27 K3x4 d2x3", 2, {30, 27}, {3, 4}, {2, 3}, {0, 0}, 1, 2, 2, 64, true, false));
    for (int cc = 0; cc < 4; ++cc) {
      static char nm[4][72];
      std::snprintf(nm[cc], 72, "2d 17x19 K6x5 d1x2 causal=(%d,%d) GQA4/2", cc & 1, (cc >> 1) & 1);
      cs.push_back(mk(nm[cc], 2, {17, 19}, {6, 5}, {1, 2}, {cc & 1, (cc >> 1) & 1}, 1, 4, 2, cc < 2 ? 64 : 128, cc & 1, false));
    }
    cs.push_back(mk("2d 8x8 K8x8 (self-attn)", 2, {8, 8}, {8, 8}, {1, 1}, {0, 0}, 1, 2, 2, 64, false, false));
    cs.push_back(mk("2d 25x21 K9x3 d2x5 causal=(0,1) GQA4/1", 2, {25, 21}, {9, 3}, {2, 5}, {0, 1}, 1, 4, 1, 32, true, false));
    cs.push_back(mk("3d 9x10x11 K3x3x5 d1x2x1 rpb", 3, {9, 10, 11}, {3, 3, 5}, {1, 2, 1}, {0, 0, 0}, 1, 2, 2, 32, true, true));
    cs.push_back(mk("3d 8x12x10 K4x3x3 d2x1x3 causal=(1,0,1) GQA4/1", 3, {8, 12, 10}, {4, 3, 3}, {2, 1, 3}, {1, 0, 1}, 1, 4, 1, 64, false, false));
    for (int cc = 0; cc < 8; ++cc) {
      static char nm[8][72];
      std::snprintf(nm[cc], 72, "3d 7x9x10 K3x4x5 d2x1x2 causal=(%d,%d,%d)", cc & 1, (cc >> 1) & 1, (cc >> 2) & 1);
      cs.push_back(mk(nm[cc], 3, {7, 9, 10}, {3, 4, 5}, {2, 1, 2}, {cc & 1, (cc >> 1) & 1, (cc >> 2) & 1}, 1, 2, 2,
                      cc == 7 ? 128 : 32, (cc >> 1) & 1, false));
    }
    cs.push_back(mk("3d 6x7x5 K6x7x5 (self-attn) GQA2/1", 3, {6, 7, 5}, {6, 7, 5}, {1, 1, 1}, {0, 0, 0}, 1, 2, 1, 64, true, false));
    cs.push_back(mk("3d 5x12x9 K5x5x3 d1x2x3 rpb", 3, {5, 12, 9}, {5, 5, 3}, {1, 2, 3}, {0, 0, 0}, 1, 2, 2, 128, false, true));
    // Every config in its 16-bit dtype and again in fp32, for the dtypes built.
    const size_t n16 = cs.size();
    for (size_t t = 0; t < n16; ++t) {
      Case c = cs[t];
      c.f32 = true;
      cs.push_back(c);
    }
    int skipped = 0;
    for (auto& c : cs) {
      if (!dtype_built(c)) {
        ++skipped;
        continue;
      }
      total += 3;
      fails += run_any(c);
    }
    std::printf("SUMMARY: %d/%d passed (3 ops per config; %d configs skipped: dtype not built)\n", total - fails,
                total, skipped);
  }
  if (parts.bench) {
    std::vector<Case> bs;
    bs.push_back(mk("nat 56x56 K7x7 B32 H4", 2, {56, 56}, {7, 7}, {1, 1}, {0, 0}, 32, 4, 4, 32, false, false));
    bs.push_back(mk("nat 56x56 K7x7 B32 H4", 2, {56, 56}, {7, 7}, {1, 1}, {0, 0}, 32, 4, 4, 32, true, false));
    bs.push_back(mk("nat 56x56 K7x7 B32 H4", 2, {56, 56}, {7, 7}, {1, 1}, {0, 0}, 32, 4, 4, 32, false, false));
    bs.back().f32 = true;
    bs.push_back(mk("dinat 56x56 K7x7 d4x4 B32 H4", 2, {56, 56}, {7, 7}, {4, 4}, {0, 0}, 32, 4, 4, 32, false, false));
    bs.push_back(mk("dinat 56x56 K7x7 d4x4 B32 H4", 2, {56, 56}, {7, 7}, {4, 4}, {0, 0}, 32, 4, 4, 32, false, false));
    bs.back().f32 = true;
    for (auto& c : bs)
      if (dtype_built(c)) bench<2>(c, 20);
  }
  return fails == 0 ? 0 : 1;
}
#endif
