// Argument checks of anomaly_kernels::mahalanobis, shared by its CPU and CUDA entry points.
#pragma once
#include "common/tensor_checks.h"

namespace anomaly_kernels {

inline void check_mahalanobis_args(const Tensor& embedding, const Tensor& mean,
                                   const Tensor& precision) {
  STD_TORCH_CHECK(embedding.dim() == 4, "embedding must be 4-D (B, C, H, W), got shape ",
                  shape_str(embedding));
  const int64_t c = embedding.size(1), p = embedding.size(2) * embedding.size(3);
  STD_TORCH_CHECK(
      embedding.scalar_type() == ScalarType::Float || embedding.scalar_type() == ScalarType::Double,
      "embedding must be float32 or float64, got ", dtype_name(embedding.scalar_type()));
  STD_TORCH_CHECK(mean.dim() == 2 && mean.size(0) == c && mean.size(1) == p,
                  "mean must have shape [", c, ", ", p, "] (C, H*W), got ", shape_str(mean));
  // Full (P, C, C) matrices, or their upper triangles packed row by row (P, C (C + 1) / 2).
  const bool packed = precision.dim() == 2;
  STD_TORCH_CHECK((precision.dim() == 3 && precision.size(0) == p && precision.size(1) == c &&
                   precision.size(2) == c) ||
                      (packed && precision.size(0) == p && precision.size(1) == c * (c + 1) / 2),
                  "precision must have shape [", p, ", ", c, ", ", c, "] (H*W, C, C) or, packed, [", p,
                  ", ", c * (c + 1) / 2, "] (H*W, C*(C+1)/2), got ", shape_str(precision));
  STD_TORCH_CHECK(mean.scalar_type() == embedding.scalar_type() &&
                      precision.scalar_type() == embedding.scalar_type(),
                  "mean and precision must have the dtype of embedding (",
                  dtype_name(embedding.scalar_type()), ")");
  check_same_device(embedding, "embedding", mean, "mean");
  check_same_device(embedding, "embedding", precision, "precision");
}

}  // namespace anomaly_kernels
