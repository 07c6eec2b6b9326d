// CPU kernel of anomaly_kernels::separable_blur2d: a horizontal pass over every input row into a
// scratch image, then a vertical pass whose taps pick rows through the border mapping. Both
// inner loops run along contiguous rows and vectorise; Kx + Ky multiply-adds per output sample.
#include <algorithm>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/separable_blur2d_args.h"
#include "common/simd.h"

namespace anomaly_kernels {
namespace {

// dst[x] = sum_k taps[k] * src[x + k] for x in [0, n): one blurred row from a padded one.
template <typename T>
AK_SIMD_CLONES void correlate_row(const T* src, const T* taps, int64_t ntaps, int64_t n, T* dst) {
  std::fill(dst, dst + n, T(0));
  for (int64_t k = 0; k < ntaps; ++k) {
    const T wk = taps[k];
    const T* p = src + k;
#pragma omp simd
    for (int64_t x = 0; x < n; ++x) dst[x] += wk * p[x];
  }
}

// dst[x] += weight * src[x] for x in [0, n).
template <typename T>
AK_SIMD_CLONES void add_scaled_row(const T* src, T weight, int64_t n, T* dst) {
#pragma omp simd
  for (int64_t x = 0; x < n; ++x) dst[x] += weight * src[x];
}

template <typename T>
void blur_cpu_impl(const T* in, T* out, int64_t planes, int64_t h, int64_t w, const T* ky,
                   int64_t nky, const T* kx, int64_t nkx, const BlurGeometry& g, Border border) {
  const int64_t ho = g.out_h, wo = g.out_w;
  std::vector<T> rows(planes * h * wo);  // horizontally blurred input rows
  // Horizontal pass: one task per input row.
  torch::stable::parallel_for(0, planes * h, 16, [&](int64_t first, int64_t last) {
    std::vector<T> padded(wo + nkx - 1);
    for (int64_t r = first; r < last; ++r) {
      const T* src = in + r * w;
      for (int64_t j = 0; j < wo + nkx - 1; ++j) {
        const int64_t s = map_border(j - g.pad_left, w, border);
        padded[j] = s < 0 ? T(0) : src[s];
      }
      correlate_row(padded.data(), kx, nkx, wo, rows.data() + r * wo);
    }
  });
  // Vertical pass: one task per output row; taps outside a constant border contribute zero.
  torch::stable::parallel_for(0, planes * ho, 16, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const int64_t plane = r / ho, y = r % ho;
      const T* src = rows.data() + plane * h * wo;
      T* dst = out + r * wo;
      std::fill(dst, dst + wo, T(0));
      for (int64_t k = 0; k < nky; ++k) {
        const int64_t s = map_border(y + k - g.pad_top, h, border);
        if (s >= 0) add_scaled_row(src + s * wo, ky[k], wo, dst);
      }
    }
  });
}

Tensor separable_blur2d_cpu(Tensor input, Tensor kernel_y, Tensor kernel_x,
                            std::string border_type, bool same_padding) {
  Border border;
  const BlurGeometry g =
      check_separable_blur2d_args(input, kernel_y, kernel_x, border_type, same_padding, &border);
  STD_TORCH_CHECK(input.is_cpu(), "input must be a CPU tensor for the CPU kernel");
  const Tensor x = as_contiguous(input);
  const Tensor ky = as_contiguous(kernel_y);
  const Tensor kx = as_contiguous(kernel_x);
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  std::vector<int64_t> out_shape{b, c, g.out_h, g.out_w};
  Tensor out = torch::stable::new_empty(x, out_shape);
  if (out.numel() == 0 || x.numel() == 0) return torch::stable::zero_(out);
  if (x.scalar_type() == ScalarType::Float) {
    blur_cpu_impl(x.const_data_ptr<float>(), out.mutable_data_ptr<float>(), b * c, h, w,
                  ky.const_data_ptr<float>(), ky.size(0), kx.const_data_ptr<float>(), kx.size(0),
                  g, border);
  } else {
    blur_cpu_impl(x.const_data_ptr<double>(), out.mutable_data_ptr<double>(), b * c, h, w,
                  ky.const_data_ptr<double>(), ky.size(0), kx.const_data_ptr<double>(),
                  kx.size(0), g, border);
  }
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CPU, m) {
  m.impl("separable_blur2d", TORCH_BOX(&anomaly_kernels::separable_blur2d_cpu));
}
