// Host side of the grouped ops: the problems' kernel parameters and schedules, laid out in one
// device workspace and uploaded with one copy before the launches.
//
// Workspace layout (each part 256-byte aligned): Params[count], then per schedule
// first_tile[count + 1] and problem_of[count], then an optional fp32 tail (the backward's delta
// rows of every problem).  The upload reads a host buffer that is freed when `upload` returns:
// the copy is from pageable memory, which CUDA stages before returning (and which is not allowed
// while the stream is being captured into a CUDA graph).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fastna/common/grouped_schedule.hpp"
#include "fastna/common/verdict.hpp"

namespace fastna {

// Prefixes a problem's own verdict with its index.
inline Verdict for_problem(Verdict v, int32_t p) {
  if (!v.is_ok()) v.reason = "grouped problem " + std::to_string(p) + ": " + v.reason;
  return v;
}

// Each problem's own verdict (Check: Problem const& -> Verdict), and a grid that fits: x the
// sum of the problems' tiles (Tiles: Problem const& -> int64_t), y / z the largest head / batch
// count (65535 at most; the problems' own checks hold them to it).
template <class Problem, class Check, class Tiles>
Verdict check_grouped(Problem const* problems, int32_t count, Check&& check, Tiles&& tiles) {
  if (problems == nullptr || count <= 0) return Verdict::invalid("a grouped launch needs at least one problem");
  int64_t x = 0;
  for (int32_t p = 0; p < count; ++p) {
    Verdict v = for_problem(check(problems[p]), p);
    if (!v.is_ok()) return v;
    x += tiles(problems[p]);
  }
  if (x > 0x7fffffff) return Verdict::invalid("too many tiles for one grouped grid (more than 2^31 - 1 CTAs)");
  return Verdict::ok();
}

constexpr size_t grouped_align(size_t n) { return (n + 255) & ~size_t(255); }

// Bytes for `count` Params and `schedules` schedules over them (before any tail).
template <class Params>
size_t grouped_tables_bytes(int32_t count, int schedules) {
  return grouped_align(sizeof(Params) * size_t(count)) +
         size_t(schedules) * (grouped_align(sizeof(int32_t) * size_t(count + 1)) +
                              grouped_align(sizeof(int32_t) * size_t(count)));
}

// Builds the host image of the tables; `device` is the workspace's device address, so that each
// schedule's GroupedParams can point into it before the upload.
template <class Params>
class GroupedPlan {
 public:
  GroupedPlan(std::vector<Params> const& params, char* device)
      : count_(static_cast<int32_t>(params.size())), device_(device) {
    image_.resize(grouped_align(sizeof(Params) * params.size()));
    if (!params.empty()) std::memcpy(image_.data(), params.data(), sizeof(Params) * params.size());
  }

  // Appends a schedule for problems with tiles[p] CTAs of cost cost[p]; returns the kernel's
  // parameter (grid x extent in *grid_x).
  GroupedParams<Params> add_schedule(std::vector<int64_t> const& tiles, std::vector<int64_t> const& cost,
                                     int64_t* grid_x) {
    std::vector<int32_t> first_tile, problem_of;
    *grid_x = make_grouped_schedule(tiles, cost, first_tile, problem_of);
    GroupedParams<Params> gp;
    gp.problems = reinterpret_cast<Params const*>(device_);
    gp.schedule.slots = static_cast<int32_t>(problem_of.size());
    gp.schedule.first_tile = reinterpret_cast<int32_t const*>(device_ + append(first_tile, count_ + 1));
    gp.schedule.problem_of = reinterpret_cast<int32_t const*>(device_ + append(problem_of, count_));
    return gp;
  }

  size_t bytes() const { return image_.size(); }

  cudaError_t upload(cudaStream_t stream) const {
    return cudaMemcpyAsync(device_, image_.data(), image_.size(), cudaMemcpyHostToDevice, stream);
  }

 private:
  // Appends `v` in a part sized for `capacity` entries (so the layout matches
  // grouped_tables_bytes whatever the slot count); returns its offset.
  size_t append(std::vector<int32_t> const& v, int32_t capacity) {
    const size_t at = image_.size();
    image_.resize(at + grouped_align(sizeof(int32_t) * size_t(capacity)));
    if (!v.empty()) std::memcpy(image_.data() + at, v.data(), sizeof(int32_t) * v.size());
    return at;
  }

  int32_t count_;
  char* device_;
  std::vector<char> image_;
};

}  // namespace fastna
