// The binding entries of fastna._C, one file per op family (src/module.cpp calls each).
#pragma once

#include <pybind11/pybind11.h>

namespace fastna {
namespace binding {

void bind_table(pybind11::module_& m);  // kernel_table, can_implement, build_info, window helpers
void bind_naive(pybind11::module_& m);  // naive_forward, naive_backward
void bind_fused(pybind11::module_& m);  // fused_forward, fused_backward (families sm80, sm90, small)
void bind_fused_grouped(pybind11::module_& m);  // fused_grouped_forward, fused_grouped_backward (sm80)
void bind_gemm(pybind11::module_& m);   // gemm_qk, gemm_av, gemm_inverse, gemm_softmax(_backward)

}  // namespace binding
}  // namespace fastna
