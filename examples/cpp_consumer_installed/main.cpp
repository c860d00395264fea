// Host-only use of an installed fastna: one 1D window of the worked example in
// docs/SEMANTICS.md section 7, checked.
#include <cstdio>

#include <fastna/common/index_math.hpp>

#ifdef CONSUMER_HAVE_CUTLASS
#include <cutlass/version.h>  // proves fastna::fastna carries the CUTLASS include path
#endif

int main() {
  fastna::AxisParams ax;
  ax.length = 10;
  ax.kernel = 3;
  const fastna::Range w = fastna::window(ax, 5);
  std::printf("L=10 K=3: query 5 sees [%d, %d)\n", w.begin, w.end);
#ifdef CONSUMER_HAVE_CUTLASS
  std::printf("CUTLASS %d.%d.%d headers visible\n", CUTLASS_MAJOR, CUTLASS_MINOR, CUTLASS_PATCH);
#endif
  if (w.begin != 4 || w.end != 7) {
    std::fprintf(stderr, "FAIL: expected [4, 7)\n");
    return 1;
  }
  const fastna::Range edge = fastna::window(ax, 0);  // clamped at the border: [0, 3)
  if (edge.begin != 0 || edge.end != 3) {
    std::fprintf(stderr, "FAIL: query 0 sees [%d, %d), expected [0, 3)\n", edge.begin, edge.end);
    return 1;
  }
  std::printf("OK\n");
  return 0;
}
