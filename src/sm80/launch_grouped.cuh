// Glue between LaunchParams and the sm80 grouped ops fastna::fused::ForwardGrouped /
// BackwardGrouped, included by the generated fused_fwd_grouped / fused_bwd_grouped TUs.  The
// tables (and the backward's delta rows) live in a stream-ordered workspace allocated here.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "common/launch_glue.cuh"
#include "fastna/sm80/backward_grouped.hpp"
#include "fastna/sm80/forward_grouped.hpp"
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
      throw std::runtime_error(std::string("fastna: fused: cannot allocate the grouped workspace (") +
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
    throw std::runtime_error(std::string("fastna: fused: uploading the grouped tables of ") + name +
                             " failed: " + cudaGetErrorString(err));
}

// The instance's answer to "can you run these problems": each one as the dense op sees it.
template <class DenseOp, int Rank>
std::string grouped_reason(const LaunchParams& lp) {
  if (lp.num_problems <= 0) return "a grouped launch needs at least one problem";
  for (int32_t i = 0; i < lp.num_problems; ++i) {
    Verdict v = for_problem(DenseOp::can_implement_problem(problem_of<Rank>(lp.problems[i])), i);
    if (!v.is_ok()) return v.reason;
  }
  return std::string();
}

template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_fused_forward_grouped(const LaunchParams& lp, const char* name) {
  using Op = fused::ForwardGrouped<Rank, Element, HeadDim, QBox, KBox>;
  using Traits = LocalTraits<typename Op::Traits>;
  std::vector<typename Op::Problem> problems;
  for (int32_t i = 0; i < lp.num_problems; ++i) problems.push_back(forward_arguments<Rank, Element>(lp.problems[i]));
  const typename Op::Arguments args{problems.data(), lp.num_problems};
  require_implementable(Op::can_implement(args), name);
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  StreamWorkspace workspace(Op::get_workspace_size(args), stream, name);
  typename Op::Launch launch;
  check_upload(Op::prepare(args, workspace.get(), stream, &launch), name);
  auto kernel = fused::fna_forward_grouped_kernel<Traits>;
  constexpr int smem = static_cast<int>(Traits::kSmemBytes);
  set_smem(kernel, smem, name);
  kernel<<<launch.grid, Traits::kThreads, smem, stream>>>(launch.params);
  check_launch("launch", name);
}

template <int Rank, class Element, int HeadDim, class QBox, class KBox>
void run_fused_backward_grouped(const LaunchParams& lp, const char* name) {
  using Op = fused::BackwardGrouped<Rank, Element, HeadDim, QBox, KBox>;
  using DqTraits = LocalTraits<typename Op::DqTraits>;
  using DkvTraits = LocalTraits<typename Op::DkvTraits>;
  std::vector<typename Op::Problem> problems;
  for (int32_t i = 0; i < lp.num_problems; ++i) problems.push_back(backward_arguments<Rank, Element>(lp.problems[i]));
  const typename Op::Arguments args{problems.data(), lp.num_problems};
  require_implementable(Op::can_implement(args), name);
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  StreamWorkspace workspace(Op::get_workspace_size(args), stream, name);
  typename Op::Launch launch;
  check_upload(Op::prepare(args, workspace.get(), stream, &launch), name);

  fused::fna_bwd_preprocess_grouped_kernel<Rank, Element, HeadDim, LocalTag>
      <<<launch.preprocess_grid, Op::kPreprocessThreads, 0, stream>>>(launch.preprocess);
  check_launch("delta preprocess", name);
  {
    auto kernel = fused::fna_bwd_dkdv_grouped_kernel<DkvTraits>;
    constexpr int smem = static_cast<int>(Op::Dense::kSmemDkv);
    set_smem(kernel, smem, name);
    kernel<<<launch.dkdv_grid, DkvTraits::kThreads, smem, stream>>>(launch.dkdv);
    check_launch("dK/dV launch", name);
  }
  {
    auto kernel = fused::fna_bwd_dq_grouped_kernel<DqTraits>;
    constexpr int smem = static_cast<int>(Op::Dense::kSmemDq);
    set_smem(kernel, smem, name);
    kernel<<<launch.dq_grid, DqTraits::kThreads, smem, stream>>>(launch.dq);
    check_launch("dQ launch", name);
  }
}

}  // namespace
}  // namespace binding
}  // namespace fastna
