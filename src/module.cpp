// fastna._C: the thin binding of docs/INTERNALS.md.  It takes raw device pointers, element
// strides and the stream as integers, so it never links libtorch and survives torch upgrades;
// torch integration (custom ops, autograd) lives in python/fastna.
#include <pybind11/pybind11.h>

#include "bindings/bind.hpp"

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastna compiled kernels (see docs/INTERNALS.md)";
  fastna::binding::bind_table(m);
  fastna::binding::bind_naive(m);
  fastna::binding::bind_fused(m);
  fastna::binding::bind_fused_grouped(m);
  fastna::binding::bind_gemm(m);
}
