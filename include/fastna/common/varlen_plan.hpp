// Host side of the varlen ops: the per-sample kernel parameters and schedules, laid out in one
// device workspace and uploaded with one copy before the launches.
//
// Workspace layout (each part 256-byte aligned): Params[count], then per schedule
// first_tile[slots + 1] and sample_of[slots] (slots <= count), then an optional fp32 tail (the
// backward's delta).  The upload reads a host buffer that is freed when `upload` returns: the
// copy is from pageable memory, which CUDA stages before returning (and which is not allowed
// while the stream is being captured into a CUDA graph).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fastna/common/varlen_schedule.hpp"
#include "fastna/common/verdict.hpp"

namespace fastna {

// Conditions every varlen op shares: samples present, batch 1, one head layout for all.
template <class Sample>
Verdict check_varlen_samples(Sample const* samples, int32_t count) {
  if (samples == nullptr || count <= 0) return Verdict::invalid("a varlen call needs at least one sample");
  for (int32_t s = 0; s < count; ++s) {
    auto const& p = samples[s].problem;
    auto const& p0 = samples[0].problem;
    if (p.batch != 1)
      return Verdict::invalid("varlen sample " + std::to_string(s) + " has batch " + std::to_string(p.batch) +
                              " (each sample is a batch-1 problem)");
    if (p.heads != p0.heads || p.heads_kv != p0.heads_kv || p.dim != p0.dim || p.dim_v != p0.dim_v)
      return Verdict::invalid("varlen sample " + std::to_string(s) +
                              " differs from sample 0 in heads, kv heads or head dims");
  }
  return Verdict::ok();
}

// Prefixes a sample's own verdict with its index.
inline Verdict for_sample(Verdict v, int32_t s) {
  if (!v.is_ok()) v.reason = "varlen sample " + std::to_string(s) + ": " + v.reason;
  return v;
}

constexpr size_t varlen_align(size_t n) { return (n + 255) & ~size_t(255); }

// Bytes for `count` Params and `schedules` schedules over them (before any tail).
template <class Params>
size_t varlen_tables_bytes(int32_t count, int schedules) {
  return varlen_align(sizeof(Params) * size_t(count)) +
         size_t(schedules) * (varlen_align(sizeof(int32_t) * size_t(count + 1)) +
                              varlen_align(sizeof(int32_t) * size_t(count)));
}

// Builds the host image of the tables; `device` is the workspace's device address, so that the
// VarlenParams of each schedule can point into it before the upload.
template <class Params>
class VarlenPlan {
 public:
  VarlenPlan(std::vector<Params> const& params, char* device)
      : count_(static_cast<int32_t>(params.size())), device_(device) {
    image_.resize(varlen_align(sizeof(Params) * params.size()));
    if (!params.empty()) std::memcpy(image_.data(), params.data(), sizeof(Params) * params.size());
  }

  // Appends a schedule for samples with tiles[s] CTAs of cost cost[s]; returns the kernel's
  // parameter (grid x extent in *grid_x).
  VarlenParams<Params> add_schedule(std::vector<int64_t> const& tiles, std::vector<int64_t> const& cost,
                                    int64_t* grid_x) {
    std::vector<int32_t> first_tile, sample_of;
    *grid_x = make_varlen_schedule(tiles, cost, first_tile, sample_of);
    VarlenParams<Params> vp;
    vp.samples = reinterpret_cast<Params const*>(device_);
    vp.schedule.slots = static_cast<int32_t>(sample_of.size());
    vp.schedule.first_tile = reinterpret_cast<int32_t const*>(device_ + append(first_tile, count_ + 1));
    vp.schedule.sample_of = reinterpret_cast<int32_t const*>(device_ + append(sample_of, count_));
    return vp;
  }

  size_t bytes() const { return image_.size(); }

  cudaError_t upload(cudaStream_t stream) const {
    return cudaMemcpyAsync(device_, image_.data(), image_.size(), cudaMemcpyHostToDevice, stream);
  }

 private:
  // Appends `v` in a part sized for `capacity` entries (so the layout matches
  // varlen_tables_bytes whatever the slot count); returns its offset.
  size_t append(std::vector<int32_t> const& v, int32_t capacity) {
    const size_t at = image_.size();
    image_.resize(at + varlen_align(sizeof(int32_t) * size_t(capacity)));
    if (!v.empty()) std::memcpy(image_.data() + at, v.data(), sizeof(int32_t) * v.size());
    return at;
  }

  int32_t count_;
  char* device_;
  std::vector<char> image_;
};

}  // namespace fastna
