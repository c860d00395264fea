#include "bindings/args.hpp"

#include <pybind11/stl.h>

#include <cmath>
#include <vector>

namespace fastna {
namespace binding {

namespace {

template <typename V>
V get_or(const py::dict& d, const char* key, V fallback) {
  if (!d.contains(key) || d[key].is_none()) return fallback;
  return d[key].cast<V>();
}

template <typename V>
V get_required(const py::dict& d, const char* key) {
  if (!d.contains(key) || d[key].is_none()) {
    throw py::value_error(std::string("fastna: params is missing '") + key + "'");
  }
  return d[key].cast<V>();
}

// The strides of a (data_ptr, strides) tuple; sets t.ptr.
std::vector<int64_t> unpack_tensor_tuple(const py::object& obj, const char* name, TensorArg& t) {
  const auto tup = obj.cast<py::tuple>();
  if (tup.size() != 2) throw py::value_error(std::string("fastna: ") + name + " must be (data_ptr, strides)");
  t.ptr = tup[0].cast<uintptr_t>();
  return tup[1].cast<std::vector<int64_t>>();
}

}  // namespace

AxisParams checked_axis(int32_t L, int32_t K, int32_t s, int32_t d, bool causal) {
  if (L < 1 || K < 2 || s < 1 || s > K || d < 1 || int64_t(K) * d > L) {
    throw py::value_error("fastna: invalid axis parameters L=" + std::to_string(L) + " K=" + std::to_string(K) +
                          " stride=" + std::to_string(s) + " dilation=" + std::to_string(d) +
                          " (need K >= 2, 1 <= stride <= K, dilation >= 1, K * dilation <= L)");
  }
  AxisParams p;
  p.length = L;
  p.kernel = K;
  p.stride = s;
  p.dilation = d;
  p.causal = causal;
  return p;
}

std::string parse_params(const py::dict& params, LaunchParams& lp) {
  const std::string dtype = get_required<std::string>(params, "dtype");
  if (dtype != "float32" && dtype != "float16" && dtype != "bfloat16") {
    throw py::value_error("fastna: unsupported dtype '" + dtype + "' (float32, float16, bfloat16)");
  }
  const auto length = get_required<std::vector<int32_t>>(params, "length");
  const auto kernel = get_required<std::vector<int32_t>>(params, "kernel");
  const int rank = static_cast<int>(length.size());
  if (rank < 1 || rank > kMaxRank) {
    throw py::value_error("fastna: rank (len(length)) must be 1, 2 or 3, got " + std::to_string(rank));
  }
  const auto stride = get_or<std::vector<int32_t>>(params, "stride", std::vector<int32_t>(rank, 1));
  const auto dilation = get_or<std::vector<int32_t>>(params, "dilation", std::vector<int32_t>(rank, 1));
  const auto causal = get_or<std::vector<bool>>(params, "causal", std::vector<bool>(rank, false));
  if (int(kernel.size()) != rank || int(stride.size()) != rank || int(dilation.size()) != rank ||
      int(causal.size()) != rank) {
    throw py::value_error("fastna: length, kernel, stride, dilation and causal must all have rank entries");
  }
  lp.rank = rank;
  for (int a = 0; a < rank; ++a) lp.axis[a] = checked_axis(length[a], kernel[a], stride[a], dilation[a], causal[a]);
  lp.batch = get_required<int32_t>(params, "batch");
  lp.heads = get_required<int32_t>(params, "heads");
  lp.heads_kv = get_or<int32_t>(params, "heads_kv", lp.heads);
  lp.dim = get_required<int32_t>(params, "dim");
  lp.dim_v = get_or<int32_t>(params, "dim_v", lp.dim);
  lp.num_extra = get_or<int32_t>(params, "num_extra", 0);
  if (lp.batch < 1 || lp.heads < 1 || lp.heads_kv < 1 || lp.dim < 1 || lp.dim_v < 1 || lp.num_extra < 0) {
    throw py::value_error("fastna: batch, heads, heads_kv, dim, dim_v must be >= 1 and num_extra >= 0");
  }
  if (lp.heads % lp.heads_kv != 0) {
    throw py::value_error("fastna: heads (" + std::to_string(lp.heads) + ") must be a multiple of heads_kv (" +
                          std::to_string(lp.heads_kv) + ")");
  }
  lp.scale = get_or<float>(params, "scale", 1.f / std::sqrt(static_cast<float>(lp.dim)));
  return dtype;
}

std::string tile_of(const py::dict& params) { return get_or<std::string>(params, "tile", "default"); }

TensorArg tensor_arg(const py::object& obj, const char* name, int ndim) {
  TensorArg t;
  if (obj.is_none()) return t;
  const auto strides = unpack_tensor_tuple(obj, name, t);
  if (int(strides.size()) != ndim) {
    throw py::value_error(std::string("fastna: ") + name + " needs " + std::to_string(ndim) + " strides, got " +
                          std::to_string(strides.size()));
  }
  t.ndim = ndim;
  for (int i = 0; i < ndim; ++i) t.strides[i] = strides[i];
  return t;
}

TensorArg contiguous_arg(const py::object& obj, const char* name, const LaunchParams& lp, bool with_window) {
  TensorArg t;
  if (obj.is_none()) return t;
  const auto strides = unpack_tensor_tuple(obj, name, t);
  int64_t W = 1;
  for (int a = 0; a < lp.rank; ++a) W *= lp.axis[a].kernel;
  W += lp.num_extra;
  std::vector<int64_t> flat{0, lp.heads};
  std::vector<int64_t> spatial;
  for (int a = 0; a < lp.rank; ++a) spatial.push_back(lp.axis[a].length);
  spatial.push_back(lp.heads);
  int64_t n = 1;
  for (int a = 0; a < lp.rank; ++a) n *= lp.axis[a].length;
  flat[0] = n;
  if (with_window) {
    flat.push_back(W);
    spatial.push_back(W);
  }
  auto expected = [](const std::vector<int64_t>& sizes) {
    std::vector<int64_t> st(sizes.size() + 1);
    int64_t acc = 1;
    for (int i = int(sizes.size()); i >= 1; --i) {
      st[i] = acc;
      acc *= sizes[i - 1];
    }
    st[0] = acc;
    return st;
  };
  if (strides != expected(flat) && strides != expected(spatial)) {
    throw py::value_error(std::string("fastna: ") + name + " must be a contiguous fp32 tensor of shape [B, N, H" +
                          (with_window ? ", W]" : "]"));
  }
  return t;
}

void require(const TensorArg& t, const char* prefix, const char* name) {
  if (!t.present()) throw py::value_error(std::string("fastna: ") + prefix + name + " is required");
}

const Instance& resolve_or_raise(const InstanceQuery& q, const LaunchParams& lp, const char* prefix) {
  if (!built_with_cuda()) {
    throw std::runtime_error(
        "fastna was built without CUDA kernels (FASTNA_CUDA_ARCHS=none, no nvcc or no GPU at build "
        "time); reinstall with e.g. FASTNA_CUDA_ARCHS=\"80;90a\" pip install --no-build-isolation .");
  }
  std::string reason;
  const Instance* inst = resolve(q, lp, &reason);
  if (!inst) throw py::value_error(std::string("fastna: ") + prefix + reason);
  return *inst;
}

void run(const Instance& inst, const LaunchParams& lp) {
  py::gil_scoped_release release;
  inst.fn(lp);
}

}  // namespace binding
}  // namespace fastna
