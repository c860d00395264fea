// One fused-attention test case of the standalone GPU harnesses (test_fused.cu, test_fused_bwd.cu,
// test_hopper_fwd.cu, test_hopper_bwd.cu): the problem, and its contiguous [B, *spatial, heads, D]
// strides.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "fastna/common/index_math.hpp"
#include "fastna/common/problem.hpp"

struct Case {
  std::string name;
  int rank;
  int B, H, Hkv, D;
  int L[3], K[3], S[3], Dil[3];
  bool C[3];
  bool bf16;
  bool packed = false;  // q/k/v as strided slices of one packed [B, *sp, H + 2 Hkv, D] buffer (test_fused.cu)
};

template <int R>
static fastna::NaProblem<R> make_problem(const Case& c) {
  fastna::NaProblem<R> p;
  p.batch = c.B;
  p.heads = c.H;
  p.heads_kv = c.Hkv;
  p.dim = c.D;
  p.dim_v = c.D;
  p.num_extra = 0;
  p.scale = 1.f / std::sqrt(float(c.D));
  for (int a = 0; a < R; ++a) {
    p.axis[a].length = c.L[a];
    p.axis[a].kernel = c.K[a];
    p.axis[a].stride = c.S[a];
    p.axis[a].dilation = c.Dil[a];
    p.axis[a].causal = c.C[a];
  }
  return p;
}

// Contiguous [B, *spatial, heads, D] element strides.
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

// A case of `rank` axes from per-axis lists (entries past the rank are ignored; unused axes get 1).
static Case mk(const std::string& name, int rank, std::vector<int> L, std::vector<int> K, std::vector<int> S,
               std::vector<int> Dil, std::vector<int> C, int B, int H, int Hkv, int D, bool bf16, bool packed = false) {
  Case c{};
  c.name = name;
  c.rank = rank;
  c.B = B; c.H = H; c.Hkv = Hkv; c.D = D; c.bf16 = bf16; c.packed = packed;
  for (int a = 0; a < 3; ++a) {
    c.L[a] = a < rank ? L[a] : 1;
    c.K[a] = a < rank ? K[a] : 1;
    c.S[a] = a < rank ? S[a] : 1;
    c.Dil[a] = a < rank ? Dil[a] : 1;
    c.C[a] = a < rank ? bool(C[a]) : false;
  }
  return c;
}

// The keys (flat token indices, row-major) that flat query i sees, into nb: every key of the N
// tested with fastna::is_neighbor on every axis, the literal docs/SEMANTICS.md section 5 of the CPU
// references.
template <int R>
static void neighbors_of(const fastna::NaProblem<R>& p, int64_t i, int64_t N, std::vector<int64_t>& nb) {
  int32_t ci[R], cj[R];
  fastna::unflatten(i, p.axis, ci);
  nb.clear();
  for (int64_t j = 0; j < N; ++j) {
    fastna::unflatten(j, p.axis, cj);
    bool ok = true;
    for (int a = 0; a < R && ok; ++a) ok = fastna::is_neighbor(p.axis[a], ci[a], cj[a]);
    if (ok) nb.push_back(j);
  }
}
