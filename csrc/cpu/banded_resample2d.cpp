// CPU kernel of anomaly_kernels::banded_resample2d: a horizontal pass over the h input rows of
// every plane (each output column a short weighted sum), then a vertical pass in which every
// output row is a short weighted sum of those rows (unit-stride, vectorised). The full-size
// intermediate of "upsample, then blur" never exists.
#include <algorithm>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/banded_resample2d_args.h"
#include "common/simd.h"

namespace anomaly_kernels {
namespace {

// dst[x] = sum_b weights[x * taps + b] * src[start[x] + b] for x < n.
template <typename T>
AK_SIMD_CLONES void resample_row(const T* src, const int64_t* start, const T* weights,
                                 int64_t taps, int64_t n, T* dst) {
  for (int64_t x = 0; x < n; ++x) {
    const T* s = src + start[x];
    const T* w = weights + x * taps;
    T acc = 0;
    for (int64_t b = 0; b < taps; ++b) acc += w[b] * s[b];
    dst[x] = acc;
  }
}

// dst[x] += weight * src[x] for x < n.
template <typename T>
AK_SIMD_CLONES void add_scaled(const T* src, T weight, int64_t n, T* dst) {
#pragma omp simd
  for (int64_t x = 0; x < n; ++x) dst[x] += weight * src[x];
}

template <typename T>
void banded_cpu_impl(const T* in, T* out, int64_t planes, int64_t h, int64_t w, int64_t out_h,
                     int64_t out_w, const int64_t* start_y, const T* weights_y, int64_t taps_y,
                     const int64_t* start_x, const T* weights_x, int64_t taps_x) {
  std::vector<T> rows(planes * h * out_w);  // horizontally resampled input rows
  torch::stable::parallel_for(0, planes * h, 16, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r)
      resample_row(in + r * w, start_x, weights_x, taps_x, out_w, rows.data() + r * out_w);
  });
  torch::stable::parallel_for(0, planes * out_h, 16, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const int64_t plane = r / out_h, y = r % out_h;
      const T* src = rows.data() + (plane * h + start_y[y]) * out_w;
      T* dst = out + r * out_w;
      std::fill(dst, dst + out_w, T(0));
      for (int64_t a = 0; a < taps_y; ++a) add_scaled(src + a * out_w, weights_y[y * taps_y + a], out_w, dst);
    }
  });
}

Tensor banded_resample2d_cpu(Tensor input, Tensor start_y, Tensor weights_y, Tensor start_x,
                             Tensor weights_x) {
  check_banded_resample2d_args(input, start_y, weights_y, start_x, weights_x);
  const Tensor x = as_contiguous(input);
  const Tensor sy = as_contiguous(start_y), sx = as_contiguous(start_x);
  const Tensor wy = as_contiguous(weights_y), wx = as_contiguous(weights_x);
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t out_h = sy.size(0), out_w = sx.size(0), taps_y = wy.size(1), taps_x = wx.size(1);
  const int64_t* sy_ptr = sy.const_data_ptr<int64_t>();
  const int64_t* sx_ptr = sx.const_data_ptr<int64_t>();
  for (int64_t y = 0; y < out_h; ++y)
    STD_TORCH_CHECK(sy_ptr[y] >= 0 && sy_ptr[y] + taps_y <= h, "start_y[", y, "] = ", sy_ptr[y],
                    " with ", taps_y, " taps reads outside the ", h, " input rows");
  for (int64_t xx = 0; xx < out_w; ++xx)
    STD_TORCH_CHECK(sx_ptr[xx] >= 0 && sx_ptr[xx] + taps_x <= w, "start_x[", xx, "] = ",
                    sx_ptr[xx], " with ", taps_x, " taps reads outside the ", w, " input columns");
  std::vector<int64_t> out_shape{b, c, out_h, out_w};
  Tensor out = torch::stable::new_empty(x, out_shape);
  if (out.numel() == 0) return out;
  if (x.scalar_type() == ScalarType::Float) {
    banded_cpu_impl(x.const_data_ptr<float>(), out.mutable_data_ptr<float>(), b * c, h, w, out_h,
                    out_w, sy_ptr, wy.const_data_ptr<float>(), taps_y, sx_ptr,
                    wx.const_data_ptr<float>(), taps_x);
  } else {
    banded_cpu_impl(x.const_data_ptr<double>(), out.mutable_data_ptr<double>(), b * c, h, w,
                    out_h, out_w, sy_ptr, wy.const_data_ptr<double>(), taps_y, sx_ptr,
                    wx.const_data_ptr<double>(), taps_x);
  }
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CPU, m) {
  m.impl("banded_resample2d", TORCH_BOX(&anomaly_kernels::banded_resample2d_cpu));
}
