// gemm_qk / gemm_av / gemm_inverse / gemm_softmax(_backward): the GEMM-based unfused ops
// (include/fastna/gemm; family gemm, op gemm_na; backend "gemm" of fastna.ops_unfused).  What an
// instance can run is its device op's can_implement (the kernel table's check); the binding
// only validates the tensor arguments' layout and aliasing.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "bindings/args.hpp"
#include "bindings/bind.hpp"

namespace fastna {
namespace binding {
namespace {

int gemm_elem_bytes(const std::string& dtype) { return dtype == "float32" ? 4 : 2; }

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

// The instance of (rank, dtype, head_dim): PN and the softmax ops run at dim, NN / IN at dim_v.
void gemm_run(const std::string& dtype, int head_dim, const LaunchParams& lp) {
  run(resolve_or_raise({"gemm_na", lp.rank, dtype, head_dim, "default"}, lp, "gemm: "), lp);
}

void gemm_qk(const py::dict& params, py::object q, py::object k, py::object rpb, py::object attn, uintptr_t stream) {
  LaunchParams lp;
  const std::string dtype = parse_params(params, lp);
  const int nd = lp.rank + 3;
  lp.gemm_op = kGemmPN;
  lp.q = tensor_arg(q, "q", nd);
  lp.k = tensor_arg(k, "k", nd);
  lp.attn = gemm_attn_arg(attn, "attn", lp, dtype);
  if (!rpb.is_none()) {
    lp.rpb = tensor_arg(rpb, "rpb", lp.rank + 1);
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
  gemm_run(dtype, lp.dim, lp);
}

// NN (gemm_op kGemmNN) and IN (kGemmIN): out = attn (.) x with dim_v columns.
void gemm_gather(bool inverse, const py::dict& params, py::object attn, py::object x, py::object out,
                 uintptr_t stream) {
  LaunchParams lp;
  const std::string dtype = parse_params(params, lp);
  const int nd = lp.rank + 3;
  lp.gemm_op = inverse ? kGemmIN : kGemmNN;
  TensorArg& xa = inverse ? lp.dout : lp.v;
  TensorArg& oa = inverse ? lp.dv : lp.out;
  xa = tensor_arg(x, inverse ? "x" : "v", nd);
  oa = tensor_arg(out, "out", nd);
  lp.attn = gemm_attn_arg(attn, "attn", lp, dtype);
  if (oa.present() && (oa.ptr == xa.ptr || oa.ptr == lp.attn.ptr))
    throw py::value_error("fastna: gemm: out must not alias attn or x");
  lp.stream = stream;
  gemm_run(dtype, lp.dim_v, lp);
}

void gemm_av(const py::dict& params, py::object attn, py::object v, py::object out, uintptr_t stream) {
  gemm_gather(false, params, attn, v, out, stream);
}

void gemm_inverse(const py::dict& params, py::object attn, py::object x, py::object out, uintptr_t stream) {
  gemm_gather(true, params, attn, x, out, stream);
}

// Softmax of the attention weights for backend "gemm" (forward: in place, optional lse) and its
// backward (in place: attn s -> P, dattn dP -> dS).  attn / dattn as for gemm_qk; lse / delta
// contiguous fp32 [B, N, H] (or [B, *spatial, H]).  Runs on the instance of (rank, dtype, dim).
void gemm_softmax(const py::dict& params, py::object attn, py::object lse, uintptr_t stream) {
  LaunchParams lp;
  const std::string dtype = parse_params(params, lp);
  lp.gemm_op = kGemmSoftmax;
  lp.attn = gemm_attn_arg(attn, "attn", lp, dtype);
  lp.lse = contiguous_arg(lse, "lse", lp, false);
  if (lp.lse.present() && lp.lse.ptr % 4 != 0) throw py::value_error("fastna: gemm: lse pointer is misaligned");
  lp.stream = stream;
  gemm_run(dtype, lp.dim, lp);
}

void gemm_softmax_backward(const py::dict& params, py::object attn, py::object dattn, py::object lse,
                           py::object delta, uintptr_t stream) {
  LaunchParams lp;
  const std::string dtype = parse_params(params, lp);
  lp.gemm_op = kGemmSoftmaxBwd;
  lp.attn = gemm_attn_arg(attn, "attn", lp, dtype);
  lp.dattn = gemm_attn_arg(dattn, "dattn", lp, dtype);
  lp.lse = contiguous_arg(lse, "lse", lp, false);
  lp.dlse = contiguous_arg(delta, "delta", lp, false);
  require(lp.lse, "gemm: ", "lse");
  require(lp.dlse, "gemm: ", "delta");
  if (lp.lse.ptr % 4 != 0 || lp.dlse.ptr % 4 != 0)
    throw py::value_error("fastna: gemm: lse / delta pointer is misaligned");
  if (lp.attn.ptr == lp.dattn.ptr) throw py::value_error("fastna: gemm: attn and dattn must not alias");
  lp.stream = stream;
  gemm_run(dtype, lp.dim, lp);
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def("gemm_qk", &gemm_qk, py::arg("params"), py::arg("q"), py::arg("k"), py::arg("rpb"), py::arg("attn"),
        py::arg("stream") = 0,
        "GEMM-based qk (PN; fp16/bf16, fp32 on TF32 tensor cores): attn[b, n, h, w] = q . k of window slot w "
        "(+ rpb); causal slots past the window = -inf; attn contiguous [B, N, H, prod(K)] in the input dtype "
        "(see INTERNALS.md)");
  m.def("gemm_av", &gemm_av, py::arg("params"), py::arg("attn"), py::arg("v"), py::arg("out"), py::arg("stream") = 0,
        "GEMM-based av (NN): out[b, i, h] = sum_w attn[b, i, h, w] v[n(i, w), h_kv] (dim_v columns)");
  m.def("gemm_inverse", &gemm_inverse, py::arg("params"), py::arg("attn"), py::arg("x"), py::arg("out"),
        py::arg("stream") = 0,
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

}  // namespace binding
}  // namespace fastna
