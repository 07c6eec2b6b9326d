// CUDA banded separable resampling (fused upsample + blur) in one launch from the low-resolution
// grid. Each block owns an output tile of one plane, kTileW = 32 columns (one warp across) by
// tile_h rows, and:
//   1. reads the tile's band starts (clamped into the input) and weights into shared memory and
//      reduces the starts to the input window the tile needs: rows [min start_y, max start_y +
//      Ly), columns [min start_x, max start_x + Lx);
//   2. if that window fits its shared memory (always for the usual monotone bands; checked, not
//      assumed), loads it once, runs the horizontal band pass over its rows into a second
//      shared buffer (32 columns), then the vertical band pass out to coalesced row writes;
//   3. otherwise computes each output of the tile straight from global memory (Ly x Lx reads).
// The summation order (horizontal, then vertical, taps ascending) is that of the CPU kernel.
#include <climits>

#include "cuda/async_copy.cuh"
#include "cuda/device_limits.cuh"
#include "cuda/banded_resample2d.cuh"

namespace anomaly_kernels::cuda {
namespace {

constexpr int kTileW = 32;            // output columns per tile: one warp, lane = column
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxTileH = 64;
constexpr int kTargetBlocksPerSM = 4;  // shorter tiles until the grid has about this many
constexpr size_t kWindowBudget = 48 * 1024;  // shared memory per block when a whole plane won't fit
constexpr int64_t kMaxTiledDim = int64_t(1) << 30;  // keeps in-tile index math in 32 bits
constexpr int64_t kMaxTiledTaps = int64_t(1) << 16;

__host__ __device__ inline size_t align16(size_t v) { return (v + 15) / 16 * 16; }

// Byte offsets of the block's shared-memory arrays; computed identically on host and device.
struct ResampleLayout {
  int tile_h;
  size_t wx_off;      // T[Lx][32]: column weights, transposed so lanes read consecutive words
  size_t wy_off;      // T[tile_h][Ly]
  size_t sy_off;      // int[tile_h]: clamped row starts
  size_t sx_off;      // int[32]: clamped column starts
  size_t bounds_off;  // int[4]: min/max row start, min/max column start
  size_t window_off;  // T[]: input window (ny x nx), then its horizontal pass (ny x 32)
  int64_t window_elements;
  size_t bytes;
};

template <typename T>
ResampleLayout resample_layout(int tile_h, int ly, int lx, int64_t window_elements) {
  ResampleLayout l;
  l.tile_h = tile_h;
  size_t off = 0;
  l.wx_off = off;
  off = align16(off + sizeof(T) * size_t(lx) * kTileW);
  l.wy_off = off;
  off = align16(off + sizeof(T) * size_t(tile_h) * size_t(ly));
  l.sy_off = off;
  off = align16(off + sizeof(int) * size_t(tile_h));
  l.sx_off = off;
  off = align16(off + sizeof(int) * kTileW);
  l.bounds_off = off;
  off = align16(off + sizeof(int) * 4);
  l.window_off = off;
  l.window_elements = window_elements;
  l.bytes = off + sizeof(T) * size_t(window_elements);
  return l;
}

__device__ __forceinline__ int64_t clamp_start(int64_t s, int64_t last) {
  return s < 0 ? 0 : (s > last ? last : s);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    resample_tiles(const T* __restrict__ in, T* __restrict__ out, int h, int w, int out_h,
                   int out_w, const int64_t* __restrict__ start_y, const T* __restrict__ weights_y,
                   int ly, const int64_t* __restrict__ start_x, const T* __restrict__ weights_x,
                   int lx, ResampleLayout lay, int tiles_x, int tiles_y, int64_t tiles) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* s_wx = reinterpret_cast<T*>(smem + lay.wx_off);
  T* s_wy = reinterpret_cast<T*>(smem + lay.wy_off);
  int* s_sy = reinterpret_cast<int*>(smem + lay.sy_off);
  int* s_sx = reinterpret_cast<int*>(smem + lay.sx_off);
  int* s_bounds = reinterpret_cast<int*>(smem + lay.bounds_off);
  T* s_window = reinterpret_cast<T*>(smem + lay.window_off);

  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int tile_h = lay.tile_h;
  const int64_t per_plane = int64_t(tiles_x) * tiles_y;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t plane = tile / per_plane;
    const int rest = static_cast<int>(tile - plane * per_plane);
    const int y0 = (rest / tiles_x) * tile_h, x0 = (rest % tiles_x) * kTileW;
    const int rows_here = min(tile_h, out_h - y0), cols_here = min(kTileW, out_w - x0);
    const T* src = in + plane * h * w;
    T* dst = out + plane * out_h * out_w;

    if (t == 0) {
      s_bounds[0] = INT_MAX;
      s_bounds[1] = INT_MIN;
      s_bounds[2] = INT_MAX;
      s_bounds[3] = INT_MIN;
    }
    // Weights first: their copies stay in flight while the starts are read and reduced.
    for (int i = t; i < cols_here * lx; i += kThreads) {
      const int c = i / lx, k = i - c * lx;  // coalesced reads, transposed writes
      copy_async(s_wx + k * kTileW + c, weights_x + int64_t(x0) * lx + i);
    }
    for (int i = t; i < rows_here * ly; i += kThreads)
      copy_async(s_wy + i, weights_y + int64_t(y0) * ly + i);
    __syncthreads();
    for (int r = t; r < rows_here; r += kThreads) {
      const int s = static_cast<int>(clamp_start(start_y[y0 + r], h - ly));
      s_sy[r] = s;
      atomicMin(&s_bounds[0], s);
      atomicMax(&s_bounds[1], s);
    }
    for (int c = t; c < cols_here; c += kThreads) {
      const int s = static_cast<int>(clamp_start(start_x[x0 + c], w - lx));
      s_sx[c] = s;
      atomicMin(&s_bounds[2], s);
      atomicMax(&s_bounds[3], s);
    }
    copy_wait();
    __syncthreads();

    const int ry0 = s_bounds[0], ny = s_bounds[1] + ly - ry0;
    const int cx0 = s_bounds[2], nx = s_bounds[3] + lx - cx0;
    if (int64_t(ny) * (nx + kTileW) <= lay.window_elements) {
      T* s_in = s_window;
      T* s_mid = s_window + ny * nx;
      for (int r = warp; r < ny; r += kWarps) {
        const T* row = src + int64_t(ry0 + r) * w + cx0;
        for (int c = lane; c < nx; c += 32) copy_async(s_in + r * nx + c, row + c);
      }
      copy_wait();
      __syncthreads();
      for (int r = warp; r < ny; r += kWarps) {
        T acc = T(0);
        if (lane < cols_here) {
          const T* p = s_in + r * nx + (s_sx[lane] - cx0);
          for (int k = 0; k < lx; ++k) acc += s_wx[k * kTileW + lane] * p[k];
        }
        s_mid[r * kTileW + lane] = acc;
      }
      __syncthreads();
      for (int r = warp; r < rows_here; r += kWarps) {
        if (lane < cols_here) {
          const T* p = s_mid + (s_sy[r] - ry0) * kTileW + lane;
          const T* wr = s_wy + r * ly;
          T acc = T(0);
          for (int a = 0; a < ly; ++a) acc += wr[a] * p[a * kTileW];
          dst[int64_t(y0 + r) * out_w + x0 + lane] = acc;
        }
      }
    } else {
      // Bands too scattered for the window: every output from global memory.
      for (int i = t; i < rows_here * kTileW; i += kThreads) {
        const int r = i / kTileW, c = i % kTileW;
        if (c >= cols_here) continue;
        const T* p = src + int64_t(s_sy[r]) * w + s_sx[c];
        T acc = T(0);
        for (int a = 0; a < ly; ++a) {
          T row = T(0);
          for (int k = 0; k < lx; ++k) row += s_wx[k * kTileW + c] * p[k];
          acc += s_wy[r * ly + a] * row;
          p += w;
        }
        dst[int64_t(y0 + r) * out_w + x0 + c] = acc;
      }
    }
    __syncthreads();  // the next tile rewrites bounds, starts, weights and the window
  }
}

// One thread per output, 64-bit indices: for sizes or band lengths past the tiled kernel's limits.
template <typename T>
__global__ void resample_direct(const T* __restrict__ in, T* __restrict__ out, int64_t total,
                                int64_t h, int64_t w, int64_t out_h, int64_t out_w,
                                const int64_t* __restrict__ start_y, const T* __restrict__ wy,
                                int64_t ly, const int64_t* __restrict__ start_x,
                                const T* __restrict__ wx, int64_t lx) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t x = i % out_w, y = (i / out_w) % out_h, plane = i / (out_w * out_h);
    const T* p = in + plane * h * w + clamp_start(start_y[y], h - ly) * w +
                 clamp_start(start_x[x], w - lx);
    T acc = T(0);
    for (int64_t a = 0; a < ly; ++a) {
      T row = T(0);
      for (int64_t k = 0; k < lx; ++k) row += wx[x * lx + k] * p[k];
      acc += wy[y * ly + a] * row;
      p += w;
    }
    out[i] = acc;
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

template <typename T>
cudaError_t banded_resample2d(const T* input, T* output, int64_t planes, int64_t h, int64_t w,
                              int64_t out_h, int64_t out_w, const int64_t* start_y,
                              const T* weights_y, int64_t taps_y, const int64_t* start_x,
                              const T* weights_x, int64_t taps_x, cudaStream_t stream) {
  if (planes <= 0 || out_h <= 0 || out_w <= 0) return cudaSuccess;
  if (taps_y < 1 || taps_x < 1 || taps_y > h || taps_x > w) return cudaErrorInvalidValue;
  const int64_t total = planes * out_h * out_w;
  const bool small = h <= kMaxTiledDim && w <= kMaxTiledDim && out_h <= kMaxTiledDim &&
                     out_w <= kMaxTiledDim && taps_y <= kMaxTiledTaps && taps_x <= kMaxTiledTaps;
  if (small) {
    int device = 0;
    DeviceLimits limits;
    cudaError_t err = current_device_limits(&device, &limits);
    if (err != cudaSuccess) return err;
    const int sms = limits.sms, smem_optin = limits.smem_optin;
    // Tile height as in the blur: at most kMaxTileH, shorter while the grid is small.
    const int64_t tiles_x = ceil_div(out_w, kTileW), across = planes * tiles_x;
    const int64_t wanted = ceil_div(int64_t(kTargetBlocksPerSM) * sms, across);
    const int64_t fewest = ceil_div(out_h, kMaxTileH), most = ceil_div(out_h, 8);
    const int64_t bands = wanted < fewest ? fewest : (wanted > most ? most : wanted);
    const int tile_h = static_cast<int>(ceil_div(ceil_div(out_h, bands), 8) * 8);
    // Shared memory: the whole plane's window when that is small (no tile can then miss it),
    // else a fixed budget that holds the window of every band of moderate scale.
    const int ly = static_cast<int>(taps_y), lx = static_cast<int>(taps_x);
    const int64_t whole = h * (w + kTileW), least = int64_t(ly) * (lx + kTileW);
    ResampleLayout lay = resample_layout<T>(tile_h, ly, lx, whole);
    if (lay.bytes > kWindowBudget) {
      const size_t fixed = resample_layout<T>(tile_h, ly, lx, 0).bytes;
      const int64_t budget = fixed < kWindowBudget ? int64_t((kWindowBudget - fixed) / sizeof(T)) : 0;
      lay = resample_layout<T>(tile_h, ly, lx, budget > least ? budget : least);
    }
    if (lay.bytes <= size_t(smem_optin)) {
      if (lay.bytes > 48 * 1024) {
        err = allow_shared_memory<resample_tiles<T>>(device, smem_optin, false);
        if (err != cudaSuccess) return err;
      }
      const int tiles_y = static_cast<int>(ceil_div(out_h, tile_h));
      const int64_t tiles = across * tiles_y;
      const int64_t grid = tiles < INT32_MAX ? tiles : INT32_MAX;
      resample_tiles<T><<<static_cast<unsigned>(grid), kThreads, lay.bytes, stream>>>(
          input, output, static_cast<int>(h), static_cast<int>(w), static_cast<int>(out_h),
          static_cast<int>(out_w), start_y, weights_y, ly, start_x, weights_x, lx, lay,
          static_cast<int>(tiles_x), tiles_y, tiles);
      return cudaGetLastError();
    }
  }
  const int64_t blocks = ceil_div(total, kThreads);
  resample_direct<T><<<static_cast<unsigned>(blocks < (1 << 30) ? blocks : (1 << 30)), kThreads, 0,
                       stream>>>(input, output, total, h, w, out_h, out_w, start_y, weights_y,
                                 taps_y, start_x, weights_x, taps_x);
  return cudaGetLastError();
}

#define AK_INSTANTIATE(T)                                                                    \
  template cudaError_t banded_resample2d<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, \
                                            int64_t, const int64_t*, const T*, int64_t,       \
                                            const int64_t*, const T*, int64_t, cudaStream_t);
AK_INSTANTIATE(float)
AK_INSTANTIATE(double)
#undef AK_INSTANTIATE

}  // namespace anomaly_kernels::cuda
