// CUDA kernels of the separable blur: a horizontal pass over every input row into scratch, then
// a vertical pass whose taps pick scratch rows through the border mapping. One thread per
// output sample; consecutive threads read consecutive addresses.
#include "cuda/separable_blur.cuh"

namespace anomaly_kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void horizontal_kernel(const T* __restrict__ in, T* __restrict__ rows, int64_t total,
                                  int64_t w, int64_t wo, const T* __restrict__ kx, int64_t nkx,
                                  int64_t pad_left, Border border) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t row = i / wo, x = i % wo;
  const T* src = in + row * w;
  T acc = 0;
  for (int64_t k = 0; k < nkx; ++k) {
    const int64_t s = map_border(x + k - pad_left, w, border);
    if (s >= 0) acc += kx[k] * src[s];
  }
  rows[i] = acc;
}

template <typename T>
__global__ void vertical_kernel(const T* __restrict__ rows, T* __restrict__ out, int64_t total,
                                int64_t h, int64_t ho, int64_t wo, const T* __restrict__ ky,
                                int64_t nky, int64_t pad_top, Border border) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t x = i % wo, y = (i / wo) % ho, plane = i / (wo * ho);
  const T* src = rows + plane * h * wo + x;
  T acc = 0;
  for (int64_t k = 0; k < nky; ++k) {
    const int64_t s = map_border(y + k - pad_top, h, border);
    if (s >= 0) acc += ky[k] * src[s * wo];
  }
  out[i] = acc;
}

int blocks_for(int64_t total) { return static_cast<int>((total + kThreads - 1) / kThreads); }

}  // namespace

template <typename T>
cudaError_t separable_blur2d(const T* input, T* output, T* scratch, int64_t planes, int64_t h,
                             int64_t w, const T* kernel_y, int64_t nky, const T* kernel_x,
                             int64_t nkx, BlurGeometry g, Border border, cudaStream_t stream) {
  const int64_t scratch_total = planes * h * g.out_w;
  const int64_t out_total = planes * g.out_h * g.out_w;
  if (scratch_total == 0 || out_total == 0) return cudaSuccess;
  horizontal_kernel<T><<<blocks_for(scratch_total), kThreads, 0, stream>>>(
      input, scratch, scratch_total, w, g.out_w, kernel_x, nkx, g.pad_left, border);
  vertical_kernel<T><<<blocks_for(out_total), kThreads, 0, stream>>>(
      scratch, output, out_total, h, g.out_h, g.out_w, kernel_y, nky, g.pad_top, border);
  return cudaGetLastError();
}

template cudaError_t separable_blur2d<float>(const float*, float*, float*, int64_t, int64_t,
                                             int64_t, const float*, int64_t, const float*,
                                             int64_t, BlurGeometry, Border, cudaStream_t);
template cudaError_t separable_blur2d<double>(const double*, double*, double*, int64_t, int64_t,
                                              int64_t, const double*, int64_t, const double*,
                                              int64_t, BlurGeometry, Border, cudaStream_t);

}  // namespace anomaly_kernels::cuda
