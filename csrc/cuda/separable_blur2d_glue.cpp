// CUDA entry point of anomaly_kernels::separable_blur2d: checks, device guard, current stream,
// launch. The kernels live in separable_blur2d.cu; a scratch image is allocated only for kernels
// too long for the one-launch tiled path.
//
// Environment (read at every call, for measurements):
//   ANOMALY_KERNELS_BLUR_TILE_ROWS=r  output rows per tile of the tiled kernel (multiple of 8, at
//                                     most 128) instead of the choice made from the grid size
#include <cstdlib>
#include <optional>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/separable_blur2d_args.h"
#include "cuda/cuda_context.h"
#include "cuda/separable_blur2d.cuh"

namespace anomaly_kernels {
namespace {

template <typename T>
void launch(const Tensor& x, Tensor& out, const Tensor& ky, const Tensor& kx,
            const BlurGeometry& g, Border border) {
  const int64_t planes = x.size(0) * x.size(1);
  const char* tile_setting = std::getenv("ANOMALY_KERNELS_BLUR_TILE_ROWS");
  const int tile_rows = tile_setting ? std::atoi(tile_setting) : 0;
  int64_t scratch_elements = 0;
  check_launch(cuda::separable_blur2d_scratch_size<T>(planes, x.size(2), x.size(3), ky.size(0),
                                                      kx.size(0), g, tile_rows, &scratch_elements),
               "separable_blur2d");
  std::optional<Tensor> scratch;  // kept alive until the launch is enqueued
  T* scratch_ptr = nullptr;
  if (scratch_elements > 0) {
    std::vector<int64_t> scratch_shape{scratch_elements};
    scratch = torch::stable::new_empty(x, scratch_shape);
    scratch_ptr = scratch->mutable_data_ptr<T>();
  }
  check_launch(cuda::separable_blur2d<T>(x.const_data_ptr<T>(), out.mutable_data_ptr<T>(),
                                         scratch_ptr, planes, x.size(2), x.size(3),
                                         ky.const_data_ptr<T>(), ky.size(0),
                                         kx.const_data_ptr<T>(), kx.size(0), g, border,
                                         tile_rows, current_stream(x)),
               "separable_blur2d");
}

Tensor separable_blur2d_cuda(Tensor input, Tensor kernel_y, Tensor kernel_x,
                             std::string border_type, bool same_padding) {
  Border border;
  const BlurGeometry g =
      check_separable_blur2d_args(input, kernel_y, kernel_x, border_type, same_padding, &border);
  torch::stable::accelerator::DeviceGuard guard(input.get_device_index());
  const Tensor x = as_contiguous(input);
  const Tensor ky = as_contiguous(kernel_y);
  const Tensor kx = as_contiguous(kernel_x);
  std::vector<int64_t> out_shape{x.size(0), x.size(1), g.out_h, g.out_w};
  Tensor out = torch::stable::new_empty(x, out_shape);
  if (out.numel() == 0 || x.numel() == 0) return torch::stable::zero_(out);
  if (x.scalar_type() == ScalarType::Float) {
    launch<float>(x, out, ky, kx, g, border);
  } else {
    launch<double>(x, out, ky, kx, g, border);
  }
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CUDA, m) {
  m.impl("separable_blur2d", TORCH_BOX(&anomaly_kernels::separable_blur2d_cuda));
}
