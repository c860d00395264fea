// The compiled kernel table: one row per generated instance (cmake/kernel_table.json through
// cmake/FastnaGenerator.cmake's fastna_instances.inc), and the one place that picks the row a
// launch runs and asks it whether it can run the problem.
#pragma once

#include <string>
#include <vector>

#include "common/launch_params.hpp"

namespace fastna {
namespace binding {

// An instance's answer to "can you run this problem": empty, or a one-line reason.
using CheckFn = std::string (*)(const LaunchParams&);

struct Instance {
  std::string op;      // binding entry that runs it: fused_fwd, fused_bwd, naive_fwd, naive_bwd, gemm_na
  std::string family;  // header folder include/fastna/<family>
  std::string tile;    // tile name within op ("default", "small", "hopper", ...)
  int rank;
  std::string dtype;   // float32, float16, bfloat16
  int head_dim;        // 0 = any head dim (naive kernels)
  std::string arch;    // as configured: "80", "90a"
  int sm;              // numeric part: 80, 90
  bool arch_specific;  // "a"/"f" archs run only on exactly that compute capability
  std::vector<int> qbox, kvbox;        // box extents per axis (empty: no box)
  std::vector<std::string> supports;   // problem features the kernel takes (kernel_table.json)
  LaunchFn fn;
  CheckFn check;
};

const std::vector<Instance>& instances();
bool built_with_cuda();

// What a launch or can_implement asks for: the op, and the instance key of the problem.
struct InstanceQuery {
  std::string op;
  int rank = 0;
  std::string dtype;
  int head_dim = 0;
  std::string tile = "default";
};

// The instance `q` names that runs on the current CUDA device and takes lp's problem: on success
// returns it and leaves *reason empty; otherwise returns nullptr with a one-line reason.  Throws
// std::runtime_error only when the device cannot be queried.
const Instance* resolve(const InstanceQuery& q, const LaunchParams& lp, std::string* reason);

}  // namespace binding
}  // namespace fastna
