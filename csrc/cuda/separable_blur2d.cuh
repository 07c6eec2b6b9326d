// Launcher of the CUDA separable blur (torch-free; implemented in separable_blur2d.cu).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "common/blur_geometry.h"

namespace anomaly_kernels::cuda {

// Elements of scratch that separable_blur2d needs on the current device: 0 when the one-launch
// tiled kernel fits its shared memory (every practical kernel length), otherwise
// planes * h * g.out_w for the two-pass path used with very long kernels. tile_rows: output
// rows per tile of the tiled kernel (rounded up to a multiple of 8, at most 128; 0: chosen from
// the grid size); the same value must be passed to separable_blur2d.
template <typename T>
cudaError_t separable_blur2d_scratch_size(int64_t planes, int64_t h, int64_t w, int64_t nky,
                                          int64_t nkx, BlurGeometry g, int tile_rows,
                                          int64_t* elements);

// input (planes, h, w) -> output (planes, g.out_h, g.out_w). Kernels are device pointers of nky
// and nkx taps; scratch holds what separable_blur2d_scratch_size asked for (may be null when
// that is 0). Enqueued on `stream`; h, w >= 1 when planes * out_h * out_w > 0.
template <typename T>
cudaError_t separable_blur2d(const T* input, T* output, T* scratch, int64_t planes, int64_t h,
                             int64_t w, const T* kernel_y, int64_t nky, const T* kernel_x,
                             int64_t nkx, BlurGeometry g, Border border, int tile_rows,
                             cudaStream_t stream);

}  // namespace anomaly_kernels::cuda
