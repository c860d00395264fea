// fastna._C: the thin binding of docs/INTERNALS.md.  It takes raw device pointers, element
// strides and the stream as integers, so it never links libtorch and survives torch upgrades;
// torch integration (custom ops, autograd) lives in python/fastna.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "dispatch.hpp"
#include "fastna/small/shape.hpp"
#include "fastna/common/index_math.hpp"
#include "launch_params.hpp"

namespace py = pybind11;
using fastna::AxisParams;
using fastna::Range;
using fastna::binding::LaunchParams;
using fastna::binding::TensorArg;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

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

// Fills the problem part of LaunchParams from the params dict; returns the dtype string.
std::string parse_params(const py::dict& params, LaunchParams& lp) {
  const std::string dtype = get_required<std::string>(params, "dtype");
  if (dtype != "float32" && dtype != "float16" && dtype != "bfloat16") {
    throw py::value_error("fastna: unsupported dtype '" + dtype + "' (float32, float16, bfloat16)");
  }
  const auto length = get_required<std::vector<int32_t>>(params, "length");
  const auto kernel = get_required<std::vector<int32_t>>(params, "kernel");
  const int rank = static_cast<int>(length.size());
  if (rank < 1 || rank > fastna::binding::kMaxRank) {
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

TensorArg tensor_arg(const py::object& obj, const char* name, int ndim) {
  TensorArg t;
  if (obj.is_none()) return t;
  const auto tup = obj.cast<py::tuple>();
  if (tup.size() != 2) throw py::value_error(std::string("fastna: ") + name + " must be (data_ptr, strides)");
  t.ptr = tup[0].cast<uintptr_t>();
  const auto strides = tup[1].cast<std::vector<int64_t>>();
  if (int(strides.size()) != ndim) {
    throw py::value_error(std::string("fastna: ") + name + " needs " + std::to_string(ndim) + " strides, got " +
                          std::to_string(strides.size()));
  }
  t.ndim = ndim;
  for (int i = 0; i < ndim; ++i) t.strides[i] = strides[i];
  return t;
}

// attn/dattn/lse are fp32 scratch the kernels index as contiguous rows, so other layouts are
// rejected rather than silently misread.  Both [B, N, ...] and [B, *spatial, ...] are accepted.
TensorArg contiguous_arg(const py::object& obj, const char* name, const LaunchParams& lp, bool with_window) {
  TensorArg t;
  if (obj.is_none()) return t;
  const auto tup = obj.cast<py::tuple>();
  if (tup.size() != 2) throw py::value_error(std::string("fastna: ") + name + " must be (data_ptr, strides)");
  t.ptr = tup[0].cast<uintptr_t>();
  const auto strides = tup[1].cast<std::vector<int64_t>>();
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

void require(const TensorArg& t, const char* name) {
  if (!t.present()) throw py::value_error(std::string("fastna: ") + name + " is required");
}

void launch(const char* kernel, const std::string& dtype, const LaunchParams& lp) {
  const fastna::binding::LaunchFn fn = fastna::binding::find_instance(kernel, lp.rank, dtype);
  py::gil_scoped_release release;
  fn(lp);
}

void naive_forward(const py::dict& params, py::object q, py::object k, py::object v, py::object extra_k,
                   py::object extra_v, py::object attn, py::object out, py::object lse, uintptr_t stream) {
  LaunchParams lp;
  const std::string dtype = parse_params(params, lp);
  const int nd = lp.rank + 3;
  lp.q = tensor_arg(q, "q", nd);
  lp.k = tensor_arg(k, "k", nd);
  lp.v = tensor_arg(v, "v", nd);
  lp.extra_k = tensor_arg(extra_k, "extra_k", 4);
  lp.extra_v = tensor_arg(extra_v, "extra_v", 4);
  lp.out = tensor_arg(out, "out", nd);
  lp.attn = contiguous_arg(attn, "attn", lp, true);
  lp.lse = contiguous_arg(lse, "lse", lp, false);
  require(lp.q, "q");
  require(lp.k, "k");
  require(lp.v, "v");
  require(lp.out, "out");
  if (lp.num_extra > 0) {
    require(lp.extra_k, "extra_k");
    require(lp.extra_v, "extra_v");
  }
  lp.stream = stream;
  launch("naive_fwd", dtype, lp);
}

void naive_backward(const py::dict& params, py::object q, py::object k, py::object v, py::object extra_k,
                    py::object extra_v, py::object attn, py::object dout, py::object dq, py::object dk,
                    py::object dv, py::object dextra_k, py::object dextra_v, py::object dattn, uintptr_t stream) {
  LaunchParams lp;
  const std::string dtype = parse_params(params, lp);
  const int nd = lp.rank + 3;
  lp.q = tensor_arg(q, "q", nd);
  lp.k = tensor_arg(k, "k", nd);
  lp.v = tensor_arg(v, "v", nd);
  lp.extra_k = tensor_arg(extra_k, "extra_k", 4);
  lp.extra_v = tensor_arg(extra_v, "extra_v", 4);
  lp.attn = contiguous_arg(attn, "attn", lp, true);
  lp.dout = tensor_arg(dout, "dout", nd);
  lp.dq = tensor_arg(dq, "dq", nd);
  lp.dk = tensor_arg(dk, "dk", nd);
  lp.dv = tensor_arg(dv, "dv", nd);
  lp.dextra_k = tensor_arg(dextra_k, "dextra_k", 4);
  lp.dextra_v = tensor_arg(dextra_v, "dextra_v", 4);
  lp.dattn = contiguous_arg(dattn, "dattn", lp, true);
  require(lp.q, "q");
  require(lp.k, "k");
  require(lp.v, "v");
  require(lp.dout, "dout");
  if (lp.num_extra > 0) {
    require(lp.extra_k, "extra_k");
    require(lp.extra_v, "extra_v");
  }
  if (lp.attn.present() && lp.attn.ptr == lp.dattn.ptr) {
    throw py::value_error("fastna: attn and dattn must be different buffers");
  }
  lp.stream = stream;
  launch("naive_bwd", dtype, lp);
}

// ---- fused forward ------------------------------------------------------------------------
// Every condition fused::Forward::can_implement checks is checked here first, so that the
// ValueError names the one that failed (the Python backend's check() mirrors these).

std::string join_ints(const std::set<int>& v) {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : ", ") + std::to_string(x);
  return s.empty() ? "none" : s;
}

// 16-byte rows: strides in multiples of 8 elements (16-bit) or 4 (float32).
void check_fused_view(const TensorArg& t, const char* name, int rank, const std::string& dtype) {
  const int64_t vec = dtype == "float32" ? 4 : 8;
  if (!t.present()) throw py::value_error(std::string("fastna: fused: ") + name + " is required");
  const int nd = rank + 3;
  if (t.strides[nd - 1] != 1) {
    throw py::value_error(std::string("fastna: fused: stride_dim != 1 (") + name + " has stride " +
                          std::to_string(t.strides[nd - 1]) + " along the head dim; make it contiguous there)");
  }
  if (t.ptr % 16 != 0) {
    throw py::value_error(std::string("fastna: fused: ") + name + " data pointer is not 16-byte aligned");
  }
  for (int i = 0; i < nd - 1; ++i) {
    if (t.strides[i] % vec != 0) {
      throw py::value_error(std::string("fastna: fused: ") + name + " strides must be multiples of " +
                            std::to_string(vec) + " elements (16 bytes) for " + dtype + ", got stride " +
                            std::to_string(t.strides[i]) + " on dim " + std::to_string(i));
    }
  }
}

// Problem-level conditions shared by the fused forward and backward (ValueError naming the one
// that failed); returns the dtype string.  float32 (parse_params takes float32, float16,
// bfloat16): the forward only, on TF32 tensor cores.
std::string fused_problem_checks(const py::dict& params, LaunchParams& lp, bool forward) {
  const std::string dtype = parse_params(params, lp);
  if (!forward && dtype != "float16" && dtype != "bfloat16") {
    throw py::value_error("fastna: fused: dtype " + dtype + " not supported by the fused backward (float16, "
                          "bfloat16; float32 gradients run the naive backward)");
  }
  if (lp.dim_v != lp.dim) {
    throw py::value_error("fastna: fused: Dv != D (D=" + std::to_string(lp.dim) + ", Dv=" +
                          std::to_string(lp.dim_v) + ")");
  }
  if (lp.num_extra > 0) throw py::value_error("fastna: fused: additional KV tokens not supported yet");
  if (lp.batch > 65535 || lp.heads > 65535) {
    throw py::value_error("fastna: fused: batch (" + std::to_string(lp.batch) + ") and heads (" +
                          std::to_string(lp.heads) + ") must be <= 65535");
  }
  return dtype;
}

// Head dims compiled for (kernel, rank, dtype) and the tiles of lp.dim; ValueError when lp.dim
// is missing.  Host-only builds skip the check (find_instance then says there is no CUDA).
std::set<std::string> fused_tiles_checked(const char* kernel, const LaunchParams& lp, const std::string& dtype) {
  std::set<int> dims;
  std::set<std::string> tiles;
  for (const auto& i : fastna::binding::instances()) {
    if (i.kernel != kernel || i.rank != lp.rank || i.dtype != dtype) continue;
    dims.insert(i.head_dim);
    if (i.head_dim == lp.dim) tiles.insert(i.tile);
  }
  if (fastna::binding::built_with_cuda() && !dims.count(lp.dim)) {
    throw py::value_error(std::string("fastna: fused: head dim ") + std::to_string(lp.dim) + " not instantiated " +
                          (std::string(kernel) == "fused_bwd" ? "in the backward (fused_bwd) " : "") + "for rank " +
                          std::to_string(lp.rank) + ", " + dtype + " (built: " + join_ints(dims) +
                          "; rebuild with FASTNA_HEAD_DIMS including it" +
                          (std::string(kernel) == "fused_bwd" ? " and FASTNA_KERNELS including fused_bwd" : "") + ")");
  }
  return tiles;
}

// Whether the small-window forward (fused_fwd tile "small") takes lp's windows.
bool small_window_fits(const LaunchParams& lp) {
  if (lp.rank == 1) return fastna::fused::small_window_fits<1>(lp.axis);
  if (lp.rank == 2) return fastna::fused::small_window_fits<2>(lp.axis);
  return false;
}

// params["allow_small"] (the Python wrapper sets it when the tile is its automatic choice or
// "hopper"): run the small-window tile instead where it is compiled and the windows fit it.
void fused_forward(const py::dict& params, py::object q, py::object k, py::object v, py::object out,
                   py::object lse, uintptr_t stream) {
  LaunchParams lp;
  const std::string dtype = fused_problem_checks(params, lp, true);
  const std::string tile = get_or<std::string>(params, "tile", "default");
  const int nd = lp.rank + 3;
  lp.q = tensor_arg(q, "q", nd);
  lp.k = tensor_arg(k, "k", nd);
  lp.v = tensor_arg(v, "v", nd);
  lp.out = tensor_arg(out, "out", nd);
  lp.lse = contiguous_arg(lse, "lse", lp, false);
  check_fused_view(lp.q, "q", lp.rank, dtype);
  check_fused_view(lp.k, "k", lp.rank, dtype);
  check_fused_view(lp.v, "v", lp.rank, dtype);
  check_fused_view(lp.out, "out", lp.rank, dtype);
  if (lp.lse.present() && lp.lse.ptr % 4 != 0) throw py::value_error("fastna: fused: lse is not 4-byte aligned");

  // Head dims and tiles compiled for this (rank, dtype), for the messages.
  const std::set<std::string> tiles = fused_tiles_checked("fused_fwd", lp, dtype);
  if (fastna::binding::built_with_cuda() && !tiles.count(tile)) {
    std::string known;
    for (const auto& t : tiles) known += (known.empty() ? "" : ", ") + t;
    throw py::value_error("fastna: fused: tile '" + tile + "' not instantiated for rank " +
                          std::to_string(lp.rank) + ", " + dtype + ", head dim " + std::to_string(lp.dim) +
                          " (built: " + known + ")");
  }
  lp.stream = stream;
  const bool small = get_or<bool>(params, "allow_small", false) && tiles.count("small") && small_window_fits(lp);
  const fastna::binding::LaunchFn fn =
      fastna::binding::find_instance("fused_fwd", lp.rank, dtype, lp.dim, small ? std::string("small") : tile);
  py::gil_scoped_release release;
  fn(lp);
}

// ---- fused backward -----------------------------------------------------------------------
// Same conditions as the forward, plus: out/dout/dq/dk/dv as fused views, lse required, dlse and
// workspace optional, all three fp32 contiguous [B, N, H].  params["tile"] picks a fused_bwd tile
// when one of that name is compiled, else the default boxes (the forward's tile variants only
// change how out/lse were computed, not their values).
void fused_backward(const py::dict& params, py::object q, py::object k, py::object v, py::object out,
                    py::object dout, py::object lse, py::object dlse, py::object dq, py::object dk, py::object dv,
                    uintptr_t stream, py::object workspace) {
  LaunchParams lp;
  const std::string dtype = fused_problem_checks(params, lp, false);
  const int nd = lp.rank + 3;
  lp.q = tensor_arg(q, "q", nd);
  lp.k = tensor_arg(k, "k", nd);
  lp.v = tensor_arg(v, "v", nd);
  lp.out = tensor_arg(out, "out", nd);
  lp.dout = tensor_arg(dout, "dout", nd);
  lp.dq = tensor_arg(dq, "dq", nd);
  lp.dk = tensor_arg(dk, "dk", nd);
  lp.dv = tensor_arg(dv, "dv", nd);
  lp.lse = contiguous_arg(lse, "lse", lp, false);
  lp.dlse = contiguous_arg(dlse, "dlse", lp, false);
  lp.workspace = contiguous_arg(workspace, "workspace", lp, false);
  check_fused_view(lp.q, "q", lp.rank, dtype);
  check_fused_view(lp.k, "k", lp.rank, dtype);
  check_fused_view(lp.v, "v", lp.rank, dtype);
  check_fused_view(lp.out, "out", lp.rank, dtype);
  check_fused_view(lp.dout, "dout", lp.rank, dtype);
  check_fused_view(lp.dq, "dq", lp.rank, dtype);
  check_fused_view(lp.dk, "dk", lp.rank, dtype);
  check_fused_view(lp.dv, "dv", lp.rank, dtype);
  if (!lp.lse.present()) throw py::value_error("fastna: fused: lse is required by the backward");
  if (lp.lse.ptr % 4 != 0) throw py::value_error("fastna: fused: lse is not 4-byte aligned");
  if (lp.dlse.present() && lp.dlse.ptr % 4 != 0) throw py::value_error("fastna: fused: dlse is not 4-byte aligned");
  if (lp.workspace.present() && lp.workspace.ptr % 4 != 0)
    throw py::value_error("fastna: fused: workspace is not 4-byte aligned");
  for (const TensorArg* g : {&lp.dq, &lp.dk, &lp.dv}) {
    for (const TensorArg* in : {&lp.q, &lp.k, &lp.v, &lp.out, &lp.dout}) {
      if (g->ptr == in->ptr) throw py::value_error("fastna: fused: dq/dk/dv must not alias the inputs");
    }
  }
  if (lp.dq.ptr == lp.dk.ptr || lp.dq.ptr == lp.dv.ptr || lp.dk.ptr == lp.dv.ptr)
    throw py::value_error("fastna: fused: dq, dk and dv must be different buffers");
  if (lp.workspace.present() && (lp.workspace.ptr == lp.lse.ptr || lp.workspace.ptr == lp.dlse.ptr))
    throw py::value_error("fastna: fused: workspace must not alias lse or dlse");

  const std::set<std::string> tiles = fused_tiles_checked("fused_bwd", lp, dtype);
  std::string tile = get_or<std::string>(params, "tile", "default");
  if (!tiles.count(tile)) tile = "default";
  lp.stream = stream;
  const fastna::binding::LaunchFn fn = fastna::binding::find_instance("fused_bwd", lp.rank, dtype, lp.dim, tile);
  py::gil_scoped_release release;
  fn(lp);
}

// ---- gemm_na: GEMM-based unfused NA (PN / NN / IN) --------------------------------------------
// fp16 / bf16, and fp32 on TF32 tensor cores; built with FASTNA_KERNELS including gemm_na, used by
// backend "gemm" of fastna.ops_unfused (python/fastna/backends/gemm_unfused.py).
// Every condition of gemm_na::PN / GatherOp::can_implement is checked here first so the ValueError
// names it; the instance's can_implement is the last guard (ValueError with the CUTLASS status).

int gemm_elem_bytes(const std::string& dtype) { return dtype == "float32" ? 4 : 2; }

void check_gemm_view(const TensorArg& t, const char* name, int rank, const std::string& dtype) {
  if (!t.present()) throw py::value_error(std::string("fastna: gemm: ") + name + " is required");
  // cp.async moves 16-byte chunks of a token row.
  const int64_t vec = 16 / gemm_elem_bytes(dtype);
  const int nd = rank + 3;
  if (t.strides[nd - 1] != 1) {
    throw py::value_error(std::string("fastna: gemm: stride_dim != 1 (") + name + " has stride " +
                          std::to_string(t.strides[nd - 1]) + " along the head dim; make it contiguous there)");
  }
  if (t.ptr % 16 != 0) throw py::value_error(std::string("fastna: gemm: ") + name + " data pointer is not 16-byte aligned");
  for (int i = 0; i < nd - 1; ++i) {
    if (t.strides[i] % vec != 0) {
      throw py::value_error(std::string("fastna: gemm: ") + name + " strides must be multiples of " +
                            std::to_string(vec) + " elements (16 bytes) for " + dtype + ", got stride " +
                            std::to_string(t.strides[i]) + " on dim " + std::to_string(i));
    }
  }
}

// attn (PN output, NN / IN input): contiguous [B, N, H, prod(K)] or [B, *S, H, prod(K)] in the
// input dtype (fp32 for fp32 inputs; the naive kernels' attn is always fp32).
TensorArg gemm_attn_arg(const py::object& obj, const char* name, const LaunchParams& lp, const std::string& dtype) {
  if (obj.is_none()) throw py::value_error(std::string("fastna: gemm: ") + name + " is required");
  const auto tup = obj.cast<py::tuple>();
  if (tup.size() != 2) throw py::value_error(std::string("fastna: gemm: ") + name + " must be (data_ptr, strides)");
  TensorArg t;
  t.ptr = tup[0].cast<uintptr_t>();
  const auto strides = tup[1].cast<std::vector<int64_t>>();
  int64_t W = 1, n = 1;
  for (int a = 0; a < lp.rank; ++a) {
    W *= lp.axis[a].kernel;
    n *= lp.axis[a].length;
  }
  auto expected = [](const std::vector<int64_t>& sizes) {
    std::vector<int64_t> st(sizes.size());
    int64_t acc = 1;
    for (int i = int(sizes.size()) - 1; i >= 0; --i) {
      st[i] = acc;
      acc *= sizes[i];
    }
    return st;
  };
  std::vector<int64_t> flat{lp.batch, n, lp.heads, W};
  std::vector<int64_t> spatial{lp.batch};
  for (int a = 0; a < lp.rank; ++a) spatial.push_back(lp.axis[a].length);
  spatial.push_back(lp.heads);
  spatial.push_back(W);
  const bool is_flat = strides == expected(flat);
  if (!is_flat && strides != expected(spatial)) {
    throw py::value_error(std::string("fastna: gemm: ") + name + " must be a contiguous " + dtype +
                          " tensor of shape [B, N, H, prod(kernel)] or [B, *spatial, H, prod(kernel)]");
  }
  if (t.ptr == 0 || t.ptr % gemm_elem_bytes(dtype) != 0)
    throw py::value_error(std::string("fastna: gemm: ") + name + " pointer is null or misaligned");
  t.ndim = int(strides.size());
  for (int i = 0; i < t.ndim; ++i) t.strides[i] = strides[i];
  return t;
}

// Problem-level conditions; `head_dim` is the instance head dim the op needs (PN: dim; NN / IN:
// dim_v).  Returns the dtype string.
std::string gemm_problem_checks(const py::dict& params, LaunchParams& lp, bool pn) {
  const std::string dtype = parse_params(params, lp);
  if (dtype != "float16" && dtype != "bfloat16" && dtype != "float32")
    throw py::value_error("fastna: gemm: dtype " + dtype + " not supported (float16, bfloat16, float32)");
  if (lp.num_extra > 0)
    throw py::value_error("fastna: gemm: additional KV tokens not supported (num_extra must be 0; the caller "
                          "handles the extra slots)");
  for (int a = 0; a < lp.rank; ++a) {
    if (lp.axis[a].stride != 1)
      throw py::value_error("fastna: gemm: stride != 1 not supported (legacy qk/av ops; axis " + std::to_string(a) +
                            " has stride " + std::to_string(lp.axis[a].stride) + ")");
  }
  if (lp.batch > 65535 || lp.heads > 65535) {
    throw py::value_error("fastna: gemm: batch (" + std::to_string(lp.batch) + ") and heads (" +
                          std::to_string(lp.heads) + ") must be <= 65535");
  }
  const int hd = pn ? lp.dim : lp.dim_v;
  std::set<int> dims;
  for (const auto& i : fastna::binding::instances())
    if (i.kernel == "gemm_na" && i.rank == lp.rank && i.dtype == dtype) dims.insert(i.head_dim);
  if (fastna::binding::built_with_cuda() && !dims.count(hd)) {
    throw py::value_error("fastna: gemm: head dim " + std::to_string(hd) + " not instantiated for rank " +
                          std::to_string(lp.rank) + ", " + dtype + " (built: " + join_ints(dims) +
                          "; rebuild with FASTNA_KERNELS including gemm_na and FASTNA_HEAD_DIMS including it)");
  }
  return dtype;
}

void gemm_launch_op(const std::string& dtype, int head_dim, const LaunchParams& lp) {
  const fastna::binding::LaunchFn fn = fastna::binding::find_instance("gemm_na", lp.rank, dtype, head_dim);
  py::gil_scoped_release release;
  fn(lp);
}

void gemm_qk(const py::dict& params, py::object q, py::object k, py::object rpb, py::object attn, uintptr_t stream) {
  LaunchParams lp;
  const std::string dtype = gemm_problem_checks(params, lp, true);
  const int nd = lp.rank + 3;
  lp.gemm_op = fastna::binding::kGemmPN;
  lp.q = tensor_arg(q, "q", nd);
  lp.k = tensor_arg(k, "k", nd);
  check_gemm_view(lp.q, "q", lp.rank, dtype);
  check_gemm_view(lp.k, "k", lp.rank, dtype);
  lp.attn = gemm_attn_arg(attn, "attn", lp, dtype);
  if (!rpb.is_none()) {
    lp.rpb = tensor_arg(rpb, "rpb", lp.rank + 1);
    for (int a = 0; a < lp.rank; ++a) {
      if (lp.axis[a].causal || lp.axis[a].kernel % 2 == 0)
        throw py::value_error("fastna: gemm: rpb needs an odd kernel on every axis and no causal axis");
    }
    int64_t acc = 1;
    for (int i = lp.rank; i >= 1; --i) {
      if (lp.rpb.strides[i] != acc)
        throw py::value_error("fastna: gemm: rpb must be a contiguous " + dtype + " tensor [H, 2K_1-1, ...]");
      acc *= 2 * lp.axis[i - 1].kernel - 1;
    }
    if (lp.rpb.strides[0] != acc && lp.heads > 1)
      throw py::value_error("fastna: gemm: rpb must be a contiguous " + dtype + " tensor [H, 2K_1-1, ...]");
    if (lp.rpb.ptr % gemm_elem_bytes(dtype) != 0) throw py::value_error("fastna: gemm: rpb pointer is misaligned");
  }
  if (lp.attn.ptr == lp.q.ptr || lp.attn.ptr == lp.k.ptr)
    throw py::value_error("fastna: gemm: attn must not alias q or k");
  lp.stream = stream;
  gemm_launch_op(dtype, lp.dim, lp);
}

// NN (gemm_op kGemmNN) and IN (kGemmIN): out = attn (.) x with dim_v columns.
void gemm_gather(bool inverse, const py::dict& params, py::object attn, py::object x, py::object out,
                 uintptr_t stream) {
  LaunchParams lp;
  const std::string dtype = gemm_problem_checks(params, lp, false);
  const int nd = lp.rank + 3;
  lp.gemm_op = inverse ? fastna::binding::kGemmIN : fastna::binding::kGemmNN;
  TensorArg& xa = inverse ? lp.dout : lp.v;
  TensorArg& oa = inverse ? lp.dv : lp.out;
  xa = tensor_arg(x, inverse ? "x" : "v", nd);
  oa = tensor_arg(out, "out", nd);
  check_gemm_view(xa, inverse ? "x" : "v", lp.rank, dtype);
  check_gemm_view(oa, "out", lp.rank, dtype);
  lp.attn = gemm_attn_arg(attn, "attn", lp, dtype);
  if (oa.ptr == xa.ptr || oa.ptr == lp.attn.ptr) throw py::value_error("fastna: gemm: out must not alias attn or x");
  lp.stream = stream;
  gemm_launch_op(dtype, lp.dim_v, lp);
}

// Softmax of the attention weights for backend "gemm" (forward: in place, optional lse) and its
// backward (in place: attn s -> P, dattn dP -> dS).  attn / dattn as for gemm_qk; lse / delta
// contiguous fp32 [B, N, H] (or [B, *spatial, H]).  Runs on the instance of (rank, dtype, dim).
void gemm_softmax(const py::dict& params, py::object attn, py::object lse, uintptr_t stream) {
  LaunchParams lp;
  const std::string dtype = gemm_problem_checks(params, lp, true);
  lp.gemm_op = fastna::binding::kGemmSoftmax;
  lp.attn = gemm_attn_arg(attn, "attn", lp, dtype);
  lp.lse = contiguous_arg(lse, "lse", lp, false);
  if (lp.lse.present() && lp.lse.ptr % 4 != 0) throw py::value_error("fastna: gemm: lse pointer is misaligned");
  lp.stream = stream;
  gemm_launch_op(dtype, lp.dim, lp);
}

void gemm_softmax_backward(const py::dict& params, py::object attn, py::object dattn, py::object lse,
                           py::object delta, uintptr_t stream) {
  LaunchParams lp;
  const std::string dtype = gemm_problem_checks(params, lp, true);
  lp.gemm_op = fastna::binding::kGemmSoftmaxBwd;
  lp.attn = gemm_attn_arg(attn, "attn", lp, dtype);
  lp.dattn = gemm_attn_arg(dattn, "dattn", lp, dtype);
  lp.lse = contiguous_arg(lse, "lse", lp, false);
  lp.dlse = contiguous_arg(delta, "delta", lp, false);
  require(lp.lse, "lse");
  require(lp.dlse, "delta");
  if (lp.lse.ptr % 4 != 0 || lp.dlse.ptr % 4 != 0)
    throw py::value_error("fastna: gemm: lse / delta pointer is misaligned");
  if (lp.attn.ptr == lp.dattn.ptr) throw py::value_error("fastna: gemm: attn and dattn must not alias");
  lp.stream = stream;
  gemm_launch_op(dtype, lp.dim, lp);
}

py::list str_list(const char* csv) {
  py::list out;
  for (const auto& s : split(csv)) out.append(s);
  return out;
}

py::list int_list(const char* csv) {
  py::list out;
  for (const auto& s : split(csv)) out.append(std::stoi(s));
  return out;
}

py::dict build_info() {
  py::dict d;
  d["version"] = FASTNA_VERSION;
  d["cuda"] = fastna::binding::built_with_cuda();
  d["archs"] = str_list(FASTNA_BUILD_ARCHS);
  d["ranks"] = int_list(FASTNA_BUILD_RANKS);
  d["dtypes"] = str_list(FASTNA_BUILD_DTYPES);
  d["kernels"] = str_list(FASTNA_BUILD_KERNELS);
  d["head_dims"] = int_list(FASTNA_BUILD_HEAD_DIMS);
  // "instances": one (kernel, rank, dtype, sm) per compiled combination (fused head dims and
  // tiles folded together); "fused_instances": (rank, dtype, head_dim, tile, sm, arch) of fused_fwd,
  // arch as configured ("90a" runs only on compute capability 9.0 exactly); "fused_bwd_instances"
  // the same for fused_bwd.
  py::list inst, fused, fused_bwd, gemm;
  std::set<std::tuple<std::string, int, std::string, int>> seen;
  for (const auto& i : fastna::binding::instances()) {
    if (seen.insert(std::make_tuple(i.kernel, i.rank, i.dtype, i.sm)).second)
      inst.append(py::make_tuple(i.kernel, i.rank, i.dtype, i.sm));
    if (i.kernel == "fused_fwd") fused.append(py::make_tuple(i.rank, i.dtype, i.head_dim, i.tile, i.sm, i.arch));
    if (i.kernel == "fused_bwd")
      fused_bwd.append(py::make_tuple(i.rank, i.dtype, i.head_dim, i.tile, i.sm, i.arch));
    if (i.kernel == "gemm_na") gemm.append(py::make_tuple(i.rank, i.dtype, i.head_dim, i.tile, i.sm, i.arch));
  }
  d["instances"] = inst;
  d["fused_instances"] = fused;
  d["fused_bwd_instances"] = fused_bwd;
  d["gemm_instances"] = gemm;
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastna compiled kernels (see docs/INTERNALS.md)";
  m.def("build_info", &build_info, "What this build holds: archs, ranks, dtypes, kernels, instances");
  m.def(
      "window",
      [](int32_t L, int32_t K, int32_t s, int32_t d, bool causal, int32_t i) {
        const AxisParams p = checked_axis(L, K, s, d, causal);
        if (i < 0 || i >= L) throw py::value_error("fastna: query index out of range");
        const Range r = fastna::window(p, i);
        return py::make_tuple(r.begin, r.end);
      },
      py::arg("L"), py::arg("K"), py::arg("s"), py::arg("d"), py::arg("causal"), py::arg("i"),
      "Window [start, end) of query i, group-local coordinates (DESIGN.md section 1)");
  m.def(
      "inverse_window",
      [](int32_t L, int32_t K, int32_t s, int32_t d, bool causal, int32_t j) {
        const AxisParams p = checked_axis(L, K, s, d, causal);
        if (j < 0 || j >= L) throw py::value_error("fastna: key index out of range");
        const Range r = fastna::inverse_window(p, j);
        return py::make_tuple(r.begin, r.end);
      },
      py::arg("L"), py::arg("K"), py::arg("s"), py::arg("d"), py::arg("causal"), py::arg("j"),
      "Group-local queries [begin, end) whose windows contain key j");
  m.def("naive_forward", &naive_forward, py::arg("params"), py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("extra_k"), py::arg("extra_v"), py::arg("attn"), py::arg("out"), py::arg("lse"),
        py::arg("stream") = 0);
  m.def("naive_backward", &naive_backward, py::arg("params"), py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("extra_k"), py::arg("extra_v"), py::arg("attn"), py::arg("dout"), py::arg("dq"), py::arg("dk"),
        py::arg("dv"), py::arg("dextra_k"), py::arg("dextra_v"), py::arg("dattn"), py::arg("stream") = 0);
  m.def("fused_forward", &fused_forward, py::arg("params"), py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("out"), py::arg("lse"), py::arg("stream") = 0,
        "Fused NA forward (fp16/bf16; params may hold \"tile\": \"default\" or a variant listed in "
        "build_info()[\"fused_instances\"]); lse may be None");
  m.def(
      "fused_small_fits",
      [](const py::dict& params) {
        LaunchParams lp;
        parse_params(params, lp);
        return small_window_fits(lp);
      },
      py::arg("params"),
      "Whether the small-window fused forward (tile \"small\") takes these windows (params as for "
      "fused_forward; ranks 1 and 2)");
  m.def("fused_backward", &fused_backward, py::arg("params"), py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("out"), py::arg("dout"), py::arg("lse"), py::arg("dlse"), py::arg("dq"), py::arg("dk"),
        py::arg("dv"), py::arg("stream") = 0, py::arg("workspace") = py::none(),
        "Fused NA backward (fp16/bf16, deterministic: no atomics); lse is the forward's, dlse (gradient "
        "into lse) may be None; workspace: fp32 contiguous [B, N, H] for delta, or None to allocate it "
        "stream-ordered (cudaMallocAsync)");
  m.def("gemm_qk", &gemm_qk, py::arg("params"), py::arg("q"), py::arg("k"), py::arg("rpb"), py::arg("attn"),
        py::arg("stream") = 0,
        "GEMM-based qk (PN; fp16/bf16, fp32 on TF32 tensor cores): attn[b, n, h, w] = q . k of window slot w "
        "(+ rpb); causal slots past the window = -inf; attn contiguous [B, N, H, prod(K)] in the input dtype "
        "(see INTERNALS.md)");
  m.def(
      "gemm_av",
      [](const py::dict& params, py::object attn, py::object v, py::object out, uintptr_t stream) {
        gemm_gather(false, params, attn, v, out, stream);
      },
      py::arg("params"), py::arg("attn"), py::arg("v"), py::arg("out"), py::arg("stream") = 0,
      "GEMM-based av (NN): out[b, i, h] = sum_w attn[b, i, h, w] v[n(i, w), h_kv] (dim_v columns)");
  m.def(
      "gemm_inverse",
      [](const py::dict& params, py::object attn, py::object x, py::object out, uintptr_t stream) {
        gemm_gather(true, params, attn, x, out, stream);
      },
      py::arg("params"), py::arg("attn"), py::arg("x"), py::arg("out"), py::arg("stream") = 0,
      "GEMM-based inverse neighborhood (IN): out[b, j, h_kv] = sum over the GQA group's heads h and "
      "queries i with j in N(i) of attn[b, i, h, w(i, j)] x[b, i, h] (dim_v columns)");
  m.def("gemm_softmax", &gemm_softmax, py::arg("params"), py::arg("attn"), py::arg("lse"), py::arg("stream") = 0,
        "Softmax of the gemm attention weights in place: attn = softmax(scale * attn) over the window slots "
        "(fp32 math, -inf slots -> 0); lse (fp32 [B, N, H], or None) = logsumexp(scale * attn)");
  m.def("gemm_softmax_backward", &gemm_softmax_backward, py::arg("params"), py::arg("attn"), py::arg("dattn"),
        py::arg("lse"), py::arg("delta"), py::arg("stream") = 0,
        "Softmax backward in place: attn (logits s) -> P = exp(scale s - lse); dattn (dP) -> "
        "dS = scale P (dP - delta), 0 where P = 0; delta = rowsum(dO O) - dlse (fp32 [B, N, H])");
}
