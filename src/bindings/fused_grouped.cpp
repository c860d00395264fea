// fused_grouped_forward / fused_grouped_backward: several problems -- each its own params dict
// and tensor views -- through the grouped instances (ops fused_fwd_grouped / fused_bwd_grouped),
// one launch per kernel whatever their number.  Python builds the views (a packed batch's
// samples, a call's head groups); every problem shares dtype, rank, head dim and tile.
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "bindings/args.hpp"
#include "bindings/bind.hpp"

namespace fastna {
namespace binding {
namespace {

// The problems of a call: their LaunchParams and the instance that runs them all.
struct GroupedCall {
  std::vector<LaunchParams> problems;
  const Instance* inst = nullptr;

  // The top-level LaunchParams the instance runs and checks.
  LaunchParams launch(uintptr_t stream) const {
    LaunchParams lp = problems[0];
    lp.problems = problems.data();
    lp.num_problems = static_cast<int32_t>(problems.size());
    lp.stream = stream;
    return lp;
  }
};

// Each entry: (params dict, tensor tuples...) with `tensors` tensor tuples; fill(lp, entry, i)
// reads the tensors of entry i into lp.
template <class Fill>
GroupedCall make_call(const char* op, const py::list& entries, size_t tensors, uintptr_t stream, Fill&& fill) {
  GroupedCall call;
  if (entries.size() == 0) throw py::value_error(std::string("fastna: ") + op + ": no problems");
  call.problems.resize(entries.size());
  std::string dtype0, tile0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto entry = entries[i].cast<py::tuple>();
    const std::string which = std::string("fastna: ") + op + ": problem " + std::to_string(i) + ": ";
    if (entry.size() != 1 + tensors)
      throw py::value_error(which + "expected (params, " + std::to_string(tensors) + " tensors), got " +
                            std::to_string(entry.size()) + " items");
    const py::dict params = entry[0].cast<py::dict>();
    LaunchParams& lp = call.problems[i];
    const std::string dtype = parse_params(params, lp);
    const std::string tile = tile_of(params);
    if (i == 0) {
      dtype0 = dtype;
      tile0 = tile;
    } else if (dtype != dtype0 || tile != tile0 || lp.rank != call.problems[0].rank || lp.dim != call.problems[0].dim ||
               lp.dim_v != call.problems[0].dim_v) {
      throw py::value_error(which + "dtype, tile, rank and head dims must be those of problem 0");
    }
    fill(lp, entry, i);
    lp.stream = stream;
  }
  const LaunchParams lp = call.launch(stream);
  call.inst = &resolve_or_raise({op, lp.rank, dtype0, lp.dim, tile0}, lp, "fused grouped: ");
  return call;
}

void fused_grouped_forward(const py::list& entries, uintptr_t stream) {
  const GroupedCall call = make_call("fused_fwd_grouped", entries, 5, stream, [](LaunchParams& lp, const py::tuple& e, size_t) {
    const int nd = lp.rank + 3;
    lp.q = tensor_arg(e[1], "q", nd);
    lp.k = tensor_arg(e[2], "k", nd);
    lp.v = tensor_arg(e[3], "v", nd);
    lp.out = tensor_arg(e[4], "out", nd);
    lp.lse = contiguous_arg(e[5], "lse", lp, false);
  });
  run(*call.inst, call.launch(stream));
}

void fused_grouped_backward(const py::list& entries, uintptr_t stream) {
  const GroupedCall call =
      make_call("fused_bwd_grouped", entries, 10, stream, [](LaunchParams& lp, const py::tuple& e, size_t i) {
        const int nd = lp.rank + 3;
        lp.q = tensor_arg(e[1], "q", nd);
        lp.k = tensor_arg(e[2], "k", nd);
        lp.v = tensor_arg(e[3], "v", nd);
        lp.out = tensor_arg(e[4], "out", nd);
        lp.dout = tensor_arg(e[5], "dout", nd);
        lp.lse = contiguous_arg(e[6], "lse", lp, false);
        lp.dlse = contiguous_arg(e[7], "dlse", lp, false);
        lp.dq = tensor_arg(e[8], "dq", nd);
        lp.dk = tensor_arg(e[9], "dk", nd);
        lp.dv = tensor_arg(e[10], "dv", nd);
        require(lp.lse, "fused grouped: ", "lse");
        for (const TensorArg* g : {&lp.dq, &lp.dk, &lp.dv})
          for (const TensorArg* in : {&lp.q, &lp.k, &lp.v, &lp.out, &lp.dout})
            if (g->ptr == in->ptr)
              throw py::value_error("fastna: fused grouped: problem " + std::to_string(i) +
                                    ": dq/dk/dv must not alias the inputs");
      });
  // Each problem writes its dK / dV completely: two problems on the same rows would race.
  for (size_t i = 0; i < call.problems.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (call.problems[i].dk.ptr == call.problems[j].dk.ptr || call.problems[i].dv.ptr == call.problems[j].dv.ptr)
        throw py::value_error("fastna: fused grouped: problems " + std::to_string(j) + " and " + std::to_string(i) +
                              " write the same dk / dv (give each problem its own and sum them)");
  run(*call.inst, call.launch(stream));
}

}  // namespace

void bind_fused_grouped(py::module_& m) {
  m.def("fused_grouped_forward", &fused_grouped_forward, py::arg("problems"), py::arg("stream") = 0,
        "Fused NA forward of several problems in one launch (op fused_fwd_grouped): problems = a list of "
        "(params, q, k, v, out, lse) with the tensors as fused_forward takes them; params share dtype, rank, "
        "head dims and tile");
  m.def("fused_grouped_backward", &fused_grouped_backward, py::arg("problems"), py::arg("stream") = 0,
        "Fused NA backward of several problems in three launches (op fused_bwd_grouped): problems = a list of "
        "(params, q, k, v, out, dout, lse, dlse, dq, dk, dv) as fused_backward takes them (lse required, dlse "
        "may be None); no two problems may write the same dk / dv");
}

}  // namespace binding
}  // namespace fastna
