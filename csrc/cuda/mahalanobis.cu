// CUDA kernel of the Mahalanobis scoring: one block per position. The block stages the centred
// vectors of a group of images in shared memory; each warp then walks rows of the position's
// precision matrix (coalesced along the row) and forms the upper-triangle quadratic form
// d^T M d = sum_i d_i (M_ii d_i + 2 sum_{j>i} M_ij d_j) for every image of the group. A matrix row
// is re-read per image from L1, so the matrix comes from memory once per group; the group is the
// whole batch whenever it fits in shared memory.
#include "cuda/mahalanobis.cuh"

namespace anomaly_kernels::cuda {
namespace {

constexpr int kWarps = 8;

template <typename T>
__device__ __forceinline__ T warp_sum(T value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xFFFFFFFFu, value, offset);
  return value;
}

template <typename T>
__global__ void mahalanobis_kernel(const T* __restrict__ embedding, const T* __restrict__ mean,
                                   const T* __restrict__ precision, int64_t b, int64_t c,
                                   int64_t p, int64_t group, T* __restrict__ out) {
  extern __shared__ unsigned char shared_bytes[];
  T* delta = reinterpret_cast<T*>(shared_bytes);  // [image in group][channel]
  T* forms = delta + group * c;                   // [warp][image in group]
  const int64_t pos = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const T* matrix = precision + pos * c * c;
  for (int64_t first = 0; first < b; first += group) {
    const int64_t count = min(group, b - first);
    for (int64_t e = threadIdx.x; e < count * c; e += blockDim.x) {
      const int64_t img = e / c, ch = e % c;
      delta[e] = embedding[((first + img) * c + ch) * p + pos] - mean[ch * p + pos];
    }
    for (int64_t e = threadIdx.x; e < kWarps * count; e += blockDim.x) forms[e] = T(0);
    __syncthreads();
    for (int64_t i = warp; i < c; i += kWarps) {
      const T* row = matrix + i * c;
      const T diagonal = row[i];
      for (int64_t img = 0; img < count; ++img) {
        const T* d = delta + img * c;
        T s = 0;
        for (int64_t j = i + 1 + lane; j < c; j += 32) s += row[j] * d[j];
        s = warp_sum(s);
        if (lane == 0) forms[warp * count + img] += d[i] * (diagonal * d[i] + 2 * s);
      }
    }
    __syncthreads();
    for (int64_t img = threadIdx.x; img < count; img += blockDim.x) {
      T q = 0;
      for (int w = 0; w < kWarps; ++w) q += forms[w * count + img];
      out[(first + img) * p + pos] = sqrt(q > T(0) ? q : T(0));
    }
    __syncthreads();
  }
}

}  // namespace

template <typename T>
cudaError_t mahalanobis(const T* embedding, const T* mean, const T* precision, int64_t b,
                        int64_t c, int64_t p, T* out, cudaStream_t stream) {
  if (b == 0 || p == 0) return cudaSuccess;
  int device = 0, max_shared = 48 * 1024;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) return err;
  // Images per group: as many as fit beside the per-warp partial sums.
  const int64_t per_image = (c + kWarps) * static_cast<int64_t>(sizeof(T));
  int64_t group = max_shared / per_image;
  if (group < 1) return cudaErrorInvalidValue;  // C too large for one centred vector in shared memory
  if (group > b) group = b;
  const size_t shared = static_cast<size_t>(group * per_image);
  err = cudaFuncSetAttribute(mahalanobis_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(shared));
  if (err != cudaSuccess) return err;
  mahalanobis_kernel<T><<<static_cast<unsigned>(p), kWarps * 32, shared, stream>>>(
      embedding, mean, precision, b, c, p, group, out);
  return cudaGetLastError();
}

template cudaError_t mahalanobis<float>(const float*, const float*, const float*, int64_t, int64_t,
                                        int64_t, float*, cudaStream_t);
template cudaError_t mahalanobis<double>(const double*, const double*, const double*, int64_t,
                                         int64_t, int64_t, double*, cudaStream_t);

}  // namespace anomaly_kernels::cuda
