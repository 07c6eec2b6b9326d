// The grid group of cooperative launches, for the CPU simulation.
#pragma once
#include "cuda_runtime_api.h"

namespace cooperative_groups {

class grid_group {
 public:
  void sync() const { cuda_sim::sync_grid(); }
  bool is_valid() const { return cuda_sim::this_fiber().block->grid->cooperative; }
  unsigned long long size() const {
    const dim3 g = gridDim, b = blockDim;
    return 1ull * g.x * g.y * g.z * b.x * b.y * b.z;
  }
};

inline grid_group this_grid() { return grid_group(); }

}  // namespace cooperative_groups
