// fused_forward / fused_backward: the fused kernels of families sm80, sm90 and small, one op
// each; params["tile"] names the instance's tile and the binding runs exactly that one.  What an
// instance can run is its device op's can_implement (the kernel table's check); the binding
// only validates the tensor arguments' layout and aliasing.
#include <pybind11/pybind11.h>

#include "bindings/args.hpp"
#include "bindings/bind.hpp"

namespace fastna {
namespace binding {
namespace {

void require_4_byte_aligned(const TensorArg& t, const char* name) {
  if (t.present() && t.ptr % 4 != 0)
    throw py::value_error(std::string("fastna: fused: ") + name + " is not 4-byte aligned");
}

void fused_forward(const py::dict& params, py::object q, py::object k, py::object v, py::object out,
                   py::object lse, uintptr_t stream) {
  LaunchParams lp;
  const std::string dtype = parse_params(params, lp);
  const int nd = lp.rank + 3;
  lp.q = tensor_arg(q, "q", nd);
  lp.k = tensor_arg(k, "k", nd);
  lp.v = tensor_arg(v, "v", nd);
  lp.out = tensor_arg(out, "out", nd);
  lp.lse = contiguous_arg(lse, "lse", lp, false);
  require_4_byte_aligned(lp.lse, "lse");
  lp.stream = stream;
  run(resolve_or_raise({"fused_fwd", lp.rank, dtype, lp.dim, tile_of(params)}, lp, "fused: "), lp);
}

// out/dout/dq/dk/dv like q; lse required, dlse and workspace optional, all three fp32
// contiguous [B, N, H].
void fused_backward(const py::dict& params, py::object q, py::object k, py::object v, py::object out,
                    py::object dout, py::object lse, py::object dlse, py::object dq, py::object dk, py::object dv,
                    uintptr_t stream, py::object workspace) {
  LaunchParams lp;
  const std::string dtype = parse_params(params, lp);
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
  require_4_byte_aligned(lp.lse, "lse");
  require_4_byte_aligned(lp.dlse, "dlse");
  require_4_byte_aligned(lp.workspace, "workspace");
  for (const TensorArg* g : {&lp.dq, &lp.dk, &lp.dv}) {
    for (const TensorArg* in : {&lp.q, &lp.k, &lp.v, &lp.out, &lp.dout}) {
      if (g->present() && g->ptr == in->ptr) throw py::value_error("fastna: fused: dq/dk/dv must not alias the inputs");
    }
  }
  if (lp.dq.present() && (lp.dq.ptr == lp.dk.ptr || lp.dq.ptr == lp.dv.ptr || lp.dk.ptr == lp.dv.ptr))
    throw py::value_error("fastna: fused: dq, dk and dv must be different buffers");
  if (lp.workspace.present() && (lp.workspace.ptr == lp.lse.ptr || lp.workspace.ptr == lp.dlse.ptr))
    throw py::value_error("fastna: fused: workspace must not alias lse or dlse");
  lp.stream = stream;
  run(resolve_or_raise({"fused_bwd", lp.rank, dtype, lp.dim, tile_of(params)}, lp, "fused: "), lp);
}

}  // namespace

void bind_fused(py::module_& m) {
  m.def("fused_forward", &fused_forward, py::arg("params"), py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("out"), py::arg("lse"), py::arg("stream") = 0,
        "Fused NA forward of the instance params names (op fused_fwd, params[\"tile\"] or \"default\"; "
        "kernel_table() lists them); lse may be None");
  m.def("fused_backward", &fused_backward, py::arg("params"), py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("out"), py::arg("dout"), py::arg("lse"), py::arg("dlse"), py::arg("dq"), py::arg("dk"),
        py::arg("dv"), py::arg("stream") = 0, py::arg("workspace") = py::none(),
        "Fused NA backward of the instance params names (op fused_bwd, params[\"tile\"] or \"default\"; "
        "deterministic: no atomics); lse is the forward's, dlse (gradient into lse) may be None; workspace: "
        "fp32 contiguous [B, N, H] for delta, or None to allocate it stream-ordered (cudaMallocAsync)");
}

}  // namespace binding
}  // namespace fastna
