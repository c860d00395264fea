// Umbrella header for the naive kernels: fastna::naive::Forward / Backward<Rank, T>.
#pragma once

#include "fastna/naive/backward.cuh"
#include "fastna/naive/forward.cuh"
