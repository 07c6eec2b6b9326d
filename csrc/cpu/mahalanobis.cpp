// CPU kernel of anomaly_kernels::mahalanobis. Tasks stage blocks of consecutive positions
// (cpu/position_block.h); each position's precision matrix M is then read once for the whole
// batch, and only its upper triangle: M is symmetric, so
//   d^T M d = sum_j d_j z_j,  z_j = M_jj d_j + 2 sum_{i<j} M_ij d_i,
// which halves the arithmetic and (for large C) the bytes read from memory. The kernel relies
// on that symmetry: the entries below the diagonal are never used, so the matrices may also come
// packed (common/packed_triangle.h), at half the memory.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/mahalanobis_args.h"
#include "common/packed_triangle.h"
#include "common/simd.h"
#include "cpu/position_block.h"

namespace anomaly_kernels {
namespace {

// One column block is one 64-byte vector register of T; row panels are as tall as a block is
// wide, so a panel's diagonal block is square.
template <typename T>
constexpr int64_t kLanes = 64 / static_cast<int64_t>(sizeof(T));

// Weights of a panel's diagonal block, halved (see position_forms): row r of the block counts
// column r half, the columns right of it fully (their mirror images below the diagonal are
// never read) and the columns left of it not at all.
template <typename T>
struct HalfDiagonalWeights {
  T w[kLanes<T>][kLanes<T>];
  constexpr HalfDiagonalWeights() : w{} {
    for (int64_t r = 0; r < kLanes<T>; ++r)
      for (int64_t j = 0; j < kLanes<T>; ++j) w[r][j] = j < r ? T(0) : (j == r ? T(0.5) : T(1));
  }
};
template <typename T>
constexpr HalfDiagonalWeights<T> kHalfDiagonalWeights{};

// Where the rows of a position's matrix lie, full or packed: row(m, c, r)[j] is M[r, j] for
// every j >= r. (For a packed matrix the entries left of the diagonal are the previous row's
// last ones: inside the matrix, and never used.) Row r + k starts k * stride(c, r) - k (k - 1) / 2
// * kShrink entries after row r (packed rows are one entry shorter each).
struct FullMatrices {
  static constexpr int64_t kShrink = 0;
  static int64_t elements(int64_t c) { return c * c; }
  static int64_t stride(int64_t c, int64_t) { return c; }
  template <typename T>
  static const T* row(const T* m, int64_t c, int64_t r) { return m + r * c; }
};
struct PackedMatrices {
  static constexpr int64_t kShrink = 1;
  static int64_t elements(int64_t c) { return packed_elements(c); }
  static int64_t stride(int64_t c, int64_t r) { return c - r - 1; }
  template <typename T>
  static const T* row(const T* m, int64_t c, int64_t r) { return m + packed_offset(r, r, c) - r; }
};

// h_k[block] += sum_{r < kLanes} d_k[r] * M[r, block] over the kLanes rows of a panel, for one
// column block of K images (`rows` points at the panel's first row in that block, the next rows
// following as Matrices::stride says; `d[k]` at image k's entries for the panel's rows, `h[k]`
// at its accumulator for the block). Each row piece is loaded once and feeds K fused
// multiply-adds; the accumulators stay in registers.
template <int64_t K, bool Diagonal, int64_t Shrink, typename T>
AK_SIMD_CLONES void panel_block(const T* rows, int64_t stride, const T* const* d, T* const* h) {
  constexpr int64_t L = kLanes<T>;
  T acc[K][L];
  for (int64_t k = 0; k < K; ++k)
#pragma omp simd
    for (int64_t jj = 0; jj < L; ++jj) acc[k][jj] = h[k][jj];
  for (int64_t r = 0; r < L; ++r) {
    const T* row = rows + r * stride - r * (r - 1) / 2 * Shrink;
    T m[L];
#pragma omp simd
    for (int64_t jj = 0; jj < L; ++jj) m[jj] = Diagonal ? row[jj] * kHalfDiagonalWeights<T>.w[r][jj] : row[jj];
    for (int64_t k = 0; k < K; ++k) {
      const T dr = d[k][r];
      if constexpr (Diagonal) {
        // Entries left of the diagonal add nothing, not 0 * d_r: an infinite feature must give
        // an infinite form, not NaN.
#pragma omp simd
        for (int64_t jj = 0; jj < L; ++jj) acc[k][jj] += jj < r ? T(0) : dr * m[jj];
      } else {
#pragma omp simd
        for (int64_t jj = 0; jj < L; ++jj) acc[k][jj] += dr * m[jj];
      }
    }
  }
  for (int64_t k = 0; k < K; ++k)
#pragma omp simd
    for (int64_t jj = 0; jj < L; ++jj) h[k][jj] = acc[k][jj];
}

// d_t * z_t for a column t right of the last whole block, z_t = M_tt d_t + 2 sum_{i<t} M_it d_i,
// from column[i] = M[i, t], i <= t: a unit-stride dot product (for a full matrix, by symmetry,
// the column is row t's first t + 1 entries).
template <int64_t K, typename T>
AK_SIMD_CLONES void tail_column_forms(const T* column, int64_t t, const T* const* d, double* q) {
  constexpr int64_t L = kLanes<T>;
  const T* row = column;
  T partial[K][L] = {};
  int64_t i = 0;
  for (; i + L <= t; i += L)
    for (int64_t k = 0; k < K; ++k)
#pragma omp simd
      for (int64_t jj = 0; jj < L; ++jj) partial[k][jj] += row[i + jj] * d[k][i + jj];
  for (int64_t k = 0; k < K; ++k) {
    double off_diagonal = 0;
    for (int64_t jj = 0; jj < L; ++jj) off_diagonal += partial[k][jj];
    for (int64_t ii = i; ii < t; ++ii) off_diagonal += static_cast<double>(row[ii]) * d[k][ii];
    const double dt = d[k][t];
    q[k] += dt * (2.0 * off_diagonal + static_cast<double>(row[t]) * dt);
  }
}

// columns[(t - full) * c + i] = M[i, t] for the columns t >= full of a packed matrix and i <= t.
// Packed rows start at their diagonal, so those entries sit at the end of every row i: they are
// copied row by row, reading the matrix front to back (one or two cache lines per row) rather
// than one scattered entry per row for every column.
template <typename T>
void gather_tail_columns(const T* matrix, int64_t c, int64_t full, T* columns) {
  for (int64_t i = 0; i < c; ++i) {
    const T* row = PackedMatrices::row(matrix, c, i);
    for (int64_t t = std::max(i, full); t < c; ++t) columns[(t - full) * c + i] = row[t];
  }
}

// sum_j d[j] h[j] over n entries (a multiple of kLanes), lane-parallel, summed in double at the end.
template <typename T>
AK_SIMD_CLONES double dot(const T* d, const T* h, int64_t n) {
  constexpr int64_t L = kLanes<T>;
  T lanes[L] = {};
  for (int64_t j = 0; j < n; j += L)
#pragma omp simd
    for (int64_t jj = 0; jj < L; ++jj) lanes[jj] += d[j + jj] * h[j + jj];
  double sum = 0;
  for (int64_t jj = 0; jj < L; ++jj) sum += lanes[jj];
  return sum;
}

// Requests the cache lines of the next position's matrix that position_forms will read (each
// row from its panel's diagonal block on; the tail rows whole), spread evenly over `calls`
// calls of next() made during the work on the current matrix, so that the next matrix's loads
// overlap with that work instead of stalling it. The lines go to L2 (locality hint 2), which
// holds many matrices, rather than L1, which the current matrix's rows need (measured ~20%
// faster than an L1 prefetch at 8 x 100 x 56 x 56).
template <typename T, typename Matrices>
class UpperTrianglePrefetch {
 public:
  UpperTrianglePrefetch(const T* matrix, int64_t c, int64_t calls) : matrix_(matrix), c_(c) {
    if (matrix == nullptr) return;
    int64_t lines = 0;
    for (int64_t i = 0; i < c_; ++i) lines += (row_end(i) - row_begin(i) + 63) / 64;
    lines_per_call_ = (lines + calls - 1) / calls;
    start_row(0);
  }

  void next() {
    for (int64_t n = 0; n < lines_per_call_ && row_ < c_; ++n) {
      __builtin_prefetch(line_, 0, 2);
      line_ += 64;
      if (line_ >= row_end(row_)) start_row(row_ + 1);
    }
  }

 private:
  // A row is read from its panel's diagonal block on; a tail row whole (of a packed matrix,
  // from its diagonal on).
  const char* row_begin(int64_t i) const {
    const int64_t full = c_ / kLanes<T> * kLanes<T>;
    const int64_t first_column = i < full ? i / kLanes<T> * kLanes<T> : 0;
    const T* row = Matrices::row(matrix_, c_, i);
    return reinterpret_cast<const char*>(std::is_same_v<Matrices, PackedMatrices> ? row + std::max(first_column, i)
                                                                                  : row + first_column);
  }
  const char* row_end(int64_t i) const { return reinterpret_cast<const char*>(Matrices::row(matrix_, c_, i) + c_); }
  void start_row(int64_t i) {
    row_ = i;
    if (row_ < c_) line_ = row_begin(row_);
  }

  const T* matrix_;
  int64_t c_;
  int64_t lines_per_call_ = 0;
  int64_t row_ = 0;
  const char* line_ = nullptr;
};

// Calls body(std::integral_constant<int64_t, K>{}, first_image) for `count` images in groups
// of K = kLargestImageGroup (8), 4, 2 and 1.
constexpr int64_t kLargestImageGroup = 8;

template <typename Body>
void for_image_groups(int64_t count, Body&& body) {
  int64_t img = 0;
  auto run = [&](auto group) {
    for (; img + decltype(group)::value <= count; img += decltype(group)::value) body(group, img);
  };
  run(std::integral_constant<int64_t, kLargestImageGroup>{});
  run(std::integral_constant<int64_t, 4>{});
  run(std::integral_constant<int64_t, 2>{});
  run(std::integral_constant<int64_t, 1>{});
}

// Quadratic forms q[img] = d^T M d of `count` centred images `delta` (count, C) with one
// symmetric matrix M (C, C), reading only its upper triangle:
//   d^T M d = 2 sum_j d_j h_j,  h_j = M_jj d_j / 2 + sum_{i<j} M_ij d_i.
// h over the columns of whole blocks is accumulated panel by panel (kLanes rows at a time,
// columns from the panel's diagonal block on), so the matrix is read front to back in nearly
// contiguous pieces, which hardware prefetchers follow; `h` holds count x full accumulators.
// Columns right of the last whole block are done by tail_column_forms (packed matrices' columns
// gathered into `tail_columns`, kLanes * c entries of scratch, first). `next_matrix` (or nullptr)
// is the matrix of the position that comes next, prefetched along the way.
template <typename Matrices, typename T>
void position_forms(const T* matrix, const T* next_matrix, const T* delta, int64_t count, int64_t c,
                    T* h, T* tail_columns, double* q) {
  constexpr int64_t L = kLanes<T>;
  const int64_t full = c / L * L;
  std::fill(h, h + count * full, T(0));
  const int64_t panels = full / L;
  UpperTrianglePrefetch<T, Matrices> prefetch(next_matrix, c, panels * (panels + 1) / 2 + 1);
  const T* d[kLargestImageGroup];
  T* acc[kLargestImageGroup];
  for (int64_t r0 = 0; r0 < full; r0 += L) {
    const int64_t stride = Matrices::stride(c, r0);
    for (int64_t j0 = r0; j0 < full; j0 += L) {
      const T* rows = Matrices::row(matrix, c, r0) + j0;
      prefetch.next();
      for_image_groups(count, [&](auto group, int64_t first) {
        constexpr int64_t K = decltype(group)::value;
        for (int64_t k = 0; k < K; ++k) {
          d[k] = delta + (first + k) * c + r0;
          acc[k] = h + (first + k) * full + j0;
        }
        if (j0 == r0) {
          panel_block<K, true, Matrices::kShrink>(rows, stride, d, acc);
        } else {
          panel_block<K, false, Matrices::kShrink>(rows, stride, d, acc);
        }
      });
    }
  }
  prefetch.next();
  for (int64_t img = 0; img < count; ++img) q[img] = 2.0 * dot(delta + img * c, h + img * full, full);
  if (full == c) return;
  if constexpr (std::is_same_v<Matrices, PackedMatrices>) gather_tail_columns(matrix, c, full, tail_columns);
  for (int64_t t = full; t < c; ++t) {
    const T* column = std::is_same_v<Matrices, PackedMatrices> ? tail_columns + (t - full) * c : matrix + t * c;
    for_image_groups(count, [&](auto group, int64_t first) {
      for (int64_t k = 0; k < decltype(group)::value; ++k) d[k] = delta + (first + k) * c;
      tail_column_forms<decltype(group)::value>(column, t, d, q + first);
    });
  }
}

template <typename Matrices, typename T>
void mahalanobis_cpu_impl(const T* embedding, const T* mean, const T* precision, int64_t b,
                          int64_t c, int64_t p, T* out) {
  const int64_t matrix_elements = Matrices::elements(c);
  torch::stable::parallel_for(0, cpu::position_tasks(p), 1, [&](int64_t first, int64_t last) {
    std::vector<T> delta(cpu::kPositionsPerTask * b * c);  // [position][image][channel]
    std::vector<T> half_z(b * (c / kLanes<T> * kLanes<T>));
    std::vector<T> tail_columns(std::is_same_v<Matrices, PackedMatrices> ? kLanes<T> * c : 0);
    std::vector<double> forms(b);
    for (int64_t task = first; task < last; ++task) {
      const int64_t p0 = task * cpu::kPositionsPerTask;
      const int64_t np = cpu::task_positions(task, p);
      cpu::stage_positions(embedding, mean, b, c, p, p0, np, delta.data());
      for (int64_t q = 0; q < np; ++q) {
        const int64_t position = p0 + q;
        const T* next = position + 1 < p ? precision + (position + 1) * matrix_elements : nullptr;
        position_forms<Matrices>(precision + position * matrix_elements, next, delta.data() + q * b * c, b, c,
                                 half_z.data(), tail_columns.data(), forms.data());
        for (int64_t img = 0; img < b; ++img)
          out[img * p + position] = static_cast<T>(std::sqrt(std::max(forms[img], 0.0)));
      }
    }
  });
}

Tensor mahalanobis_cpu(Tensor embedding, Tensor mean, Tensor precision) {
  check_mahalanobis_args(embedding, mean, precision);
  const Tensor e = as_contiguous(embedding);
  const Tensor mu = as_contiguous(mean);
  const Tensor m = as_contiguous(precision);
  const int64_t b = e.size(0), c = e.size(1), p = e.size(2) * e.size(3);
  std::vector<int64_t> out_shape{b, 1, e.size(2), e.size(3)};
  Tensor out = torch::stable::new_empty(e, out_shape);
  if (out.numel() == 0) return out;
  if (c == 0) return torch::stable::zero_(out);
  auto run = [&](auto matrices) {
    using Matrices = decltype(matrices);
    if (e.scalar_type() == ScalarType::Float) {
      mahalanobis_cpu_impl<Matrices>(e.const_data_ptr<float>(), mu.const_data_ptr<float>(),
                                     m.const_data_ptr<float>(), b, c, p, out.mutable_data_ptr<float>());
    } else {
      mahalanobis_cpu_impl<Matrices>(e.const_data_ptr<double>(), mu.const_data_ptr<double>(),
                                     m.const_data_ptr<double>(), b, c, p, out.mutable_data_ptr<double>());
    }
  };
  if (m.dim() == 2) {
    run(PackedMatrices{});
  } else {
    run(FullMatrices{});
  }
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CPU, m) {
  m.impl("mahalanobis", TORCH_BOX(&anomaly_kernels::mahalanobis_cpu));
}
