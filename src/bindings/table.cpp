// The module's description of itself: kernel_table() (the compiled rows of
// cmake/kernel_table.json), can_implement(op, params), build_info(), and the index-math helpers
// window / inverse_window.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <set>
#include <string>
#include <tuple>

#include "bindings/args.hpp"
#include "bindings/bind.hpp"
#include "fastna/common/index_math.hpp"

namespace fastna {
namespace binding {
namespace {

// The features every row's "supports" dict has (kernel_table.json's "supports" keys).
const char* const kFeatures[] = {"stride", "dilation", "causal", "gqa", "dv_ne_d", "extra_kv", "lse", "rpb"};

py::tuple int_tuple(const std::vector<int>& v) {
  py::tuple t(v.size());
  for (size_t i = 0; i < v.size(); ++i) t[i] = v[i];
  return t;
}

// The axis of a window() / inverse_window() call, `what` index i checked against its length.
AxisParams checked_axis_at(int32_t L, int32_t K, int32_t s, int32_t d, bool causal, int32_t i, const char* what) {
  const AxisParams p = checked_axis(L, K, s, d, causal);
  if (i < 0 || i >= L) throw py::value_error(std::string("fastna: ") + what + " index out of range");
  return p;
}

py::tuple range_tuple(const Range& r) { return py::make_tuple(r.begin, r.end); }

py::tuple window_of(int32_t L, int32_t K, int32_t s, int32_t d, bool causal, int32_t i) {
  return range_tuple(fastna::window(checked_axis_at(L, K, s, d, causal, i, "query"), i));
}

py::tuple inverse_window_of(int32_t L, int32_t K, int32_t s, int32_t d, bool causal, int32_t j) {
  return range_tuple(fastna::inverse_window(checked_axis_at(L, K, s, d, causal, j, "key"), j));
}

py::list kernel_table() {
  py::list rows;
  for (const Instance& i : instances()) {
    py::dict row;
    row["op"] = i.op;
    row["family"] = i.family;
    row["tile"] = i.tile;
    row["rank"] = i.rank;
    row["dtype"] = i.dtype;
    row["head_dim"] = i.head_dim;
    row["arch"] = i.arch;
    row["sm"] = i.sm;
    row["qbox"] = int_tuple(i.qbox);
    row["kvbox"] = int_tuple(i.kvbox);
    py::dict supports;
    for (const char* f : kFeatures) {
      bool on = false;
      for (const std::string& s : i.supports) on = on || s == f;
      supports[f] = on;
    }
    row["supports"] = supports;
    rows.append(row);
  }
  return rows;
}

// The head dim an op's instances are keyed by: none for the naive kernels (any head dim).
int instance_head_dim(const std::string& op, const LaunchParams& lp) {
  return (op == "naive_fwd" || op == "naive_bwd") ? 0 : lp.dim;
}

std::string can_implement(const std::string& op, const py::dict& params) {
  static const std::set<std::string> kOps{"fused_fwd", "fused_bwd", "naive_fwd", "naive_bwd", "gemm_na"};
  if (!kOps.count(op)) {
    throw py::value_error("fastna: can_implement: unknown op '" + op +
                          "' (fused_fwd, fused_bwd, naive_fwd, naive_bwd, gemm_na)");
  }
  LaunchParams lp;
  const std::string dtype = parse_params(params, lp);
  std::string reason;
  resolve({op, lp.rank, dtype, instance_head_dim(op, lp), tile_of(params)}, lp, &reason);
  return reason;
}

py::list csv_list(const char* csv) {
  py::list out;
  std::string item;
  for (const char* c = csv;; ++c) {
    if (*c == ',' || *c == '\0') {
      if (!item.empty()) out.append(item);
      item.clear();
      if (*c == '\0') break;
    } else {
      item += *c;
    }
  }
  return out;
}

// Everything but version, cuda and archs is derived from the compiled table, i.e. what this
// binary holds (not what the build was asked for).
py::dict build_info() {
  py::dict d;
  d["version"] = FASTNA_VERSION;
  d["cuda"] = built_with_cuda();
  d["archs"] = csv_list(FASTNA_BUILD_ARCHS);
  std::set<int> ranks, head_dims;
  std::set<std::string> dtypes, ops;
  std::map<std::string, std::set<std::string>> families_by_arch, tiles_by_op;
  // "instances": one (op, rank, dtype, sm) per compiled combination (head dims and tiles folded
  // together); "fused_instances" / "fused_bwd_instances" / "gemm_instances": (rank, dtype,
  // head_dim, tile, sm, arch) of fused_fwd / fused_bwd / gemm_na.
  py::list inst, fused, fused_bwd, gemm;
  std::set<std::tuple<std::string, int, std::string, int>> seen;
  for (const Instance& i : instances()) {
    ranks.insert(i.rank);
    dtypes.insert(i.dtype);
    ops.insert(i.op);
    if (i.head_dim) head_dims.insert(i.head_dim);
    families_by_arch[i.arch].insert(i.family);
    tiles_by_op[i.op].insert(i.tile);
    if (seen.insert(std::make_tuple(i.op, i.rank, i.dtype, i.sm)).second)
      inst.append(py::make_tuple(i.op, i.rank, i.dtype, i.sm));
    const py::tuple row = py::make_tuple(i.rank, i.dtype, i.head_dim, i.tile, i.sm, i.arch);
    if (i.op == "fused_fwd") fused.append(row);
    if (i.op == "fused_bwd") fused_bwd.append(row);
    if (i.op == "gemm_na") gemm.append(row);
  }
  d["ranks"] = py::cast(std::vector<int>(ranks.begin(), ranks.end()));
  d["dtypes"] = py::cast(std::vector<std::string>(dtypes.begin(), dtypes.end()));
  d["kernels"] = py::cast(std::vector<std::string>(ops.begin(), ops.end()));
  d["head_dims"] = py::cast(std::vector<int>(head_dims.begin(), head_dims.end()));
  auto as_dict = [](const std::map<std::string, std::set<std::string>>& m) {
    py::dict out;
    for (const auto& kv : m) out[py::str(kv.first)] = py::cast(std::vector<std::string>(kv.second.begin(), kv.second.end()));
    return out;
  };
  d["families"] = as_dict(families_by_arch);
  d["tiles"] = as_dict(tiles_by_op);
  d["instances"] = inst;
  d["fused_instances"] = fused;
  d["fused_bwd_instances"] = fused_bwd;
  d["gemm_instances"] = gemm;
  return d;
}

}  // namespace

void bind_table(py::module_& m) {
  m.def("kernel_table", &kernel_table,
        "One dict per compiled kernel instance (cmake/kernel_table.json): op, family, tile, rank, dtype, "
        "head_dim (0 = any), arch, sm, qbox, kvbox, supports");
  m.def("can_implement", &can_implement, py::arg("op"), py::arg("params"),
        "\"\" when the instance params names (params[\"tile\"] or \"default\", rank, dtype, head dim, this "
        "device's compute capability) can run the problem, else a one-line reason; params as for the op's "
        "launch function (ValueError when malformed)");
  m.def("build_info", &build_info,
        "What this build holds: version, cuda, archs, and (from the compiled kernel table) ranks, dtypes, "
        "kernels (ops), head_dims, families per arch, tiles per op, instances");
  m.def("window", &window_of, py::arg("L"), py::arg("K"), py::arg("s"), py::arg("d"), py::arg("causal"),
        py::arg("i"), "Window [start, end) of query i, group-local coordinates (docs/SEMANTICS.md)");
  m.def("inverse_window", &inverse_window_of, py::arg("L"), py::arg("K"), py::arg("s"), py::arg("d"),
        py::arg("causal"), py::arg("j"), "Group-local queries [begin, end) whose windows contain key j");
}

}  // namespace binding
}  // namespace fastna
