// Launcher of the CUDA k-center-greedy step (torch-free; implemented in kcenter_step.cu).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace anomaly_kernels::cuda {

// Lowers min_distances[i] to ||features[i] - features[*center]|| and writes the argmax row index
// (ties: smallest) to *argmax. All pointers are device pointers; features is row-major (n, d).
// Enqueued on `stream`; never synchronises the host. Returns the launch error, if any.
cudaError_t kcenter_step(const float* features, int64_t n, int64_t d, float* min_distances,
                         const int64_t* center, int64_t* argmax, cudaStream_t stream);

}  // namespace anomaly_kernels::cuda
