// CUDA separable blur in one launch. Each block owns an output tile of one plane, kTileW = 32
// columns (one warp across) by tile_h rows, and:
//   1. maps the tile's input window (tile_h + ky - 1 rows, 32 + kx - 1 columns) through the
//      border once per row and once per column into two small tables, then loads the window into
//      shared memory (each window sample read once, coalesced along rows; 16-byte chunks where
//      rows start 16-byte aligned, the border columns one by one);
//   2. horizontal pass: every window row -> 32 columns of a second shared buffer;
//   3. vertical pass: 32 columns x tile_h rows -> registers -> coalesced row writes.
// Both passes run "strips": a thread computes kStrip = 8 consecutive outputs along the pass axis
// and slides a register window of 2 x 8 samples over the taps, so each shared-memory read feeds
// 8 multiply-adds. The summation order (horizontal, then vertical, taps ascending) is that of the
// CPU kernel. Very long kernels whose window would not fit in shared memory even with 8-row tiles
// take a two-pass path through a scratch image instead.

#include <algorithm>
#include <cstdint>

#include "cuda/async_copy.cuh"
#include "cuda/device_limits.cuh"
#include "cuda/separable_blur2d.cuh"

namespace anomaly_kernels::cuda {
namespace {

constexpr int kTileW = 32;                  // output columns per tile: one warp, lane = column
constexpr int kStrip = 8;                   // outputs per thread and pass (register window)
constexpr int kGroups = kTileW / kStrip;    // horizontal strips per tile row
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMidLd = kTileW + 1;          // odd stride: strips of 8 rows hit distinct banks
constexpr int kMaxTileH = 128;              // taller tiles: less vertical halo, more shared memory
constexpr int64_t kMaxTiledDim = int64_t(1) << 30;  // keeps in-plane index math in 32 bits
constexpr int64_t kMaxTiledTaps = int64_t(1) << 16;

// Byte offsets of the block's shared-memory arrays; computed identically on host and device.
struct TileLayout {
  int tile_h;  // output rows per tile, a multiple of kStrip
  int rows;    // window rows held: tile_h + ky (the last one zero, read only as a prefetch)
  int cols;    // window columns held: kTileW + kx (the last one zero, likewise)
  int ld_in;   // window row stride, odd so strips of consecutive rows hit distinct banks
  size_t taps_off, kx_off, in_off, mid_off, rowmap_off, colmap_off, bytes;
};

__host__ __device__ inline size_t align16(size_t v) { return (v + 15) / 16 * 16; }

template <typename T>
__host__ __device__ inline TileLayout tile_layout(int tile_h, int nky, int nkx) {
  TileLayout l;
  l.tile_h = tile_h;
  l.rows = tile_h + nky;
  l.cols = kTileW + nkx;
  l.ld_in = l.cols | 1;
  size_t off = 0;
  l.taps_off = off;  // ky, then kx from the next 16-byte boundary: both read 16 bytes at a time
  l.kx_off = align16(off + sizeof(T) * size_t(nky));
  off = align16(l.kx_off + sizeof(T) * size_t(nkx));
  l.in_off = off;
  off = align16(off + sizeof(T) * size_t(l.rows) * size_t(l.ld_in));
  l.mid_off = off;
  off = align16(off + sizeof(T) * size_t(l.rows) * kMidLd);
  l.rowmap_off = off;
  off = align16(off + sizeof(int) * size_t(l.rows));
  l.colmap_off = off;
  off = align16(off + sizeof(int) * size_t(l.cols));
  l.bytes = off;
  return l;
}

// acc[i] = sum_k taps[k] * src[(i + k) * stride] for i < kStrip. Reads src up to index
// ntaps + kStrip - 1 (one past the last used sample when ntaps is a multiple of kStrip). taps:
// 16-byte aligned.
template <typename T>
__device__ __forceinline__ void correlate_strip(const T* __restrict__ src, int stride,
                                                const T* __restrict__ taps, int ntaps,
                                                T (&acc)[kStrip]) {
  T cur[kStrip];
#pragma unroll
  for (int i = 0; i < kStrip; ++i) {
    acc[i] = T(0);
    cur[i] = src[i * stride];
  }
  const int full = ntaps - ntaps % kStrip;
  for (int a = 0; a < full; a += kStrip) {
    T nxt[kStrip];
#pragma unroll
    for (int i = 0; i < kStrip; ++i) nxt[i] = src[(a + kStrip + i) * stride];
    // The same taps in every thread. float: two 16-byte broadcast reads (taps is 16-byte
    // aligned, a is a multiple of 8) instead of eight. double: one by one (held 8 at a time, the
    // four-read form spilled on sm_75).
    T w[kStrip];
    if constexpr (sizeof(T) == 4) {
#pragma unroll
      for (int q = 0; q < kStrip / 4; ++q) {
        const float4 v = reinterpret_cast<const float4*>(taps + a)[q];
        w[4 * q] = v.x, w[4 * q + 1] = v.y, w[4 * q + 2] = v.z, w[4 * q + 3] = v.w;
      }
    } else {
#pragma unroll
      for (int j = 0; j < kStrip; ++j) w[j] = taps[a + j];
    }
#pragma unroll
    for (int j = 0; j < kStrip; ++j) {
      const T wj = w[j];
#pragma unroll
      for (int i = 0; i < kStrip; ++i) acc[i] += wj * (i + j < kStrip ? cur[i + j] : nxt[i + j - kStrip]);
    }
#pragma unroll
    for (int i = 0; i < kStrip; ++i) cur[i] = nxt[i];
  }
  // Up to kStrip - 1 remaining taps: cur holds samples full .. full + kStrip - 1.
#pragma unroll
  for (int m = 0; m < kStrip - 1; ++m) {
    if (full + m < ntaps) {
      const T wm = taps[full + m];
#pragma unroll
      for (int i = 0; i < kStrip; ++i)
        acc[i] += wm * (m + i < kStrip ? cur[m + i] : src[(full + m + i) * stride]);
    }
  }
}

// Window loads for an input whose rows start on 16-byte boundaries. Window column j is input
// column c_first + j of input row s_rowmap[r] (-1: a zero row). The columns inside the row are
// read as 16-byte chunks from the aligned column at or before c_first (at most kVec - 1 samples
// on each side are read and dropped): one load and kVec stores per kVec samples, where a copy per
// sample cost about as many issue slots as the arithmetic of the tile. The columns outside the
// row (border tiles only) go one by one through the column table. Synchronous loads: the window
// is complete when the caller's barrier returns.
template <typename T>
__device__ __forceinline__ void load_window_in_chunks(const T* __restrict__ src, int w, int c_first,
                                                      int used_rows, int used_cols,
                                                      const int* s_rowmap, const int* s_colmap,
                                                      T* s_in, int ld, int t) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  const int lead = ((c_first % kVec) + kVec) % kVec;
  const int a0 = c_first - lead;  // input column of chunk 0, a multiple of kVec
  const int chunks = (lead + used_cols + kVec - 1) / kVec;
  // Chunks [q_lo, q_hi) lie inside the row (w is a multiple of kVec: none straddles an edge).
  const int q_lo = a0 < 0 ? -a0 / kVec : 0;
  const int q_hi = min(chunks, (w - a0) / kVec);
  const int count = q_hi - q_lo;
  // Lanes per window row: 8, 16 or 32, so that one warp covers 4, 2 or 1 rows at a time.
  const int lanes = count <= 8 ? 8 : count <= 16 ? 16 : 32;
  const int lane = t & 31, per_warp = 32 / lanes;
  const int sub = lane / lanes, q_first = q_lo + lane % lanes;
  for (int r = (t >> 5) * per_warp + sub; r < used_rows; r += kWarps * per_warp) {
    const int m_row = s_rowmap[r];
    const bool row_inside = m_row >= 0;
    const int4* row = reinterpret_cast<const int4*>(src + int64_t(row_inside ? m_row : 0) * w + a0);
    T* window_row = s_in + r * ld;
    for (int q = q_first; q < q_hi; q += lanes) {
      union {
        int4 raw;
        T v[kVec];
      } chunk;
      chunk.raw = __ldg(row + q);
      const int j0 = q * kVec - lead;  // window column of the chunk's first sample
      // float: all but the first and last chunk of a row skip the per-sample checks (double has
      // only two samples a chunk, and the split spilled its kernel on sm_75).
      if (sizeof(T) == 4 && j0 >= 0 && j0 + kVec <= used_cols) {
#pragma unroll
        for (int k = 0; k < kVec; ++k) window_row[j0 + k] = row_inside ? chunk.v[k] : T(0);
      } else {
#pragma unroll
        for (int k = 0; k < kVec; ++k)
          if (j0 + k >= 0 && j0 + k < used_cols) window_row[j0 + k] = row_inside ? chunk.v[k] : T(0);
      }
    }
  }
  const int left = min(used_cols, max(0, -c_first));              // window columns before the row
  const int right = max(left, min(used_cols, w - c_first));       // first window column after it
  const int outside = left + (used_cols - right);
  for (int e = t; e < used_rows * outside; e += kThreads) {
    const int r = e / outside, k = e - r * outside;
    const int j = k < left ? k : right + (k - left);
    const int m_row = s_rowmap[r], m = s_colmap[j];
    s_in[r * ld + j] = (m_row >= 0 && m >= 0) ? src[int64_t(m_row) * w + m] : T(0);
  }
}

// Window loads for any input: one copy per sample through both tables. Samples outside a
// constant border are zero-filling copies (no source bytes): no divergent branch per sample.
template <typename T>
__device__ __forceinline__ void load_window_by_sample(const T* __restrict__ src, int w,
                                                      int used_rows, int used_cols,
                                                      const int* s_rowmap, const int* s_colmap,
                                                      T* s_in, int ld, int t) {
  const int lane = t & 31;
  for (int r = t >> 5; r < used_rows; r += kWarps) {
    const int m_row = s_rowmap[r];
    const bool row_inside = m_row >= 0;  // the 64-bit product once per row
    const T* row = src + int64_t(row_inside ? m_row : 0) * w;
    T* window_row = s_in + r * ld;
    for (int c = lane; c < used_cols; c += 32) {
      const int m = s_colmap[c];
      const bool inside = row_inside && m >= 0;
      // An unsigned 32-bit column: one wide multiply-add per address, no 64-bit sign extension.
      const unsigned column = inside ? static_cast<unsigned>(m) : 0u;
      copy_async<static_cast<int>(sizeof(T))>(window_row + c, row + column, inside);
    }
  }
  copy_wait();
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    blur_tiles(const T* __restrict__ in, T* __restrict__ out, int h, int w, int out_h, int out_w,
               const T* __restrict__ ky, int nky, const T* __restrict__ kx, int nkx, int pad_top,
               int pad_left, Border border, TileLayout lay, int tiles_x, int tiles_y,
               int64_t tiles, bool rows_aligned) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* s_ky = reinterpret_cast<T*>(smem + lay.taps_off);
  T* s_kx = reinterpret_cast<T*>(smem + lay.kx_off);
  T* s_in = reinterpret_cast<T*>(smem + lay.in_off);
  T* s_mid = reinterpret_cast<T*>(smem + lay.mid_off);
  // Input row of each window row (not its offset: 4 bytes a row rather than 8, which lets a fifth
  // 32 x 80 block onto an H100 multiprocessor at 33 taps).
  int* s_rowmap = reinterpret_cast<int*>(smem + lay.rowmap_off);
  int* s_colmap = reinterpret_cast<int*>(smem + lay.colmap_off);

  const int t = threadIdx.x;
  for (int i = t; i < nky; i += kThreads) s_ky[i] = ky[i];
  for (int i = t; i < nkx; i += kThreads) s_kx[i] = kx[i];

  const int tile_h = lay.tile_h, rows = lay.rows, cols = lay.cols, ld = lay.ld_in;
  const int used_rows = tile_h + nky - 1, used_cols = kTileW + nkx - 1;
  const int64_t per_plane = int64_t(tiles_x) * tiles_y;
  // The spare last row and column of the window are only read ahead, never used: zero once,
  // and never written by the loads below.
  for (int c = t; c < cols; c += kThreads) s_in[(rows - 1) * ld + c] = T(0);
  for (int r = t; r < rows; r += kThreads) s_in[r * ld + cols - 1] = T(0);
  // Loops only when the grid was capped; every step below is separated from the one of the next
  // tile that overwrites its inputs by at least one barrier.
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t plane = tile / per_plane;
    const int rest = static_cast<int>(tile - plane * per_plane);
    const int y0 = (rest / tiles_x) * tile_h, x0 = (rest % tiles_x) * kTileW;
    const T* src = in + plane * h * w;
    T* dst = out + plane * out_h * out_w;

    // Border mapping once per window row and column; -1 marks zero (constant border or spare).
    for (int r = t; r < rows; r += kThreads)
      s_rowmap[r] =
          r < used_rows ? static_cast<int>(map_border(int64_t(y0) - pad_top + r, h, border)) : -1;
    for (int c = t; c < cols; c += kThreads)
      s_colmap[c] =
          c < used_cols ? static_cast<int>(map_border(int64_t(x0) - pad_left + c, w, border)) : -1;
    __syncthreads();

    if (rows_aligned)
      load_window_in_chunks(src, w, x0 - pad_left, used_rows, used_cols, s_rowmap, s_colmap, s_in,
                            ld, t);
    else
      load_window_by_sample(src, w, used_rows, used_cols, s_rowmap, s_colmap, s_in, ld, t);
    __syncthreads();

    // Horizontal pass over every window row; a warp covers 8 rows x 4 strips.
    for (int s = t; s < rows * kGroups; s += kThreads) {
      const int r = s / kGroups, c0 = (s % kGroups) * kStrip;
      T acc[kStrip];
      correlate_strip(s_in + r * ld + c0, 1, s_kx, nkx, acc);
#pragma unroll
      for (int i = 0; i < kStrip; ++i) s_mid[r * kMidLd + c0 + i] = acc[i];
    }
    __syncthreads();

    // Vertical pass; a warp covers one strip of 8 rows across the 32 columns.
    const int strips = (tile_h / kStrip) * kTileW;
    for (int s = t; s < strips; s += kThreads) {
      const int c = s % kTileW, r0 = (s / kTileW) * kStrip;
      const int y = y0 + r0, x = x0 + c;
      if (y >= out_h) continue;  // whole warp: past the last output row
      T acc[kStrip];
      correlate_strip(s_mid + r0 * kMidLd + c, kMidLd, s_ky, nky, acc);
      if (x < out_w) {
        T* column = dst + int64_t(y) * out_w + x;  // one 64-bit product; then a step per row
#pragma unroll
        for (int i = 0; i < kStrip; ++i, column += out_w)
          if (y + i < out_h) *column = acc[i];
      }
    }
  }
}

// Two-pass path for kernels too long for the tiled one: rows into scratch, then columns.
template <typename T>
__global__ void horizontal_pass(const T* __restrict__ in, T* __restrict__ rows, int64_t total,
                                int64_t w, int64_t wo, const T* __restrict__ kx, int64_t nkx,
                                int64_t pad_left, Border border) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / wo, x = i % wo;
    const T* src = in + row * w;
    T acc = 0;
    for (int64_t k = 0; k < nkx; ++k) {
      const int64_t s = map_border(x + k - pad_left, w, border);
      if (s >= 0) acc += kx[k] * src[s];
    }
    rows[i] = acc;
  }
}

template <typename T>
__global__ void vertical_pass(const T* __restrict__ rows, T* __restrict__ out, int64_t total,
                              int64_t h, int64_t ho, int64_t wo, const T* __restrict__ ky,
                              int64_t nky, int64_t pad_top, Border border) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t x = i % wo, y = (i / wo) % ho, plane = i / (wo * ho);
    const T* src = rows + plane * h * wo + x;
    T acc = 0;
    for (int64_t k = 0; k < nky; ++k) {
      const int64_t s = map_border(y + k - pad_top, h, border);
      if (s >= 0) acc += ky[k] * src[s * wo];
    }
    out[i] = acc;
  }
}

int grid_for(int64_t total, int threads) {
  const int64_t blocks = (total + threads - 1) / threads;
  return static_cast<int>(blocks < (int64_t(1) << 30) ? blocks : (int64_t(1) << 30));
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Whether every input row starts on a 16-byte boundary (the chunked window loads).
template <typename T>
bool rows_start_aligned(const T* input, int64_t w) {
  return reinterpret_cast<uintptr_t>(input) % 16 == 0 && (w * int64_t(sizeof(T))) % 16 == 0;
}

struct BlurPlan {
  bool tiled = false;
  TileLayout lay{};
  int tiles_x = 0, tiles_y = 0;
  int64_t tiles = 0;
  int device = 0;
  int smem_optin = 0;
};

// Tile height: `tile_rows` when given (a multiple of kStrip up to kMaxTileH), otherwise the one
// that minimises the work of the busiest multiprocessor: ceil(tiles / SMs) tiles, each
// (tile_h + ky - 1) x kx multiply-adds per column in the horizontal pass and tile_h x ky in the
// vertical one. Taller tiles repeat less of the vertical halo; a grid just past a multiple of
// the SM count leaves a tail that costs a whole tile (at 32 x 224 x 224 and 33 taps on 132 SMs,
// 80-row tiles make 672 blocks, 6 on the busiest SM; 56-row tiles make 896, 7 on the busiest SM
// but 25 % less work each). Among equal costs, the taller tile. Then shorter again until shared
// memory fits.
template <typename T>
cudaError_t plan_blur(int64_t planes, int64_t h, int64_t w, int64_t nky, int64_t nkx,
                      const BlurGeometry& g, int tile_rows, BlurPlan* p) {
  *p = BlurPlan{};
  if (h > kMaxTiledDim || w > kMaxTiledDim || g.out_h > kMaxTiledDim || g.out_w > kMaxTiledDim ||
      nky > kMaxTiledTaps || nkx > kMaxTiledTaps || planes <= 0 || g.out_h <= 0 || g.out_w <= 0)
    return cudaSuccess;
  DeviceLimits lim;
  const cudaError_t err = current_device_limits(&p->device, &lim);
  if (err != cudaSuccess) return err;
  const int64_t tiles_x = ceil_div(g.out_w, kTileW);
  const int64_t across = planes * tiles_x;
  int tile_h = kStrip;
  if (tile_rows > 0) {
    tile_h = static_cast<int>(std::min<int64_t>(ceil_div(tile_rows, kStrip) * kStrip, kMaxTileH));
  } else {
    const int64_t tallest = std::min<int64_t>(ceil_div(g.out_h, kStrip) * kStrip, kMaxTileH);
    int64_t best_cost = -1;
    for (int candidate = kStrip; candidate <= tallest; candidate += kStrip) {
      if (tile_layout<T>(candidate, static_cast<int>(nky), static_cast<int>(nkx)).bytes > size_t(lim.smem_optin))
        break;  // taller tiles need more still
      const int64_t busiest = ceil_div(across * ceil_div(g.out_h, candidate), lim.sms);
      const int64_t cost = busiest * ((candidate + nky - 1) * nkx + candidate * nky);
      if (best_cost < 0 || cost <= best_cost) {
        best_cost = cost;
        tile_h = candidate;
      }
    }
  }
  TileLayout lay = tile_layout<T>(tile_h, static_cast<int>(nky), static_cast<int>(nkx));
  while (lay.bytes > size_t(lim.smem_optin) && tile_h > kStrip) {
    tile_h = static_cast<int>(ceil_div(tile_h / 2, kStrip) * kStrip);
    lay = tile_layout<T>(tile_h, static_cast<int>(nky), static_cast<int>(nkx));
  }
  if (lay.bytes > size_t(lim.smem_optin)) return cudaSuccess;
  p->tiled = true;
  p->lay = lay;
  p->tiles_x = static_cast<int>(tiles_x);
  p->tiles_y = static_cast<int>(ceil_div(g.out_h, tile_h));
  p->tiles = across * p->tiles_y;
  p->smem_optin = lim.smem_optin;
  return cudaSuccess;
}

}  // namespace

template <typename T>
cudaError_t separable_blur2d_scratch_size(int64_t planes, int64_t h, int64_t w, int64_t nky,
                                          int64_t nkx, BlurGeometry g, int tile_rows,
                                          int64_t* elements) {
  *elements = 0;
  if (planes <= 0 || g.out_h <= 0 || g.out_w <= 0) return cudaSuccess;
  BlurPlan plan;
  const cudaError_t err = plan_blur<T>(planes, h, w, nky, nkx, g, tile_rows, &plan);
  if (err != cudaSuccess) return err;
  if (!plan.tiled) *elements = planes * h * g.out_w;
  return cudaSuccess;
}

template <typename T>
cudaError_t separable_blur2d(const T* input, T* output, T* scratch, int64_t planes, int64_t h,
                             int64_t w, const T* kernel_y, int64_t nky, const T* kernel_x,
                             int64_t nkx, BlurGeometry g, Border border, int tile_rows,
                             cudaStream_t stream) {
  if (planes <= 0 || g.out_h <= 0 || g.out_w <= 0) return cudaSuccess;
  BlurPlan plan;
  cudaError_t err = plan_blur<T>(planes, h, w, nky, nkx, g, tile_rows, &plan);
  if (err != cudaSuccess) return err;
  if (plan.tiled) {
    err = allow_shared_memory<blur_tiles<T>>(plan.device, plan.smem_optin, true);
    if (err != cudaSuccess) return err;
    const int64_t grid = plan.tiles < INT32_MAX ? plan.tiles : INT32_MAX;
    blur_tiles<T><<<static_cast<unsigned>(grid), kThreads, plan.lay.bytes, stream>>>(
        input, output, static_cast<int>(h), static_cast<int>(w), static_cast<int>(g.out_h),
        static_cast<int>(g.out_w), kernel_y, static_cast<int>(nky), kernel_x,
        static_cast<int>(nkx), static_cast<int>(g.pad_top), static_cast<int>(g.pad_left), border,
        plan.lay, plan.tiles_x, plan.tiles_y, plan.tiles, rows_start_aligned(input, w));
    return cudaGetLastError();
  }
  if (scratch == nullptr) return cudaErrorInvalidValue;
  const int64_t scratch_total = planes * h * g.out_w;
  const int64_t out_total = planes * g.out_h * g.out_w;
  horizontal_pass<T><<<grid_for(scratch_total, kThreads), kThreads, 0, stream>>>(
      input, scratch, scratch_total, w, g.out_w, kernel_x, nkx, g.pad_left, border);
  vertical_pass<T><<<grid_for(out_total, kThreads), kThreads, 0, stream>>>(
      scratch, output, out_total, h, g.out_h, g.out_w, kernel_y, nky, g.pad_top, border);
  return cudaGetLastError();
}

#define AK_INSTANTIATE(T)                                                                      \
  template cudaError_t separable_blur2d_scratch_size<T>(int64_t, int64_t, int64_t, int64_t,    \
                                                        int64_t, BlurGeometry, int, int64_t*); \
  template cudaError_t separable_blur2d<T>(const T*, T*, T*, int64_t, int64_t, int64_t,        \
                                           const T*, int64_t, const T*, int64_t, BlurGeometry, \
                                           Border, int, cudaStream_t);
AK_INSTANTIATE(float)
AK_INSTANTIATE(double)
#undef AK_INSTANTIATE

}  // namespace anomaly_kernels::cuda
