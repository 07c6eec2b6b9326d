// The fused k-center-greedy pass on the CPU, shared by kcenter_step_ (one pass) and
// kcenter_greedy_ (many passes): each row's distance to the new center lowers its running
// minimum, and the farthest row is tracked on the way, in one read of the features.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/simd.h"

namespace anomaly_kernels::cpu {

// Features may be stored as bfloat16 (the upper 16 bits of a float32); distances are always
// computed in the accumulation type T.
using BFloat16Bits = uint16_t;

inline float widen(BFloat16Bits bits) {
  const uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}
inline float widen(float value) { return value; }
inline double widen(double value) { return value; }

// ||a - b||^2 for a row `a` stored as S and a center `b` in the accumulation type T.
template <typename S, typename T>
AK_SIMD_CLONES T squared_distance(const S* __restrict a, const T* __restrict b, int64_t d) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < d; ++j) {
    const T diff = static_cast<T>(widen(a[j])) - b[j];
    sum += diff * diff;
  }
  return sum;
}

// Optional triangle-inequality pruning. A row whose nearest center so far is center p, at
// distance m, is at least center_distance[p] - m from the new center; when center_distance[p] >=
// 2m that is >= m, so the row cannot get closer and is not read. The margin keeps rounding of
// the two computed distances from ever skipping a row whose computed distance would be < m,
// which keeps the selection identical to the brute-force pass.
template <typename T>
struct Pruning {
  int32_t* nearest = nullptr;              // (n,) position of each row's nearest center, -1: none
  const T* center_distance = nullptr;      // (t,) distance of the new center to each earlier one
  int32_t new_position = 0;                // position of the new center in the coreset
  static constexpr double kMargin = 1.0 + 1e-5;

  // Whether rows at distance <= m from a center that lies center_distance from the new one
  // are proven unaffected by the new center.
  static bool out_of_reach(double center_distance, double m) {
    return center_distance >= 2.0 * kMargin * m;
  }
};

struct Farthest {
  double distance;
  int64_t index;
  int64_t rows_read = 0;  // rows whose distance to the new center was computed
};

// Updates min_distances with the center row (d values, a row of features or any other vector)
// and returns the farthest row (ties: smallest index). With pruning.nearest set, records each
// improved row's nearest center and skips rows proven unaffected (if pruning.center_distance is
// also set).
template <typename S, typename T>
Farthest update_and_find_farthest(const S* features, int64_t n, int64_t d, T* min_distances,
                                  const T* center_row, const Pruning<T>& pruning) {
  // Fixed chunks reduced separately and merged in order: the result does not depend on how
  // threads were scheduled.
  const int64_t rows_per_chunk = std::max<int64_t>(1, std::min<int64_t>(4096, (n + 63) / 64));
  const int64_t chunks = (n + rows_per_chunk - 1) / rows_per_chunk;
  std::vector<Farthest> best(chunks);
  torch::stable::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      const int64_t begin = c * rows_per_chunk;
      const int64_t end = std::min(n, begin + rows_per_chunk);
      Farthest local{-1.0, begin, 0};
      for (int64_t i = begin; i < end; ++i) {
        T m = min_distances[i];
        const int32_t p = pruning.nearest ? pruning.nearest[i] : -1;
        const bool skip = p >= 0 && pruning.center_distance &&
                          Pruning<T>::out_of_reach(pruning.center_distance[p], m);
        if (!skip) {
          ++local.rows_read;
          const T dist = std::sqrt(squared_distance(features + i * d, center_row, d));
          if (dist < m) {
            m = min_distances[i] = dist;
            if (pruning.nearest) pruning.nearest[i] = pruning.new_position;
          }
        }
        if (m > local.distance) {  // strict: first index wins
          local.distance = static_cast<double>(m);
          local.index = i;
        }
      }
      best[c] = local;
    }
  });
  Farthest overall = best[0];
  for (int64_t c = 1; c < chunks; ++c) {
    if (best[c].distance > overall.distance) {
      overall.distance = best[c].distance;
      overall.index = best[c].index;
    }
    overall.rows_read += best[c].rows_read;
  }
  return overall;
}

}  // namespace anomaly_kernels::cpu
