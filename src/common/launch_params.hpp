// What the binding hands to a generated kernel instance: plain pointers, element strides and
// the problem, with no torch or CUDA types, so that module.cpp compiles without nvcc and the
// generated .cu files compile without pybind11.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "fastna/common/index_math.hpp"

namespace fastna {
namespace binding {

constexpr int kMaxRank = 3;

// A tensor argument: device pointer (0 = absent) and element strides in its own layout.
struct TensorArg {
  uintptr_t ptr = 0;
  int ndim = 0;
  int64_t strides[kMaxRank + 3] = {};
  bool present() const { return ptr != 0; }
};

struct LaunchParams {
  int rank = 0;
  int32_t batch = 0, heads = 0, heads_kv = 0, dim = 0, dim_v = 0, num_extra = 0;
  float scale = 1.f;
  AxisParams axis[kMaxRank];
  // forward: q k v extra_k extra_v -> attn out lse; backward also reads dout (and attn) and
  // writes dq dk dv dextra_k dextra_v dattn.
  TensorArg q, k, v, extra_k, extra_v, attn, out, lse;
  TensorArg dout, dq, dk, dv, dextra_k, dextra_v, dattn;
  // fused backward only: optional gradient into lse (fp32 [B, N, H]) and the fp32 [B, N, H]
  // delta workspace (absent = the instance allocates it stream-ordered itself).
  TensorArg dlse, workspace;
  // gemm_na only (src/gemm/launch.cuh): which GEMM runs (kGemmPN / kGemmNN / kGemmIN) and the
  // optional relative positional bias of PN (contiguous [H, 2K_1-1, ...] in the input dtype).
  // PN: q k rpb -> attn; NN: attn v -> out (dim_v columns); IN: attn dout (x) -> dv (out).
  int gemm_op = 0;
  TensorArg rpb;
  uintptr_t stream = 0;  // cudaStream_t as an integer (0 = legacy default stream)
  // Grouped ops (fused_fwd_grouped / fused_bwd_grouped): one LaunchParams per problem (its
  // problem and tensor views; the top-level fields are unused), run in one launch per kernel.
  const LaunchParams* problems = nullptr;
  int32_t num_problems = 0;
};

constexpr int kGemmPN = 0;
constexpr int kGemmNN = 1;
constexpr int kGemmIN = 2;
constexpr int kGemmSoftmax = 3;     // attn = softmax(scale * attn) in place (+ lse)
constexpr int kGemmSoftmaxBwd = 4;  // attn: s -> P, dattn: dP -> dS in place (lse, dlse = delta)

using LaunchFn = void (*)(const LaunchParams&);

}  // namespace binding
}  // namespace fastna
