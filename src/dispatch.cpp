#include "dispatch.hpp"

#include <cstdlib>
#include <sstream>
#include <stdexcept>

#ifdef FASTNA_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace fastna {
namespace binding {

#define FASTNA_INSTANCE(kernel, rank, dtype, head_dim, tile, arch, symbol) void symbol(const LaunchParams&);
#include "fastna_instances.inc"
#undef FASTNA_INSTANCE

namespace {

struct RawInstance {
  const char* kernel;
  int rank;
  const char* dtype;
  int head_dim;
  const char* tile;
  const char* arch;
  LaunchFn fn;
};

#define FASTNA_INSTANCE(kernel, rank, dtype, head_dim, tile, arch, symbol) \
  {#kernel, rank, #dtype, head_dim, #tile, #arch, &symbol},
// The trailing sentinel keeps the array non-empty in host-only builds.
const RawInstance kRawInstances[] = {
#include "fastna_instances.inc"
    {nullptr, 0, nullptr, 0, nullptr, nullptr, nullptr},
};
#undef FASTNA_INSTANCE

std::vector<Instance> build_table() {
  std::vector<Instance> out;
  for (const RawInstance& r : kRawInstances) {
    if (!r.kernel) break;
    Instance i;
    i.kernel = r.kernel;
    i.rank = r.rank;
    i.dtype = r.dtype;
    i.head_dim = r.head_dim;
    i.tile = r.tile;
    i.arch = r.arch;
    i.sm = std::atoi(r.arch);
    i.arch_specific = !i.arch.empty() && (i.arch.back() == 'a' || i.arch.back() == 'f');
    i.fn = r.fn;
    out.push_back(i);
  }
  return out;
}

std::string list_instances(const std::vector<Instance>& all) {
  if (all.empty()) return "none";
  std::ostringstream os;
  for (size_t n = 0; n < all.size(); ++n) {
    const Instance& i = all[n];
    os << (n ? ", " : "") << "(" << i.kernel << ", rank " << i.rank << ", " << i.dtype;
    if (i.head_dim) os << ", head dim " << i.head_dim;
    if (i.tile != "default") os << ", tile " << i.tile;
    os << ", sm" << i.arch << ")";
  }
  return os.str();
}

#ifdef FASTNA_WITH_CUDA
int device_cc() {
  int dev = 0, major = 0, minor = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("fastna: cannot query the CUDA device: ") + cudaGetErrorString(err));
  }
  return major * 10 + minor;
}
#endif

}  // namespace

const std::vector<Instance>& instances() {
  static const std::vector<Instance> table = build_table();
  return table;
}

bool built_with_cuda() {
#ifdef FASTNA_WITH_CUDA
  return true;
#else
  return false;
#endif
}

LaunchFn find_instance(const std::string& kernel, int rank, const std::string& dtype, int head_dim,
                       const std::string& tile) {
#ifndef FASTNA_WITH_CUDA
  (void)kernel; (void)rank; (void)dtype; (void)head_dim; (void)tile;
  throw std::runtime_error(
      "fastna was built without CUDA kernels (FASTNA_CUDA_ARCHS=none, no nvcc or no GPU at build "
      "time); reinstall with e.g. FASTNA_CUDA_ARCHS=\"80;90a\" pip install --no-build-isolation .");
#else
  const std::vector<Instance>& all = instances();
  std::vector<const Instance*> matching;
  for (const Instance& i : all) {
    if (i.kernel == kernel && i.rank == rank && i.dtype == dtype && i.head_dim == head_dim && i.tile == tile)
      matching.push_back(&i);
  }
  if (matching.empty()) {
    std::string what = "rank " + std::to_string(rank) + ", dtype " + dtype;
    if (head_dim) what += ", head dim " + std::to_string(head_dim);
    if (tile != "default") what += ", tile " + tile;
    throw std::invalid_argument("fastna: no compiled instance of kernel " + kernel + " for " + what +
                                "; compiled: " + list_instances(all) +
                                " (rebuild with FASTNA_KERNELS / FASTNA_RANKS / FASTNA_DTYPES / "
                                "FASTNA_HEAD_DIMS including it)");
  }
  const int cc = device_cc();
  const Instance* best = nullptr;
  for (const Instance* i : matching) {
    const bool runs = i->arch_specific ? i->sm == cc : i->sm <= cc;
    if (runs && (!best || i->sm > best->sm)) best = i;
  }
  if (!best) {
    std::string archs;
    for (const Instance* i : matching) archs += (archs.empty() ? "sm" : ", sm") + i->arch;
    throw std::invalid_argument("fastna: kernel " + kernel + " (rank " + std::to_string(rank) + ", " + dtype +
                                ") was compiled for " + archs + ", none of which runs on this GPU (sm" +
                                std::to_string(cc) + "); rebuild with FASTNA_CUDA_ARCHS including " +
                                std::to_string(cc) + (cc == 90 ? "a" : ""));
  }
  return best->fn;
#endif
}

}  // namespace binding
}  // namespace fastna
