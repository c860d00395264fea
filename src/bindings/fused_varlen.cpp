// fused_varlen_forward / fused_varlen_backward: a packed batch of samples of different shapes
// and window parameters through the varlen instances (ops fused_fwd_varlen / fused_bwd_varlen),
// one launch per kernel for the whole batch.
//
// Python passes one params dict per sample (batch 1, the sample's shape and windows; dtype,
// heads, dims and tile shared), each sample's first packed row, the packed token count, and the
// packed tensors as (data_ptr, strides) of [total, H, D] (lse / dlse: fp32 contiguous [total, H]).  The binding
// cuts each sample's [1, *shape, H, D] views out of them.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "bindings/args.hpp"
#include "bindings/bind.hpp"

namespace fastna {
namespace binding {
namespace {

int element_bytes(const std::string& dtype) { return dtype == "float32" ? 4 : 2; }

// Sample rows [offset, offset + prod(shape)) of a packed [total, H, D] tensor as the
// [1, *shape, H, D] view a kernel reads (row-major over the sample's shape).
TensorArg sample_view(const TensorArg& packed, int64_t offset, const LaunchParams& sample, int bytes) {
  TensorArg t;
  if (!packed.present()) return t;
  t.ptr = packed.ptr + static_cast<uintptr_t>(offset * packed.strides[0] * bytes);
  t.ndim = sample.rank + 3;
  int64_t stride = packed.strides[0];
  for (int a = sample.rank - 1; a >= 0; --a) {
    t.strides[1 + a] = stride;
    stride *= sample.axis[a].length;
  }
  t.strides[0] = stride;  // batch: one sample
  t.strides[sample.rank + 1] = packed.strides[1];
  t.strides[sample.rank + 2] = packed.strides[2];
  return t;
}

// Rows [offset, ...) of a packed fp32 [total, H] tensor.
TensorArg sample_rows(const TensorArg& packed, int64_t offset, int heads) {
  TensorArg t = packed;
  if (packed.present()) t.ptr = packed.ptr + static_cast<uintptr_t>(offset * heads * 4);
  return t;
}

// The packed call: the samples' problems, offsets and tensors, resolved to one instance.
struct VarlenCall {
  std::vector<LaunchParams> samples;
  std::vector<int64_t> offsets;
  std::string dtype;
  const Instance* inst = nullptr;
};

// What the instance runs and checks: sample 0's problem, the samples and their offsets (the
// backward adds the packed out / dout / lse / dlse its delta preprocess reads).
LaunchParams top_level(const VarlenCall& call, int64_t total_tokens, uintptr_t stream) {
  LaunchParams lp = call.samples[0];
  lp.samples = call.samples.data();
  lp.num_samples = static_cast<int32_t>(call.samples.size());
  lp.token_offset = call.offsets.data();
  lp.total_tokens = total_tokens;
  lp.stream = stream;
  return lp;
}

VarlenCall make_call(const char* op, const py::list& params, const std::vector<int64_t>& offsets,
                     int64_t total_tokens) {
  VarlenCall call;
  const size_t n = params.size();
  if (n == 0) throw py::value_error(std::string("fastna: ") + op + ": no samples");
  if (offsets.size() != n)
    throw py::value_error(std::string("fastna: ") + op + ": " + std::to_string(n) + " params dicts but " +
                          std::to_string(offsets.size()) + " token offsets");
  call.samples.resize(n);
  std::string tile;
  int64_t expected_offset = 0;
  for (size_t s = 0; s < n; ++s) {
    const py::dict d = params[s].cast<py::dict>();
    const std::string dtype = parse_params(d, call.samples[s]);
    const std::string sample_tile = tile_of(d);
    const LaunchParams& sp = call.samples[s];
    const std::string which = std::string("fastna: ") + op + ": sample " + std::to_string(s) + ": ";
    if (s == 0) {
      call.dtype = dtype;
      tile = sample_tile;
    } else if (dtype != call.dtype || sample_tile != tile || sp.rank != call.samples[0].rank) {
      throw py::value_error(which + "dtype, tile and rank must be the same for every sample");
    }
    if (sp.batch != 1 || sp.num_extra != 0) throw py::value_error(which + "a varlen sample has batch 1 and no extra tokens");
    if (offsets[s] != expected_offset)
      throw py::value_error(which + "token offset " + std::to_string(offsets[s]) + ", expected " +
                            std::to_string(expected_offset) + " (samples are packed back to back)");
    int64_t tokens = 1;
    for (int a = 0; a < sp.rank; ++a) tokens *= sp.axis[a].length;
    expected_offset += tokens;
  }
  if (expected_offset != total_tokens)
    throw py::value_error(std::string("fastna: ") + op + ": the samples hold " + std::to_string(expected_offset) +
                          " tokens, the packed tensors " + std::to_string(total_tokens));
  call.offsets = offsets;
  const LaunchParams lp = top_level(call, total_tokens, 0);
  call.inst = &resolve_or_raise({op, lp.rank, call.dtype, lp.dim, tile}, lp, "fused varlen: ");
  return call;
}

void fused_varlen_forward(const py::list& params, const std::vector<int64_t>& offsets, int64_t total_tokens,
                          py::object q, py::object k, py::object v, py::object out, py::object lse, uintptr_t stream) {
  VarlenCall call = make_call("fused_fwd_varlen", params, offsets, total_tokens);
  const int bytes = element_bytes(call.dtype);
  const TensorArg pq = tensor_arg(q, "q", 3), pk = tensor_arg(k, "k", 3), pv = tensor_arg(v, "v", 3);
  const TensorArg pout = tensor_arg(out, "out", 3), plse = tensor_arg(lse, "lse", 2);
  for (size_t s = 0; s < call.samples.size(); ++s) {
    LaunchParams& sp = call.samples[s];
    sp.q = sample_view(pq, offsets[s], sp, bytes);
    sp.k = sample_view(pk, offsets[s], sp, bytes);
    sp.v = sample_view(pv, offsets[s], sp, bytes);
    sp.out = sample_view(pout, offsets[s], sp, bytes);
    sp.lse = sample_rows(plse, offsets[s], sp.heads);
    sp.stream = stream;
  }
  run(*call.inst, top_level(call, total_tokens, stream));
}

void fused_varlen_backward(const py::list& params, const std::vector<int64_t>& offsets, int64_t total_tokens,
                           py::object q, py::object k, py::object v, py::object out, py::object dout, py::object lse,
                           py::object dlse, py::object dq, py::object dk, py::object dv, uintptr_t stream) {
  VarlenCall call = make_call("fused_bwd_varlen", params, offsets, total_tokens);
  const int bytes = element_bytes(call.dtype);
  const TensorArg pq = tensor_arg(q, "q", 3), pk = tensor_arg(k, "k", 3), pv = tensor_arg(v, "v", 3);
  const TensorArg pout = tensor_arg(out, "out", 3), pdout = tensor_arg(dout, "dout", 3);
  const TensorArg plse = tensor_arg(lse, "lse", 2), pdlse = tensor_arg(dlse, "dlse", 2);
  const TensorArg pdq = tensor_arg(dq, "dq", 3), pdk = tensor_arg(dk, "dk", 3), pdv = tensor_arg(dv, "dv", 3);
  if (!plse.present()) throw py::value_error("fastna: fused varlen: lse is required by the backward");
  for (const TensorArg* g : {&pdq, &pdk, &pdv})
    for (const TensorArg* in : {&pq, &pk, &pv, &pout, &pdout})
      if (g->ptr == in->ptr) throw py::value_error("fastna: fused varlen: dq/dk/dv must not alias the inputs");
  for (size_t s = 0; s < call.samples.size(); ++s) {
    LaunchParams& sp = call.samples[s];
    sp.q = sample_view(pq, offsets[s], sp, bytes);
    sp.k = sample_view(pk, offsets[s], sp, bytes);
    sp.v = sample_view(pv, offsets[s], sp, bytes);
    sp.out = sample_view(pout, offsets[s], sp, bytes);
    sp.dout = sample_view(pdout, offsets[s], sp, bytes);
    sp.dq = sample_view(pdq, offsets[s], sp, bytes);
    sp.dk = sample_view(pdk, offsets[s], sp, bytes);
    sp.dv = sample_view(pdv, offsets[s], sp, bytes);
    sp.lse = sample_rows(plse, offsets[s], sp.heads);
    sp.dlse = sample_rows(pdlse, offsets[s], sp.heads);
    sp.stream = stream;
  }
  LaunchParams lp = top_level(call, total_tokens, stream);
  lp.out = pout;
  lp.dout = pdout;
  lp.lse = plse;
  lp.dlse = pdlse;
  run(*call.inst, lp);
}

}  // namespace

void bind_fused_varlen(py::module_& m) {
  m.def("fused_varlen_forward", &fused_varlen_forward, py::arg("params"), py::arg("token_offsets"),
        py::arg("total_tokens"), py::arg("q"),
        py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("stream") = 0,
        "Fused NA forward over a packed batch (op fused_fwd_varlen): params = one dict per sample (batch 1), "
        "token_offsets = each sample's first packed row; q, k, v, out = (data_ptr, strides) of [total, H(_kv), D], "
        "lse = (data_ptr, strides) of fp32 contiguous [total, H] or None");
  m.def("fused_varlen_backward", &fused_varlen_backward, py::arg("params"), py::arg("token_offsets"),
        py::arg("total_tokens"), py::arg("q"),
        py::arg("k"), py::arg("v"), py::arg("out"), py::arg("dout"), py::arg("lse"), py::arg("dlse"), py::arg("dq"),
        py::arg("dk"), py::arg("dv"), py::arg("stream") = 0,
        "Fused NA backward over a packed batch (op fused_bwd_varlen), the tensors packed as in "
        "fused_varlen_forward; lse is the forward's, dlse may be None");
}

}  // namespace binding
}  // namespace fastna
