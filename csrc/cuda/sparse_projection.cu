// CUDA kernel of the sparse sign projection. A block stages a few input rows in shared memory
// with coalesced loads, then its threads compute the outputs of those rows, each gathering its
// matrix row's columns from shared memory. Rows too wide for shared memory are gathered from
// global memory (through the read-only cache) instead.
#include "cuda/sparse_projection.cuh"

namespace anomaly_kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kSharedBytes = 48 * 1024;

template <typename T>
__global__ void projection_kernel(const T* __restrict__ input, int64_t n, int64_t d,
                                  const int64_t* __restrict__ crow,
                                  const int64_t* __restrict__ col,
                                  const int8_t* __restrict__ signs, int64_t nnz, int64_t k,
                                  T scale, T* __restrict__ out, int rows_per_block, bool staged) {
  extern __shared__ unsigned char shared_bytes[];
  T* rows = reinterpret_cast<T*>(shared_bytes);
  const int64_t first_row = static_cast<int64_t>(blockIdx.x) * rows_per_block;
  const int64_t count = min(static_cast<int64_t>(rows_per_block), n - first_row);
  if (staged) {
    for (int64_t e = threadIdx.x; e < count * d; e += blockDim.x) rows[e] = input[first_row * d + e];
    __syncthreads();
  }
  for (int64_t e = threadIdx.x; e < count * k; e += blockDim.x) {
    const int64_t r = e / k, j = e % k;
    const T* x = staged ? rows + r * d : input + (first_row + r) * d;
    // The pattern is not validated on the device (raising would need a host synchronisation):
    // offsets are clamped to the stored entries and out-of-range columns add nothing, so a
    // malformed pattern gives wrong outputs but never reads outside the tensors.
    const int64_t begin = max(crow[j], int64_t{0}), end = min(crow[j + 1], nnz);
    T acc = 0;
    for (int64_t p = begin; p < end; ++p) {
      const int64_t column = col[p];
      if (column >= 0 && column < d) acc += static_cast<T>(signs[p]) * x[column];
    }
    out[(first_row + r) * k + j] = scale * acc;
  }
}

}  // namespace

template <typename T>
cudaError_t sparse_sign_projection(const T* input, int64_t n, int64_t d, const int64_t* crow,
                                   const int64_t* col, const int8_t* signs, int64_t nnz, int64_t k,
                                   T scale, T* out, cudaStream_t stream) {
  if (n == 0 || k == 0) return cudaSuccess;
  // No input columns: every output is an empty sum.
  if (d == 0) return cudaMemsetAsync(out, 0, static_cast<size_t>(n * k) * sizeof(T), stream);
  const int64_t row_bytes = d * static_cast<int64_t>(sizeof(T));
  const bool staged = row_bytes <= kSharedBytes;
  const int rows_per_block = staged ? static_cast<int>(kSharedBytes / row_bytes < 8 ? kSharedBytes / row_bytes : 8) : 1;
  const int64_t blocks = (n + rows_per_block - 1) / rows_per_block;
  const size_t shared = staged ? static_cast<size_t>(rows_per_block * row_bytes) : 0;
  projection_kernel<T><<<static_cast<unsigned>(blocks), kThreads, shared, stream>>>(
      input, n, d, crow, col, signs, nnz, k, scale, out, rows_per_block, staged);
  return cudaGetLastError();
}

template cudaError_t sparse_sign_projection<float>(const float*, int64_t, int64_t, const int64_t*,
                                                   const int64_t*, const int8_t*, int64_t, int64_t,
                                                   float, float*, cudaStream_t);
template cudaError_t sparse_sign_projection<double>(const double*, int64_t, int64_t,
                                                    const int64_t*, const int64_t*, const int8_t*,
                                                    int64_t, int64_t, double, double*, cudaStream_t);

}  // namespace anomaly_kernels::cuda
