// The sm80-class varlen ops (fused::ForwardVarlen / BackwardVarlen) against the dense ops run
// once per sample on the same packed buffers.  A varlen CTA runs the dense kernel's CTA body on
// its sample's parameters, so every output must be equal bit for bit (the dense ops are checked
// against the reference by test_fused.cu / test_fused_bwd.cu and the pytest GPU suite).
//
//   CUTLASS_INCLUDE=... tests/gpu_standalone/run_varlen.sh
//
// Cases: mixes of 1-7 samples of ranks 1-3 with their own shapes, windows, strides, dilations
// and causal flags (shared and per sample), GQA, sizes dividing no tile; outputs poisoned first.
#include <cuda_runtime.h>
#include <cutlass/numeric_types.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "fastna/sm80/backward_varlen.hpp"
#include "fastna/sm80/forward_varlen.hpp"
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

template <int Rank>
struct SampleSpec {
  fastna::AxisParams axis[Rank];
  int64_t tokens() const {
    int64_t n = 1;
    for (int a = 0; a < Rank; ++a) n *= axis[a].length;
    return n;
  }
};

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
T* device_fill(size_t n, std::mt19937& g) {
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
  std::printf("case %d: %s differs from the per-sample dense op (first differing byte %zu of %zu)\n", case_id,
              what, first, bytes);
  return false;
}

// A [1, *shape, H, D] view of packed rows [offset, offset + tokens) of a [total, H, D] tensor.
template <class T, int Rank>
fastna::TokenTensor<T, Rank> sample_view(T* packed, int64_t offset, SampleSpec<Rank> const& s, int heads, int dim) {
  fastna::TokenTensor<T, Rank> t;
  t.ptr = packed + offset * heads * dim;
  int64_t stride = int64_t(heads) * dim;
  for (int a = Rank - 1; a >= 0; --a) {
    t.stride_spatial[a] = stride;
    stride *= s.axis[a].length;
  }
  t.stride_batch = stride;
  t.stride_head = dim;
  return t;
}

template <int Rank>
bool run_case(int case_id, std::mt19937& g) {
  using Fwd = fastna::fused::ForwardVarlen<Rank, Element, kHeadDim>;
  using Bwd = fastna::fused::BackwardVarlen<Rank, Element, kHeadDim>;
  using DenseFwd = typename Fwd::Dense;
  using DenseBwd = typename Bwd::Dense;
  const int count = std::uniform_int_distribution<int>(1, 7)(g);
  const int heads_kv = std::uniform_int_distribution<int>(1, 2)(g);
  const int heads = heads_kv * std::uniform_int_distribution<int>(1, 2)(g);
  const bool shared_params = std::uniform_int_distribution<int>(0, 1)(g) == 1;
  const int lo = Rank == 1 ? 8 : Rank == 2 ? 5 : 3, hi = Rank == 1 ? 300 : Rank == 2 ? 40 : 12;

  std::vector<SampleSpec<Rank>> specs(count);
  std::vector<int64_t> offset(count);
  int64_t total = 0;
  for (int s = 0; s < count; ++s) {
    // Draw until the dense op takes the sample (the varlen op must take what it takes).
    for (int attempt = 0;; ++attempt) {
      for (int a = 0; a < Rank; ++a) specs[s].axis[a] = random_axis(g, lo, hi, Rank == 1 ? 33 : 9);
      if (shared_params && s > 0) {  // sample 0's windows on a shape that still holds them
        for (int a = 0; a < Rank; ++a) {
          fastna::AxisParams ax = specs[0].axis[a];
          ax.length = std::max(ax.length, std::uniform_int_distribution<int>(ax.kernel * ax.dilation, hi)(g));
          specs[s].axis[a] = ax;
        }
      }
      fastna::NaProblem<Rank> p;
      p.batch = 1;
      p.heads = heads;
      p.heads_kv = heads_kv;
      p.dim = p.dim_v = kHeadDim;
      for (int a = 0; a < Rank; ++a) p.axis[a] = specs[s].axis[a];
      if (DenseFwd::can_implement_problem(p).is_ok() && DenseBwd::can_implement_problem(p).is_ok()) break;
      if (attempt == 50) {
        std::printf("case %d: no sample the dense ops take in 50 draws\n", case_id);
        return false;
      }
    }
    offset[s] = total;
    total += specs[s].tokens();
  }
  const size_t nq = size_t(total) * heads * kHeadDim, nkv = size_t(total) * heads_kv * kHeadDim;
  Element* q = device_fill<Element>(nq, g);
  Element* k = device_fill<Element>(nkv, g);
  Element* v = device_fill<Element>(nkv, g);
  Element* dout = device_fill<Element>(nq, g);
  const size_t lse_bytes = sizeof(float) * size_t(total) * heads;
  void* out[2] = {device_poison(nq * sizeof(Element)), device_poison(nq * sizeof(Element))};
  void* lse[2] = {device_poison(lse_bytes), device_poison(lse_bytes)};
  void* dq[2] = {device_poison(nq * sizeof(Element)), device_poison(nq * sizeof(Element))};
  void* dk[2] = {device_poison(nkv * sizeof(Element)), device_poison(nkv * sizeof(Element))};
  void* dv[2] = {device_poison(nkv * sizeof(Element)), device_poison(nkv * sizeof(Element))};

  // Slot 0: the varlen ops; slot 1: the dense ops once per sample.
  auto fwd_sample = [&](int s, int slot) {
    typename Fwd::Sample a;
    a.problem.batch = 1;
    a.problem.heads = heads;
    a.problem.heads_kv = heads_kv;
    a.problem.dim = a.problem.dim_v = kHeadDim;
    a.problem.scale = 0.125f;
    for (int ax = 0; ax < Rank; ++ax) a.problem.axis[ax] = specs[s].axis[ax];
    a.q = sample_view<Element const, Rank>(q, offset[s], specs[s], heads, kHeadDim);
    a.k = sample_view<Element const, Rank>(k, offset[s], specs[s], heads_kv, kHeadDim);
    a.v = sample_view<Element const, Rank>(v, offset[s], specs[s], heads_kv, kHeadDim);
    a.out = sample_view<Element, Rank>(static_cast<Element*>(out[slot]), offset[s], specs[s], heads, kHeadDim);
    a.lse = static_cast<float*>(lse[slot]) + offset[s] * heads;
    return a;
  };
  auto bwd_sample = [&](int s, int slot) {
    auto f = fwd_sample(s, slot);
    typename Bwd::Sample a;
    a.problem = f.problem;
    a.q = f.q;
    a.k = f.k;
    a.v = f.v;
    a.out = sample_view<Element const, Rank>(static_cast<Element const*>(out[1]), offset[s], specs[s], heads, kHeadDim);
    a.dout = sample_view<Element const, Rank>(dout, offset[s], specs[s], heads, kHeadDim);
    a.lse = static_cast<float const*>(lse[1]) + offset[s] * heads;
    a.dq = sample_view<Element, Rank>(static_cast<Element*>(dq[slot]), offset[s], specs[s], heads, kHeadDim);
    a.dk = sample_view<Element, Rank>(static_cast<Element*>(dk[slot]), offset[s], specs[s], heads_kv, kHeadDim);
    a.dv = sample_view<Element, Rank>(static_cast<Element*>(dv[slot]), offset[s], specs[s], heads_kv, kHeadDim);
    return a;
  };

  // Forward.
  std::vector<typename Fwd::Sample> fs;
  for (int s = 0; s < count; ++s) fs.push_back(fwd_sample(s, 0));
  typename Fwd::Arguments fa{fs.data(), count};
  fastna::Verdict verdict = Fwd::can_implement(fa);
  if (!verdict.is_ok()) {
    std::printf("case %d: ForwardVarlen refused: %s\n", case_id, verdict.reason.c_str());
    return false;
  }
  void* fws = nullptr;
  CHECK_CUDA(cudaMalloc(&fws, Fwd::get_workspace_size(fa)));
  if (Fwd::run(fa, fws) != cutlass::Status::kSuccess) return false;
  for (int s = 0; s < count; ++s)
    if (DenseFwd::run(fwd_sample(s, 1)) != cutlass::Status::kSuccess) return false;
  CHECK_CUDA(cudaDeviceSynchronize());
  bool ok = same_bytes(out[0], out[1], nq * sizeof(Element), "out", case_id) &&
            same_bytes(lse[0], lse[1], lse_bytes, "lse", case_id);

  // Backward (both from the dense forward's out and lse).
  std::vector<typename Bwd::Sample> bs;
  for (int s = 0; s < count; ++s) bs.push_back(bwd_sample(s, 0));
  typename Bwd::Arguments ba;
  ba.samples = bs.data();
  ba.token_offset = offset.data();
  ba.count = count;
  ba.packed.out = static_cast<Element const*>(out[1]);
  ba.packed.dout = dout;
  ba.packed.stride_token = int64_t(heads) * kHeadDim;
  ba.packed.stride_head = kHeadDim;
  ba.packed.lse = static_cast<float const*>(lse[1]);
  ba.packed.total_tokens = total;
  verdict = Bwd::can_implement(ba);
  if (!verdict.is_ok()) {
    std::printf("case %d: BackwardVarlen refused: %s\n", case_id, verdict.reason.c_str());
    return false;
  }
  void* bws = nullptr;
  CHECK_CUDA(cudaMalloc(&bws, Bwd::get_workspace_size(ba)));
  if (Bwd::run(ba, bws) != cutlass::Status::kSuccess) return false;
  for (int s = 0; s < count; ++s) {
    auto a = bwd_sample(s, 1);
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

  for (void* p : {static_cast<void*>(q), static_cast<void*>(k), static_cast<void*>(v), static_cast<void*>(dout),
                  out[0], out[1], lse[0], lse[1], dq[0], dq[1], dk[0], dk[1], dv[0], dv[1], fws, bws})
    CHECK_CUDA(cudaFree(p));
  std::printf("case %d: rank %d, %d samples, %lld tokens, heads %d/%d: %s\n", case_id, Rank, count,
              static_cast<long long>(total), heads, heads_kv, ok ? "equal" : "DIFFERENT");
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
