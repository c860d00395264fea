// Glue between LaunchParams and the sm80 varlen ops fastna::fused::ForwardVarlen /
// BackwardVarlen, included by the generated fused_fwd_varlen / fused_bwd_varlen TUs.  The
// tables and the backward's delta live in a stream-ordered workspace allocated here.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "common/launch_glue.cuh"
#include "fastna/sm80/backward_varlen.hpp"
#include "fastna/sm80/forward_varlen.hpp"
#include "sm80/launch.cuh"

namespace fastna {
namespace binding {
namespace {

// Device memory for one launch sequence on `stream`, freed stream-ordered after it.
class StreamWorkspace {
 public:
  StreamWorkspace(size_t bytes, cudaStream_t stream, const char* name) : stream_(stream) {
    const cudaError_t err = cudaMallocAsync(&ptr_, bytes, stream);
    if (err != cudaSuccess) {
      throw std::runtime_error(std::string("fastna: fused: cannot allocate the varlen workspace (") +
                               std::to_string(bytes) + " bytes) for " + name + ": " + cudaGetErrorString(err));
    }
  }
  ~StreamWorkspace() { cudaFreeAsync(ptr_, stream_); }
  StreamWorkspace(const StreamWorkspace&) = delete;
  StreamWorkspace& operator=(const StreamWorkspace&) = delete;
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

inline void check_upload(cudaError_t err, const char* name) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("fastna: fused: uploading the varlen tables of ") + name +
                             " failed: " + cudaGetErrorString(err));
}

// The instance's answer to "can you run these samples": each sample's problem as the dense
// op sees it, and one head layout for all.
template <class DenseOp, int Rank>
std::string varlen_reason(const LaunchParams& lp) {
  struct ProblemOnly {
    NaProblem<Rank> problem;
  };
  std::vector<ProblemOnly> samples;
  for (int32_t s = 0; s < lp.num_samples; ++s) samples.push_back({problem_of<Rank>(lp.samples[s])});
  Verdict v = check_varlen_samples(samples.data(), lp.num_samples);
  for (int32_t s = 0; v.is_ok() && s < lp.num_samples; ++s)
    v = for_sample(DenseOp::can_implement_problem(samples[s].problem), s);
  return v.reason;
}

template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_fused_forward_varlen(const LaunchParams& lp, const char* name) {
  using Op = fused::ForwardVarlen<Rank, Element, HeadDim, QBox, KBox>;
  using Traits = LocalTraits<typename Op::Traits>;
  std::vector<typename Op::Sample> samples;
  for (int32_t s = 0; s < lp.num_samples; ++s) samples.push_back(forward_arguments<Rank, Element>(lp.samples[s]));
  const typename Op::Arguments args{samples.data(), lp.num_samples};
  require_implementable(Op::can_implement(args), name);
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  StreamWorkspace workspace(Op::get_workspace_size(args), stream, name);
  typename Op::Launch launch;
  check_upload(Op::prepare(args, workspace.get(), stream, &launch), name);
  auto kernel = fused::fna_forward_varlen_kernel<Traits>;
  constexpr int smem = static_cast<int>(Traits::kSmemBytes);
  set_smem(kernel, smem, name);
  kernel<<<launch.grid, Traits::kThreads, smem, stream>>>(launch.params);
  check_launch("launch", name);
}

template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_fused_backward_varlen(const LaunchParams& lp, const char* name) {
  using Op = fused::BackwardVarlen<Rank, Element, HeadDim, QBox, KBox>;
  using DqTraits = LocalTraits<typename Op::DqTraits>;
  using DkvTraits = LocalTraits<typename Op::DkvTraits>;
  std::vector<typename Op::Sample> samples;
  for (int32_t s = 0; s < lp.num_samples; ++s) samples.push_back(backward_arguments<Rank, Element>(lp.samples[s]));
  typename Op::Arguments args;
  args.samples = samples.data();
  args.token_offset = lp.token_offset;
  args.count = lp.num_samples;
  args.packed.out = reinterpret_cast<Element const*>(lp.out.ptr);
  args.packed.dout = reinterpret_cast<Element const*>(lp.dout.ptr);
  args.packed.stride_token = lp.out.strides[0];
  args.packed.stride_head = lp.out.strides[1];
  args.packed.lse = reinterpret_cast<float const*>(lp.lse.ptr);
  args.packed.dlse = reinterpret_cast<float const*>(lp.dlse.ptr);
  args.packed.total_tokens = lp.total_tokens;
  if (lp.dout.strides[0] != lp.out.strides[0] || lp.dout.strides[1] != lp.out.strides[1])
    throw std::invalid_argument(std::string("fastna: fused: varlen backward needs out and dout with the same strides (") +
                                name + ")");
  require_implementable(Op::can_implement(args), name);
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  StreamWorkspace workspace(Op::get_workspace_size(args), stream, name);
  typename Op::Launch launch;
  check_upload(Op::prepare(args, workspace.get(), stream, &launch), name);

  fused::fna_bwd_preprocess_kernel<Rank, Element, HeadDim, LocalTag>
      <<<static_cast<unsigned>(launch.preprocess_blocks), 128, 0, stream>>>(launch.preprocess);
  check_launch("delta preprocess", name);
  {
    auto kernel = fused::fna_bwd_dkdv_varlen_kernel<DkvTraits>;
    constexpr int smem = static_cast<int>(Op::Dense::kSmemDkv);
    set_smem(kernel, smem, name);
    kernel<<<launch.dkdv_grid, DkvTraits::kThreads, smem, stream>>>(launch.dkdv);
    check_launch("dK/dV launch", name);
  }
  {
    auto kernel = fused::fna_bwd_dq_varlen_kernel<DqTraits>;
    constexpr int smem = static_cast<int>(Op::Dense::kSmemDq);
    set_smem(kernel, smem, name);
    kernel<<<launch.dq_grid, DqTraits::kThreads, smem, stream>>>(launch.dq);
    check_launch("dQ launch", name);
  }
}

}  // namespace
}  // namespace binding
}  // namespace fastna
