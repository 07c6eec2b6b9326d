// CUDA entry point of anomaly_kernels::kcenter_greedy_: checks, device guard, scratch buffers,
// current stream; the per-center passes are enqueued back to back without host synchronisation.
#include <cuda_bf16.h>

#include <torch/csrc/stable/ops.h>

#include "common/kcenter_greedy_args.h"
#include "cuda/cuda_context.h"
#include "cuda/kcenter.cuh"

namespace anomaly_kernels {
namespace {

void kcenter_greedy_cuda(Tensor features, Tensor min_distances, Tensor nearest, Tensor centers,
                         int64_t begin, int64_t end, bool pick, bool prune) {
  check_kcenter_greedy_args(features, min_distances, nearest, centers, begin, end, pick);
  if (begin == end) return;
  torch::stable::accelerator::DeviceGuard guard(features.get_device_index());
  const Tensor rows = torch::stable::contiguous(features);
  std::vector<int64_t> distance_shape{prune ? end : 1}, key_shape{1};
  Tensor center_distance = torch::stable::new_empty(rows, distance_shape, ScalarType::Float);
  Tensor key = torch::stable::new_empty(rows, key_shape, ScalarType::Long);
  auto run = [&](const auto* x) {
    return cuda::kcenter_greedy(
        x, rows.size(0), rows.size(1), min_distances.mutable_data_ptr<float>(),
        nearest.mutable_data_ptr<int32_t>(), centers.mutable_data_ptr<int64_t>(), begin, end, pick,
        prune, center_distance.mutable_data_ptr<float>(),
        reinterpret_cast<unsigned long long*>(key.mutable_data_ptr<int64_t>()),
        current_stream(features));
  };
  const cudaError_t err =
      rows.scalar_type() == ScalarType::Float
          ? run(rows.const_data_ptr<float>())
          : run(static_cast<const __nv_bfloat16*>(rows.const_data_ptr()));
  check_launch(err, "kcenter_greedy_");
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CUDA, m) {
  m.impl("kcenter_greedy_", TORCH_BOX(&anomaly_kernels::kcenter_greedy_cuda));
}
