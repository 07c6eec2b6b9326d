// CUDA kernels of the banded separable resampling: a horizontal pass over every input row into
// scratch (one thread per output column), then a vertical pass (one thread per output sample)
// whose consecutive threads read consecutive scratch addresses.
#include "cuda/banded_resample.cuh"

namespace anomaly_kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void horizontal_kernel(const T* __restrict__ in, T* __restrict__ rows, int64_t total,
                                  int64_t w, int64_t out_w, const int64_t* __restrict__ start,
                                  const T* __restrict__ weights, int64_t taps) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t row = i / out_w, x = i % out_w;
  const T* src = in + row * w + start[x];
  const T* wx = weights + x * taps;
  T acc = 0;
  for (int64_t b = 0; b < taps; ++b) acc += wx[b] * src[b];
  rows[i] = acc;
}

template <typename T>
__global__ void vertical_kernel(const T* __restrict__ rows, T* __restrict__ out, int64_t total,
                                int64_t h, int64_t out_h, int64_t out_w,
                                const int64_t* __restrict__ start, const T* __restrict__ weights,
                                int64_t taps) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t x = i % out_w, y = (i / out_w) % out_h, plane = i / (out_w * out_h);
  const T* src = rows + (plane * h + start[y]) * out_w + x;
  const T* wy = weights + y * taps;
  T acc = 0;
  for (int64_t a = 0; a < taps; ++a) acc += wy[a] * src[a * out_w];
  out[i] = acc;
}

int blocks_for(int64_t total) { return static_cast<int>((total + kThreads - 1) / kThreads); }

}  // namespace

template <typename T>
cudaError_t banded_resample2d(const T* input, T* output, T* scratch, int64_t planes, int64_t h,
                              int64_t w, int64_t out_h, int64_t out_w, const int64_t* start_y,
                              const T* weights_y, int64_t taps_y, const int64_t* start_x,
                              const T* weights_x, int64_t taps_x, cudaStream_t stream) {
  const int64_t scratch_total = planes * h * out_w, out_total = planes * out_h * out_w;
  if (scratch_total == 0 || out_total == 0) return cudaSuccess;
  horizontal_kernel<T><<<blocks_for(scratch_total), kThreads, 0, stream>>>(
      input, scratch, scratch_total, w, out_w, start_x, weights_x, taps_x);
  vertical_kernel<T><<<blocks_for(out_total), kThreads, 0, stream>>>(
      scratch, output, out_total, h, out_h, out_w, start_y, weights_y, taps_y);
  return cudaGetLastError();
}

template cudaError_t banded_resample2d<float>(const float*, float*, float*, int64_t, int64_t,
                                              int64_t, int64_t, int64_t, const int64_t*,
                                              const float*, int64_t, const int64_t*, const float*,
                                              int64_t, cudaStream_t);
template cudaError_t banded_resample2d<double>(const double*, double*, double*, int64_t, int64_t,
                                               int64_t, int64_t, int64_t, const int64_t*,
                                               const double*, int64_t, const int64_t*,
                                               const double*, int64_t, cudaStream_t);

}  // namespace anomaly_kernels::cuda
