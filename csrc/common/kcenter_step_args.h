// Argument checks of anomaly_kernels::kcenter_step_ and kcenter_step_to_ (CPU and CUDA).
#pragma once
#include <cstdint>

#include "common/tensor_checks.h"

namespace anomaly_kernels {

// Checks shared by both forms of the step: features and min_distances.
inline void check_kcenter_rows(const Tensor& features, const Tensor& min_distances) {
  STD_TORCH_CHECK(features.dim() == 2, "features must be 2-D (N, D), got shape ",
                  shape_str(features));
  STD_TORCH_CHECK(features.size(0) > 0 && features.size(1) > 0,
                  "features must have at least one row and one column, got shape ",
                  shape_str(features));
  STD_TORCH_CHECK(features.size(0) < (int64_t(1) << 32),
                  "features may have at most 2^32 - 1 rows, got ", features.size(0));
  STD_TORCH_CHECK(
      features.scalar_type() == ScalarType::Float || features.scalar_type() == ScalarType::Double,
      "features must be float32 or float64, got ", dtype_name(features.scalar_type()));
  STD_TORCH_CHECK(min_distances.dim() == 1 && min_distances.size(0) == features.size(0),
                  "min_distances must have shape [", features.size(0), "] (one per row), got ",
                  shape_str(min_distances));
  STD_TORCH_CHECK(min_distances.scalar_type() == features.scalar_type(),
                  "min_distances must have the dtype of features (",
                  dtype_name(features.scalar_type()), "), got ",
                  dtype_name(min_distances.scalar_type()));
  STD_TORCH_CHECK(min_distances.is_contiguous(),
                  "min_distances must be contiguous: it is updated in place");
  check_same_device(features, "features", min_distances, "min_distances");
}

inline void check_kcenter_step_args(const Tensor& features, const Tensor& min_distances,
                                    const Tensor& center) {
  check_kcenter_rows(features, min_distances);
  STD_TORCH_CHECK(center.numel() == 1 && center.scalar_type() == ScalarType::Long,
                  "center must be a single int64 index, got shape ", shape_str(center),
                  " of dtype ", dtype_name(center.scalar_type()));
  check_same_device(features, "features", center, "center");
}

inline void check_kcenter_step_to_args(const Tensor& features, const Tensor& min_distances,
                                       const Tensor& center_row) {
  check_kcenter_rows(features, min_distances);
  STD_TORCH_CHECK(center_row.dim() == 1 && center_row.size(0) == features.size(1),
                  "center_row must have shape [", features.size(1), "] (one row of D), got ",
                  shape_str(center_row));
  STD_TORCH_CHECK(center_row.scalar_type() == features.scalar_type(),
                  "center_row must have the dtype of features (", dtype_name(features.scalar_type()),
                  ")");
  check_same_device(features, "features", center_row, "center_row");
}

}  // namespace anomaly_kernels
