// CPU kernel of anomaly_kernels::kde_log_sum_exp. The dataset is transposed once to (D, N) so the
// distances of one query to a tile of training rows are computed with unit-stride, vectorised
// loops; each tile's exponentials are summed against the tile maximum and merged into a running
// (maximum, sum) pair, so far-away queries stay finite and no (M, N) block is ever stored.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/fast_exp.h"
#include "common/kde_log_sum_exp_args.h"
#include "common/simd.h"

namespace anomaly_kernels {
namespace {

constexpr int64_t kTile = 512;

// exp for the tile sums: the branch-free float version, or the library one for double.
inline float tile_exp(float x) { return exp_nonpositive(x); }
inline double tile_exp(double x) { return std::exp(x); }

template <typename T>
AK_SIMD_CLONES double log_sum_exp_query(const T* query, const T* dataset_t, int64_t n, int64_t d,
                                        T* values) {
  double running_max = -std::numeric_limits<double>::infinity(), running_sum = 0.0;
  for (int64_t j0 = 0; j0 < n; j0 += kTile) {
    const int64_t len = std::min(kTile, n - j0);
    std::fill(values, values + len, T(0));
    for (int64_t k = 0; k < d; ++k) {
      const T q = query[k];
      const T* column = dataset_t + k * n + j0;
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) {
        const T diff = column[j] - q;
        values[j] += diff * diff;
      }
    }
    T tile_max = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : tile_max)
    for (int64_t j = 0; j < len; ++j) {
      values[j] *= T(-0.5);
      tile_max = std::max(tile_max, values[j]);
    }
    if (tile_max == -std::numeric_limits<T>::infinity()) {
      // Every distance of the tile overflowed (or a NaN hid from the max): no finite term, and
      // exp(-inf - -inf) would turn "adds nothing" into NaN. Only a NaN distance counts here.
      for (int64_t j = 0; j < len; ++j)
        if (values[j] != values[j]) return std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    T tile_sum = 0;
#pragma omp simd reduction(+ : tile_sum)
    for (int64_t j = 0; j < len; ++j) tile_sum += tile_exp(values[j] - tile_max);
    const double m = static_cast<double>(tile_max);
    if (m > running_max) {
      running_sum = running_sum * std::exp(running_max - m) + tile_sum;
      running_max = m;
    } else {
      running_sum += tile_sum * std::exp(m - running_max);
    }
  }
  return running_max + std::log(running_sum);  // no finite term at all: -inf + log(0) = -inf
}

template <typename T>
void kde_cpu_impl(const T* queries, const T* dataset, int64_t m, int64_t n, int64_t d, T* out) {
  std::vector<T> dataset_t(d * n);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t k = 0; k < d; ++k) dataset_t[k * n + j] = dataset[j * d + k];
  torch::stable::parallel_for(0, m, 4, [&](int64_t first, int64_t last) {
    std::vector<T> values(kTile);
    for (int64_t i = first; i < last; ++i)
      out[i] = static_cast<T>(log_sum_exp_query(queries + i * d, dataset_t.data(), n, d, values.data()));
  });
}

Tensor kde_log_sum_exp_cpu(Tensor queries, Tensor dataset) {
  check_kde_log_sum_exp_args(queries, dataset);
  const Tensor q = as_contiguous(queries);
  const Tensor x = as_contiguous(dataset);
  const int64_t m = q.size(0), n = x.size(0), d = x.size(1);
  std::vector<int64_t> out_shape{m};
  Tensor out = torch::stable::new_empty(q, out_shape);
  if (m == 0) return out;
  if (q.scalar_type() == ScalarType::Float) {
    kde_cpu_impl(q.const_data_ptr<float>(), x.const_data_ptr<float>(), m, n, d,
                 out.mutable_data_ptr<float>());
  } else {
    kde_cpu_impl(q.const_data_ptr<double>(), x.const_data_ptr<double>(), m, n, d,
                 out.mutable_data_ptr<double>());
  }
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CPU, m) {
  m.impl("kde_log_sum_exp", TORCH_BOX(&anomaly_kernels::kde_log_sum_exp_cpu));
}
