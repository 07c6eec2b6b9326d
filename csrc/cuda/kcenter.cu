// CUDA kernels of the k-center-greedy passes. One warp per row computes the distance to the
// center row, lowers the row's running minimum and offers (distance, index) as one packed 64-bit
// key; each block merges its warps' keys and issues a single atomicMax. The key orders by
// distance first (non-negative float bits compare like the floats) and then by the complemented
// index, so the largest key is the farthest row with the smallest index.
#include <cuda_bf16.h>

#include "cuda/kcenter.cuh"

namespace anomaly_kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kMaxBlocks = 4096;
// Rows are skipped only when center_distance >= 2 * kMargin * min_distance: the margin absorbs
// the rounding of both computed distances, so pruning never changes the selection.
constexpr float kMargin = 1.0f + 1e-5f;

// The bits of a non-negative float order as unsigned integers do; negative, -0 and NaN
// distances (only from an invalid caller state) count as 0, as the CPU kernel never prefers them.
__device__ __forceinline__ unsigned long long pack_key(float distance, int64_t index) {
  const float ordered = distance > 0.f ? distance : 0.f;
  return (static_cast<unsigned long long>(__float_as_uint(ordered)) << 32) |
         (0xFFFFFFFFull - static_cast<unsigned long long>(index));
}

__device__ __forceinline__ unsigned long long warp_max(unsigned long long key) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const unsigned long long other = __shfl_xor_sync(0xFFFFFFFFu, key, offset);
    key = other > key ? other : key;
  }
  return key;
}

__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xFFFFFFFFu, value, offset);
  return value;
}

__device__ __forceinline__ float widen(float value) { return value; }
__device__ __forceinline__ float widen(__nv_bfloat16 value) { return __bfloat162float(value); }

// Euclidean distance between two rows (stored as S: float or bfloat16), computed by a whole
// warp in float; every lane gets the result.
template <typename S>
__device__ __forceinline__ float warp_distance(const S* __restrict__ a, const S* __restrict__ b,
                                               int64_t d, int lane) {
  float sum = 0.f;
  for (int64_t j = lane; j < d; j += 32) {
    const float diff = widen(a[j]) - widen(b[j]);
    sum = fmaf(diff, diff, sum);
  }
  return sqrtf(warp_sum(sum));
}

// The center is center_row when given, else features[*center]. nearest == nullptr: plain pass.
// center_distance == nullptr: no pruning.
template <typename S>
__global__ void update_kernel(const S* __restrict__ features, int64_t n, int64_t d,
                              float* __restrict__ min_distances, const int64_t* __restrict__ center,
                              const S* __restrict__ center_row_given,
                              int32_t* __restrict__ nearest,
                              const float* __restrict__ center_distance, int32_t position,
                              unsigned long long* __restrict__ best_key) {
  __shared__ unsigned long long warp_keys[kWarpsPerBlock];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // An out-of-range center index cannot be reported without a host synchronisation; the pass
  // is then a no-op (no read outside the features, no update) and the picked key stays 0.
  if (!center_row_given && (*center < 0 || *center >= n)) return;
  const S* center_row = center_row_given ? center_row_given : features + (*center) * d;
  unsigned long long key = 0;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp; row < n;
       row += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    float m = min_distances[row];
    const int32_t p = nearest ? nearest[row] : -1;
    const bool skip = p >= 0 && center_distance && center_distance[p] >= 2.f * kMargin * m;
    if (!skip) {
      const float dist = warp_distance(features + row * d, center_row, d, lane);
      if (dist < m) {
        m = dist;
        if (lane == 0) {
          min_distances[row] = m;
          if (nearest) nearest[row] = position;
        }
      }
    }
    const unsigned long long k = pack_key(m, row);
    key = k > key ? k : key;
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

// center_distance[j] = ||features[centers[t]] - features[centers[j]]|| for j < t, a warp each.
template <typename S>
__global__ void center_distance_kernel(const S* __restrict__ features, int64_t n, int64_t d,
                                       const int64_t* __restrict__ centers, int64_t t,
                                       float* __restrict__ center_distance) {
  const int lane = threadIdx.x & 31;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (j >= t) return;
  // Out-of-range indices: skipped, as in update_kernel.
  if (centers[j] < 0 || centers[j] >= n || centers[t] < 0 || centers[t] >= n) return;
  const float dist = warp_distance(features + centers[j] * d, features + centers[t] * d, d, lane);
  if (lane == 0) center_distance[j] = dist;
}

__global__ void unpack_index_kernel(unsigned long long* key, int64_t* index, bool reset_key) {
  *index = static_cast<int64_t>(0xFFFFFFFFull - (*key & 0xFFFFFFFFull));
  if (reset_key) *key = 0ull;
}

int update_blocks(int64_t n) {
  const int64_t wanted = (n + kWarpsPerBlock - 1) / kWarpsPerBlock;
  return static_cast<int>(wanted < kMaxBlocks ? wanted : kMaxBlocks);
}

}  // namespace

cudaError_t kcenter_step(const float* features, int64_t n, int64_t d, float* min_distances,
                         const int64_t* center, const float* center_row, int64_t* argmax,
                         cudaStream_t stream) {
  // argmax doubles as the atomicMax target: zero it, merge keys into it, then decode in place.
  auto* key = reinterpret_cast<unsigned long long*>(argmax);
  cudaError_t err = cudaMemsetAsync(key, 0, sizeof(*key), stream);
  if (err != cudaSuccess) return err;
  update_kernel<float><<<update_blocks(n), kWarpsPerBlock * 32, 0, stream>>>(
      features, n, d, min_distances, center, center_row, nullptr, nullptr, 0, key);
  unpack_index_kernel<<<1, 1, 0, stream>>>(key, argmax, false);
  return cudaGetLastError();
}

template <typename S>
cudaError_t kcenter_greedy(const S* features, int64_t n, int64_t d, float* min_distances,
                           int32_t* nearest, int64_t* centers, int64_t begin, int64_t end,
                           bool pick, bool prune, float* center_distance,
                           unsigned long long* key_scratch, cudaStream_t stream) {
  cudaError_t err = cudaMemsetAsync(key_scratch, 0, sizeof(*key_scratch), stream);
  if (err != cudaSuccess) return err;
  for (int64_t t = begin; t < end; ++t) {
    const bool use_pruning = prune && t > 0;
    if (use_pruning) {
      const int blocks = static_cast<int>((t + kWarpsPerBlock - 1) / kWarpsPerBlock);
      center_distance_kernel<S><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
          features, n, d, centers, t, center_distance);
    }
    update_kernel<S><<<update_blocks(n), kWarpsPerBlock * 32, 0, stream>>>(
        features, n, d, min_distances, centers + t, nullptr, nearest,
        use_pruning ? center_distance : nullptr, static_cast<int32_t>(t), key_scratch);
    if (pick) unpack_index_kernel<<<1, 1, 0, stream>>>(key_scratch, centers + t + 1, true);
    else {
      err = cudaMemsetAsync(key_scratch, 0, sizeof(*key_scratch), stream);
      if (err != cudaSuccess) return err;
    }
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template cudaError_t kcenter_greedy<float>(const float*, int64_t, int64_t, float*, int32_t*,
                                           int64_t*, int64_t, int64_t, bool, bool, float*,
                                           unsigned long long*, cudaStream_t);
template cudaError_t kcenter_greedy<__nv_bfloat16>(const __nv_bfloat16*, int64_t, int64_t, float*,
                                                   int32_t*, int64_t*, int64_t, int64_t, bool,
                                                   bool, float*, unsigned long long*,
                                                   cudaStream_t);

}  // namespace anomaly_kernels::cuda
