// Launcher of the CUDA banded separable resampling (torch-free; banded_resample2d.cu).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace anomaly_kernels::cuda {

// input (planes, h, w) -> output (planes, out_h, out_w) through the per-axis bands (start index +
// taps weights per output). Device pointers; enqueued on `stream`. Needs taps_y <= h when
// out_h > 0 and taps_x <= w when out_w > 0 (cudaErrorInvalidValue otherwise). The starts are
// read on the device only: each is clamped to [0, h - taps_y] (resp. [0, w - taps_x]), so a
// start outside the input reads the nearest band inside it and never out of bounds.
template <typename T>
cudaError_t banded_resample2d(const T* input, T* output, int64_t planes, int64_t h, int64_t w,
                              int64_t out_h, int64_t out_w, const int64_t* start_y,
                              const T* weights_y, int64_t taps_y, const int64_t* start_x,
                              const T* weights_x, int64_t taps_x, cudaStream_t stream);

}  // namespace anomaly_kernels::cuda
