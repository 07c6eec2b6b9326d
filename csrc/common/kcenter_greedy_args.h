// Argument checks of anomaly_kernels::kcenter_greedy_, shared by its CPU and CUDA entry points.
#pragma once
#include <cstdint>

#include "common/kcenter_step_args.h"

namespace anomaly_kernels {

inline void check_kcenter_greedy_args(const Tensor& features, const Tensor& min_distances,
                                      const Tensor& nearest, const Tensor& centers,
                                      int64_t begin, int64_t end, bool pick) {
  STD_TORCH_CHECK(features.dim() == 2 && features.size(0) > 0 && features.size(1) > 0,
                  "features must be a non-empty 2-D (N, D) tensor, got shape ",
                  shape_str(features));
  STD_TORCH_CHECK(
      features.scalar_type() == ScalarType::Float || features.scalar_type() == ScalarType::BFloat16,
      "features must be float32 or bfloat16, got ", dtype_name(features.scalar_type()));
  STD_TORCH_CHECK(features.size(0) < (int64_t(1) << 32),
                  "features may have at most 2^32 - 1 rows, got ", features.size(0));
  const int64_t n = features.size(0);
  STD_TORCH_CHECK(min_distances.dim() == 1 && min_distances.size(0) == n &&
                      min_distances.scalar_type() == ScalarType::Float &&
                      min_distances.is_contiguous(),
                  "min_distances must be a contiguous float32 tensor of shape [", n, "], got ",
                  shape_str(min_distances), " of ", dtype_name(min_distances.scalar_type()));
  STD_TORCH_CHECK(nearest.dim() == 1 && nearest.size(0) == n &&
                      nearest.scalar_type() == ScalarType::Int && nearest.is_contiguous(),
                  "nearest must be a contiguous int32 tensor of shape [", n, "], got ",
                  shape_str(nearest), " of ", dtype_name(nearest.scalar_type()));
  STD_TORCH_CHECK(centers.dim() == 1 && centers.scalar_type() == ScalarType::Long &&
                      centers.is_contiguous(),
                  "centers must be a contiguous 1-D int64 tensor, got ", shape_str(centers),
                  " of ", dtype_name(centers.scalar_type()));
  STD_TORCH_CHECK(centers.size(0) < (int64_t(1) << 31),
                  "centers may hold at most 2^31 - 1 entries, got ", centers.size(0));
  STD_TORCH_CHECK(0 <= begin && begin <= end && end <= centers.size(0),
                  "begin and end must satisfy 0 <= begin <= end <= len(centers) = ",
                  centers.size(0), ", got begin=", begin, ", end=", end);
  STD_TORCH_CHECK(!pick || end < centers.size(0),
                  "pick stores centers[end]: end must be < len(centers) = ", centers.size(0),
                  ", got ", end);
  check_same_device(features, "features", min_distances, "min_distances");
  check_same_device(features, "features", nearest, "nearest");
  check_same_device(features, "features", centers, "centers");
}

}  // namespace anomaly_kernels
