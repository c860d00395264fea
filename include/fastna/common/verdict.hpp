// What a device op's can_implement returns: the CUTLASS status and, when the op cannot run the
// problem, a one-line reason naming the condition that failed (the Python binding raises it as
// a ValueError and returns it from fastna._C.can_implement).
//
// Converts to cutlass::Status, so `Op::can_implement(args) == cutlass::Status::kSuccess` and
// `cutlass::Status st = Op::can_implement(args)` keep working.
#pragma once

#include <cutlass/cutlass.h>

#include <string>
#include <utility>

namespace fastna {

struct Verdict {
  cutlass::Status status = cutlass::Status::kSuccess;
  std::string reason;  // empty when status is kSuccess

  Verdict() = default;
  Verdict(cutlass::Status s, std::string why) : status(s), reason(std::move(why)) {}

  static Verdict ok() { return Verdict(); }
  static Verdict invalid(std::string why) { return {cutlass::Status::kErrorInvalidProblem, std::move(why)}; }
  static Verdict unsupported(std::string why) { return {cutlass::Status::kErrorNotSupported, std::move(why)}; }
  static Verdict misaligned(std::string why) { return {cutlass::Status::kErrorMisalignedOperand, std::move(why)}; }

  bool is_ok() const { return status == cutlass::Status::kSuccess; }
  operator cutlass::Status() const { return status; }
  friend bool operator==(Verdict const& v, cutlass::Status s) { return v.status == s; }
  friend bool operator!=(Verdict const& v, cutlass::Status s) { return v.status != s; }
};

}  // namespace fastna
