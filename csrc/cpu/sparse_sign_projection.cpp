// CPU kernel of anomaly_kernels::sparse_sign_projection: for each input row, every output is a
// signed sum of the few input columns its matrix row selects. A block of input rows stays in
// cache while all K outputs gather from it, so the input is read from memory once.
#include <algorithm>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/simd.h"
#include "common/sparse_sign_projection_args.h"
#include "cpu/huge_pages.h"

namespace anomaly_kernels {
namespace {

// Rows are projected kRows at a time: a block of rows is transposed into a (columns, kRows)
// tile, so each gathered column yields kRows adjacent values and the inner loop vectorises
// across rows. The columns are walked in bands of kBandColumns so the tile of one band stays in
// L1 (256 x 16 floats = 16 KB); each output's partial sums carry over from band to band. Within
// a band each output's columns are split by sign, so each sum runs over one sign at a time.
constexpr int64_t kRows = 16;
constexpr int64_t kBandColumns = 256;

struct SignedPattern {
  int64_t bands = 0, outputs = 0;
  std::vector<int32_t> tile_offset;  // (column - band start) * kRows, grouped by band, output, sign
  std::vector<int64_t> begin, split, end;  // per (band, output): [begin, split) +1, [split, end) -1

  int64_t slot(int64_t band, int64_t output) const { return band * outputs + output; }
};

SignedPattern split_by_band_and_sign(const int64_t* crow, const int64_t* col, const int8_t* signs,
                                     int64_t k, int64_t d) {
  SignedPattern p;
  p.bands = (d + kBandColumns - 1) / kBandColumns;
  p.outputs = k;
  p.tile_offset.reserve(crow[k]);
  p.begin.resize(p.bands * k), p.split.resize(p.bands * k), p.end.resize(p.bands * k);
  for (int64_t band = 0; band < p.bands; ++band) {
    const int64_t first = band * kBandColumns, last = first + kBandColumns;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t s = p.slot(band, j);
      p.begin[s] = static_cast<int64_t>(p.tile_offset.size());
      for (int sign = 1; sign >= -1; sign -= 2) {
        if (sign < 0) p.split[s] = static_cast<int64_t>(p.tile_offset.size());
        for (int64_t q = crow[j]; q < crow[j + 1]; ++q)
          if (col[q] >= first && col[q] < last && (signs[q] > 0) == (sign > 0))
            p.tile_offset.push_back(static_cast<int32_t>((col[q] - first) * kRows));
      }
      p.end[s] = static_cast<int64_t>(p.tile_offset.size());
    }
  }
  return p;
}

// even/odd[r] += sign * tile[offsets[q] + r] for q in [begin, end), alternating the two sets.
template <typename T>
__attribute__((always_inline)) inline void accumulate(const T* tile, const int32_t* offsets,
                                                      int64_t begin, int64_t end,
                                                      T* __restrict even, T* __restrict odd,
                                                      T sign) {
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

// Projects input rows [row0, row0 + rows) (rows <= kRows). `tile` holds kBandColumns * kRows
// values, `sums` k * kRows partial sums.
template <typename T>
AK_SIMD_CLONES void project_block(const T* input, int64_t row0, int64_t rows, int64_t d,
                                  const SignedPattern& pattern, T scale, T* tile, T* sums,
                                  T* out) {
  const int64_t k = pattern.outputs;
  const int32_t* offsets = pattern.tile_offset.data();
  const T* x[kRows];
  for (int64_t r = 0; r < kRows; ++r) x[r] = input + (row0 + std::min(r, rows - 1)) * d;  // short block: repeat a row
  std::fill(sums, sums + k * kRows, T(0));
  for (int64_t band = 0; band < pattern.bands; ++band) {
    const int64_t first = band * kBandColumns;
    const int64_t width = std::min(kBandColumns, d - first);
    // Column by column: kRows streaming reads, one contiguous kRows-wide write.
    for (int64_t c = 0; c < width; ++c)
      for (int64_t r = 0; r < kRows; ++r) tile[c * kRows + r] = x[r][first + c];
    for (int64_t j = 0; j < k; ++j) {
      const int64_t s = pattern.slot(band, j);
      // Two accumulator sets (even / odd terms) halve the floating-point add dependency chain.
      T even[kRows] = {}, odd[kRows] = {};
      accumulate(tile, offsets, pattern.begin[s], pattern.split[s], even, odd, T(1));
      accumulate(tile, offsets, pattern.split[s], pattern.end[s], even, odd, T(-1));
      T* sum = sums + j * kRows;
#pragma omp simd
      for (int64_t r = 0; r < kRows; ++r) sum[r] += even[r] + odd[r];
    }
  }
  for (int64_t j = 0; j < k; ++j)
    for (int64_t r = 0; r < rows; ++r) out[(row0 + r) * k + j] = scale * sums[j * kRows + r];
}

template <typename T>
void project_rows(const T* input, int64_t n, int64_t d, const SignedPattern& pattern, T scale,
                  T* out) {
  const int64_t blocks = (n + kRows - 1) / kRows;
  torch::stable::parallel_for(0, blocks, 8, [&](int64_t first, int64_t last) {
    std::vector<T> tile(kBandColumns * kRows), sums(pattern.outputs * kRows);
    for (int64_t b = first; b < last; ++b)
      project_block(input, b * kRows, std::min(kRows, n - b * kRows), d, pattern, scale,
                    tile.data(), sums.data(), out);
  });
}

Tensor sparse_sign_projection_cpu(Tensor input, Tensor crow_indices, Tensor col_indices,
                                  Tensor signs, double scale) {
  check_sparse_sign_projection_args(input, crow_indices, col_indices, signs);
  const Tensor x = as_contiguous(input);
  const Tensor crow = as_contiguous(crow_indices);
  const Tensor col = as_contiguous(col_indices);
  const Tensor sgn = as_contiguous(signs);
  const int64_t n = x.size(0), d = x.size(1), k = crow.size(0) - 1;
  const int64_t* crow_ptr = crow.const_data_ptr<int64_t>();
  const int64_t* col_ptr = col.const_data_ptr<int64_t>();
  // Validate the pattern once here so the inner loop can trust it.
  STD_TORCH_CHECK(crow_ptr[0] == 0 && crow_ptr[k] == col.size(0),
                  "crow_indices must start at 0 and end at len(col_indices) = ", col.size(0));
  for (int64_t j = 0; j < k; ++j)
    STD_TORCH_CHECK(crow_ptr[j] <= crow_ptr[j + 1], "crow_indices must be non-decreasing");
  const int8_t* sign_ptr = sgn.const_data_ptr<int8_t>();
  for (int64_t p = 0; p < col.size(0); ++p) {
    STD_TORCH_CHECK(col_ptr[p] >= 0 && col_ptr[p] < d, "col_indices must lie in [0, ", d,
                    "), got ", col_ptr[p]);
    STD_TORCH_CHECK(sign_ptr[p] == 1 || sign_ptr[p] == -1, "signs must be +1 or -1, got ",
                    static_cast<int>(sign_ptr[p]), " at entry ", p);
  }
  std::vector<int64_t> out_shape{n, k};
  Tensor out = torch::stable::new_empty(x, out_shape);
  if (out.numel() == 0) return out;
  cpu::advise_huge_pages(out.data_ptr(), out.numel() * out.element_size());
  STD_TORCH_CHECK(d * kRows < (int64_t(1) << 31), "input may have at most ",
                  (int64_t(1) << 31) / kRows, " columns, got ", d);
  const SignedPattern pattern =
      split_by_band_and_sign(crow_ptr, col_ptr, sign_ptr, k, d);
  if (x.scalar_type() == ScalarType::Float) {
    project_rows(x.const_data_ptr<float>(), n, d, pattern, static_cast<float>(scale),
                 out.mutable_data_ptr<float>());
  } else {
    project_rows(x.const_data_ptr<double>(), n, d, pattern, scale,
                 out.mutable_data_ptr<double>());
  }
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CPU, m) {
  m.impl("sparse_sign_projection", TORCH_BOX(&anomaly_kernels::sparse_sign_projection_cpu));
}
