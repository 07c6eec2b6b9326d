// Argument checks of anomaly_kernels::separable_blur2d, shared by its CPU and CUDA entry points.
#pragma once
#include <string>

#include "common/blur_geometry.h"
#include "common/tensor_checks.h"

namespace anomaly_kernels {

// Validates the arguments and returns the parsed border mode and output geometry.
inline BlurGeometry check_separable_blur2d_args(const Tensor& input, const Tensor& kernel_y,
                                              const Tensor& kernel_x,
                                              const std::string& border_type, bool same_padding,
                                              Border* border) {
  STD_TORCH_CHECK(input.dim() == 4, "input must be 4-D (B, C, H, W), got shape ",
                  shape_str(input));
  STD_TORCH_CHECK(
      input.scalar_type() == ScalarType::Float || input.scalar_type() == ScalarType::Double,
      "input must be float32 or float64, got ", dtype_name(input.scalar_type()));
  STD_TORCH_CHECK(kernel_y.dim() == 1 && kernel_y.numel() > 0,
                  "kernel_y must be a non-empty 1-D tensor, got shape ", shape_str(kernel_y));
  STD_TORCH_CHECK(kernel_x.dim() == 1 && kernel_x.numel() > 0,
                  "kernel_x must be a non-empty 1-D tensor, got shape ", shape_str(kernel_x));
  STD_TORCH_CHECK(kernel_y.scalar_type() == input.scalar_type() &&
                      kernel_x.scalar_type() == input.scalar_type(),
                  "kernel_y and kernel_x must have the dtype of input (",
                  dtype_name(input.scalar_type()), ")");
  check_same_device(input, "input", kernel_y, "kernel_y");
  check_same_device(input, "input", kernel_x, "kernel_x");
  STD_TORCH_CHECK(parse_border(border_type, border),
                  "border_type must be one of 'constant', 'reflect', 'replicate', 'circular', got '",
                  border_type, "'");
  const BlurGeometry g = blur_geometry(input.size(2), input.size(3), kernel_y.size(0),
                                       kernel_x.size(0), same_padding);
  STD_TORCH_CHECK(same_padding || (g.out_h >= 1 && g.out_w >= 1),
                  "'valid' padding needs H >= Ky and W >= Kx, got input shape ", shape_str(input),
                  " and kernels of ", kernel_y.size(0), " and ", kernel_x.size(0), " taps");
  return g;
}

}  // namespace anomaly_kernels
