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

// An instance of fused_fwd / fused_bwd resolved once for one problem and launched many times:
// the dict parse, the table scan and the instance's can_implement run when the plan is made
// (once per call signature on the eager path); a launch then reads only its tensor arguments
// (each launch still checks them: pointers, strides, aliasing).
struct FusedPlan {
  std::string op;
  LaunchParams problem;  // no tensors
  const Instance* inst = nullptr;
};

FusedPlan make_plan(const std::string& op, const py::dict& params) {
  if (op != "fused_fwd" && op != "fused_bwd")
    throw py::value_error("fastna: fused_plan: op must be 'fused_fwd' or 'fused_bwd', got '" + op + "'");
  FusedPlan plan;
  plan.op = op;
  const std::string dtype = parse_params(params, plan.problem);
  plan.inst = &resolve_or_raise({op, plan.problem.rank, dtype, plan.problem.dim, tile_of(params)}, plan.problem,
                                "fused: ");
  return plan;
}

void require_op(const FusedPlan& plan, const char* op) {
  if (plan.op != op)
    throw py::value_error("fastna: fused: a " + plan.op + " plan cannot run " + op);
}

// The plan's problem with the tensors both ops take; out like q.
LaunchParams plan_inputs(const FusedPlan& plan, const char* op, const py::object& q, const py::object& k,
                         const py::object& v, const py::object& out) {
  require_op(plan, op);
  LaunchParams lp = plan.problem;
  const int nd = lp.rank + 3;
  lp.q = tensor_arg(q, "q", nd);
  lp.k = tensor_arg(k, "k", nd);
  lp.v = tensor_arg(v, "v", nd);
  lp.out = tensor_arg(out, "out", nd);
  return lp;
}

void plan_forward(const FusedPlan& plan, py::object q, py::object k, py::object v, py::object out, py::object lse,
                  uintptr_t stream) {
  LaunchParams lp = plan_inputs(plan, "fused_fwd", q, k, v, out);
  lp.lse = contiguous_arg(lse, "lse", lp, false);
  require_4_byte_aligned(lp.lse, "lse");
  lp.stream = stream;
  run(*plan.inst, lp);
}

// out/dout/dq/dk/dv like q; lse required, dlse and workspace optional, all three fp32
// contiguous [B, N, H].
void plan_backward(const FusedPlan& plan, py::object q, py::object k, py::object v, py::object out, py::object dout,
                   py::object lse, py::object dlse, py::object dq, py::object dk, py::object dv, uintptr_t stream,
                   py::object workspace) {
  LaunchParams lp = plan_inputs(plan, "fused_bwd", q, k, v, out);
  const int nd = lp.rank + 3;
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
  run(*plan.inst, lp);
}

void fused_forward(const py::dict& params, py::object q, py::object k, py::object v, py::object out,
                   py::object lse, uintptr_t stream) {
  plan_forward(make_plan("fused_fwd", params), q, k, v, out, lse, stream);
}

void fused_backward(const py::dict& params, py::object q, py::object k, py::object v, py::object out,
                    py::object dout, py::object lse, py::object dlse, py::object dq, py::object dk, py::object dv,
                    uintptr_t stream, py::object workspace) {
  plan_backward(make_plan("fused_bwd", params), q, k, v, out, dout, lse, dlse, dq, dk, dv, stream, workspace);
}

}  // namespace

void bind_fused(py::module_& m) {
  py::class_<FusedPlan>(m, "FusedPlan",
                        "A fused_fwd / fused_bwd instance resolved for one problem (fused_plan); its "
                        "forward / backward take the same tensor arguments as fused_forward / fused_backward")
      .def_property_readonly("op", [](const FusedPlan& p) { return p.op; })
      .def_property_readonly("tile", [](const FusedPlan& p) { return p.inst->tile; })
      .def("forward", &plan_forward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"),
           py::arg("stream") = 0)
      .def("backward", &plan_backward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("dout"),
           py::arg("lse"), py::arg("dlse"), py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("stream") = 0,
           py::arg("workspace") = py::none());
  m.def("fused_plan", &make_plan, py::arg("op"), py::arg("params"),
        "The instance of op (fused_fwd or fused_bwd) that params names, resolved on the current device and "
        "checked against the problem once (ValueError with the reason when it cannot run it)");
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
