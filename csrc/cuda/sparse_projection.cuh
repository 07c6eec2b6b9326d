// Launcher of the CUDA sparse sign projection (torch-free; implemented in sparse_projection.cu).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace anomaly_kernels::cuda {

// out (n, k) = scale * signed gathers of input (n, d) by the CSR pattern (crow, col, signs).
// Device pointers; enqueued on `stream`.
template <typename T>
cudaError_t sparse_sign_projection(const T* input, int64_t n, int64_t d, const int64_t* crow,
                                   const int64_t* col, const int8_t* signs, int64_t nnz, int64_t k,
                                   T scale, T* out, cudaStream_t stream);

}  // namespace anomaly_kernels::cuda
