// CUDA kernels of the KDE log-sum-exp. The training rows are split into chunks along grid.y; a
// thread owns one query and runs an online log-sum-exp (running maximum and rescaled sum) over
// its chunk, reading training rows that the block stages in shared memory with coalesced loads.
// A second kernel merges the chunks' (maximum, sum) pairs per query.
#include "cuda/kde_log_sum_exp.cuh"

namespace anomaly_kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kRowsPerStage = 64;
constexpr int64_t kRowsPerSplit = 2048;
constexpr int64_t kMaxSplits = 64;

template <typename T>
__device__ __forceinline__ T device_exp(T x) { return exp(x); }
template <>
__device__ __forceinline__ float device_exp<float>(float x) { return __expf(x); }

template <typename T>
__global__ void partial_kernel(const T* __restrict__ queries, const T* __restrict__ dataset,
                               int64_t m, int64_t n, int64_t d, int64_t rows_per_split,
                               T* __restrict__ partial) {
  extern __shared__ unsigned char shared_bytes[];
  T* rows = reinterpret_cast<T*>(shared_bytes);  // [kRowsPerStage][d]
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t split = blockIdx.y;
  const int64_t first = split * rows_per_split;
  const int64_t last = min(n, first + rows_per_split);
  const T* query = queries + (i < m ? i : 0) * d;
  T running_max = -INFINITY, running_sum = 0;
  bool saw_nan = false;
  for (int64_t j0 = first; j0 < last; j0 += kRowsPerStage) {
    const int64_t len = min(static_cast<int64_t>(kRowsPerStage), last - j0);
    __syncthreads();
    for (int64_t e = threadIdx.x; e < len * d; e += blockDim.x) rows[e] = dataset[j0 * d + e];
    __syncthreads();
    for (int64_t j = 0; j < len; ++j) {
      T dist = 0;
      for (int64_t k = 0; k < d; ++k) {
        const T diff = rows[j * d + k] - query[k];
        dist += diff * diff;
      }
      const T v = T(-0.5) * dist;
      // A NaN distance makes the whole result NaN (as in the reference); an infinite one adds
      // exactly nothing and must not reach exp(-inf - -inf).
      if (v != v) {
        saw_nan = true;
      } else if (v > running_max) {
        running_sum = running_sum * device_exp(running_max - v) + T(1);
        running_max = v;
      } else if (v != -INFINITY) {
        running_sum += device_exp(v - running_max);
      }
    }
  }
  if (i < m) {
    partial[(i * gridDim.y + split) * 2] = saw_nan ? T(NAN) : running_max;
    partial[(i * gridDim.y + split) * 2 + 1] = saw_nan ? T(NAN) : running_sum;
  }
}

template <typename T>
__global__ void merge_kernel(const T* __restrict__ partial, int64_t m, int64_t splits,
                             T* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= m) return;
  const T* p = partial + i * splits * 2;
  // Splits whose maximum is -inf hold no finite term (sum 0); a NaN split makes the result NaN.
  T best = -INFINITY;
  bool saw_nan = false;
  for (int64_t s = 0; s < splits; ++s) {
    const T split_max = p[2 * s];
    if (split_max != split_max) saw_nan = true;
    else if (split_max > best) best = split_max;
  }
  T sum = 0;
  for (int64_t s = 0; s < splits; ++s)
    if (p[2 * s] != -INFINITY) sum += p[2 * s + 1] * exp(p[2 * s] - best);
  out[i] = saw_nan ? T(NAN) : best + log(sum);  // no finite term at all: log(0) = -inf
}

}  // namespace

int64_t kde_splits(int64_t n) {
  const int64_t splits = (n + kRowsPerSplit - 1) / kRowsPerSplit;
  return splits < 1 ? 1 : (splits > kMaxSplits ? kMaxSplits : splits);
}

template <typename T>
cudaError_t kde_log_sum_exp(const T* queries, const T* dataset, int64_t m, int64_t n, int64_t d,
                            T* partial, T* out, cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  const int64_t splits = kde_splits(n);
  const int64_t rows_per_split = (n + splits - 1) / splits;
  const size_t shared = static_cast<size_t>(kRowsPerStage * d) * sizeof(T);
  if (shared > 48 * 1024) return cudaErrorInvalidValue;  // d above 192 (float) or 96 (double)
  const dim3 grid(static_cast<unsigned>((m + kThreads - 1) / kThreads), static_cast<unsigned>(splits));
  partial_kernel<T><<<grid, kThreads, shared, stream>>>(queries, dataset, m, n, d, rows_per_split,
                                                        partial);
  merge_kernel<T><<<static_cast<unsigned>((m + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      partial, m, splits, out);
  return cudaGetLastError();
}

template cudaError_t kde_log_sum_exp<float>(const float*, const float*, int64_t, int64_t, int64_t,
                                            float*, float*, cudaStream_t);
template cudaError_t kde_log_sum_exp<double>(const double*, const double*, int64_t, int64_t,
                                             int64_t, double*, double*, cudaStream_t);

}  // namespace anomaly_kernels::cuda
