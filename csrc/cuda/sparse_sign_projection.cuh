// Launcher of the CUDA sparse sign projection (torch-free; implemented in sparse_sign_projection.cu).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace anomaly_kernels::cuda {

// How the kernel covers the input: each row tile is staged `slabs` slabs of `width` columns at a
// time (width * slabs >= d, the last slab possibly narrower), and the k outputs are summed
// `chunk` at a time (each chunk stages the tile again; one chunk wherever the shared memory
// allows). pattern_shared: the re-packed pattern is copied into each block's shared memory
// instead of being read from global memory at every tile.
struct ProjectionPlan {
  int64_t width = 0;
  int64_t slabs = 0;
  int64_t chunk = 0;
  bool pattern_shared = false;
};

// The plan for (n, d) -> (n, k) with nnz pattern entries, in elements of elem_bytes (4 or 8), on
// the current device. slab_width > 0 forces that slab width (at most 65535; ignored if not even
// one output fits beside it); 0 lets the shared memory of the device decide.
cudaError_t sparse_sign_projection_plan(int64_t d, int64_t k, int64_t nnz, int elem_bytes,
                                        int64_t slab_width, ProjectionPlan* plan);

// int32 words of device workspace sparse_sign_projection needs for a pattern of k rows and nnz
// stored entries over `slabs` slabs (a re-packed copy of the pattern), or -1 when it would not
// be addressable with int32 offsets.
int64_t sparse_sign_projection_workspace_words(int64_t nnz, int64_t k, int64_t slabs);

// out (n, k) = scale * signed gathers of input (n, d) (row-major, contiguous) by the CSR
// pattern (crow, col, signs). Device pointers; enqueued on `stream`, never synchronises the
// host. plan: from sparse_sign_projection_plan for this d, k and T. workspace:
// sparse_sign_projection_workspace_words(nnz, k, plan.slabs) int32 words, 16-byte aligned,
// overwritten. d must be below 2^31 - 2.
//
// The pattern is not validated (that would need a host synchronisation); a malformed one gives
// wrong outputs but never reads outside the tensors: row offsets are clamped to [0, nnz] and
// made non-decreasing (row j sums the entries [max(crow[0..j]), max(crow[0..j+1])) ), columns
// outside [0, d) and zero signs are skipped, any other sign counts as its sign bit (+1/-1), and
// of a column repeated more than 65535 times within one slab's width only 65535 are summed.
template <typename T>
cudaError_t sparse_sign_projection(const T* input, int64_t n, int64_t d, const int64_t* crow,
                                   const int64_t* col, const int8_t* signs, int64_t nnz, int64_t k,
                                   T scale, T* out, const ProjectionPlan& plan, int32_t* workspace,
                                   cudaStream_t stream);

}  // namespace anomaly_kernels::cuda
