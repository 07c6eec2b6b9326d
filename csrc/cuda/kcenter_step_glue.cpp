// CUDA entry points of anomaly_kernels::kcenter_step_ and kcenter_step_to_: checks, device
// guard, current stream, launch. The kernels live in kcenter.cu.
#include <torch/csrc/stable/ops.h>

#include "common/kcenter_step_args.h"
#include "cuda/cuda_context.h"
#include "cuda/kcenter.cuh"

namespace anomaly_kernels {
namespace {

Tensor kcenter_step_cuda(Tensor features, Tensor min_distances, Tensor center) {
  check_kcenter_step_args(features, min_distances, center);
  STD_TORCH_CHECK(features.scalar_type() == ScalarType::Float,
                  "features must be float32 on CUDA, got ", dtype_name(features.scalar_type()));
  torch::stable::accelerator::DeviceGuard guard(features.get_device_index());
  const Tensor rows = torch::stable::contiguous(features);
  const Tensor center_index = torch::stable::contiguous(center);
  std::vector<int64_t> scalar_shape;
  Tensor out = torch::stable::new_empty(min_distances, scalar_shape, ScalarType::Long);
  check_launch(cuda::kcenter_step(rows.const_data_ptr<float>(), rows.size(0), rows.size(1),
                                  min_distances.mutable_data_ptr<float>(),
                                  center_index.const_data_ptr<int64_t>(),
                                  out.mutable_data_ptr<int64_t>(), current_stream(features)),
               "kcenter_step_");
  return out;
}

Tensor kcenter_step_to_cuda(Tensor features, Tensor min_distances, Tensor center_row) {
  check_kcenter_step_to_args(features, min_distances, center_row);
  STD_TORCH_CHECK(features.scalar_type() == ScalarType::Float,
                  "features must be float32 on CUDA, got ", dtype_name(features.scalar_type()));
  torch::stable::accelerator::DeviceGuard guard(features.get_device_index());
  const Tensor rows = torch::stable::contiguous(features);
  const Tensor center = torch::stable::contiguous(center_row);
  std::vector<int64_t> scalar_shape;
  Tensor out = torch::stable::new_empty(min_distances, scalar_shape, ScalarType::Long);
  check_launch(cuda::kcenter_step_to(rows.const_data_ptr<float>(), rows.size(0), rows.size(1),
                                     min_distances.mutable_data_ptr<float>(),
                                     center.const_data_ptr<float>(),
                                     out.mutable_data_ptr<int64_t>(), current_stream(features)),
               "kcenter_step_to_");
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CUDA, m) {
  m.impl("kcenter_step_", TORCH_BOX(&anomaly_kernels::kcenter_step_cuda));
  m.impl("kcenter_step_to_", TORCH_BOX(&anomaly_kernels::kcenter_step_to_cuda));
}
