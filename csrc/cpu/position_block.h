// Staging of PaDiM embeddings (B, C, P) position by position, shared by the CPU Gaussian fit and
// Mahalanobis kernels. A task takes kPositionsPerTask consecutive positions: for 32-bit floats
// that is one 64-byte cache line of every (image, channel) row, so the strided reads use whole
// lines, and the staged block holds each position's (B, C) matrix contiguously.
#pragma once
#include <algorithm>
#include <cstdint>

namespace anomaly_kernels::cpu {

constexpr int64_t kPositionsPerTask = 16;

// out[(q * b + img) * c + ch] = embedding[img, ch, p0 + q] - (mean ? mean[ch, p0 + q] : 0)
// for q < count, converting to U.
// Always inlined: called out of line (as GCC chose once a second kernel instantiation shared the
// translation unit), the Mahalanobis kernel measured ~40% slower at 32 x 100 x 56 x 56.
template <typename T, typename U>
[[gnu::always_inline]] inline void stage_positions(const T* embedding, const T* mean, int64_t b, int64_t c, int64_t p,
                     int64_t p0, int64_t count, U* out) {
  for (int64_t img = 0; img < b; ++img)
    for (int64_t ch = 0; ch < c; ++ch) {
      const T* src = embedding + (img * c + ch) * p + p0;
      const T* mu = mean ? mean + ch * p + p0 : nullptr;
      for (int64_t q = 0; q < count; ++q)
        out[(q * b + img) * c + ch] = static_cast<U>(mu ? src[q] - mu[q] : src[q]);
    }
}

// Number of tasks covering p positions, and the positions [first, first + count) of one task.
inline int64_t position_tasks(int64_t p) { return (p + kPositionsPerTask - 1) / kPositionsPerTask; }
inline int64_t task_positions(int64_t task, int64_t p) {
  return std::min(kPositionsPerTask, p - task * kPositionsPerTask);
}

}  // namespace anomaly_kernels::cpu
