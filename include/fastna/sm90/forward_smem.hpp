// The shared memory of one sm90a forward CTA as its warpgroups see it -- the Q buffer, the
// kStages-deep K / V ring and the mbarriers -- and the query-tile order of the persistent grid,
// shared by the producer (forward_producer.hpp) and the consumers (forward_consumer.hpp).
#pragma once

#include <cstdint>

#include "fastna/sm90/forward_params.hpp"

namespace fastna {
namespace hopper {
namespace detail {

template <class Element>
struct ForwardSmem {
  Element* q;
  Element* k;              // [stage][kBlockN x D]
  Element* v;              // [stage][kBlockN x D]
  uint64_t* bar_q;         // Q landed
  uint64_t* bar_k;         // [stage] K landed
  uint64_t* bar_v;         // [stage] V landed
  uint64_t* bar_empty;     // [stage] both consumers done with the stage
  uint64_t* bar_q_empty;   // Q buffer free: both warpgroups' last S of a tile done
};

// Tile t -> (spatial box bx, head h, batch b), spatial box fastest.
__device__ __forceinline__ void tile_coords(int tiles_x, int heads, int t, int& bx, int& h, int& b) {
  bx = t % tiles_x;
  const int rest = t / tiles_x;
  h = rest % heads;
  b = rest / heads;
}

}  // namespace detail
}  // namespace hopper
}  // namespace fastna
