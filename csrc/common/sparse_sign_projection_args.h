// Argument checks of anomaly_kernels::sparse_sign_projection, shared by CPU and CUDA.
#pragma once
#include "common/tensor_checks.h"

namespace anomaly_kernels {

inline void check_sparse_sign_projection_args(const Tensor& input, const Tensor& crow_indices,
                                         const Tensor& col_indices, const Tensor& signs) {
  STD_TORCH_CHECK(input.dim() == 2, "input must be 2-D (N, D), got shape ", shape_str(input));
  STD_TORCH_CHECK(
      input.scalar_type() == ScalarType::Float || input.scalar_type() == ScalarType::Double,
      "input must be float32 or float64, got ", dtype_name(input.scalar_type()));
  STD_TORCH_CHECK(crow_indices.dim() == 1 && crow_indices.size(0) >= 1 &&
                      crow_indices.scalar_type() == ScalarType::Long,
                  "crow_indices must be a 1-D int64 tensor of K + 1 offsets, got shape ",
                  shape_str(crow_indices), " of ", dtype_name(crow_indices.scalar_type()));
  STD_TORCH_CHECK(col_indices.dim() == 1 && col_indices.scalar_type() == ScalarType::Long,
                  "col_indices must be a 1-D int64 tensor, got shape ", shape_str(col_indices),
                  " of ", dtype_name(col_indices.scalar_type()));
  STD_TORCH_CHECK(signs.dim() == 1 && signs.size(0) == col_indices.size(0) &&
                      signs.scalar_type() == ScalarType::Char,
                  "signs must be a 1-D int8 tensor with one entry per column index (",
                  col_indices.size(0), "), got shape ", shape_str(signs));
  check_same_device(input, "input", crow_indices, "crow_indices");
  check_same_device(input, "input", col_indices, "col_indices");
  check_same_device(input, "input", signs, "signs");
}

}  // namespace anomaly_kernels
