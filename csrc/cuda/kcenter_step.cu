// CUDA kernel of the k-center-greedy step. One warp per row computes the distance to the center
// row, lowers the row's running minimum and offers (distance, index) as one packed 64-bit key;
// each block merges its warps' keys and issues a single atomicMax. The key orders by distance
// first (non-negative float bits compare like the floats) and then by the complemented index,
// so the largest key is the farthest row with the smallest index.
#include "cuda/kcenter_step.cuh"

namespace anomaly_kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kMaxBlocks = 4096;

__device__ __forceinline__ unsigned long long pack_key(float distance, int64_t index) {
  return (static_cast<unsigned long long>(__float_as_uint(distance)) << 32) |
         (0xFFFFFFFFull - static_cast<unsigned long long>(index));
}

__device__ __forceinline__ unsigned long long warp_max(unsigned long long key) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const unsigned long long other = __shfl_xor_sync(0xFFFFFFFFu, key, offset);
    key = other > key ? other : key;
  }
  return key;
}

__global__ void step_kernel(const float* __restrict__ features, int64_t n, int64_t d,
                            float* __restrict__ min_distances, const int64_t* __restrict__ center,
                            unsigned long long* __restrict__ best_key) {
  __shared__ unsigned long long warp_keys[kWarpsPerBlock];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* center_row = features + (*center) * d;
  unsigned long long key = 0;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp; row < n;
       row += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const float* x = features + row * d;
    float sum = 0.f;
    for (int64_t j = lane; j < d; j += 32) {
      const float diff = x[j] - __ldg(center_row + j);
      sum = fmaf(diff, diff, sum);
    }
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, offset);
    if (lane == 0) {
      const float dist = sqrtf(sum);
      float m = min_distances[row];
      if (dist < m) {
        m = dist;
        min_distances[row] = m;
      }
      const unsigned long long k = pack_key(m, row);
      key = k > key ? k : key;
    }
  }
  key = warp_max(key);
  if (lane == 0) warp_keys[warp] = key;
  __syncthreads();
  if (warp == 0) {
    key = lane < kWarpsPerBlock ? warp_keys[lane] : 0ull;
    key = warp_max(key);
    if (lane == 0) atomicMax(best_key, key);
  }
}

__global__ void unpack_index_kernel(int64_t* key_then_index) {
  const unsigned long long key = *reinterpret_cast<unsigned long long*>(key_then_index);
  *key_then_index = static_cast<int64_t>(0xFFFFFFFFull - (key & 0xFFFFFFFFull));
}

}  // namespace

cudaError_t kcenter_step(const float* features, int64_t n, int64_t d, float* min_distances,
                         const int64_t* center, int64_t* argmax, cudaStream_t stream) {
  // argmax doubles as the atomicMax target: zero it, merge keys into it, then decode in place.
  cudaError_t err = cudaMemsetAsync(argmax, 0, sizeof(int64_t), stream);
  if (err != cudaSuccess) return err;
  const int64_t wanted = (n + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const int blocks = static_cast<int>(wanted < kMaxBlocks ? wanted : kMaxBlocks);
  step_kernel<<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
      features, n, d, min_distances, center, reinterpret_cast<unsigned long long*>(argmax));
  unpack_index_kernel<<<1, 1, 0, stream>>>(argmax);
  return cudaGetLastError();
}

}  // namespace anomaly_kernels::cuda
