// Neighborhood index math (docs/SEMANTICS.md sections 3-6), one spatial axis at a time.
//
// Everything here is host+device, branch-light integer arithmetic, so that every kernel
// (naive, GEMM-based, fused) and the host-side tile planners agree on which keys a query
// sees.  Coordinates come in two flavours:
//   * absolute: index along the axis, 0 <= i < L;
//   * group-local: index inside the dilation group g = i mod d, i' = i div d, 0 <= i' < L_g.
// Windows are half-open [start, end) in group-local coordinates.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FASTNA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTNA_HOST_DEVICE inline
#endif

namespace fastna {

// Parameters of one spatial axis.
struct AxisParams {
  int32_t length = 1;    // L
  int32_t kernel = 1;    // K (window size), 2 <= K, K * dilation <= L
  int32_t stride = 1;    // s, 1 <= s <= K
  int32_t dilation = 1;  // d >= 1
  bool causal = false;
};

// Half-open interval [begin, end).
struct Range {
  int32_t begin = 0;
  int32_t end = 0;
  FASTNA_HOST_DEVICE bool empty() const { return end <= begin; }
  FASTNA_HOST_DEVICE int32_t size() const { return end > begin ? end - begin : 0; }
};

FASTNA_HOST_DEVICE int32_t imin(int32_t a, int32_t b) { return a < b ? a : b; }
FASTNA_HOST_DEVICE int32_t imax(int32_t a, int32_t b) { return a > b ? a : b; }

// Number of positions in dilation group g: ceil((L - g) / d).
FASTNA_HOST_DEVICE int32_t group_length(const AxisParams& p, int32_t g) {
  return (p.length - g + p.dilation - 1) / p.dilation;
}

// Window of group-local query i_local inside a group of length group_len.
FASTNA_HOST_DEVICE Range window_local(const AxisParams& p, int32_t i_local, int32_t group_len) {
  const int32_t K = p.kernel, s = p.stride;
  const int32_t tile_base = (i_local / s) * s;
  if (p.causal) {
    const int32_t leader = imin(tile_base + s - 1, group_len - 1);
    return Range{imax(leader - K + 1, 0), imin(i_local + 1, group_len)};
  }
  const int32_t left = K / 2;
  const int32_t leader = imin(tile_base + s / 2, group_len - 1);
  const int32_t start = imax(imin(leader - left, group_len - K), 0);
  return Range{start, start + K};
}

// Window of absolute query i, in group-local coordinates of i's group.
FASTNA_HOST_DEVICE Range window(const AxisParams& p, int32_t i) {
  const int32_t g = i % p.dilation;
  return window_local(p, i / p.dilation, group_length(p, g));
}

// Whether absolute key j is a neighbor of absolute query i on this axis (rule 3).
FASTNA_HOST_DEVICE bool is_neighbor(const AxisParams& p, int32_t i, int32_t j) {
  if (i % p.dilation != j % p.dilation) return false;
  const Range w = window(p, i);
  const int32_t jl = j / p.dilation;
  return w.begin <= jl && jl < w.end;
}

// Inverse neighborhood of group-local key j_local: the group-local queries whose windows
// contain it.  Window starts and ends are both non-decreasing in the query index, so the set
// is an interval: queries with end > j (a suffix) intersected with queries with start <= j
// (a prefix).  Both boundaries are found by binary search, valid for every parameter set.
FASTNA_HOST_DEVICE Range inverse_window_local(const AxisParams& p, int32_t j_local,
                                              int32_t group_len) {
  // first query whose window end exceeds j_local
  int32_t lo = 0, hi = group_len;
  while (lo < hi) {
    const int32_t mid = (lo + hi) / 2;
    if (window_local(p, mid, group_len).end > j_local) hi = mid; else lo = mid + 1;
  }
  const int32_t first = lo;
  // first query whose window start exceeds j_local
  lo = first;
  hi = group_len;
  while (lo < hi) {
    const int32_t mid = (lo + hi) / 2;
    if (window_local(p, mid, group_len).begin > j_local) hi = mid; else lo = mid + 1;
  }
  return Range{first, lo};
}

// Inverse neighborhood of absolute key j, in group-local coordinates of j's group.
FASTNA_HOST_DEVICE Range inverse_window(const AxisParams& p, int32_t j) {
  const int32_t g = j % p.dilation;
  return inverse_window_local(p, j / p.dilation, group_length(p, g));
}

// Keys needed by a tile of group-local queries [q.begin, q.end) of one dilation group: the
// union of their windows.  Since starts and ends are monotone, it is
// [start(first query), end(last query)).  Empty for an empty tile.
FASTNA_HOST_DEVICE Range key_range_for_query_tile(const AxisParams& p, Range q, int32_t group_len) {
  if (q.empty()) return Range{0, 0};
  return Range{window_local(p, q.begin, group_len).begin,
               window_local(p, q.end - 1, group_len).end};
}

// window_local / group_length / key_range_for_query_tile with division-free fast paths for the
// common stride 1 (non-causal) and dilation 1 (uniform branches; same results).  Kernels whose
// threads evaluate a dozen windows per CTA (small windows: little else to do) use these.
FASTNA_HOST_DEVICE Range window_fast(const AxisParams& p, int32_t i, int32_t group_len) {
  if (p.stride == 1 && !p.causal) {
    const int32_t start = imax(imin(i - p.kernel / 2, group_len - p.kernel), 0);
    return Range{start, start + p.kernel};
  }
  return window_local(p, i, group_len);
}
FASTNA_HOST_DEVICE int32_t group_length_fast(const AxisParams& p, int32_t g) {
  return p.dilation == 1 ? p.length : group_length(p, g);
}
FASTNA_HOST_DEVICE Range key_range_fast(const AxisParams& p, Range q, int32_t group_len) {
  if (q.empty()) return Range{0, 0};
  return Range{window_fast(p, q.begin, group_len).begin, window_fast(p, q.end - 1, group_len).end};
}

// Queries that see at least one key of a tile of group-local keys [k.begin, k.end).
FASTNA_HOST_DEVICE Range query_range_for_key_tile(const AxisParams& p, Range k, int32_t group_len) {
  if (k.empty()) return Range{0, 0};
  const Range first = inverse_window_local(p, k.begin, group_len);
  const Range last = inverse_window_local(p, k.end - 1, group_len);
  return Range{first.begin, last.end};
}

// Whether every query of the tile sees every key of the key tile (the tile can skip masking).
FASTNA_HOST_DEVICE bool tile_fully_inside(const AxisParams& p, Range q, Range k, int32_t group_len) {
  if (q.empty() || k.empty()) return true;
  // The intersection of all windows is [start(last), end(first)).
  const Range wf = window_local(p, q.begin, group_len);
  const Range wl = window_local(p, q.end - 1, group_len);
  return wl.begin <= k.begin && k.end <= wf.end;
}

}  // namespace fastna
