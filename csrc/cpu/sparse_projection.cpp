// CPU kernel of anomaly_kernels::sparse_sign_projection: for each input row, every output is a
// signed sum of the few input columns its matrix row selects. A block of input rows stays in
// cache while all K outputs gather from it, so the input is read from memory once.
#include <algorithm>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/simd.h"
#include "common/sparse_projection_args.h"

namespace anomaly_kernels {
namespace {

// Rows are projected kRows at a time: the block is transposed into a (D, kRows) tile, so each
// gathered column yields kRows adjacent values and the inner loop vectorises across rows.
// Columns are split by sign, so each sum runs over one sign at a time.
constexpr int64_t kRows = 16;

struct SignedPattern {
  std::vector<int32_t> tile_offset;  // column * kRows, positives of each output first
  std::vector<int64_t> begin, split, end;  // per output: [begin, split) positive, [split, end) negative
};

SignedPattern split_by_sign(const int64_t* crow, const int64_t* col, const int8_t* signs,
                            int64_t k) {
  SignedPattern p;
  p.tile_offset.reserve(crow[k]);
  p.begin.resize(k), p.split.resize(k), p.end.resize(k);
  for (int64_t j = 0; j < k; ++j) {
    p.begin[j] = static_cast<int64_t>(p.tile_offset.size());
    for (int64_t q = crow[j]; q < crow[j + 1]; ++q)
      if (signs[q] > 0) p.tile_offset.push_back(static_cast<int32_t>(col[q] * kRows));
    p.split[j] = static_cast<int64_t>(p.tile_offset.size());
    for (int64_t q = crow[j]; q < crow[j + 1]; ++q)
      if (signs[q] <= 0) p.tile_offset.push_back(static_cast<int32_t>(col[q] * kRows));
    p.end[j] = static_cast<int64_t>(p.tile_offset.size());
  }
  return p;
}

// even/odd[r] += sign * tile[offsets[q] + r] for q in [begin, end), alternating the two sets.
template <typename T>
__attribute__((always_inline)) inline void accumulate(const T* tile, const int32_t* offsets, int64_t begin, int64_t end,
                       T* __restrict even, T* __restrict odd, T sign) {
  int64_t q = begin;
  for (; q + 1 < end; q += 2) {
    const T* a = tile + offsets[q];
    const T* b = tile + offsets[q + 1];
#pragma omp simd
    for (int64_t r = 0; r < kRows; ++r) {
      even[r] += sign * a[r];
      odd[r] += sign * b[r];
    }
  }
  if (q < end) {
    const T* a = tile + offsets[q];
#pragma omp simd
    for (int64_t r = 0; r < kRows; ++r) even[r] += sign * a[r];
  }
}

// Projects input rows [row0, row0 + rows) (rows <= kRows) through a (d, kRows) tile.
template <typename T>
AK_SIMD_CLONES void project_block(const T* input, int64_t row0, int64_t rows, int64_t d,
                                  const SignedPattern& pattern, int64_t k, T scale, T* tile,
                                  T* out) {
  const int32_t* offsets = pattern.tile_offset.data();
  for (int64_t r = 0; r < kRows; ++r) {
    const T* x = input + (row0 + std::min(r, rows - 1)) * d;  // short block: repeat a row
    for (int64_t c = 0; c < d; ++c) tile[c * kRows + r] = x[c];
  }
  for (int64_t j = 0; j < k; ++j) {
    // Two accumulator sets (even / odd terms) halve the floating-point add dependency chain.
    T even[kRows] = {}, odd[kRows] = {};
    accumulate(tile, offsets, pattern.begin[j], pattern.split[j], even, odd, T(1));
    accumulate(tile, offsets, pattern.split[j], pattern.end[j], even, odd, T(-1));
    for (int64_t r = 0; r < rows; ++r) out[(row0 + r) * k + j] = scale * (even[r] + odd[r]);
  }
}

template <typename T>
void project_rows(const T* input, int64_t n, int64_t d, const SignedPattern& pattern, int64_t k,
                  T scale, T* out) {
  const int64_t blocks = (n + kRows - 1) / kRows;
  torch::stable::parallel_for(0, blocks, 8, [&](int64_t first, int64_t last) {
    std::vector<T> tile(d * kRows);
    for (int64_t b = first; b < last; ++b)
      project_block(input, b * kRows, std::min(kRows, n - b * kRows), d, pattern, k, scale,
                    tile.data(), out);
  });
}

Tensor sparse_sign_projection_cpu(Tensor input, Tensor crow_indices, Tensor col_indices,
                                  Tensor signs, double scale) {
  check_sparse_projection_args(input, crow_indices, col_indices, signs);
  const Tensor x = torch::stable::contiguous(input);
  const Tensor crow = torch::stable::contiguous(crow_indices);
  const Tensor col = torch::stable::contiguous(col_indices);
  const Tensor sgn = torch::stable::contiguous(signs);
  const int64_t n = x.size(0), d = x.size(1), k = crow.size(0) - 1;
  const int64_t* crow_ptr = crow.const_data_ptr<int64_t>();
  const int64_t* col_ptr = col.const_data_ptr<int64_t>();
  // Validate the pattern once here so the inner loop can trust it.
  STD_TORCH_CHECK(crow_ptr[0] == 0 && crow_ptr[k] == col.size(0),
                  "crow_indices must start at 0 and end at len(col_indices) = ", col.size(0));
  for (int64_t j = 0; j < k; ++j)
    STD_TORCH_CHECK(crow_ptr[j] <= crow_ptr[j + 1], "crow_indices must be non-decreasing");
  for (int64_t p = 0; p < col.size(0); ++p)
    STD_TORCH_CHECK(col_ptr[p] >= 0 && col_ptr[p] < d, "col_indices must lie in [0, ", d,
                    "), got ", col_ptr[p]);
  std::vector<int64_t> out_shape{n, k};
  Tensor out = torch::stable::new_empty(x, out_shape);
  if (out.numel() == 0) return out;
  STD_TORCH_CHECK(d * kRows < (int64_t(1) << 31), "input may have at most ",
                  (int64_t(1) << 31) / kRows, " columns, got ", d);
  const SignedPattern pattern = split_by_sign(crow_ptr, col_ptr, sgn.const_data_ptr<int8_t>(), k);
  if (x.scalar_type() == ScalarType::Float) {
    project_rows(x.const_data_ptr<float>(), n, d, pattern, k, static_cast<float>(scale),
                 out.mutable_data_ptr<float>());
  } else {
    project_rows(x.const_data_ptr<double>(), n, d, pattern, k, scale,
                 out.mutable_data_ptr<double>());
  }
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CPU, m) {
  m.impl("sparse_sign_projection", TORCH_BOX(&anomaly_kernels::sparse_sign_projection_cpu));
}
