// Launcher of the CUDA sparse sign projection (torch-free; implemented in sparse_sign_projection.cu).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace anomaly_kernels::cuda {

// int32 words of device workspace sparse_sign_projection needs for a pattern of k rows and nnz
// stored entries (a re-packed copy of the pattern), or -1 when it would not be addressable
// with int32 offsets.
int64_t sparse_sign_projection_workspace_words(int64_t nnz, int64_t k);

// out (n, k) = scale * signed gathers of input (n, d) (row-major, contiguous) by the CSR
// pattern (crow, col, signs). Device pointers; enqueued on `stream`, never synchronises the
// host. workspace: sparse_sign_projection_workspace_words(nnz, k) int32 words, 16-byte
// aligned, overwritten. (d + 2) * sizeof(T) must be below 2^31.
//
// The pattern is not validated (that would need a host synchronisation); a malformed one gives
// wrong outputs but never reads outside the tensors: row offsets are clamped to [0, nnz] and
// made non-decreasing (row j sums the entries [max(crow[0..j]), max(crow[0..j+1])) ), columns
// outside [0, d) and zero signs are skipped, and any other sign counts as its sign bit (+1/-1).
template <typename T>
cudaError_t sparse_sign_projection(const T* input, int64_t n, int64_t d, const int64_t* crow,
                                   const int64_t* col, const int8_t* signs, int64_t nnz, int64_t k,
                                   T scale, T* out, int32_t* workspace, cudaStream_t stream);

}  // namespace anomaly_kernels::cuda
