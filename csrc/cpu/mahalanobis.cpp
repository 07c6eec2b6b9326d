// CPU kernel of anomaly_kernels::mahalanobis. Tasks stage blocks of consecutive positions
// (cpu/position_block.h); each position's precision matrix is then read once for the whole batch. The quadratic form uses the upper triangle of the
// symmetric precision, d^T M d = sum_i d_i (M_ii d_i + 2 sum_{j>i} M_ij d_j): half the work of a
// full product, with four images sharing each loaded matrix row.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/mahalanobis_args.h"
#include "common/simd.h"
#include "cpu/position_block.h"

namespace anomaly_kernels {
namespace {

constexpr int64_t kImagesPerPass = 8;

// Quadratic forms d[k]^T M d[k] of K centred vectors (C,) with one matrix (C, C).
// y_k = M d_k is accumulated as sum_i d_k[i] * M[i, :] (M is symmetric, so row i is column i)
// over one register-sized block of columns at a time: each loaded piece of a matrix row feeds K
// fused multiply-adds, and no horizontal sums are needed until q_k = y_k . d_k. K is a template
// argument so the K accumulators stay in registers.
template <int64_t K, typename T>
AK_SIMD_CLONES void quadratic_forms(const T* matrix, const T* const* d, int64_t c, double* out) {
  constexpr int64_t kLanes = 64 / static_cast<int64_t>(sizeof(T));
  const int64_t full = c / kLanes * kLanes;
  double q[K] = {};
  for (int64_t j0 = 0; j0 < full; j0 += kLanes) {
    T y[K][kLanes] = {};
    for (int64_t i = 0; i < c; ++i) {
      const T* row = matrix + i * c + j0;
      for (int64_t k = 0; k < K; ++k) {
        const T di = d[k][i];
#pragma omp simd
        for (int64_t jj = 0; jj < kLanes; ++jj) y[k][jj] += di * row[jj];
      }
    }
    for (int64_t k = 0; k < K; ++k)
      for (int64_t jj = 0; jj < kLanes; ++jj) q[k] += static_cast<double>(y[k][jj]) * d[k][j0 + jj];
  }
  // The last c - full columns: by symmetry y_k[j] is row j of M dotted with d_k, a unit-stride
  // dot product (cheaper than a partial column block).
  for (int64_t j = full; j < c; ++j) {
    const T* row = matrix + j * c;
    for (int64_t k = 0; k < K; ++k) {
      T y = 0;
#pragma omp simd reduction(+ : y)
      for (int64_t i = 0; i < c; ++i) y += row[i] * d[k][i];
      q[k] += static_cast<double>(y) * d[k][j];
    }
  }
  for (int64_t k = 0; k < K; ++k) out[k] = q[k];
}

inline void prefetch_bytes(const void* start, int64_t bytes) {
  const char* p = static_cast<const char*>(start);
  for (int64_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(p + offset, 0, 3);
}

// All `count` images of one position, in groups of 8, 4, 2 and 1.
template <typename T>
void position_forms(const T* matrix, const T* delta, int64_t count, int64_t c, double* out) {
  const T* d[kImagesPerPass];
  int64_t img = 0;
  auto run = [&](auto group) {
    constexpr int64_t kGroup = decltype(group)::value;
    for (; img + kGroup <= count; img += kGroup) {
      for (int64_t k = 0; k < kGroup; ++k) d[k] = delta + (img + k) * c;
      quadratic_forms<kGroup>(matrix, d, c, out + img);
    }
  };
  run(std::integral_constant<int64_t, 8>{});
  run(std::integral_constant<int64_t, 4>{});
  run(std::integral_constant<int64_t, 2>{});
  run(std::integral_constant<int64_t, 1>{});
}

template <typename T>
void mahalanobis_cpu_impl(const T* embedding, const T* mean, const T* precision, int64_t b,
                          int64_t c, int64_t p, T* out) {
  torch::stable::parallel_for(0, cpu::position_tasks(p), 1, [&](int64_t first, int64_t last) {
    std::vector<T> delta(cpu::kPositionsPerTask * b * c);  // [position][image][channel]
    std::vector<double> forms(b);
    for (int64_t task = first; task < last; ++task) {
      const int64_t p0 = task * cpu::kPositionsPerTask;
      const int64_t np = cpu::task_positions(task, p);
      cpu::stage_positions(embedding, mean, b, c, p, p0, np, delta.data());
      for (int64_t q = 0; q < np; ++q) {
        // The forms read each matrix column block by column block (a 4*C-byte stride), which
        // hardware prefetchers follow poorly: request the next position's matrix in order.
        if (p0 + q + 1 < p) prefetch_bytes(precision + (p0 + q + 1) * c * c, c * c * sizeof(T));
        position_forms(precision + (p0 + q) * c * c, delta.data() + q * b * c, b, c, forms.data());
        for (int64_t img = 0; img < b; ++img)
          out[img * p + p0 + q] = static_cast<T>(std::sqrt(std::max(forms[img], 0.0)));
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
