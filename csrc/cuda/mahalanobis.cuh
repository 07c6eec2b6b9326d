// Launcher of the CUDA Mahalanobis scoring (torch-free; implemented in mahalanobis.cu).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace anomaly_kernels::cuda {

// Images scored together (each group reads every precision once): 1, 4, 8, 16, 32 or 64; 0
// takes the smallest group that holds the batch. Other values round up to the next size.
// Elements of type T of the scratch buffer that mahalanobis<T> needs for these sizes on the
// current device (the centred vectors in the kernel's shared-memory layout, plus partial forms
// when a position's work is split over several blocks). Never zero when b, c, p > 0.
// cudaErrorInvalidValue: the kernel cannot take c channels on this device. A block holds one
// image's centred vector (c values, rounded up to 64) in shared memory beside its tile pipeline,
// so c is bounded by the device's opt-in shared memory (float32: 8,128 channels at 64 KB, 49,856
// at 227 KB; float64: 4,032 and 24,896).
template <typename T>
cudaError_t mahalanobis_workspace_elements(int64_t b, int64_t c, int64_t p, int group_images, int64_t* elements);

// out (b, p) = sqrt(q) with q = d^T precision[p] d clamped below at 0 (NaN stays NaN),
// d = embedding[img, :, p] - mean[:, p], for an embedding (b, c, p), mean (c, p) and symmetric
// precision (p, c, c), of which only the upper-triangle tiles are read, or with `packed` the
// upper triangles alone (p, c (c + 1) / 2) (common/packed_triangle.h). `workspace` holds
// mahalanobis_workspace_elements<T>(b, c, p, group_images) elements. Device pointers, c >= 1.
// float32 groups of up to 32 images read the matrices' rows straight into registers when there are
// enough (position, group) pairs to fill the device; `allow_streamed` false keeps them on the
// tiled kernel (a measurement knob).
template <typename T>
cudaError_t mahalanobis(const T* embedding, const T* mean, const T* precision, bool packed, int64_t b,
                        int64_t c, int64_t p, int group_images, T* workspace, T* out, cudaStream_t stream,
                        bool allow_streamed = true);

}  // namespace anomaly_kernels::cuda
