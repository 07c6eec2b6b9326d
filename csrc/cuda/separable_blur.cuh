// Launcher of the CUDA separable blur (torch-free; implemented in separable_blur.cu).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "common/blur_geometry.h"

namespace anomaly_kernels::cuda {

// input (planes, h, w) -> output (planes, g.out_h, g.out_w); scratch holds planes * h * g.out_w
// elements. Kernels are device pointers of nky and nkx taps. Enqueued on `stream`.
template <typename T>
cudaError_t separable_blur2d(const T* input, T* output, T* scratch, int64_t planes, int64_t h,
                             int64_t w, const T* kernel_y, int64_t nky, const T* kernel_x,
                             int64_t nkx, BlurGeometry g, Border border, cudaStream_t stream);

}  // namespace anomaly_kernels::cuda
