// The sm80-class grouped ops (fused::ForwardGrouped / BackwardGrouped) against the dense ops run
// once per problem on the same buffers.  A grouped CTA runs the dense kernel's CTA body on its
// problem's parameters, so every output must be equal bit for bit (the dense ops are checked
// against the reference by test_fused.cu / test_fused_bwd.cu and the pytest GPU suite).
//
//   CUTLASS_INCLUDE=... tests/gpu_standalone/run_grouped.sh [cases]
//
// Cases: 1-7 problems of ranks 1-3, each with its own shape, windows, strides, dilations and
// causal flags (or one set shared by all), batch 1-2 and heads / kv heads (GQA), sizes dividing
// no tile, all in one buffer back to back (as a packed variable-size batch); outputs poisoned.
#include <cuda_runtime.h>
#include <cutlass/numeric_types.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "fastna/sm80/backward_grouped.hpp"
#include "fastna/sm80/forward_grouped.hpp"
#include "half_bits.hpp"

namespace {

using Element = cutlass::bfloat16_t;
constexpr int kHeadDim = 64;

#define CHECK_CUDA(x)                                                                          \
  do {                                                                                         \
    cudaError_t e_ = (x);                                                                      \
    if (e_ != cudaSuccess) {                                                                   \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(2);                                                                            \
    }                                                                                          \
  } while (0)

// A random valid axis: L in [lo, hi], K in [2, min(L / d, kmax)], 1 <= s <= K, causal at random.
fastna::AxisParams random_axis(std::mt19937& g, int lo, int hi, int kmax) {
  fastna::AxisParams ax;
  ax.length = std::uniform_int_distribution<int>(lo, hi)(g);
  ax.dilation = std::uniform_int_distribution<int>(1, std::max(1, std::min(3, ax.length / 2)))(g);
  const int kcap = std::max(2, std::min(kmax, ax.length / ax.dilation));
  ax.kernel = std::uniform_int_distribution<int>(2, kcap)(g);
  ax.stride = std::uniform_int_distribution<int>(1, ax.kernel)(g);
  ax.causal = std::uniform_int_distribution<int>(0, 1)(g) == 1;
  return ax;
}

template <class T>
T* device_random(size_t n, std::mt19937& g) {
  std::vector<uint16_t> h(n);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (auto& x : h) x = to_bits(dist(g), true);
  T* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, n * sizeof(T)));
  CHECK_CUDA(cudaMemcpy(d, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

void* device_poison(size_t bytes) {
  void* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, bytes));
  CHECK_CUDA(cudaMemset(d, 0xff, bytes));  // NaN in bf16 and fp32
  return d;
}

bool same_bytes(void const* a, void const* b, size_t bytes, char const* what, int case_id) {
  std::vector<unsigned char> ha(bytes), hb(bytes);
  CHECK_CUDA(cudaMemcpy(ha.data(), a, bytes, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(hb.data(), b, bytes, cudaMemcpyDeviceToHost));
  if (std::memcmp(ha.data(), hb.data(), bytes) == 0) return true;
  size_t first = 0;
  while (ha[first] == hb[first]) ++first;
  std::printf("case %d: %s differs from the dense ops (first differing byte %zu of %zu)\n", case_id, what, first,
              bytes);
  return false;
}

// One problem of a case: its problem and where its rows start in the shared buffers.
template <int Rank>
struct Spec {
  fastna::NaProblem<Rank> problem;
  int64_t q_at = 0, kv_at = 0, lse_at = 0;  // element offsets
};

// A contiguous [B, *shape, heads, D] view at element offset `at` of `base`.
template <class T, int Rank>
fastna::TokenTensor<T, Rank> view(T* base, int64_t at, fastna::NaProblem<Rank> const& p, int heads) {
  fastna::TokenTensor<T, Rank> t;
  t.ptr = base + at;
  int64_t stride = int64_t(heads) * kHeadDim;
  for (int a = Rank - 1; a >= 0; --a) {
    t.stride_spatial[a] = stride;
    stride *= p.axis[a].length;
  }
  t.stride_batch = stride;
  t.stride_head = kHeadDim;
  return t;
}

template <int Rank>
bool run_case(int case_id, std::mt19937& g) {
  using Fwd = fastna::fused::ForwardGrouped<Rank, Element, kHeadDim>;
  using Bwd = fastna::fused::BackwardGrouped<Rank, Element, kHeadDim>;
  using DenseFwd = typename Fwd::Dense;
  using DenseBwd = typename Bwd::Dense;
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(g); };
  const int count = pick(1, 7);
  const bool shared_windows = pick(0, 1) == 1;
  const int lo = Rank == 1 ? 8 : Rank == 2 ? 5 : 3, hi = Rank == 1 ? 300 : Rank == 2 ? 40 : 12;

  std::vector<Spec<Rank>> specs(count);
  int64_t nq = 0, nkv = 0, nlse = 0;
  for (int i = 0; i < count; ++i) {
    fastna::NaProblem<Rank>& p = specs[i].problem;
    p.batch = pick(1, 2);
    p.heads_kv = pick(1, 2);
    p.heads = p.heads_kv * pick(1, 2);
    p.dim = p.dim_v = kHeadDim;
    p.scale = 0.125f;
    // Draw until the dense ops take the problem (the grouped ops must take what they take).
    for (int attempt = 0;; ++attempt) {
      for (int a = 0; a < Rank; ++a) {
        p.axis[a] = random_axis(g, lo, hi, Rank == 1 ? 33 : 9);
        if (shared_windows && i > 0) {  // problem 0's windows on a shape that still holds them
          fastna::AxisParams ax = specs[0].problem.axis[a];
          ax.length = std::max(ax.length, pick(ax.kernel * ax.dilation, hi));
          p.axis[a] = ax;
        }
      }
      if (DenseFwd::can_implement_problem(p).is_ok() && DenseBwd::can_implement_problem(p).is_ok()) break;
      if (attempt == 50) {
        std::printf("case %d: no problem the dense ops take in 50 draws\n", case_id);
        return false;
      }
    }
    const int64_t rows = int64_t(p.batch) * p.num_tokens();
    specs[i].q_at = nq;
    specs[i].kv_at = nkv;
    specs[i].lse_at = nlse;
    nq += rows * p.heads * kHeadDim;
    nkv += rows * p.heads_kv * kHeadDim;
    nlse += rows * p.heads;
  }
  Element* q = device_random<Element>(nq, g);
  Element* k = device_random<Element>(nkv, g);
  Element* v = device_random<Element>(nkv, g);
  Element* dout = device_random<Element>(nq, g);
  void* out[2] = {device_poison(nq * sizeof(Element)), device_poison(nq * sizeof(Element))};
  void* lse[2] = {device_poison(nlse * sizeof(float)), device_poison(nlse * sizeof(float))};
  void* dq[2] = {device_poison(nq * sizeof(Element)), device_poison(nq * sizeof(Element))};
  void* dk[2] = {device_poison(nkv * sizeof(Element)), device_poison(nkv * sizeof(Element))};
  void* dv[2] = {device_poison(nkv * sizeof(Element)), device_poison(nkv * sizeof(Element))};

  // Slot 0: the grouped ops; slot 1: the dense ops once per problem.
  auto fwd_problem = [&](int i, int slot) {
    Spec<Rank> const& s = specs[i];
    typename Fwd::Problem a;
    a.problem = s.problem;
    a.q = view<Element const, Rank>(q, s.q_at, s.problem, s.problem.heads);
    a.k = view<Element const, Rank>(k, s.kv_at, s.problem, s.problem.heads_kv);
    a.v = view<Element const, Rank>(v, s.kv_at, s.problem, s.problem.heads_kv);
    a.out = view<Element, Rank>(static_cast<Element*>(out[slot]), s.q_at, s.problem, s.problem.heads);
    a.lse = static_cast<float*>(lse[slot]) + s.lse_at;
    return a;
  };
  auto bwd_problem = [&](int i, int slot) {
    Spec<Rank> const& s = specs[i];
    auto f = fwd_problem(i, slot);
    typename Bwd::Problem a;
    a.problem = s.problem;
    a.q = f.q;
    a.k = f.k;
    a.v = f.v;
    a.out = view<Element const, Rank>(static_cast<Element const*>(out[1]), s.q_at, s.problem, s.problem.heads);
    a.dout = view<Element const, Rank>(dout, s.q_at, s.problem, s.problem.heads);
    a.lse = static_cast<float const*>(lse[1]) + s.lse_at;
    a.dq = view<Element, Rank>(static_cast<Element*>(dq[slot]), s.q_at, s.problem, s.problem.heads);
    a.dk = view<Element, Rank>(static_cast<Element*>(dk[slot]), s.kv_at, s.problem, s.problem.heads_kv);
    a.dv = view<Element, Rank>(static_cast<Element*>(dv[slot]), s.kv_at, s.problem, s.problem.heads_kv);
    return a;
  };

  // Forward.
  std::vector<typename Fwd::Problem> fp;
  for (int i = 0; i < count; ++i) fp.push_back(fwd_problem(i, 0));
  const typename Fwd::Arguments fa{fp.data(), count};
  fastna::Verdict verdict = Fwd::can_implement(fa);
  if (!verdict.is_ok()) {
    std::printf("case %d: ForwardGrouped refused: %s\n", case_id, verdict.reason.c_str());
    return false;
  }
  void* fws = nullptr;
  CHECK_CUDA(cudaMalloc(&fws, Fwd::get_workspace_size(fa)));
  if (Fwd::run(fa, fws) != cutlass::Status::kSuccess) return false;
  for (int i = 0; i < count; ++i)
    if (DenseFwd::run(fwd_problem(i, 1)) != cutlass::Status::kSuccess) return false;
  CHECK_CUDA(cudaDeviceSynchronize());
  bool ok = same_bytes(out[0], out[1], nq * sizeof(Element), "out", case_id) &&
            same_bytes(lse[0], lse[1], nlse * sizeof(float), "lse", case_id);

  // Backward (both from the dense forward's out and lse).
  std::vector<typename Bwd::Problem> bp;
  for (int i = 0; i < count; ++i) bp.push_back(bwd_problem(i, 0));
  const typename Bwd::Arguments ba{bp.data(), count};
  verdict = Bwd::can_implement(ba);
  if (!verdict.is_ok()) {
    std::printf("case %d: BackwardGrouped refused: %s\n", case_id, verdict.reason.c_str());
    return false;
  }
  void* bws = nullptr;
  CHECK_CUDA(cudaMalloc(&bws, Bwd::get_workspace_size(ba)));
  if (Bwd::run(ba, bws) != cutlass::Status::kSuccess) return false;
  for (int i = 0; i < count; ++i) {
    auto a = bwd_problem(i, 1);
    void* ws = nullptr;
    CHECK_CUDA(cudaMalloc(&ws, DenseBwd::get_workspace_size(a)));
    if (DenseBwd::run(a, nullptr, ws) != cutlass::Status::kSuccess) return false;
    CHECK_CUDA(cudaDeviceSynchronize());
    CHECK_CUDA(cudaFree(ws));
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  ok = ok && same_bytes(dq[0], dq[1], nq * sizeof(Element), "dq", case_id) &&
       same_bytes(dk[0], dk[1], nkv * sizeof(Element), "dk", case_id) &&
       same_bytes(dv[0], dv[1], nkv * sizeof(Element), "dv", case_id);

  for (void* ptr : {static_cast<void*>(q), static_cast<void*>(k), static_cast<void*>(v), static_cast<void*>(dout),
                    out[0], out[1], lse[0], lse[1], dq[0], dq[1], dk[0], dk[1], dv[0], dv[1], fws, bws})
    CHECK_CUDA(cudaFree(ptr));
  std::printf("case %d: rank %d, %d problems, %lld query rows x D: %s\n", case_id, Rank, count,
              static_cast<long long>(nq / kHeadDim), ok ? "equal" : "DIFFERENT");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const int cases = argc > 1 ? std::atoi(argv[1]) : 60;
  std::mt19937 g(1234);
  int failed = 0;
  for (int c = 0; c < cases; ++c) {
    bool ok = false;
    switch (c % 3) {
      case 0: ok = run_case<1>(c, g); break;
      case 1: ok = run_case<2>(c, g); break;
      default: ok = run_case<3>(c, g); break;
    }
    failed += ok ? 0 : 1;
  }
  std::printf("%d of %d cases failed\n", failed, cases);
  return failed == 0 ? 0 : 1;
}
