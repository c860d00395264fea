#include "common/kernel_table.hpp"

#include <cstdlib>
#include <set>
#include <stdexcept>

#ifdef FASTNA_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace fastna {
namespace binding {

#define FASTNA_INSTANCE(symbol, op, family, tile, rank, dtype, head_dim, arch, qbox, kvbox, supports) \
  void symbol(const LaunchParams&);                                                                  \
  std::string symbol##_check(const LaunchParams&);
#include "fastna_instances.inc"
#undef FASTNA_INSTANCE

namespace {

// kernel_table.json's space-separated "supports" words.
std::vector<std::string> words(const char* s) {
  std::vector<std::string> out;
  for (const char* c = s; *c;) {
    while (*c == ' ') ++c;
    const char* end = c;
    while (*end && *end != ' ') ++end;
    if (end > c) out.emplace_back(c, end);
    c = end;
  }
  return out;
}

// "a"/"f" archs ("90a", "100f") run only on exactly that compute capability.
bool is_arch_specific(const std::string& arch) {
  return !arch.empty() && (arch.back() == 'a' || arch.back() == 'f');
}

#define FASTNA_BOX(...) {__VA_ARGS__}
#define FASTNA_INSTANCE(symbol, op, family, tile, rank, dtype, head_dim, arch, qbox, kvbox, supports)        \
  {op, family, tile, rank, dtype, head_dim, arch, std::atoi(arch), is_arch_specific(arch), FASTNA_BOX qbox, \
   FASTNA_BOX kvbox, words(supports), &symbol, &symbol##_check},
std::vector<Instance> build_table() {
  return {
#include "fastna_instances.inc"
  };
}
#undef FASTNA_INSTANCE
#undef FASTNA_BOX

#ifdef FASTNA_WITH_CUDA
std::string text(const std::string& s) { return s; }
std::string text(int x) { return std::to_string(x); }

// No iostreams: a GPU-machine build that pulled parts of libstdc++ in statically crashed in
// ostream's number formatting once torch's libstdc++ was loaded (locale facets of two copies).
template <class T>
std::string join(const std::set<T>& items) {
  std::string out;
  for (const T& x : items) out += (out.empty() ? "" : ", ") + text(x);
  return items.empty() ? std::string("none") : out;
}

// How the messages name an op.
std::string op_label(const std::string& op) {
  if (op == "fused_fwd") return "the fused forward";
  if (op == "fused_bwd") return "the fused backward";
  return op;
}

// Why no instance matches q (only built when a lookup fails: the lookup itself stays a scan).
std::string why_no_instance(const InstanceQuery& q) {
  const std::string where = "rank " + std::to_string(q.rank) + ", " + q.dtype;
  std::set<std::string> dtypes, tiles;
  std::set<int> dims;
  for (const Instance& i : instances()) {
    if (i.op != q.op) continue;
    dtypes.insert(i.dtype);
    if (i.rank != q.rank || i.dtype != q.dtype) continue;
    dims.insert(i.head_dim);
    if (i.head_dim == q.head_dim) tiles.insert(i.tile);
  }
  if (!dtypes.count(q.dtype))
    return "dtype " + q.dtype + " not supported by " + op_label(q.op) + " (built: " + join(dtypes) + ")";
  if (dims.empty())
    return "no instance of " + q.op + " for " + where + "; rebuild with FASTNA_RANKS / FASTNA_DTYPES including it";
  if (!dims.count(q.head_dim))
    return "head dim " + std::to_string(q.head_dim) + " not instantiated " +
           (q.op == "fused_bwd" ? "in the backward (fused_bwd) " : "") + "for " + where + " (built: " + join(dims) +
           "; rebuild with FASTNA_HEAD_DIMS including it and FASTNA_KERNELS including " + q.op + ")";
  return "tile '" + q.tile + "' not instantiated for " + where + ", head dim " + std::to_string(q.head_dim) +
         " (built: " + join(tiles) + ")";
}

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

const Instance* resolve(const InstanceQuery& q, const LaunchParams& lp, std::string* reason) {
  reason->clear();
#ifndef FASTNA_WITH_CUDA
  (void)q;
  (void)lp;
  *reason = "no CUDA kernels in this build";
  return nullptr;
#else
  std::vector<const Instance*> matching;
  for (const Instance& i : instances()) {
    if (i.op == q.op && i.rank == q.rank && i.head_dim == q.head_dim && i.tile == q.tile && i.dtype == q.dtype)
      matching.push_back(&i);
  }
  if (matching.empty()) {
    *reason = why_no_instance(q);
    return nullptr;
  }
  const int cc = device_cc();
  const Instance* best = nullptr;
  for (const Instance* i : matching) {
    const bool runs = i->arch_specific ? i->sm == cc : i->sm <= cc;
    if (runs && (!best || i->sm > best->sm)) best = i;
  }
  if (!best) {
    std::set<std::string> archs;
    for (const Instance* i : matching) archs.insert("sm" + i->arch);
    *reason = q.op + " tile '" + q.tile + "' (rank " + std::to_string(q.rank) + ", " + q.dtype +
              ") was compiled for " + join(archs) + ", none of which runs on this GPU (sm" + std::to_string(cc) +
              "); rebuild with FASTNA_CUDA_ARCHS including " + std::to_string(cc) + (cc == 90 ? "a" : "");
    return nullptr;
  }
  *reason = best->check(lp);
  return reason->empty() ? best : nullptr;
#endif
}

}  // namespace binding
}  // namespace fastna
