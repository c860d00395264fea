// What the standalone harness drivers share (test_fused.cu, test_fused_bwd.cu, test_gemm_na.cu,
// test_hopper_fwd.cu, test_hopper_bwd.cu): the CUDA error check, the --test-only / --bench-only
// flags, the device banner, 16-bit device buffers, random non-zero inputs, and CUDA-event timing
// of repeated launches.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#define CK(x)                                                                               \
  do {                                                                                      \
    cudaError_t e_ = (x);                                                                   \
    if (e_ != cudaSuccess) {                                                                \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                         \
    }                                                                                       \
  } while (0)

// cudaMalloc of n 16-bit elements (fp16 / bf16 bit patterns).
static uint16_t* device_u16(size_t n) {
  uint16_t* p;
  CK(cudaMalloc(&p, n * 2));
  return p;
}

// Seeded uniform values in [-bound, bound], at least 1e-3 away from zero: random inputs without
// (near) zeros.
class NonzeroUniform {
 public:
  NonzeroUniform(std::mt19937::result_type seed, float bound) : rng_(seed), u_(-bound, bound) {}
  float operator()() {
    float x;
    do x = u_(rng_); while (std::fabs(x) < 1e-3f);
    return x;
  }

 private:
  std::mt19937 rng_;
  std::uniform_real_distribution<float> u_;
};

// Which parts of a driver run: --test-only drops the benchmark, --bench-only the tests (a
// driver reads its other arguments itself).
struct RunParts {
  bool test = true;
  bool bench = true;
};
static RunParts parse_run_parts(int argc, char** argv) {
  RunParts r;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--test-only")) r.bench = false;
    if (!std::strcmp(argv[i], "--bench-only")) r.test = false;
  }
  return r;
}

// "device: <name> (sm_XY, N SMs)": the first line of every driver's output.
static void print_device() {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
}

// Times `iters` calls of fn() (each between two CUDA events on the default stream, waited for);
// milliseconds, sorted ascending.  Warm-up is the caller's.
template <class Fn>
static std::vector<float> time_launches(int iters, Fn&& fn) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int i = 0; i < iters; ++i) {
    CK(cudaEventRecord(e0));
    fn();
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float t;
    CK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms;
}
static double median_of(std::vector<float> const& sorted_ms) { return sorted_ms[sorted_ms.size() / 2]; }
