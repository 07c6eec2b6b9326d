// Launcher of the CUDA KDE log-sum-exp (torch-free; implemented in kde_log_sum_exp.cu).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace anomaly_kernels::cuda {

// out[i] = log sum_j exp(-0.5 ||queries[i] - dataset[j]||^2); queries (m, d), dataset (n, d).
// partial needs room for 2 * m * kde_splits(n) values. Device pointers; enqueued on `stream`.
int64_t kde_splits(int64_t n);

template <typename T>
cudaError_t kde_log_sum_exp(const T* queries, const T* dataset, int64_t m, int64_t n, int64_t d,
                            T* partial, T* out, cudaStream_t stream);

}  // namespace anomaly_kernels::cuda
