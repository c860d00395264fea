// Launch helpers shared by the generated instance TUs of the fused families (sm80, sm90, small):
// internal-linkage template arguments, shared-memory opt-in, launch error checks, and the device
// ops' Arguments built from the binding's LaunchParams.
//
// The kernels are launched from the instance TUs rather than through Op::run so that their
// template arguments are types with internal linkage (LocalTraits / LocalTag, anonymous
// namespace): the same kernel template compiled for several archs (sm80 and sm90a TUs) would
// otherwise be one weak symbol across TUs, and the CUDA runtime could register the wrong arch's
// cubin for it.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <stdexcept>
#include <string>

#include "common/launch_views.hpp"
#include "fastna/common/backward_params.hpp"
#include "fastna/common/forward_params.hpp"
#include "fastna/common/verdict.hpp"

namespace fastna {
namespace binding {
namespace {

template <class Base>
struct LocalTraits : Base {};

struct LocalTag {};

inline void check_launch(const char* what, const char* name) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("fastna: fused: ") + what + " of " + name + " failed: " +
                             cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
  }
}

template <class Kernel>
void set_smem(Kernel kernel, int smem, const char* name) {
  if (smem <= 48 * 1024) return;
  const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("fastna: fused: cannot set ") + std::to_string(smem) +
                             " bytes of shared memory for " + name + ": " + cudaGetErrorString(err));
  }
}

// The last guard before a launch (the binding asked the instance's check first):
// std::invalid_argument (ValueError in Python) with the device op's reason.
inline void require_implementable(Verdict const& v, const char* name) {
  if (!v.is_ok()) {
    throw std::invalid_argument(std::string("fastna: fused: ") + v.reason + " (" + name + ": " +
                                cutlassGetStatusString(v.status) + ")");
  }
}

// An instance's answer to "can you run lp's problem": empty, or the device op's reason.
template <class Op, int Rank>
std::string problem_reason(const LaunchParams& lp) {
  return Op::can_implement_problem(problem_of<Rank>(lp)).reason;
}

template <int Rank, class Element>
fused::ForwardArguments<Rank, Element> forward_arguments(const LaunchParams& lp) {
  fused::ForwardArguments<Rank, Element> args;
  args.problem = problem_of<Rank>(lp);
  args.q = token_view<Element const, Rank>(lp.q);
  args.k = token_view<Element const, Rank>(lp.k);
  args.v = token_view<Element const, Rank>(lp.v);
  args.out = token_view<Element, Rank>(lp.out);
  args.lse = reinterpret_cast<float*>(lp.lse.ptr);
  return args;
}

template <int Rank, class Element>
fused::BackwardArguments<Rank, Element> backward_arguments(const LaunchParams& lp) {
  fused::BackwardArguments<Rank, Element> args;
  args.problem = problem_of<Rank>(lp);
  args.q = token_view<Element const, Rank>(lp.q);
  args.k = token_view<Element const, Rank>(lp.k);
  args.v = token_view<Element const, Rank>(lp.v);
  args.out = token_view<Element const, Rank>(lp.out);
  args.dout = token_view<Element const, Rank>(lp.dout);
  args.lse = reinterpret_cast<float const*>(lp.lse.ptr);
  args.dlse = reinterpret_cast<float const*>(lp.dlse.ptr);
  args.dq = token_view<Element, Rank>(lp.dq);
  args.dk = token_view<Element, Rank>(lp.dk);
  args.dv = token_view<Element, Rank>(lp.dv);
  return args;
}

}  // namespace
}  // namespace binding
}  // namespace fastna
