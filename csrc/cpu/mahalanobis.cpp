// CPU kernel of anomaly_kernels::mahalanobis. Tasks stage blocks of consecutive positions
// (cpu/position_block.h); each position's precision matrix is then read once for the whole batch. The quadratic form uses the upper triangle of the
// symmetric precision, d^T M d = sum_i d_i (M_ii d_i + 2 sum_{j>i} M_ij d_j): half the work of a
// full product, with four images sharing each loaded matrix row.
#include <algorithm>
#include <cmath>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/mahalanobis_args.h"
#include "common/simd.h"
#include "cpu/position_block.h"

namespace anomaly_kernels {
namespace {

constexpr int64_t kImagesPerPass = 4;

// Quadratic forms of `count` (<= 4) centred vectors d[k] (C,) with one symmetric matrix (C, C).
template <typename T>
AK_SIMD_CLONES void quadratic_forms(const T* matrix, const T* const* d, int64_t count, int64_t c, double* out) {
  double acc[kImagesPerPass] = {0, 0, 0, 0};
  for (int64_t i = 0; i < c; ++i) {
    const T* row = matrix + i * c;
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    if (count == kImagesPerPass) {
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int64_t j = i + 1; j < c; ++j) {
        s0 += row[j] * d[0][j];
        s1 += row[j] * d[1][j];
        s2 += row[j] * d[2][j];
        s3 += row[j] * d[3][j];
      }
      const T s[kImagesPerPass] = {s0, s1, s2, s3};
      for (int64_t k = 0; k < kImagesPerPass; ++k)
        acc[k] += static_cast<double>(d[k][i]) * (row[i] * d[k][i] + 2 * s[k]);
    } else {
      for (int64_t k = 0; k < count; ++k) {
        T sk = 0;
#pragma omp simd reduction(+ : sk)
        for (int64_t j = i + 1; j < c; ++j) sk += row[j] * d[k][j];
        acc[k] += static_cast<double>(d[k][i]) * (row[i] * d[k][i] + 2 * sk);
      }
    }
  }
  for (int64_t k = 0; k < count; ++k) out[k] = acc[k];
}

template <typename T>
void mahalanobis_cpu_impl(const T* embedding, const T* mean, const T* precision, int64_t b,
                          int64_t c, int64_t p, T* out) {
  torch::stable::parallel_for(0, cpu::position_tasks(p), 1, [&](int64_t first, int64_t last) {
    std::vector<T> delta(cpu::kPositionsPerTask * b * c);  // [position][image][channel]
    for (int64_t task = first; task < last; ++task) {
      const int64_t p0 = task * cpu::kPositionsPerTask;
      const int64_t np = cpu::task_positions(task, p);
      cpu::stage_positions(embedding, mean, b, c, p, p0, np, delta.data());
      for (int64_t q = 0; q < np; ++q) {
        const T* matrix = precision + (p0 + q) * c * c;
        for (int64_t img = 0; img < b; img += kImagesPerPass) {
          const int64_t count = std::min(kImagesPerPass, b - img);
          const T* d[kImagesPerPass];
          for (int64_t k = 0; k < kImagesPerPass; ++k)
            d[k] = delta.data() + (q * b + img + std::min(k, count - 1)) * c;
          double forms[kImagesPerPass];
          quadratic_forms(matrix, d, count, c, forms);
          for (int64_t k = 0; k < count; ++k)
            out[(img + k) * p + p0 + q] = static_cast<T>(std::sqrt(std::max(forms[k], 0.0)));
        }
      }
    }
  });
}

Tensor mahalanobis_cpu(Tensor embedding, Tensor mean, Tensor precision) {
  check_mahalanobis_args(embedding, mean, precision);
  const Tensor e = torch::stable::contiguous(embedding);
  const Tensor mu = torch::stable::contiguous(mean);
  const Tensor m = torch::stable::contiguous(precision);
  const int64_t b = e.size(0), c = e.size(1), p = e.size(2) * e.size(3);
  std::vector<int64_t> out_shape{b, 1, e.size(2), e.size(3)};
  Tensor out = torch::stable::new_empty(e, out_shape);
  if (out.numel() == 0) return out;
  if (c == 0) return torch::stable::zero_(out);
  if (e.scalar_type() == ScalarType::Float) {
    mahalanobis_cpu_impl(e.const_data_ptr<float>(), mu.const_data_ptr<float>(),
                         m.const_data_ptr<float>(), b, c, p, out.mutable_data_ptr<float>());
  } else {
    mahalanobis_cpu_impl(e.const_data_ptr<double>(), mu.const_data_ptr<double>(),
                         m.const_data_ptr<double>(), b, c, p, out.mutable_data_ptr<double>());
  }
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CPU, m) {
  m.impl("mahalanobis", TORCH_BOX(&anomaly_kernels::mahalanobis_cpu));
}
