// include/fastna/common/grouped_schedule.hpp on the host: for random problem lists, the schedule
// gives every (problem, tile) exactly one CTA, skips problems without tiles, puts the costliest
// problems first, and locate() inverts it for every x of the grid.
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "fastna/common/grouped_schedule.hpp"

int main() {
  std::mt19937 g(7);
  int failed = 0, cases = 0;
  for (int c = 0; c < 2000; ++c, ++cases) {
    const int n = std::uniform_int_distribution<int>(1, 40)(g);
    std::vector<int64_t> tiles(n), cost(n);
    for (int p = 0; p < n; ++p) {
      tiles[p] = std::uniform_int_distribution<int>(0, 3)(g) == 0 ? 0 : std::uniform_int_distribution<int>(1, 50)(g);
      cost[p] = std::uniform_int_distribution<int>(1, 5)(g);
    }
    std::vector<int32_t> first_tile, problem_of;
    const int64_t grid_x = fastna::make_grouped_schedule(tiles, cost, first_tile, problem_of);
    fastna::GroupedSchedule s;
    s.first_tile = first_tile.data();
    s.problem_of = problem_of.data();
    s.slots = static_cast<int32_t>(problem_of.size());
    int64_t want_x = 0;
    for (int64_t t : tiles) want_x += t;
    bool ok = grid_x == want_x && first_tile.size() == problem_of.size() + 1 && first_tile.back() == grid_x;
    for (size_t i = 1; ok && i < problem_of.size(); ++i)  // costliest first
      ok = cost[problem_of[i - 1]] >= cost[problem_of[i]];
    std::vector<std::vector<int>> seen(n);
    for (int p = 0; p < n; ++p) seen[p].assign(static_cast<size_t>(tiles[p]), 0);
    for (int32_t x = 0; ok && x < grid_x; ++x) {
      int32_t p = -1, t = -1;
      s.locate(x, p, t);
      ok = p >= 0 && p < n && t >= 0 && t < tiles[p];
      if (ok) ++seen[p][t];
    }
    for (int p = 0; ok && p < n; ++p)
      for (int v : seen[p]) ok = ok && v == 1;
    if (!ok) {
      ++failed;
      if (failed <= 10) std::printf("FAIL case %d (%d problems)\n", c, n);
    }
  }
  std::printf("%d schedules; %d failed\n", cases, failed);
  return failed == 0 ? 0 : 1;
}
