// Host-only use of fastna's index math: prints the 1D windows of the worked example in
// docs/SEMANTICS.md section 7.
#include <cstdio>

#include <fastna/common/index_math.hpp>
#include <fastna/common/problem.hpp>

int main() {
  fastna::NaProblem<1> problem;
  problem.axis[0].length = 10;
  problem.axis[0].kernel = 3;
  std::printf("L=10 K=3, window size %d\n", problem.window_size());
  for (int i = 0; i < problem.axis[0].length; ++i) {
    const fastna::Range w = fastna::window(problem.axis[0], i);
    std::printf("query %d sees [%d, %d)\n", i, w.begin, w.end);
  }
  return 0;
}
