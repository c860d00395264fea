// Standalone timing of small-window forward configurations (CTA warp grid, registers per
// thread) on the nat / dinat anchors; every configuration must give bit-identical outputs (a
// warp's math does not depend on how warps are grouped into CTAs).  Correctness against the
// reference is tests/test_small_window_gpu.py's job.
//   nvcc -std=c++17 -O3 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a \
//        -I include -I $CUTLASS_INCLUDE tests/gpu_standalone/bench_small_window.cu -o bsw && ./bsw
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "fastna/small/forward.hpp"

using namespace fastna;
using namespace fastna::fused;

template <int W0, int W1, int MinCtas, int PatchesPerWarp = 1>
struct Cfg {
  using Patch = Box<2, 8, 2>;
  using Slots = Box<2, 14, 8>;
  using WarpGrid = Box<2, W0, W1>;
  static constexpr int kMinCtasPerSm = MinCtas;
  static constexpr int kPatchesPerWarp = PatchesPerWarp;
};

struct Problem {
  int B, H, L0, L1, D, K, dil;
};

template <class C, class Elem = cutlass::bfloat16_t, bool Tma = false>
float time_config(const char* name, Problem const& pr, void* qv, void* kv, void* vv, void* outv, float* lse,
                  std::vector<uint16_t>& ref_bits) {
  Elem* q = static_cast<Elem*>(qv); Elem* k = static_cast<Elem*>(kv); Elem* v = static_cast<Elem*>(vv);
  Elem* out = static_cast<Elem*>(outv);
  using Op = SmallWindowForward<2, Elem, 32, C, Tma>;
  typename Op::Arguments args;
  NaProblem<2>& p = args.problem;
  p.batch = pr.B; p.heads = pr.H; p.heads_kv = pr.H; p.dim = pr.D; p.dim_v = pr.D;
  p.scale = 1.f / sqrtf(float(pr.D));
  p.axis[0] = AxisParams{pr.L0, pr.K, 1, pr.dil, false};
  p.axis[1] = AxisParams{pr.L1, pr.K, 1, pr.dil, false};
  auto view = [&](auto* ptr) {
    TokenTensor<std::remove_pointer_t<decltype(ptr)>, 2> t;
    t.ptr = ptr;
    t.stride_head = pr.D;
    t.stride_spatial[1] = int64_t(pr.H) * pr.D;
    t.stride_spatial[0] = t.stride_spatial[1] * pr.L1;
    t.stride_batch = t.stride_spatial[0] * pr.L0;
    return t;
  };
  args.q = view(static_cast<Elem const*>(q));
  args.k = view(static_cast<Elem const*>(k));
  args.v = view(static_cast<Elem const*>(v));
  args.out = view(out);
  args.lse = lse;
  const size_t n = size_t(pr.B) * pr.L0 * pr.L1 * pr.H * pr.D;
  cudaMemset(out, 0xff, n * 2);
  if (Op::run(args) != cutlass::Status::kSuccess) { printf("%s: cannot run\n", name); return -1; }
  cudaDeviceSynchronize();
  std::vector<uint16_t> bits(n);
  cudaMemcpy(bits.data(), out, n * 2, cudaMemcpyDeviceToHost);
  bool same = true;
  if (ref_bits.empty()) ref_bits = bits; else same = (bits == ref_bits);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0); cudaEventCreate(&e1);
  std::vector<float> ms;
  for (int rep = 0; rep < 7; ++rep) {
    cudaEventRecord(e0);
    for (int i = 0; i < 50; ++i) Op::run(args);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float t; cudaEventElapsedTime(&t, e0, e1);
    ms.push_back(t / 50);
  }
  std::sort(ms.begin(), ms.end());
  int regs = 0;
  cudaFuncAttributes attr;
  if (cudaFuncGetAttributes(&attr, small_window_kernel<typename Op::Traits>()) == cudaSuccess) regs = attr.numRegs;
  printf("  %-22s %8.4f ms  regs %3d  %s\n", name, ms[3], regs, same ? "bit-identical" : "OUTPUT DIFFERS");
  return ms[3];
}

int main() {
  const Problem probs[] = {{32, 4, 56, 56, 32, 7, 1}, {32, 4, 56, 56, 32, 7, 4}};
  const char* names[] = {"nat", "dinat"};
  for (int c = 0; c < 2; ++c) {
    const Problem& pr = probs[c];
    const size_t n = size_t(pr.B) * pr.L0 * pr.L1 * pr.H * pr.D;
    std::vector<cutlass::bfloat16_t> host(n);
    std::mt19937 rng(c);
    std::normal_distribution<float> nd;
    cutlass::bfloat16_t *q, *k, *v, *out;
    float* lse;
    cudaMalloc(&q, n * 2); cudaMalloc(&k, n * 2); cudaMalloc(&v, n * 2); cudaMalloc(&out, n * 2);
    cudaMalloc(&lse, n / pr.D * 4);
    for (cutlass::bfloat16_t* t : {q, k, v}) {
      for (auto& x : host) x = cutlass::bfloat16_t(nd(rng));
      cudaMemcpy(t, host.data(), n * 2, cudaMemcpyHostToDevice);
    }
    printf("%s (B %d H %d %dx%d D %d K %d dilation %d)\n", names[c], pr.B, pr.H, pr.L0, pr.L1, pr.D, pr.K, pr.dil);
    std::vector<uint16_t> ref;
    time_config<Cfg<1, 4, 5>>("bf16 cp.async min5", pr, q, k, v, out, lse, ref);
    time_config<Cfg<1, 4, 5>, cutlass::bfloat16_t, true>("bf16 TMA min5", pr, q, k, v, out, lse, ref);
    time_config<Cfg<1, 4, 6>, cutlass::bfloat16_t, true>("bf16 TMA min6", pr, q, k, v, out, lse, ref);
    time_config<Cfg<1, 4, 0>, cutlass::bfloat16_t, true>("bf16 TMA", pr, q, k, v, out, lse, ref);
    time_config<Cfg<1, 8, 2>, cutlass::bfloat16_t, true>("bf16 TMA 1x8 min2", pr, q, k, v, out, lse, ref);
    time_config<Cfg<2, 4, 2>, cutlass::bfloat16_t, true>("bf16 TMA 2x4 min2", pr, q, k, v, out, lse, ref);
    std::vector<uint16_t> ref16;  // fp16 reads the same bits as other numbers: its own reference
    time_config<Cfg<1, 4, 5>, cutlass::half_t>("fp16 cp.async min5", pr, q, k, v, out, lse, ref16);
    time_config<Cfg<1, 4, 5>, cutlass::half_t, true>("fp16 TMA min5", pr, q, k, v, out, lse, ref16);
    cudaFree(q); cudaFree(k); cudaFree(v); cudaFree(out); cudaFree(lse);
  }
  const cudaError_t err = cudaGetLastError();
  printf("%s\n", err == cudaSuccess ? "ok" : cudaGetErrorString(err));
  return err == cudaSuccess ? 0 : 1;
}
