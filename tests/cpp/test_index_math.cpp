// Exhaustive check of include/fastna/common/index_math.hpp against a brute-force reading of
// docs/SEMANTICS.md sections 3-6, for every L in 2..16 and every valid (K, stride, dilation,
// causal).
//
// The oracle deliberately does not reuse the library's arithmetic: non-causal windows are
// built by centering on the leader and then sliding one step at a time until they fit, and
// every set (inverse neighborhoods, tile unions and intersections) is computed by enumeration
// as a bitmask.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "fastna/common/index_math.hpp"

using fastna::AxisParams;
using fastna::Range;

namespace {

int g_passed = 0;
int g_failed = 0;

#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    if (cond) {                                                            \
      ++g_passed;                                                          \
    } else {                                                               \
      ++g_failed;                                                          \
      if (g_failed <= 30) {                                                \
        std::printf("FAIL %s:%d: %s | ", __FILE__, __LINE__, #cond);       \
        std::printf(__VA_ARGS__);                                          \
        std::printf("\n");                                                 \
      }                                                                    \
    }                                                                      \
  } while (0)

using Mask = uint32_t;  // L <= 16 group-local positions

Mask range_mask(int b, int e) {
  Mask m = 0;
  for (int x = b; x < e; ++x) m |= Mask(1) << x;
  return m;
}

// docs/SEMANTICS.md sections 3-4, literally, for group-local query il in a group of length Lg.
Range oracle_window(int K, int s, bool causal, int il, int Lg) {
  const int tile_base = (il / s) * s;
  if (causal) {
    int leader = tile_base + s - 1;
    if (leader > Lg - 1) leader = Lg - 1;
    int start = leader - K + 1;
    if (start < 0) start = 0;
    int end = il + 1;
    if (end > Lg) end = Lg;
    return Range{start, end};
  }
  const int left = K / 2;
  const int right = K / 2 + (K % 2) - 1;
  int leader = tile_base + s / 2;
  if (leader > Lg - 1) leader = Lg - 1;
  // Centered window [leader - left, leader + right], then slid (never truncated) into range.
  int start = leader - left;
  int end = leader + right + 1;
  while (start < 0) { ++start; ++end; }
  while (end > Lg) { --start; --end; }
  return Range{start, end};
}

const char* fmt = "L=%d K=%d s=%d d=%d c=%d x=%d";

void check_params(int L, int K, int s, int d, bool c) {
  AxisParams p;
  p.length = L; p.kernel = K; p.stride = s; p.dilation = d; p.causal = c;

  // Absolute-coordinate neighbor sets, brute force.
  std::vector<std::vector<bool>> nb(L, std::vector<bool>(L, false));
  for (int i = 0; i < L; ++i) {
    const int g = i % d, Lg = (L - g + d - 1) / d;
    const Range ow = oracle_window(K, s, c, i / d, Lg);
    const Range w = fastna::window(p, i);
    CHECK(w.begin == ow.begin && w.end == ow.end, fmt, L, K, s, d, c, i);
    CHECK(fastna::group_length(p, g) == Lg, fmt, L, K, s, d, c, i);
    if (!c) CHECK(w.size() == K, fmt, L, K, s, d, c, i);
    if (c) CHECK(w.size() >= 1 && w.size() <= K && w.end == i / d + 1, fmt, L, K, s, d, c, i);
    CHECK(w.begin >= 0 && w.end <= Lg, fmt, L, K, s, d, c, i);
    for (int j = 0; j < L; ++j) {
      nb[i][j] = (j % d == g) && ow.begin <= j / d && j / d < ow.end;
      CHECK(fastna::is_neighbor(p, i, j) == nb[i][j], fmt, L, K, s, d, c, i);
    }
  }
  // Inverse windows: the group-local queries whose neighborhoods contain key j.
  for (int j = 0; j < L; ++j) {
    Mask m = 0;
    for (int i = 0; i < L; ++i) if (nb[i][j]) m |= Mask(1) << (i / d);
    const Range r = fastna::inverse_window(p, j);
    CHECK(range_mask(r.begin, r.end) == m, fmt, L, K, s, d, c, j);
    CHECK(m & (Mask(1) << (j / d)), fmt, L, K, s, d, c, j);  // every key is seen by itself
  }
  // Tiles, per dilation group, in group-local coordinates.
  for (int g = 0; g < d; ++g) {
    const int Lg = (L - g + d - 1) / d;
    std::vector<Mask> win(Lg), inv(Lg);
    for (int il = 0; il < Lg; ++il) {
      const Range ow = oracle_window(K, s, c, il, Lg);
      win[il] = range_mask(ow.begin, ow.end);
    }
    for (int jl = 0; jl < Lg; ++jl) {
      for (int il = 0; il < Lg; ++il) if (win[il] & (Mask(1) << jl)) inv[jl] |= Mask(1) << il;
    }
    for (int a = 0; a < Lg; ++a) {
      for (int b = a + 1; b <= Lg; ++b) {
        Mask uw = 0, ui = 0, iw = ~Mask(0);
        for (int x = a; x < b; ++x) { uw |= win[x]; ui |= inv[x]; iw &= win[x]; }
        const Range kr = fastna::key_range_for_query_tile(p, Range{a, b}, Lg);
        CHECK(range_mask(kr.begin, kr.end) == uw, fmt, L, K, s, d, c, a * 100 + b);
        const Range qr = fastna::query_range_for_key_tile(p, Range{a, b}, Lg);
        CHECK(range_mask(qr.begin, qr.end) == ui, fmt, L, K, s, d, c, a * 100 + b);
        for (int ka = 0; ka < Lg; ++ka) {
          for (int kb = ka + 1; kb <= Lg; ++kb) {
            const Mask km = range_mask(ka, kb);
            const bool inside = (km & ~iw) == 0;
            CHECK(fastna::tile_fully_inside(p, Range{a, b}, Range{ka, kb}, Lg) == inside, fmt, L, K, s, d, c,
                  a * 1000000 + b * 10000 + ka * 100 + kb);
          }
        }
      }
    }
    CHECK(fastna::key_range_for_query_tile(p, Range{3, 3}, Lg).empty(), fmt, L, K, s, d, c, g);
    CHECK(fastna::query_range_for_key_tile(p, Range{2, 1}, Lg).empty(), fmt, L, K, s, d, c, g);
  }
}

void set_of(const AxisParams& p, int i, std::vector<int>& out) {
  out.clear();
  for (int j = 0; j < p.length; ++j) if (fastna::is_neighbor(p, i, j)) out.push_back(j);
}

void worked_examples() {
  AxisParams p;
  p.length = 10; p.kernel = 3;
  std::vector<int> s;
  set_of(p, 0, s); CHECK((s == std::vector<int>{0, 1, 2}), "q0");
  set_of(p, 5, s); CHECK((s == std::vector<int>{4, 5, 6}), "q5");
  set_of(p, 9, s); CHECK((s == std::vector<int>{7, 8, 9}), "q9");
  p.dilation = 2;
  set_of(p, 1, s); CHECK((s == std::vector<int>{1, 3, 5}), "d=2 q1");
  // Even K = 2r: r keys on the left, r - 1 on the right.
  AxisParams e;
  e.length = 10; e.kernel = 4;
  set_of(e, 5, s); CHECK((s == std::vector<int>{3, 4, 5, 6}), "K=4 q5");
  // K = L: self-attention; stride = K: blocked attention.
  AxisParams f;
  f.length = 8; f.kernel = 8;
  for (int i = 0; i < 8; ++i) { set_of(f, i, s); CHECK(s.size() == 8u, "K=L q%d", i); }
  AxisParams blk;
  blk.length = 8; blk.kernel = 4; blk.stride = 4;
  for (int i = 0; i < 8; ++i) {
    const Range w = fastna::window(blk, i);
    CHECK(w.begin == (i / 4) * 4 && w.end == w.begin + 4, "blocked q%d", i);
  }
  AxisParams cz;
  cz.length = 10; cz.kernel = 3; cz.causal = true;
  set_of(cz, 0, s); CHECK((s == std::vector<int>{0}), "causal q0");
  set_of(cz, 5, s); CHECK((s == std::vector<int>{3, 4, 5}), "causal q5");
}

}  // namespace

int main() {
  worked_examples();
  long combos = 0;
  for (int L = 2; L <= 16; ++L)
    for (int K = 2; K <= L; ++K)
      for (int s = 1; s <= K; ++s)
        for (int d = 1; K * d <= L; ++d)
          for (int c = 0; c < 2; ++c) {
            check_params(L, K, s, d, c != 0);
            ++combos;
          }
  std::printf("%ld parameter sets; %d passed, %d failed\n", combos, g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
