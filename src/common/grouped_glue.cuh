// Launch helpers of the grouped instances (families sm80 and small): the stream-ordered
// workspace of the tables, their upload's error, and the instance's check over every problem.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

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

}  // namespace
}  // namespace binding
}  // namespace fastna
