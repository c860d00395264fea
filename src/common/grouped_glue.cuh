// Launch helpers of the grouped instances (families sm80 and small): the stream-ordered
// workspace of the tables, their upload's error, and the instance's check over every problem.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "common/launch_glue.cuh"
#include "fastna/common/grouped_plan.hpp"

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

// lp's problems as a grouped op's Arguments list (forward_arguments / backward_arguments each).
template <int Rank, class Element>
std::vector<fused::ForwardArguments<Rank, Element>> forward_problems(const LaunchParams& lp) {
  std::vector<fused::ForwardArguments<Rank, Element>> out;
  for (int32_t i = 0; i < lp.num_problems; ++i) out.push_back(forward_arguments<Rank, Element>(lp.problems[i]));
  return out;
}

template <int Rank, class Element>
std::vector<fused::BackwardArguments<Rank, Element>> backward_problems(const LaunchParams& lp) {
  std::vector<fused::BackwardArguments<Rank, Element>> out;
  for (int32_t i = 0; i < lp.num_problems; ++i) out.push_back(backward_arguments<Rank, Element>(lp.problems[i]));
  return out;
}

// A grouped forward op (fastna::GroupedForward) on lp's problems, its kernel launched with
// internal-linkage traits (launch_glue.cuh).
template <class Op, int Rank, class Element>
void run_grouped_forward(const LaunchParams& lp, const char* name) {
  using Traits = LocalTraits<typename Op::Traits>;
  const auto problems = forward_problems<Rank, Element>(lp);
  const typename Op::Arguments args{problems.data(), lp.num_problems};
  require_implementable(Op::can_implement(args), name);
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(lp.stream);
  StreamWorkspace workspace(Op::get_workspace_size(args), stream, name);
  typename Op::Launch launch;
  check_upload(Op::prepare(args, workspace.get(), stream, &launch), name);
  auto kernel = Op::template kernel<Traits>();
  constexpr int smem = static_cast<int>(Traits::kSmemBytes);
  set_smem(kernel, smem, name);
  kernel<<<launch.grid, Traits::kThreads, smem, stream>>>(launch.params);
  check_launch("launch", name);
}

}  // namespace
}  // namespace binding
}  // namespace fastna
