// The bindings' reading of their Python arguments: the params dict (the problem) and the
// (data_ptr, strides) tensor tuples, into LaunchParams; and the one launch path every binding
// takes (resolve the instance in the kernel table, raise its reason, run it without the GIL).
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "common/kernel_table.hpp"
#include "common/launch_params.hpp"

namespace fastna {
namespace binding {

namespace py = pybind11;

AxisParams checked_axis(int32_t L, int32_t K, int32_t s, int32_t d, bool causal);

// Fills the problem part of LaunchParams from the params dict; returns the dtype string.
// ValueError for a malformed dict (missing keys, lists of different lengths, invalid windows).
std::string parse_params(const py::dict& params, LaunchParams& lp);

// params["tile"], or "default".
std::string tile_of(const py::dict& params);

// A (data_ptr, strides) tuple of a [B, *spatial, H, D]-like tensor with ndim dims; None = absent.
TensorArg tensor_arg(const py::object& obj, const char* name, int ndim);

// fp32 scratch the kernels index as contiguous rows (attn / dattn with a window dim, lse / delta
// without): [B, N, H(, W)] or [B, *spatial, H(, W)]; other layouts raise ValueError.
TensorArg contiguous_arg(const py::object& obj, const char* name, const LaunchParams& lp, bool with_window);

// ValueError "fastna: <prefix>name is required" when t is absent.
void require(const TensorArg& t, const char* prefix, const char* name);

// The instance of `q` for lp's problem, or ValueError "fastna: <prefix><reason>" (RuntimeError
// in a host-only build).
const Instance& resolve_or_raise(const InstanceQuery& q, const LaunchParams& lp, const char* prefix);

// Runs inst on lp with the GIL released.
void run(const Instance& inst, const LaunchParams& lp);

}  // namespace binding
}  // namespace fastna
