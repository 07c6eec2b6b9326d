// CUDA entry point of anomaly_kernels::kcenter_greedy_: checks, device guard, scratch, current
// stream. The passes run on the device (one cooperative kernel where possible); the call then
// waits for them once and raises on the bad centers[] or nearest[] entries they met.
//
// Environment (read at every call, for measurements and tests):
//   ANOMALY_KERNELS_KCENTER_NO_COOPERATIVE=1  one launch per pass instead of one cooperative kernel
//   ANOMALY_KERNELS_KCENTER_BLOCKS_PER_SM=k   at most k blocks per SM in the cooperative grid
//   ANOMALY_KERNELS_KCENTER_L2_SHARE=f        share of L2 kept for rows across passes (0..1)
//   ANOMALY_KERNELS_KCENTER_TRIANGLE_BYTES=b  budget of the center-to-center distances kept for
//                                             the bounded pruned passes (0: exact passes only)
#include <cuda_bf16.h>

#include <cstdlib>
#include <exception>
#include <optional>
#include <string>

#include <torch/csrc/stable/ops.h>

#include "common/kcenter_greedy_args.h"
#include "cuda/cuda_context.h"
#include "cuda/kcenter.cuh"

namespace anomaly_kernels {
namespace {

cuda::KCenterLaunch launch_from_environment() {
  cuda::KCenterLaunch launch;
  if (const char* v = std::getenv("ANOMALY_KERNELS_KCENTER_NO_COOPERATIVE"))
    launch.allow_cooperative = std::string(v).empty() || std::string(v) == "0";
  if (const char* v = std::getenv("ANOMALY_KERNELS_KCENTER_BLOCKS_PER_SM"))
    launch.max_blocks_per_sm = std::atoi(v);
  if (const char* v = std::getenv("ANOMALY_KERNELS_KCENTER_L2_SHARE"))
    launch.l2_share = static_cast<float>(std::atof(v));
  if (const char* v = std::getenv("ANOMALY_KERNELS_KCENTER_TRIANGLE_BYTES"))
    launch.triangle_bytes = std::atoll(v);
  return launch;
}

void kcenter_greedy_cuda(Tensor features, Tensor min_distances, Tensor nearest, Tensor centers,
                         int64_t begin, int64_t end, bool pick, bool prune) {
  check_kcenter_greedy_args(features, min_distances, nearest, centers, begin, end, pick);
  if (begin == end) return;
  torch::stable::accelerator::DeviceGuard guard(features.get_device_index());
  const Tensor rows = as_contiguous(features);
  cuda::KCenterLaunch launch = launch_from_environment();
  const int64_t feature_bytes = rows.numel() * (rows.scalar_type() == ScalarType::Float ? 4 : 2);
  const auto allocate_scratch = [&] {
    const int64_t bytes =
        cuda::kcenter_greedy_scratch_bytes(begin, end, pick, prune, feature_bytes, launch);
    std::vector<int64_t> shape{(bytes + 7) / 8};
    return torch::stable::new_empty(rows, shape, ScalarType::Long);
  };
  std::optional<Tensor> allocated;
  try {
    allocated = allocate_scratch();
  } catch (const std::exception&) {
    // The center-to-center triangle only saves time: without room for it, run without it.
    if (launch.triangle_bytes == 0) throw;
    launch.triangle_bytes = 0;
    allocated = allocate_scratch();
  }
  Tensor scratch = *allocated;
  cuda::KCenterError error;
  auto run = [&](const auto* x) {
    return cuda::kcenter_greedy(x, rows.size(0), rows.size(1),
                                min_distances.mutable_data_ptr<float>(),
                                nearest.mutable_data_ptr<int32_t>(),
                                centers.mutable_data_ptr<int64_t>(), begin, end, pick, prune,
                                scratch.mutable_data_ptr(), launch, &error,
                                current_stream(features));
  };
  const cudaError_t err =
      rows.scalar_type() == ScalarType::Float
          ? run(rows.const_data_ptr<float>())
          : run(static_cast<const __nv_bfloat16*>(rows.const_data_ptr()));
  check_launch(err, "kcenter_greedy_");
  STD_TORCH_CHECK(error.kind != cuda::kCenterOutOfRange, "kcenter_greedy_: centers[",
                  error.where, "] must index a row of features (0 <= i < ", rows.size(0),
                  "), got ", error.value);
  STD_TORCH_CHECK(error.kind != cuda::kNearestOutOfRange, "kcenter_greedy_: nearest[",
                  error.where, "] must be -1 or a coreset position below end = ", end, ", got ",
                  error.value);
  STD_TORCH_CHECK(error.kind == 0, "kcenter_greedy_: the device reported error ", error.kind);
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CUDA, m) {
  m.impl("kcenter_greedy_", TORCH_BOX(&anomaly_kernels::kcenter_greedy_cuda));
}
