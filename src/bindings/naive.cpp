// naive_forward / naive_backward: the naive CUDA kernels (include/fastna/naive).
#include <pybind11/pybind11.h>

#include "bindings/args.hpp"
#include "bindings/bind.hpp"

namespace fastna {
namespace binding {
namespace {

// Parses params into lp and reads the inputs both ops take: q, k, v (required) and the extra
// tokens (required when num_extra > 0).  Returns the dtype.
std::string read_inputs(const py::dict& params, LaunchParams& lp, const py::object& q, const py::object& k,
                        const py::object& v, const py::object& extra_k, const py::object& extra_v) {
  const std::string dtype = parse_params(params, lp);
  const int nd = lp.rank + 3;
  lp.q = tensor_arg(q, "q", nd);
  lp.k = tensor_arg(k, "k", nd);
  lp.v = tensor_arg(v, "v", nd);
  lp.extra_k = tensor_arg(extra_k, "extra_k", 4);
  lp.extra_v = tensor_arg(extra_v, "extra_v", 4);
  require(lp.q, "", "q");
  require(lp.k, "", "k");
  require(lp.v, "", "v");
  if (lp.num_extra > 0) {
    require(lp.extra_k, "", "extra_k");
    require(lp.extra_v, "", "extra_v");
  }
  return dtype;
}

void naive_forward(const py::dict& params, py::object q, py::object k, py::object v, py::object extra_k,
                   py::object extra_v, py::object attn, py::object out, py::object lse, uintptr_t stream) {
  LaunchParams lp;
  const std::string dtype = read_inputs(params, lp, q, k, v, extra_k, extra_v);
  lp.out = tensor_arg(out, "out", lp.rank + 3);
  lp.attn = contiguous_arg(attn, "attn", lp, true);
  lp.lse = contiguous_arg(lse, "lse", lp, false);
  require(lp.out, "", "out");
  lp.stream = stream;
  run(resolve_or_raise({"naive_fwd", lp.rank, dtype, 0, "default"}, lp, ""), lp);
}

void naive_backward(const py::dict& params, py::object q, py::object k, py::object v, py::object extra_k,
                    py::object extra_v, py::object attn, py::object dout, py::object dq, py::object dk,
                    py::object dv, py::object dextra_k, py::object dextra_v, py::object dattn, uintptr_t stream) {
  LaunchParams lp;
  const std::string dtype = read_inputs(params, lp, q, k, v, extra_k, extra_v);
  const int nd = lp.rank + 3;
  lp.attn = contiguous_arg(attn, "attn", lp, true);
  lp.dout = tensor_arg(dout, "dout", nd);
  lp.dq = tensor_arg(dq, "dq", nd);
  lp.dk = tensor_arg(dk, "dk", nd);
  lp.dv = tensor_arg(dv, "dv", nd);
  lp.dextra_k = tensor_arg(dextra_k, "dextra_k", 4);
  lp.dextra_v = tensor_arg(dextra_v, "dextra_v", 4);
  lp.dattn = contiguous_arg(dattn, "dattn", lp, true);
  require(lp.dout, "", "dout");
  if (lp.attn.present() && lp.attn.ptr == lp.dattn.ptr) {
    throw py::value_error("fastna: attn and dattn must be different buffers");
  }
  lp.stream = stream;
  run(resolve_or_raise({"naive_bwd", lp.rank, dtype, 0, "default"}, lp, ""), lp);
}

}  // namespace

void bind_naive(py::module_& m) {
  m.def("naive_forward", &naive_forward, py::arg("params"), py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("extra_k"), py::arg("extra_v"), py::arg("attn"), py::arg("out"), py::arg("lse"),
        py::arg("stream") = 0);
  m.def("naive_backward", &naive_backward, py::arg("params"), py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("extra_k"), py::arg("extra_v"), py::arg("attn"), py::arg("dout"), py::arg("dq"), py::arg("dk"),
        py::arg("dv"), py::arg("dextra_k"), py::arg("dextra_v"), py::arg("dattn"), py::arg("stream") = 0);
}

}  // namespace binding
}  // namespace fastna
