// The packed layout of a symmetric C x C matrix: its upper triangle row by row, C (C + 1) / 2
// entries, row i holding M[i, i], M[i, i + 1], ..., M[i, C - 1] (the order of numpy's
// triu_indices). Half the memory of the full matrix; shared by the CPU and CUDA kernels and by
// anomaly_kernels/packed_precision.py, which packs and unpacks in Python.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define AK_HOST_DEVICE __host__ __device__
#else
#define AK_HOST_DEVICE
#endif

namespace anomaly_kernels {

// Entries of one packed matrix.
AK_HOST_DEVICE inline int64_t packed_elements(int64_t c) { return c * (c + 1) / 2; }

// Offset of M[i, j], i <= j, in a packed matrix.
AK_HOST_DEVICE inline int64_t packed_offset(int64_t i, int64_t j, int64_t c) {
  return i * c - i * (i - 1) / 2 + (j - i);
}

}  // namespace anomaly_kernels
