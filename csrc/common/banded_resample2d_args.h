// Argument checks of anomaly_kernels::banded_resample2d, shared by its CPU and CUDA entry points.
#pragma once
#include "common/tensor_checks.h"

namespace anomaly_kernels {

inline void check_band(const Tensor& start, const char* start_name, const Tensor& weights,
                       const char* weights_name, const Tensor& input) {
  STD_TORCH_CHECK(start.dim() == 1 && start.scalar_type() == ScalarType::Long, start_name,
                  " must be a 1-D int64 tensor (one first input index per output), got shape ",
                  shape_str(start), " of ", dtype_name(start.scalar_type()));
  STD_TORCH_CHECK(weights.dim() == 2 && weights.size(0) == start.size(0) && weights.size(1) >= 1,
                  weights_name, " must have shape [", start.size(0), ", L] with L >= 1, got ",
                  shape_str(weights));
  STD_TORCH_CHECK(weights.scalar_type() == input.scalar_type(), weights_name,
                  " must have the dtype of input (", dtype_name(input.scalar_type()), ")");
  check_same_device(input, "input", start, start_name);
  check_same_device(input, "input", weights, weights_name);
}

inline void check_banded_resample2d_args(const Tensor& input, const Tensor& start_y,
                                       const Tensor& weights_y, const Tensor& start_x,
                                       const Tensor& weights_x) {
  STD_TORCH_CHECK(input.dim() == 4, "input must be 4-D (B, C, h, w), got shape ",
                  shape_str(input));
  STD_TORCH_CHECK(
      input.scalar_type() == ScalarType::Float || input.scalar_type() == ScalarType::Double,
      "input must be float32 or float64, got ", dtype_name(input.scalar_type()));
  check_band(start_y, "start_y", weights_y, "weights_y", input);
  check_band(start_x, "start_x", weights_x, "weights_x", input);
}

}  // namespace anomaly_kernels
