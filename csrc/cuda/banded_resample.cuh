// Launcher of the CUDA banded separable resampling (torch-free; banded_resample.cu).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace anomaly_kernels::cuda {

// input (planes, h, w) -> output (planes, out_h, out_w) through the per-axis bands (start index +
// taps weights per output); scratch holds planes * h * out_w values. Device pointers; the bands
// must stay inside the input (checked by the caller). Enqueued on `stream`.
template <typename T>
cudaError_t banded_resample2d(const T* input, T* output, T* scratch, int64_t planes, int64_t h,
                              int64_t w, int64_t out_h, int64_t out_w, const int64_t* start_y,
                              const T* weights_y, int64_t taps_y, const int64_t* start_x,
                              const T* weights_x, int64_t taps_x, cudaStream_t stream);

}  // namespace anomaly_kernels::cuda
