// Argument checks of anomaly_kernels::kde_log_sum_exp, shared by its CPU and CUDA entry points.
#pragma once
#include "common/tensor_checks.h"

namespace anomaly_kernels {

inline void check_kde_log_sum_exp_args(const Tensor& queries, const Tensor& dataset) {
  STD_TORCH_CHECK(queries.dim() == 2, "queries must be 2-D (M, D), got shape ", shape_str(queries));
  STD_TORCH_CHECK(dataset.dim() == 2 && dataset.size(0) > 0,
                  "dataset must be a non-empty 2-D (N, D) tensor, got shape ", shape_str(dataset));
  STD_TORCH_CHECK(queries.size(1) == dataset.size(1), "queries must have D = ", dataset.size(1),
                  " columns like dataset, got shape ", shape_str(queries));
  STD_TORCH_CHECK(
      queries.scalar_type() == ScalarType::Float || queries.scalar_type() == ScalarType::Double,
      "queries must be float32 or float64, got ", dtype_name(queries.scalar_type()));
  STD_TORCH_CHECK(dataset.scalar_type() == queries.scalar_type(),
                  "dataset must have the dtype of queries (", dtype_name(queries.scalar_type()), ")");
  check_same_device(queries, "queries", dataset, "dataset");
}

}  // namespace anomaly_kernels
