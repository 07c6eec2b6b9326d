// CPU kernel of anomaly_kernels::kcenter_greedy_: the greedy selection loop itself runs
// natively, one fused pass (cpu/kcenter_pass.h) per center, optionally pruned.
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/kcenter_greedy_args.h"
#include "cpu/kcenter_pass.h"

namespace anomaly_kernels {
namespace {

void kcenter_greedy_cpu(Tensor features, Tensor min_distances, Tensor nearest, Tensor centers,
                        int64_t begin, int64_t end, bool pick, bool prune) {
  check_kcenter_greedy_args(features, min_distances, nearest, centers, begin, end, pick);
  STD_TORCH_CHECK(features.is_cpu(), "features must be a CPU tensor for the CPU kernel");
  const Tensor rows = torch::stable::contiguous(features);
  const float* x = rows.const_data_ptr<float>();
  const int64_t n = rows.size(0), d = rows.size(1);
  float* mind = min_distances.mutable_data_ptr<float>();
  int64_t* center_index = centers.mutable_data_ptr<int64_t>();
  std::vector<float> center_distance(prune ? end : 0);

  for (int64_t t = begin; t < end; ++t) {
    const int64_t c = center_index[t];
    STD_TORCH_CHECK(c >= 0 && c < n, "centers[", t, "] must index a row of features (0 <= i < ",
                    n, "), got ", c);
    cpu::Pruning<float> pruning;
    pruning.nearest = nearest.mutable_data_ptr<int32_t>();
    pruning.new_position = static_cast<int32_t>(t);
    if (prune && t > 0) {
      const float* center_row = x + c * d;
      torch::stable::parallel_for(0, t, 256, [&](int64_t first, int64_t last) {
        for (int64_t j = first; j < last; ++j)
          center_distance[j] =
              std::sqrt(cpu::squared_distance(x + center_index[j] * d, center_row, d));
      });
      pruning.center_distance = center_distance.data();
    }
    const cpu::Farthest farthest = cpu::update_and_find_farthest(x, n, d, mind, x + c * d, pruning);
    if (pick) center_index[t + 1] = farthest.index;
  }
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CPU, m) {
  m.impl("kcenter_greedy_", TORCH_BOX(&anomaly_kernels::kcenter_greedy_cpu));
}
