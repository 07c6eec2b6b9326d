// Launcher of the CUDA Mahalanobis scoring (torch-free; implemented in mahalanobis.cu).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace anomaly_kernels::cuda {

// out (b, p) = sqrt(max(d^T precision[p] d, 0)), d = embedding[img, :, p] - mean[:, p], for an
// embedding (b, c, p), mean (c, p) and symmetric precision (p, c, c). Device pointers.
template <typename T>
cudaError_t mahalanobis(const T* embedding, const T* mean, const T* precision, int64_t b,
                        int64_t c, int64_t p, T* out, cudaStream_t stream);

}  // namespace anomaly_kernels::cuda
