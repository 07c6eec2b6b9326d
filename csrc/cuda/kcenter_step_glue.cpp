// CUDA entry points of anomaly_kernels::kcenter_step_ and kcenter_step_to_: checks, device
// guard, current stream, launch. The kernels live in kcenter.cu. A tensor center outside [0, N)
// cannot be reported without a host synchronisation: the kernel then leaves min_distances
// unchanged and returns -1.
#include <torch/csrc/stable/ops.h>

#include "common/kcenter_step_args.h"
#include "cuda/cuda_context.h"
#include "cuda/kcenter.cuh"

namespace anomaly_kernels {
namespace {

// The step against features[center] (center_index given) or against center_row.
Tensor step_cuda(const Tensor& features, Tensor& min_distances, const Tensor* center_index,
                 const Tensor* center_row, const char* op) {
  STD_TORCH_CHECK(features.scalar_type() == ScalarType::Float,
                  "features must be float32 on CUDA, got ", dtype_name(features.scalar_type()));
  torch::stable::accelerator::DeviceGuard guard(features.get_device_index());
  const Tensor rows = as_contiguous(features);
  const Tensor center = as_contiguous(center_index ? *center_index : *center_row);
  std::vector<int64_t> scalar_shape;
  Tensor out = torch::stable::new_empty(min_distances, scalar_shape, ScalarType::Long);
  std::vector<int64_t> scratch_shape{(cuda::kcenter_step_scratch_bytes() + 7) / 8};
  Tensor scratch = torch::stable::new_empty(min_distances, scratch_shape, ScalarType::Long);
  check_launch(cuda::kcenter_step(rows.const_data_ptr<float>(), rows.size(0), rows.size(1),
                                  min_distances.mutable_data_ptr<float>(),
                                  center_index ? center.const_data_ptr<int64_t>() : nullptr,
                                  center_row ? center.const_data_ptr<float>() : nullptr,
                                  out.mutable_data_ptr<int64_t>(), scratch.mutable_data_ptr(),
                                  current_stream(features)),
               op);
  return out;
}

Tensor kcenter_step_cuda(Tensor features, Tensor min_distances, Tensor center) {
  check_kcenter_step_args(features, min_distances, center);
  return step_cuda(features, min_distances, &center, nullptr, "kcenter_step_");
}

Tensor kcenter_step_to_cuda(Tensor features, Tensor min_distances, Tensor center_row) {
  check_kcenter_step_to_args(features, min_distances, center_row);
  return step_cuda(features, min_distances, nullptr, &center_row, "kcenter_step_to_");
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CUDA, m) {
  m.impl("kcenter_step_", TORCH_BOX(&anomaly_kernels::kcenter_step_cuda));
  m.impl("kcenter_step_to_", TORCH_BOX(&anomaly_kernels::kcenter_step_to_cuda));
}
