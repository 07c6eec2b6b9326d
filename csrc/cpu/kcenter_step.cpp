// CPU kernel of anomaly_kernels::kcenter_step_: one fused pass over the rows that computes each
// row's distance to the new center, lowers its running minimum and tracks the argmax.
#include <cmath>
#include <limits>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/kcenter_step_args.h"

namespace anomaly_kernels {
namespace {

struct Best {
  double value;
  int64_t index;
};

template <typename T>
T squared_distance(const T* __restrict a, const T* __restrict b, int64_t d) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < d; ++j) {
    const T diff = a[j] - b[j];
    sum += diff * diff;
  }
  return sum;
}

template <typename T>
int64_t kcenter_step_cpu_impl(const T* features, int64_t n, int64_t d, T* min_distances,
                              int64_t center) {
  const T* center_row = features + center * d;
  // Fixed chunks, each reduced to its own (max, index); chunks are merged in order afterwards,
  // so the result does not depend on how threads were scheduled.
  const int64_t rows_per_chunk = std::max<int64_t>(1, std::min<int64_t>(4096, (n + 63) / 64));
  const int64_t chunks = (n + rows_per_chunk - 1) / rows_per_chunk;
  std::vector<Best> best(chunks);
  torch::stable::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      const int64_t begin = c * rows_per_chunk;
      const int64_t end = std::min(n, begin + rows_per_chunk);
      Best local{-1.0, begin};
      for (int64_t i = begin; i < end; ++i) {
        const T dist = std::sqrt(squared_distance(features + i * d, center_row, d));
        T m = min_distances[i];
        if (dist < m) m = min_distances[i] = dist;
        if (m > local.value) local = {static_cast<double>(m), i};  // strict: first index wins
      }
      best[c] = local;
    }
  });
  Best overall = best[0];
  for (int64_t c = 1; c < chunks; ++c)
    if (best[c].value > overall.value) overall = best[c];
  return overall.index;
}

Tensor kcenter_step_cpu(Tensor features, Tensor min_distances, Tensor center) {
  check_kcenter_step_args(features, min_distances, center);
  STD_TORCH_CHECK(features.is_cpu(), "features must be a CPU tensor for the CPU kernel");
  const Tensor rows = torch::stable::contiguous(features);
  const Tensor center_cpu = torch::stable::contiguous(center);
  const int64_t n = rows.size(0), d = rows.size(1);
  const int64_t c = *center_cpu.const_data_ptr<int64_t>();
  STD_TORCH_CHECK(c >= 0 && c < n, "center must index a row of features (0 <= center < ", n,
                  "), got ", c);
  int64_t index;
  if (rows.scalar_type() == ScalarType::Float) {
    index = kcenter_step_cpu_impl(rows.const_data_ptr<float>(), n, d,
                                  min_distances.mutable_data_ptr<float>(), c);
  } else {
    index = kcenter_step_cpu_impl(rows.const_data_ptr<double>(), n, d,
                                  min_distances.mutable_data_ptr<double>(), c);
  }
  std::vector<int64_t> scalar_shape;
  Tensor out = torch::stable::new_empty(min_distances, scalar_shape, ScalarType::Long);
  *out.mutable_data_ptr<int64_t>() = index;
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CPU, m) {
  m.impl("kcenter_step_", TORCH_BOX(&anomaly_kernels::kcenter_step_cpu));
}
