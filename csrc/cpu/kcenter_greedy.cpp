// CPU kernel of anomaly_kernels::kcenter_greedy_: the greedy selection loop itself runs
// natively, one fused pass per center (cpu/kcenter_pass.h), optionally pruned row by row or
// group by group (cpu/kcenter_groups.h). Features may be
// float32 or bfloat16 (half the bytes per pass; distances still accumulate in float32).
#include <algorithm>
#include <optional>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/kcenter_greedy_args.h"
#include "cpu/kcenter_groups.h"
#include "cpu/kcenter_pass.h"

namespace anomaly_kernels {
namespace {

// Passes [begin, end) over features stored as S (float or bfloat16 bits), distances in float.
// With pruning, a pass reads rows either sequentially with the row test (cpu/kcenter_pass.h)
// or group by group (cpu/kcenter_groups.h). Groups pay off once few rows are within a new
// center's reach: the run builds them (O(N)) after `calm_needed` consecutive sequential passes
// that each read under 1/kGroupsBelow of the rows, and drops them when the groups in a
// center's reach hold over 1/kSequentialAbove of the rows. Each drop doubles calm_needed, so
// data whose passes alternate between the two regimes does not rebuild groups every pass.
constexpr int64_t kGroupsBelow = 16;
constexpr int64_t kSequentialAbove = 4;
constexpr int64_t kFirstCalmPasses = 4;
constexpr int64_t kMostCalmPasses = 1024;

// Passes [begin, end) over features stored as S (float or bfloat16 bits), distances in float.
template <typename S>
void greedy_passes(const S* x, int64_t n, int64_t d, float* mind, int32_t* nearest,
                   int64_t* center_index, int64_t begin, int64_t end, bool pick, bool prune) {
  std::vector<float> center_distance(prune ? end : 0), center_row(d);
  std::optional<cpu::CenterGroups> groups;  // set while passes go group by group
  int64_t calm = 0, calm_needed = kFirstCalmPasses;
  for (int64_t t = begin; t < end; ++t) {
    const int64_t c = center_index[t];
    STD_TORCH_CHECK(c >= 0 && c < n, "centers[", t, "] must index a row of features (0 <= i < ",
                    n, "), got ", c);
    for (int64_t j = 0; j < d; ++j) center_row[j] = cpu::widen(x[c * d + j]);
    cpu::Pruning<float> pruning;
    pruning.nearest = nearest;
    pruning.new_position = static_cast<int32_t>(t);
    if (prune && t > 0) {
      torch::stable::parallel_for(0, t, 256, [&](int64_t first, int64_t last) {
        for (int64_t j = first; j < last; ++j)
          center_distance[j] =
              std::sqrt(cpu::squared_distance(x + center_index[j] * d, center_row.data(), d));
      });
      pruning.center_distance = center_distance.data();
    }
    std::optional<cpu::Farthest> farthest;
    if (groups) {
      farthest = groups->pass(x, d, mind, nearest, center_row.data(), center_distance.data(),
                              static_cast<int32_t>(t), n / kSequentialAbove);
      if (!farthest) {
        groups.reset();
        calm_needed = std::min(2 * calm_needed, kMostCalmPasses);
      }
    }
    if (!farthest) {
      farthest = cpu::update_and_find_farthest(x, n, d, mind, center_row.data(), pruning);
      calm = prune && farthest->rows_read * kGroupsBelow < n ? calm + 1 : 0;
      if (calm >= calm_needed) {
        groups.emplace(nearest, mind, n, end);
        calm = 0;
      }
    }
    if (pick) center_index[t + 1] = farthest->index;
  }
}

void kcenter_greedy_cpu(Tensor features, Tensor min_distances, Tensor nearest, Tensor centers,
                        int64_t begin, int64_t end, bool pick, bool prune) {
  check_kcenter_greedy_args(features, min_distances, nearest, centers, begin, end, pick);
  STD_TORCH_CHECK(features.is_cpu(), "features must be a CPU tensor for the CPU kernel");
  const Tensor rows = as_contiguous(features);
  const int64_t n = rows.size(0), d = rows.size(1);
  float* mind = min_distances.mutable_data_ptr<float>();
  int32_t* near = nearest.mutable_data_ptr<int32_t>();
  int64_t* center_index = centers.mutable_data_ptr<int64_t>();
  if (rows.scalar_type() == ScalarType::Float) {
    greedy_passes(rows.const_data_ptr<float>(), n, d, mind, near, center_index, begin, end, pick,
                  prune);
  } else {
    const auto* bits = static_cast<const cpu::BFloat16Bits*>(rows.const_data_ptr());
    greedy_passes(bits, n, d, mind, near, center_index, begin, end, pick, prune);
  }
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CPU, m) {
  m.impl("kcenter_greedy_", TORCH_BOX(&anomaly_kernels::kcenter_greedy_cpu));
}
