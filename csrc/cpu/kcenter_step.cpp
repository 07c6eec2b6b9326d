// CPU kernels of anomaly_kernels::kcenter_step_ and kcenter_step_to_: one fused pass over the
// rows that computes each row's distance to the new center, lowers its running minimum and
// tracks the argmax. The center is a row of features (by index) or a separate vector.
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/kcenter_step_args.h"
#include "cpu/kcenter_pass.h"

namespace anomaly_kernels {
namespace {

// One pass against the center vector at `center` (d values of the features' dtype: a row of
// features or a separate vector), in place; returns the farthest row as a 0-dim int64 tensor.
Tensor step_against(const Tensor& rows, Tensor& min_distances, const void* center) {
  const int64_t n = rows.size(0), d = rows.size(1);
  int64_t index;
  if (rows.scalar_type() == ScalarType::Float) {
    index = cpu::update_and_find_farthest(rows.const_data_ptr<float>(), n, d,
                                          min_distances.mutable_data_ptr<float>(),
                                          static_cast<const float*>(center), cpu::Pruning<float>{})
                .index;
  } else {
    index = cpu::update_and_find_farthest(rows.const_data_ptr<double>(), n, d,
                                          min_distances.mutable_data_ptr<double>(),
                                          static_cast<const double*>(center), cpu::Pruning<double>{})
                .index;
  }
  std::vector<int64_t> scalar_shape;
  Tensor out = torch::stable::new_empty(min_distances, scalar_shape, ScalarType::Long);
  *out.mutable_data_ptr<int64_t>() = index;
  return out;
}

Tensor kcenter_step_cpu(Tensor features, Tensor min_distances, Tensor center) {
  check_kcenter_step_args(features, min_distances, center);
  STD_TORCH_CHECK(features.is_cpu(), "features must be a CPU tensor for the CPU kernel");
  const Tensor rows = as_contiguous(features);
  const Tensor center_cpu = as_contiguous(center);
  const int64_t c = *center_cpu.const_data_ptr<int64_t>();
  STD_TORCH_CHECK(c >= 0 && c < rows.size(0), "center must index a row of features (0 <= center < ",
                  rows.size(0), "), got ", c);
  const auto* first = static_cast<const char*>(rows.const_data_ptr());
  return step_against(rows, min_distances, first + c * rows.size(1) * rows.element_size());
}

Tensor kcenter_step_to_cpu(Tensor features, Tensor min_distances, Tensor center_row) {
  check_kcenter_step_to_args(features, min_distances, center_row);
  STD_TORCH_CHECK(features.is_cpu(), "features must be a CPU tensor for the CPU kernel");
  const Tensor rows = as_contiguous(features);
  const Tensor center = as_contiguous(center_row);
  return step_against(rows, min_distances, center.const_data_ptr());
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CPU, m) {
  m.impl("kcenter_step_", TORCH_BOX(&anomaly_kernels::kcenter_step_cpu));
  m.impl("kcenter_step_to_", TORCH_BOX(&anomaly_kernels::kcenter_step_to_cpu));
}
