// Launchers of the CUDA k-center-greedy passes (torch-free; implemented in kcenter.cu).
// All pointers are device pointers; features is row-major (n, d) float32. Work is enqueued on
// `stream` and never synchronises the host. Each returns the first launch error, if any.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace anomaly_kernels::cuda {

// One pass: lowers min_distances[i] to ||features[i] - c|| for the center c = features[*center]
// (center_row == nullptr) or c = center_row (d values; center == nullptr), and writes the
// farthest row index (ties: smallest) to *argmax.
cudaError_t kcenter_step(const float* features, int64_t n, int64_t d, float* min_distances,
                         const int64_t* center, const float* center_row, int64_t* argmax,
                         cudaStream_t stream);

// Passes begin .. end-1 of a greedy selection over features stored as S (float or
// __nv_bfloat16; distances in float). Pass t applies centers[t] (recording position t in
// nearest[] for the rows it brings closer) and, when `pick`, writes the farthest row to
// centers[t + 1]. With `prune`, rows that the triangle inequality proves unaffected are not read;
// center_distance needs room for `end` floats and key_scratch for one 64-bit key.
template <typename S>
cudaError_t kcenter_greedy(const S* features, int64_t n, int64_t d, float* min_distances,
                           int32_t* nearest, int64_t* centers, int64_t begin, int64_t end,
                           bool pick, bool prune, float* center_distance,
                           unsigned long long* key_scratch, cudaStream_t stream);

}  // namespace anomaly_kernels::cuda
