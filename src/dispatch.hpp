// Runtime dispatch over the generated instances (fastna_instances.inc).
#pragma once

#include <string>
#include <vector>

#include "launch_params.hpp"

namespace fastna {
namespace binding {

struct Instance {
  std::string kernel;
  int rank;
  std::string dtype;
  int head_dim;        // 0 = any head dim (naive kernels)
  std::string tile;    // tile variant ("default" unless the kernel has several)
  std::string arch;    // as configured: "80", "90a"
  int sm;              // numeric part: 80, 90
  bool arch_specific;  // "a"/"f" archs run only on exactly that compute capability
  LaunchFn fn;
};

const std::vector<Instance>& instances();
bool built_with_cuda();

// The instance for the current CUDA device: the largest sm <= the device's compute capability
// (arch-specific ones only on an exact match).  Throws std::invalid_argument (ValueError) when
// nothing was compiled for (kernel, rank, dtype, head_dim, tile) or the device,
// std::runtime_error for CUDA errors or a host-only build.
LaunchFn find_instance(const std::string& kernel, int rank, const std::string& dtype, int head_dim = 0,
                       const std::string& tile = "default");

}  // namespace binding
}  // namespace fastna
