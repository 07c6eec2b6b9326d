// CUDA kernels of the Mahalanobis scoring, d^T P d for every image and position, as a tiled
// matrix product over the upper triangle of each position's symmetric precision P (C x C).
//
// With P cut into square kTile x kTile tiles P_IJ,
//   d^T P d = sum_{I<=J} w_IJ d_J . h_IJ,   h_IJ = P_IJ^T d_I,   w = 1 on the diagonal, else 2
// (a whole diagonal tile counted once is exact by symmetry). Groups of up to 16 images, whose
// kernels are bound by memory, do not read the lower halves of the diagonal tiles: there h_II
// gathers, for column j, the rows r < j in full and row j at half weight, and w = 2 too
// (2 d_j h_j = 2 sum_{r<j} P_rj d_r d_j + P_jj d_j^2), so only the pieces of rows (16, 8 or 4
// bytes) that straddle the diagonal bring a few lower entries along (~10 % fewer bytes at
// C = 550). Larger groups are bound by arithmetic and keep the whole tiles: the masked loop
// made them spill registers.
// Each block walks the upper-triangle tiles of one position in row-major order (consecutive
// tiles are neighbouring pieces of the same rows), copies each tile from memory into shared
// memory once, and multiplies it with the centred vectors of a group of up to 64 images: a
// (images x 64) . (64 x 64) product held in registers (each lane a block of MI images x NJ
// columns of h), with the dot product against d_J fused at the end of the tile; the forms stay
// in registers until the block's last tile. Each tile of P thus leaves memory once per image
// group, and the upper triangle only.
//
// Four kernels:
//  1. centre_kernel: d = embedding - mean, transposed to [position][group][channel][image]
//     (zero-padded to whole tiles), so that a position's vectors are one contiguous block that
//     the scoring kernel copies with 16-byte loads. (In (B, C, H*W) order a position's vectors
//     are B*C scattered words.)
//  2. forms_kernel: one block per (position, image group, split). The tiles of a position are
//     dealt to `splits` blocks when there are too few positions to fill the GPU; each then
//     writes its partial forms, and
//  3. finish_kernel adds them in a fixed order (deterministic: no float atomics).
//  2b. streamed_forms_kernel replaces forms_kernel for float32 groups of up to 32 images when
//     the positions fill the GPU: no tiles, the rows read straight into registers (see there).
// Tiles stream through shared memory in pieces of kStageRows rows, kStages pieces deep, by
// cp.async (plain loads before sm_80). Accumulation is in T (fp32 FMA for float, no TF32).
// Packed precisions (upper triangles row by row, common/packed_triangle.h) are read in place:
// their rows start at every alignment, so they are copied one entry at a time (whole diagonal
// tiles take their lower halves from the mirror images, which the same tile has just brought
// to cache).
#include <climits>
#include <cstdint>
#include <type_traits>

#include "common/packed_triangle.h"
#include "cuda/async_copy.cuh"
#include "cuda/device_limits.cuh"
#include "cuda/mahalanobis.cuh"

namespace anomaly_kernels::cuda {
namespace {

// ---- tunables --------------------------------------------------------------------------------
// Square tile size. Larger tiles read more of the lower triangle (where the diagonal tiles are
// read whole: ~C * kTile / 2 extra entries per matrix) and waste more work on the padding of
// the last tile when C is not a multiple; smaller ones make the per-thread blocks of h narrower.
// The thread layouts below assume 64.
constexpr int kTile = 64;
// A tile streams through shared memory in pieces of kStageRows rows (8 KB in float32), in a
// pipeline kStages pieces deep (kStages - 1 in flight per block): with 32 images a block needs
// ~106 KB at C = 550, so two blocks share an SM and keep ~48 KB of loads in flight per SM.
#ifndef ANOMALY_KERNELS_MAHALANOBIS_STAGE_ROWS
#define ANOMALY_KERNELS_MAHALANOBIS_STAGE_ROWS 32
#endif
#ifndef ANOMALY_KERNELS_MAHALANOBIS_STAGES
#define ANOMALY_KERNELS_MAHALANOBIS_STAGES 4
#endif
// Rows of the centred blocks per centring launch: fewer than 2^31, for 32-bit row arithmetic
// (at least one image group per launch). The CPU simulation of the kernels (tests/cuda_sim) sets
// 1, so that every simulated call with two or more image groups takes several launches.
#ifndef ANOMALY_KERNELS_MAHALANOBIS_CENTRE_LAUNCH_ROWS
#define ANOMALY_KERNELS_MAHALANOBIS_CENTRE_LAUNCH_ROWS ((int64_t{1} << 31) - 32)
#endif
constexpr int kStageRows = ANOMALY_KERNELS_MAHALANOBIS_STAGE_ROWS;
constexpr int kStages = ANOMALY_KERNELS_MAHALANOBIS_STAGES;
constexpr int kPiecesPerTile = kTile / kStageRows;
static_assert(kTile % kStageRows == 0, "a tile is a whole number of pieces");
// float64 pieces are twice the bytes: two stages keep a block within sm_75's 64 KB at C = 2048.
template <typename T>
constexpr int kStagesOf = sizeof(T) > 4 ? 2 : kStages;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
static_assert(kStages >= 2, "a tile is loaded while the previous one is used");

// Thread layout of one image-group size. A warp covers LI x MI images and COL_LANES x NJ = 64
// columns (each lane MI images x NJ columns, in NJ / V runs of V consecutive columns spaced
// COL_LANES * V apart, so that each run's loads are one contiguous 128-byte row piece per
// warp). WI warps split the images, WK = 8 / WI warps split each tile's rows.
template <int MI_, int LI_, int WI_, int NJ_>
struct Layout {
  static constexpr int MI = MI_, LI = LI_, WI = WI_, NJ = NJ_;
  static constexpr int WK = kWarps / WI;
  static constexpr int COL_LANES = 32 / LI;
  static constexpr int V = NJ < 4 ? NJ : 4;
  static constexpr int RUNS = NJ / V;
  static constexpr int IMAGES = MI * LI * WI;
  static constexpr int ROWS_PER_WARP = kStageRows / WK;
  // Blocks an SM should hold (caps the registers): small groups are memory-bound and need
  // several tiles in flight per SM; large ones hold two blocks for the register file.
  static constexpr int MIN_BLOCKS = IMAGES <= 4 ? 4 : 2;
  static_assert(COL_LANES * NJ == kTile, "a warp covers the columns of one tile");
  static_assert(kStageRows % WK == 0, "rows of a piece split evenly over the warps");
};

// Image-group sizes, smallest first; a batch takes the smallest group that holds it (up to
// 64 images: more form several groups, each reading P again). From 32 images on, a lane holds
// 8 x 8 entries of h: four 16-byte shared loads feed 64 FMAs, enough to keep the FMA units
// rather than shared memory the limit.
using Layout1 = Layout<1, 1, 1, 2>;
using Layout4 = Layout<4, 1, 1, 2>;
using Layout8 = Layout<2, 4, 1, 8>;
using Layout16 = Layout<4, 4, 1, 8>;
using Layout32 = Layout<8, 4, 1, 8>;
using Layout64 = Layout<8, 4, 2, 8>;
constexpr int kGroupSizes[] = {1, 4, 8, 16, 32, 64};
constexpr int kGroupWarpsOnRows[] = {Layout1::WK, Layout4::WK, Layout8::WK, Layout16::WK, Layout32::WK, Layout64::WK};
constexpr int kLayouts = 6;

// ---- small device helpers --------------------------------------------------------------------
template <typename T, int N>
struct Vec {
  T v[N];
};

// N consecutive T from shared memory, in 16-byte (or 8-byte) loads where N allows.
template <typename T, int N>
__device__ __forceinline__ Vec<T, N> load_vec(const T* p) {
  Vec<T, N> out;
  if constexpr (std::is_same_v<T, float> && N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N / 4; ++i) {
      const float4 x = reinterpret_cast<const float4*>(p)[i];
      out.v[4 * i] = x.x, out.v[4 * i + 1] = x.y, out.v[4 * i + 2] = x.z, out.v[4 * i + 3] = x.w;
    }
  } else if constexpr (std::is_same_v<T, float> && N == 2) {
    const float2 x = *reinterpret_cast<const float2*>(p);
    out.v[0] = x.x, out.v[1] = x.y;
  } else if constexpr (std::is_same_v<T, double> && N % 2 == 0) {
#pragma unroll
    for (int i = 0; i < N / 2; ++i) {
      const double2 x = reinterpret_cast<const double2*>(p)[i];
      out.v[2 * i] = x.x, out.v[2 * i + 1] = x.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) out.v[i] = p[i];
  }
  return out;
}

// The distance from a form: negative forms (rounding, or an indefinite matrix) give 0; NaN stays
// NaN (a comparison with NaN is false), as on the CPU and in the reference's clamp_min.
template <typename T>
__device__ __forceinline__ T distance_of(T q) {
  return sqrt(q < T(0) ? T(0) : q);
}

// ---- 1. centring and transposition -----------------------------------------------------------
// out[position][r], r = (group * c_pad + channel) * images + image_in_group, is
// embedding[group * images + image_in_group, channel, position] - mean[channel, position], or 0
// for channels >= c and images >= b. A 32 x 32 tile of (r, position) is read along positions
// and written along r, both coalesced. One launch covers the rows of the groups from
// first_group on, fewer than 2^31 of them, so that r is split in 32-bit arithmetic (images is a
// power of two, a shift; one 32-bit division by c_pad): 64-bit division and remainder made this
// kernel bound by instructions (~100 per element) rather than by memory.
template <typename T>
__global__ void centre_kernel(const T* __restrict__ embedding, const T* __restrict__ mean, int64_t b,
                              int64_t c, int64_t p, uint32_t c_pad, int images_shift, int64_t first_group,
                              uint32_t rows, int64_t row_len, T* __restrict__ out) {
  __shared__ T tile[32][33];
  const int tx = threadIdx.x, ty = threadIdx.y;  // 32 x 8 threads
  const uint32_t r0 = blockIdx.x * 32u;          // rows of this launch
  const uint32_t in_group_mask = (1u << images_shift) - 1u;
  const int64_t first_row = (first_group * c_pad) << images_shift;
  for (int64_t p0 = static_cast<int64_t>(blockIdx.y) * 32; p0 < p; p0 += static_cast<int64_t>(gridDim.y) * 32) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int rl = ty + 8 * k;
      const uint32_t r = r0 + rl;
      const int64_t pos = p0 + tx;
      T value = T(0);
      if (r < rows && pos < p) {
        const uint32_t rest = r >> images_shift;
        const uint32_t group = rest / c_pad, channel = rest - group * c_pad;
        const int64_t image = ((first_group + group) << images_shift) + (r & in_group_mask);
        if (channel < c && image < b)
          value = embedding[(image * c + channel) * p + pos] - mean[channel * p + pos];
      }
      tile[rl][tx] = value;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int pl = ty + 8 * k;
      const int64_t pos = p0 + pl;
      const uint32_t r = r0 + tx;
      if (pos < p && r < rows) out[pos * row_len + first_row + r] = tile[tx][pl];
    }
    __syncthreads();
  }
}

// ---- 2. the forms --------------------------------------------------------------------------
template <typename T>
struct FormsArgs {
  const T* centred;    // [p][groups][c_pad][images]
  const T* precision;  // [p][c][c], or [p][c (c + 1) / 2] when packed
  T* out;              // [b][p] distances, when splits == 1
  T* partial;          // [splits][b][p] partial forms, when splits > 1
  int64_t b, c, p, c_pad, groups;
  int64_t matrix_elements;  // of one position's precision
  int splits, tiles_per_side, vec_bytes;
  bool packed;
};

// A block's walk over its share of the upper-triangle tiles (I, J), J >= I, in row-major
// order: consecutive tiles are neighbouring pieces of the same rows, so the matrix is read
// nearly front to back.
struct TileCursor {
  int i, j, piece, remaining, n;  // remaining: tiles, this one included
  // Tiles [first, first + count) of the n (n + 1) / 2 in row-major order.
  __device__ void start(int n_, int first, int count) {
    n = n_, remaining = count, i = 0, piece = 0;
    while (first >= n - i) first -= n - i, ++i;
    j = i + first;
  }
  __device__ void advance() {
    if (++piece < kPiecesPerTile) return;
    piece = 0;
    --remaining;
    if (++j == n) j = ++i;
  }
};

// Rows [piece * kStageRows, +kStageRows) of tile (i, j) into a stage buffer
// [kStageRows][kTile]; entries outside the matrix are zero, so they add nothing. With
// UpperOnly, pieces of a diagonal tile's rows that lie wholly below the diagonal are not read
// (zero-filled, unused).
template <bool UpperOnly, typename T, int Bytes>
__device__ __forceinline__ void issue_tile(const T* matrix, int64_t c, const TileCursor& at, T* stage) {
  if constexpr (Bytes >= static_cast<int>(sizeof(T))) {
    constexpr int kPerVector = Bytes / static_cast<int>(sizeof(T));
    constexpr int kPerRow = kTile / kPerVector;
    const int64_t row0 = static_cast<int64_t>(at.i) * kTile + at.piece * kStageRows;
    const int64_t col0 = static_cast<int64_t>(at.j) * kTile;
    const int rows = c - row0 < kStageRows ? static_cast<int>(c - row0) : kStageRows;
    const int cols = c - col0 < kTile ? static_cast<int>(c - col0) : kTile;
    const int first_row = at.piece * kStageRows;  // in the tile
    const T* corner = matrix + row0 * c + col0;
    static_assert(kStageRows * kPerRow % kThreads == 0 && kThreads % kPerRow == 0,
                  "whole copies per thread, each thread on one column");
    // A thread copies the same column x of rows r_first, r_first + kRowStep, ...; offsets from
    // the corner stay within kStageRows rows of the matrix, so they are 32-bit (64-bit address
    // arithmetic per copy made this loop most of the kernel's instructions at small groups).
    constexpr int kRowStep = kThreads / kPerRow;
    const int c32 = static_cast<int>(c);
    const int x = (static_cast<int>(threadIdx.x) % kPerRow) * kPerVector;
    const int r_first = static_cast<int>(threadIdx.x) / kPerRow;
#pragma unroll 2
    for (int k = 0; k < kStageRows * kPerRow / kThreads; ++k) {
      const int r = r_first + k * kRowStep;
      // c, hence cols, is a multiple of kPerVector
      const bool valid =
          r < rows && x < cols && (!UpperOnly || at.i != at.j || x + kPerVector > first_row + r);
      copy_async<Bytes>(stage + r * kTile + x, valid ? corner + (r * c32 + x) : matrix, valid);
    }
  }
}

// The same piece of a packed matrix, one entry per copy: entries below the diagonal (in
// diagonal tiles only) are copied from their mirror images above it, or with UpperOnly not at
// all (zero-filled, unused).
template <bool UpperOnly, typename T>
__device__ __forceinline__ void issue_packed_tile(const T* matrix, int64_t c, const TileCursor& at, T* stage) {
  const int64_t row0 = static_cast<int64_t>(at.i) * kTile + at.piece * kStageRows;
  const int64_t col0 = static_cast<int64_t>(at.j) * kTile;
  static_assert(kStageRows * kTile % kThreads == 0, "whole copies per thread");
#pragma unroll 4
  for (int k = 0; k < kStageRows * kTile / kThreads; ++k) {
    const int v = threadIdx.x + k * kThreads;
    const int r = v / kTile, x = v % kTile;  // a warp copies 32 consecutive entries of one row
    const int64_t row = row0 + r, col = col0 + x;
    const bool valid = row < c && col < c && (row <= col || !UpperOnly);
    const int64_t offset = row <= col ? packed_offset(row, col, c) : packed_offset(col, row, c);
    copy_async<static_cast<int>(sizeof(T))>(stage + r * kTile + x, valid ? matrix + offset : matrix, valid);
  }
}

template <bool UpperOnly, typename T>
__device__ __forceinline__ void issue(const T* matrix, int64_t c, int vec_bytes, bool packed, const TileCursor& at,
                                      T* stage) {
  if (packed) {
    issue_packed_tile<UpperOnly, T>(matrix, c, at, stage);
  } else if (vec_bytes == 16) {
    issue_tile<UpperOnly, T, 16>(matrix, c, at, stage);
  } else if (vec_bytes == 8) {
    issue_tile<UpperOnly, T, 8>(matrix, c, at, stage);
  } else {
    issue_tile<UpperOnly, T, 4>(matrix, c, at, stage);
  }
}

template <typename T, typename L>
__global__ void __launch_bounds__(kThreads, (sizeof(T) > 4 && L::IMAGES > 4) ? 1 : L::MIN_BLOCKS) forms_kernel(FormsArgs<T> a) {
  constexpr int MI = L::MI, NJ = L::NJ, V = L::V, IMAGES = L::IMAGES;
  constexpr bool kUpperOnly = IMAGES <= 16;  // diagonal tiles without their lower halves
  constexpr int kStageElements = kStageRows * kTile;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* ds = reinterpret_cast<T*>(shared_bytes);            // [c_pad][IMAGES] centred vectors
  constexpr int kDepth = kStagesOf<T>;
  T* stages = ds + a.c_pad * IMAGES;                     // [kDepth][kStageRows][kTile]
  T* partial_forms = stages + kDepth * kStageElements;  // [WK][IMAGES]

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warp_images = warp % L::WI, warp_rows = warp / L::WI;
  const int col_lane = lane % L::COL_LANES;
  const int img0 = (warp_images * L::LI + lane / L::COL_LANES) * MI;  // this thread's first image
  const int row0 = warp_rows * L::ROWS_PER_WARP;                       // its first row of a piece
  const int64_t c = a.c;
  const int64_t items = a.p * a.groups * a.splits;
  const int block_elements = static_cast<int>(a.c_pad) * IMAGES;
  const int n = a.tiles_per_side, tiles = n * (n + 1) / 2;

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int split = static_cast<int>(item % a.splits);
    const int64_t position_group = item / a.splits;
    const int64_t group = position_group % a.groups, pos = position_group / a.groups;
    const T* matrix = a.precision + pos * a.matrix_elements;

    // Prologue: the centred vectors (part of the first copy group) and kDepth - 1 pieces.
    {
      const char* src = reinterpret_cast<const char*>(a.centred + position_group * block_elements);
      char* dst = reinterpret_cast<char*>(ds);
      const int vectors = block_elements * static_cast<int>(sizeof(T)) / 16;
      for (int v = threadIdx.x; v < vectors; v += kThreads) copy_async<16>(dst + 16 * v, src + 16 * v, true);
    }
    TileCursor load, use;
    {
      const int first = static_cast<int>(static_cast<int64_t>(tiles) * split / a.splits);
      const int last = static_cast<int>(static_cast<int64_t>(tiles) * (split + 1) / a.splits);
      load.start(n, first, last - first);
    }
    use = load;
#pragma unroll
    for (int s = 0; s < kDepth - 1; ++s) {
      if (load.remaining > 0) {
        issue<kUpperOnly>(matrix, c, a.vec_bytes, a.packed, load, stages + s * kStageElements);
        load.advance();
      }
      copy_commit();
    }

    T forms[MI], acc[MI][NJ];
#pragma unroll
    for (int i = 0; i < MI; ++i) forms[i] = T(0);

    for (int t = 0; use.remaining > 0; ++t) {
      copy_wait<kDepth - 2>();  // piece t (and, at t = 0, the vectors) has landed for this thread
      __syncthreads();           // ... for every thread, and piece t - 1's buffer is free
      if (load.remaining > 0) {
        issue<kUpperOnly>(matrix, c, a.vec_bytes, a.packed, load, stages + ((t + kDepth - 1) % kDepth) * kStageElements);
        load.advance();
      }
      copy_commit();

      if (use.piece == 0) {
#pragma unroll
        for (int i = 0; i < MI; ++i)
#pragma unroll
          for (int j = 0; j < NJ; ++j) acc[i][j] = T(0);
      }
      const bool diagonal = use.i == use.j;
      const bool upper_diagonal = kUpperOnly && diagonal;
      const int piece_row = use.i * kTile + use.piece * kStageRows + row0;  // in the matrix
      if (piece_row < c) {  // warps whose rows all lie below the matrix have nothing to add
        const T* tile = stages + (t % kDepth) * kStageElements;
        const T* d_rows = ds + piece_row * IMAGES + img0;
#pragma unroll 8
        for (int rr = 0; rr < L::ROWS_PER_WARP; ++rr) {
          const Vec<T, MI> d = load_vec<T, MI>(d_rows + rr * IMAGES);
          T m[NJ];
#pragma unroll
          for (int run = 0; run < L::RUNS; ++run) {
            const Vec<T, V> x = load_vec<T, V>(tile + (row0 + rr) * kTile + run * L::COL_LANES * V + col_lane * V);
#pragma unroll
            for (int v = 0; v < V; ++v) m[run * V + v] = x.v[v];
          }
          if (upper_diagonal) {
            // Columns right of the row in full, the row's own at half weight, those left of it
            // not at all (skipped, not multiplied by 0: an infinite d would give NaN). Column
            // j of this thread is col_lane * V + column_offset(j) in the tile.
            const int row_offset = use.piece * kStageRows + row0 + rr - col_lane * V;
            const auto column_offset = [](int j) { return (j / V) * L::COL_LANES * V + j % V; };
#pragma unroll
            for (int j = 0; j < NJ; ++j)
              if (column_offset(j) == row_offset) m[j] *= T(0.5);
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
              for (int j = 0; j < NJ; ++j)
                if (column_offset(j) >= row_offset) acc[i][j] = fma(d.v[i], m[j], acc[i][j]);
          } else {
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
              for (int j = 0; j < NJ; ++j) acc[i][j] = fma(d.v[i], m[j], acc[i][j]);
          }
        }
      }
      // After a tile's last piece: forms += w d_J . h over this thread's columns inside the
      // matrix. Warps with no row inside the matrix skip it, and in an upper-only diagonal tile
      // so do the columns left of the warp's first row: their h is zero, and a zero h times an
      // infinite d_J would turn an infinite form into NaN.
      if (use.piece + 1 == kPiecesPerTile && use.i * kTile + row0 < c) {
        const int col0 = use.j * kTile;
        const T weight = diagonal && !kUpperOnly ? T(1) : T(2);
#pragma unroll
        for (int run = 0; run < L::RUNS; ++run)
#pragma unroll
          for (int v = 0; v < V; ++v) {
            const int tile_col = run * L::COL_LANES * V + col_lane * V + v;
            const int col = col0 + tile_col;
            if (col < c && (!upper_diagonal || tile_col >= row0)) {
              const Vec<T, MI> d = load_vec<T, MI>(ds + col * IMAGES + img0);
#pragma unroll
              for (int i = 0; i < MI; ++i) forms[i] = fma(acc[i][run * V + v], weight * d.v[i], forms[i]);
            }
          }
      }
      use.advance();
    }
    copy_wait<0>();

    // Reduce over the lanes that share images (fixed butterfly), then over the row warps in
    // order.
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int offset = L::COL_LANES / 2; offset > 0; offset >>= 1)
        forms[i] += __shfl_xor_sync(0xFFFFFFFFu, forms[i], offset);
    if (col_lane == 0) {
#pragma unroll
      for (int i = 0; i < MI; ++i) partial_forms[warp_rows * IMAGES + img0 + i] = forms[i];
    }
    __syncthreads();
    const int64_t first = group * IMAGES;
    const int64_t count = a.b - first < IMAGES ? a.b - first : IMAGES;
    for (int i = threadIdx.x; i < count; i += kThreads) {
      T q = T(0);
#pragma unroll
      for (int w = 0; w < L::WK; ++w) q += partial_forms[w * IMAGES + i];
      if (a.splits == 1) {
        a.out[(first + i) * a.p + pos] = distance_of(q);
      } else {
        a.partial[(split * a.b + first + i) * a.p + pos] = q;
      }
    }
    __syncthreads();  // the next item's prologue reuses the buffers
  }
}

// ---- 2b. the forms of image groups read from memory row by row (streamed) -------------------
// Up to 8 images do 1 to 8 multiply-adds per matrix entry and byte pair: they are bound by
// memory. Staging tiles through shared memory costs a shared write and read per entry and a
// barrier per piece, which kept the tiled kernel at 30 % of the H200's memory bandwidth at
// 8 x 550 x 64 x 64 (Nsight Compute: L1 68 %, 25 % occupancy at 90 registers); with 32 images it
// ran at a sixth of the FP32 rate (32 x 550 x 64 x 64: 4.7 ms, slower than cuBLAS).
// This kernel reads the rows of the upper triangle straight into registers. The matrix is cut
// into strips of 32 x COLS columns (the first one partial); in a strip a lane owns COLS
// consecutive columns and sums, for each of them, P_rc d_r over the rows r <= c that its warp
// walks (the diagonal entry at half weight), then adds 2 d_c times that sum: the tiled kernel's
// upper-only diagonal tiles, column sums and weights, so that infinities and NaN combine the
// same way. Entries left of the diagonal are neither read nor used (never multiplied by 0). The
// rows of all strips are dealt to the block's warps in equal contiguous ranges, and BATCH rows
// are loaded before any is used (that many loads in flight per thread). Per row a lane does
// COLS x IMAGES multiply-adds against one broadcast read of d_r: 4 columns for up to 8 images,
// 2 for 16 and 32 (their sums take 32 and 64 registers).
template <int IMAGES>
inline constexpr int kStreamedColumns = IMAGES <= 8 ? 4 : 2;
// Rows whose loads are in flight together per thread: 4, or 2 where 32 images' column sums
// already take 64 registers (they do 64 multiply-adds per 8 bytes read).
template <int IMAGES>
inline constexpr int kStreamBatch = IMAGES <= 16 ? 4 : 2;

// N consecutive entries from p, in loads of BYTES bytes (p is aligned to them): one 16-byte
// load for 4 floats, 8-byte loads for an even number of floats, else entry by entry.
// (A type per width, so that each caller's loop is compiled with its own loads.)
template <typename T, int N, int BYTES>
struct EntryLoad {
  __device__ __forceinline__ Vec<T, N> operator()(const T* __restrict__ p) const {
    Vec<T, N> q;
    if constexpr (std::is_same_v<T, float> && N == 4 && BYTES == 16) {
      const float4 x = __ldg(reinterpret_cast<const float4*>(p));
      q.v[0] = x.x, q.v[1] = x.y, q.v[2] = x.z, q.v[3] = x.w;
    } else if constexpr (std::is_same_v<T, float> && N % 2 == 0 && BYTES >= 8) {
#pragma unroll
      for (int k = 0; k < N; k += 2) {
        const float2 x = __ldg(reinterpret_cast<const float2*>(p + k));
        q.v[k] = x.x, q.v[k + 1] = x.y;
      }
    } else {
#pragma unroll
      for (int k = 0; k < N; ++k) q.v[k] = __ldg(p + k);
    }
    return q;
  }
};

// Widest EntryLoad for rows starting on `row_align`-byte boundaries (16, 8 or 4; 4 for packed
// rows, which start anywhere), read from a column that keeps that alignment (see the streamed
// kernel's strips): 8-byte loads on rows of an even length that is no multiple of 4 (550
// channels) read 4 entries with half the instructions and L1 wavefronts of entry-by-entry
// loads. Calls f(load) with the loader, once per call.
template <typename T, int N, typename F>
__device__ __forceinline__ void with_widest_load(int row_align, F f) {
  if (N == 4 && row_align >= 16) {
    f(EntryLoad<T, N, 16>{});
  } else if (N % 2 == 0 && row_align >= 8) {
    f(EntryLoad<T, N, 8>{});
  } else {
    f(EntryLoad<T, N, 4>{});
  }
}

// Row offset of entry (r, 0) (a packed row holds columns r .. c - 1 only, at their own index).
__device__ __forceinline__ int64_t row_start(int r, int c, bool packed) {
  return packed ? packed_offset(r, r, c) - r : static_cast<int64_t>(r) * c;
}

// Entries (r, col + k), k < N, of one matrix where bit k of `valid` is set, from the full layout
// (row stride c) or the packed one; entries not valid are not read (0, unused).
template <typename T, int N>
__device__ __forceinline__ Vec<T, N> load_columns(const T* __restrict__ matrix, int c, bool packed, int row_align,
                                                  int r, int col, unsigned valid) {
  const T* p = matrix + row_start(r, c, packed) + col;
  Vec<T, N> q;
  if (valid == (1u << N) - 1u) {
    with_widest_load<T, N>(row_align, [&](auto load) { q = load(p); });
    return q;
  }
#pragma unroll
  for (int k = 0; k < N; ++k) q.v[k] = ((valid >> k) & 1u) ? __ldg(p + k) : T(0);
  return q;
}

// RUN consecutive rows r, r + 1, ... of N entries (r, col + k), all valid: rows wholly above the
// lane's columns. One 64-bit address per run and a step per row (c entries in the full layout,
// c - row - 1 in the packed one), and the load width chosen once per run rather than per row
// (one image at 550 channels: 42 instructions per 4 rows, from 59 with per-row loads).
template <typename T, int N, int RUN>
__device__ __forceinline__ void load_row_run(const T* __restrict__ matrix, int c, bool packed, int row_align, int r,
                                             int col, Vec<T, N> (&rows)[RUN]) {
  with_widest_load<T, N>(row_align, [&](auto load) {
    const T* p = matrix + row_start(r, c, packed) + col;
#pragma unroll
    for (int b = 0; b < RUN; ++b) {
      rows[b] = load(p);
      p += packed ? c - (r + b) - 1 : c;
    }
  });
}

// Sums over the warp's lanes of each v[i], i < N (a power of two up to 32), returned in lane l
// for i = l % N. Lanes first add across the lane offsets at or above N, then halve the list at
// each smaller offset, each lane keeping the half its lane bit selects and sending the other:
// N log2(32 / N) + N - 1 shuffles (31 for 32 images) instead of one 5-step butterfly per value
// (160). Every lane's v is overwritten.
// (The stages recurse on a template argument: as loop counters they were left partly rolled,
// which put v in local memory.)
template <int HALF, typename T, int N>
__device__ __forceinline__ void keep_halves(T (&v)[N], int lane) {
  if constexpr (HALF >= 1) {
    const bool upper = (lane & HALF) != 0;
#pragma unroll
    for (int i = 0; i < HALF; ++i) {
      const T send = upper ? v[i] : v[i + HALF];
      const T keep = upper ? v[i + HALF] : v[i];
      v[i] = keep + __shfl_xor_sync(0xFFFFFFFFu, send, HALF);
    }
    keep_halves<HALF / 2>(v, lane);
  }
}

template <typename T, int N>
__device__ __forceinline__ T warp_sums_transposed(T (&v)[N], int lane) {
  static_assert(N >= 1 && N <= 32 && (N & (N - 1)) == 0, "N: a power of two up to 32");
#pragma unroll
  for (int offset = 16; offset >= N; offset >>= 1)
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] += __shfl_xor_sync(0xFFFFFFFFu, v[i], offset);
  keep_halves<N / 2>(v, lane);
  return v[0];
}

// Blocks per SM the streamed kernel is compiled for (caps its registers): enough threads to
// keep 32-64 KB of loads in flight per SM where memory bounds the groups.
constexpr int streamed_min_blocks(int images) { return images == 1 ? 4 : images == 4 ? 3 : 2; }

template <typename T, int IMAGES>
__global__ void __launch_bounds__(kThreads, streamed_min_blocks(IMAGES)) streamed_forms_kernel(FormsArgs<T> a) {
  constexpr int COLS = kStreamedColumns<IMAGES>, BATCH = kStreamBatch<IMAGES>;
  constexpr int kStripCols = 32 * COLS;
  constexpr unsigned kAll = (1u << COLS) - 1u;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* ds = reinterpret_cast<T*>(shared_bytes);          // [c_pad][IMAGES] centred vectors
  // Each thread's forms, [IMAGES][kThreads] (thread-contiguous: no bank conflicts), added to at
  // the end of each strip: in registers they would cost 32 of them at 32 images.
  T* thread_forms = ds + a.c_pad * IMAGES;
  T* partial_forms = thread_forms + IMAGES * kThreads;  // [kWarps][IMAGES]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int c = static_cast<int>(a.c);
  // Alignment of the rows' starts for the entry loads; packed rows start anywhere.
  const int row_align = a.packed ? static_cast<int>(sizeof(T)) : a.vec_bytes;
  // Strips end at the matrix's last column, so that a partial strip (c not a multiple of the
  // strip width) is the first one: it walks only the rows above its few columns (38 at 550
  // channels and 128-column strips), where a partial last strip walked all c rows with most
  // lanes idle. Strip s holds columns [offset + s * kStripCols, offset + (s + 1) * kStripCols),
  // the columns below 0 outside the matrix. A lane's first column is c modulo COLS, so the
  // vector loads stay aligned: rows start 8-byte aligned only where c is even (col even) and
  // 16-byte aligned only where c is a multiple of 4 (col one too).
  const int strips = (c + kStripCols - 1) / kStripCols;
  const int offset = c - strips * kStripCols;  // in (-kStripCols, 0]
  const auto strip_rows = [offset](int s) { return offset + kStripCols * (s + 1); };
  int units = 0;  // (strip, row) pairs of the walk
  for (int s = 0; s < strips; ++s) units += strip_rows(s);
  const int first_unit = static_cast<int>(static_cast<int64_t>(units) * warp / kWarps);
  const int last_unit = static_cast<int>(static_cast<int64_t>(units) * (warp + 1) / kWarps);
  const int block_elements = static_cast<int>(a.c_pad) * IMAGES;
  const int64_t items = a.p * a.groups;

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t group = item % a.groups, pos = item / a.groups;
    const T* matrix = a.precision + pos * a.matrix_elements;
    {
      const int4* src = reinterpret_cast<const int4*>(a.centred + item * block_elements);
      int4* dst = reinterpret_cast<int4*>(ds);
      const int vectors = block_elements * static_cast<int>(sizeof(T)) / 16;
      for (int v = threadIdx.x; v < vectors; v += kThreads) dst[v] = __ldg(src + v);
    }
#pragma unroll
    for (int i = 0; i < IMAGES; ++i) thread_forms[i * kThreads + threadIdx.x] = T(0);
    __syncthreads();

    int s = 0, r = first_unit;  // the walk's first (strip, row)
    while (s < strips && r >= strip_rows(s)) r -= strip_rows(s++);
    for (int unit = first_unit; unit < last_unit; ++s, r = 0) {
      const int end = min(strip_rows(s), r + (last_unit - unit));  // this strip's rows for the warp
      const int first_row = r;
      unit += end - r;
      const int col = offset + s * kStripCols + lane * COLS;
      unsigned inside = 0;  // the lane's columns inside the matrix
#pragma unroll
      for (int k = 0; k < COLS; ++k)
        if (col + k >= 0) inside |= 1u << k;
      // h[k] = sum over the warp's rows r <= col + k of P_r,col+k d_r (the diagonal entry at half
      // weight): the tiled kernel's column sums, so that infinities and NaN combine the same way.
      T h[COLS][IMAGES];
#pragma unroll
      for (int k = 0; k < COLS; ++k)
#pragma unroll
        for (int i = 0; i < IMAGES; ++i) h[k][i] = T(0);
      for (; r < end; r += BATCH) {
        // Rows all above every lane's columns (no diagonal entry), inside the matrix and the
        // warp's range: most of a strip's rows, with no per-entry test. Decided for the whole
        // warp: where only some lanes qualify (rows near a strip's diagonal block, the partial
        // first strip), all take the per-entry steps, which give those lanes the same sums,
        // instead of the warp issuing both paths in turn.
        if (__all_sync(0xFFFFFFFFu, inside == kAll && r + BATCH <= end && r + BATCH - 1 < col)) {
          Vec<T, COLS> rows[BATCH];
          load_row_run<T, COLS, BATCH>(matrix, c, a.packed, row_align, r, col, rows);
#pragma unroll
          for (int b = 0; b < BATCH; ++b) {
            const Vec<T, IMAGES> dr = load_vec<T, IMAGES>(ds + (r + b) * IMAGES);
#pragma unroll
            for (int k = 0; k < COLS; ++k)
#pragma unroll
              for (int i = 0; i < IMAGES; ++i) h[k][i] = fma(dr.v[i], rows[b].v[k], h[k][i]);
          }
          continue;
        }
        Vec<T, COLS> rows[BATCH];
        unsigned valid[BATCH];
#pragma unroll
        for (int b = 0; b < BATCH; ++b) {
          const int row = r + b;
          // Columns on or right of the diagonal; none for rows past the warp's range.
          const int first_col = row - col;  // columns col + k with k >= first_col
          valid[b] = row < end ? inside & (first_col <= 0 ? kAll : first_col >= COLS ? 0u : (kAll << first_col) & kAll) : 0u;
          rows[b] = load_columns<T, COLS>(matrix, c, a.packed, row_align, row < end ? row : r, col, valid[b]);
        }
#pragma unroll
        for (int b = 0; b < BATCH; ++b) {
          if (valid[b] == 0) continue;  // entries left of the diagonal: not multiplied by 0
          const int row = r + b;
          const Vec<T, IMAGES> dr = load_vec<T, IMAGES>(ds + row * IMAGES);
#pragma unroll
          for (int k = 0; k < COLS; ++k) {
            if ((valid[b] >> k) & 1u) {
              const T m = col + k == row ? T(0.5) * rows[b].v[k] : rows[b].v[k];
#pragma unroll
              for (int i = 0; i < IMAGES; ++i) h[k][i] = fma(dr.v[i], m, h[k][i]);
            }
          }
        }
      }
      // forms += 2 d_c . h_c over the lane's columns that some row of the warp reached (a zero h
      // times an infinite d_c would turn an infinite form into NaN).
#pragma unroll
      for (int k = 0; k < COLS; ++k) {
        if (((inside >> k) & 1u) && col + k >= first_row) {
          const Vec<T, IMAGES> d = load_vec<T, IMAGES>(ds + (col + k) * IMAGES);
#pragma unroll
          for (int i = 0; i < IMAGES; ++i) {
            T& form = thread_forms[i * kThreads + threadIdx.x];
            form = fma(h[k][i], T(2) * d.v[i], form);
          }
        }
      }
    }

    // Reduce over the warp (a fixed order of shuffles), then over the warps in order.
    T forms[IMAGES];
#pragma unroll
    for (int i = 0; i < IMAGES; ++i) forms[i] = thread_forms[i * kThreads + threadIdx.x];
    const T warp_form = warp_sums_transposed<T, IMAGES>(forms, lane);
    if (lane < IMAGES) partial_forms[warp * IMAGES + lane] = warp_form;
    __syncthreads();
    // Thread i < IMAGES finishes image i of the group (never split: one block per item).
    const int64_t image = group * IMAGES + threadIdx.x;
    if (threadIdx.x < IMAGES && image < a.b) {
      T q = T(0);
#pragma unroll
      for (int w = 0; w < kWarps; ++w) q += partial_forms[w * IMAGES + threadIdx.x];
      a.out[image * a.p + pos] = distance_of(q);
    }
    __syncthreads();  // the next item overwrites the vectors and the partial forms
  }
}

// ---- 3. split positions: partial forms -> distances ---------------------------------------
template <typename T>
__global__ void finish_kernel(const T* __restrict__ partial, int64_t n, int splits, T* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    T q = T(0);
    for (int s = 0; s < splits; ++s) q += partial[s * n + i];
    out[i] = distance_of(q);
  }
}

// ---- host side -------------------------------------------------------------------------------
struct Plan {
  int device = 0, smem_optin = 0;
  int layout = -1;  // index into kGroupSizes
  int64_t images = 0, groups = 0, c_pad = 0;
  int tiles_per_side = 0, splits = 1;
  bool streamed = false;  // streamed_forms_kernel instead of the tiled forms_kernel
  size_t shared = 0;
  int64_t centred_elements = 0, partial_elements = 0;
};

// Image groups the streamed kernel takes: 1 to 32 images (layouts 0 to 4).
constexpr int kLastStreamedLayout = 4;

template <typename T>
size_t streamed_shared_bytes_for(int layout, int64_t c_pad) {
  const int64_t images = kGroupSizes[layout];  // centred vectors, each thread's forms, each warp's
  return static_cast<size_t>((c_pad * images + kThreads * images + kWarps * images) * static_cast<int64_t>(sizeof(T)));
}

template <typename T>
size_t shared_bytes_for(int layout, int64_t c_pad) {
  const int64_t images = kGroupSizes[layout];
  return static_cast<size_t>((c_pad * images + kStagesOf<T> * kStageRows * kTile + kGroupWarpsOnRows[layout] * images) *
                             static_cast<int64_t>(sizeof(T)));
}

template <typename T>
cudaError_t make_plan(int64_t b, int64_t c, int64_t p, int group_images, bool allow_streamed, Plan* plan) {
  DeviceLimits limits;
  const cudaError_t err = current_device_limits(&plan->device, &limits);
  if (err != cudaSuccess) return err;
  const int max_shared = limits.smem_optin, sms = limits.sms;
  plan->smem_optin = max_shared;
  plan->c_pad = (c + kTile - 1) / kTile * kTile;
  plan->tiles_per_side = static_cast<int>(plan->c_pad / kTile);
  // The smallest group that holds the batch (or the group size asked for), or a smaller one
  // where shared memory is short.
  int wanted = kLayouts - 1;
  for (int l = 0; l < kLayouts; ++l)
    if (group_images > 0 ? kGroupSizes[l] >= group_images : kGroupSizes[l] >= b) {
      wanted = l;
      break;
    }
  plan->layout = -1;
  for (int l = wanted; l >= 0; --l)
    if (shared_bytes_for<T>(l, plan->c_pad) <= static_cast<size_t>(max_shared)) {
      plan->layout = l;
      break;
    }
  if (plan->layout < 0) return cudaErrorInvalidValue;  // too many channels (mahalanobis.cuh)
  plan->images = kGroupSizes[plan->layout];
  plan->groups = (b + plan->images - 1) / plan->images;
  plan->shared = shared_bytes_for<T>(plan->layout, plan->c_pad);
  // Split a position's tiles over several blocks when positions alone leave SMs idle (at least
  // two tiles per split: each split stages all of the position's vectors).
  const int64_t blocks = p * plan->groups, target = 2 * static_cast<int64_t>(sms);
  const int64_t splits = blocks < target ? (target + blocks - 1) / blocks : 1;
  const int64_t tiles = static_cast<int64_t>(plan->tiles_per_side) * (plan->tiles_per_side + 1) / 2;
  const int64_t most = tiles / 2 > 1 ? tiles / 2 : 1;
  plan->splits = static_cast<int>(splits < most ? splits : most);
  plan->centred_elements = p * plan->groups * plan->c_pad * plan->images;
  plan->partial_elements = plan->splits > 1 ? plan->splits * b * p : 0;
  // Groups of up to 32 images stream the matrices instead, where there are blocks enough without
  // splitting positions (the workspace above stays large enough: it drops the partial forms).
  const size_t streamed_shared = streamed_shared_bytes_for<T>(plan->layout, plan->c_pad);
  if (std::is_same_v<T, float> && allow_streamed && plan->layout <= kLastStreamedLayout && blocks >= target &&
      streamed_shared <= static_cast<size_t>(max_shared)) {
    plan->streamed = true;
    plan->splits = 1;
    plan->shared = streamed_shared;
  }
  return cudaSuccess;
}

template <typename T, typename L>
cudaError_t launch_forms(const FormsArgs<T>& args, const Plan& plan, cudaStream_t stream) {
  // Opted in once per device to all the shared memory a block may have (a per-call setting of
  // this call's size would race with another thread's launch of the same kernel), with the
  // largest shared-memory carve-out of L1 preferred: the layouts are sized for two blocks per SM
  // (32 images at C = 550: ~106 KB each), which the driver's default carve-out need not leave
  // room for. 16-byte tile copies bypass L1 anyway (cp.async.cg); narrower ones (packed rows,
  // odd C) keep the remaining L1.
  cudaError_t err = allow_shared_memory<forms_kernel<T, L>>(plan.device, plan.smem_optin, true);
  if (err != cudaSuccess) return err;
  const size_t shared = plan.shared;
  const int64_t items = args.p * args.groups * args.splits;
  const unsigned grid = static_cast<unsigned>(items < INT_MAX ? items : INT_MAX);
  forms_kernel<T, L><<<grid, kThreads, shared, stream>>>(args);
  return cudaGetLastError();
}

template <typename T, int IMAGES>
cudaError_t launch_streamed_forms(const FormsArgs<T>& args, const Plan& plan, cudaStream_t stream) {
  cudaError_t err = allow_shared_memory<streamed_forms_kernel<T, IMAGES>>(plan.device, plan.smem_optin, false);
  if (err != cudaSuccess) return err;
  const int64_t items = args.p * args.groups;
  const unsigned grid = static_cast<unsigned>(items < INT_MAX ? items : INT_MAX);
  streamed_forms_kernel<T, IMAGES><<<grid, kThreads, plan.shared, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t mahalanobis_workspace_elements(int64_t b, int64_t c, int64_t p, int group_images, int64_t* elements) {
  *elements = 0;
  if (b == 0 || c == 0 || p == 0) return cudaSuccess;
  Plan plan;
  const cudaError_t err = make_plan<T>(b, c, p, group_images, false, &plan);  // the tiled plan's is the larger
  if (err != cudaSuccess) return err;
  *elements = plan.centred_elements + plan.partial_elements;
  return cudaSuccess;
}

template <typename T>
cudaError_t mahalanobis(const T* embedding, const T* mean, const T* precision, bool packed, int64_t b, int64_t c,
                        int64_t p, int group_images, T* workspace, T* out, cudaStream_t stream,
                        bool allow_streamed) {
  if (b == 0 || c == 0 || p == 0) return cudaSuccess;
  Plan plan;
  cudaError_t err = make_plan<T>(b, c, p, group_images, allow_streamed, &plan);
  if (err != cudaSuccess) return err;

  const int64_t row_len = plan.groups * plan.c_pad * plan.images;
  {
    int images_shift = 0;  // group sizes are powers of two (kGroupSizes)
    while ((int64_t{1} << images_shift) < plan.images) ++images_shift;
    // One launch per run of groups with fewer than 2^31 rows (one launch but for millions of
    // images at H x W = 1).
    const int64_t group_rows = plan.c_pad * plan.images;
    const int64_t launch_groups = int64_t{ANOMALY_KERNELS_MAHALANOBIS_CENTRE_LAUNCH_ROWS} / group_rows;
    const int64_t groups_per_launch = launch_groups > 0 ? launch_groups : 1;
    const dim3 block(32, 8);
    const int64_t tiles_y = (p + 31) / 32;
    for (int64_t first = 0; first < plan.groups; first += groups_per_launch) {
      const int64_t groups = plan.groups - first < groups_per_launch ? plan.groups - first : groups_per_launch;
      const int64_t rows = groups * group_rows;
      const dim3 grid(static_cast<unsigned>((rows + 31) / 32), static_cast<unsigned>(tiles_y < 65535 ? tiles_y : 65535));
      centre_kernel<T><<<grid, block, 0, stream>>>(embedding, mean, b, c, p, static_cast<uint32_t>(plan.c_pad),
                                                   images_shift, first, static_cast<uint32_t>(rows), row_len,
                                                   workspace);
      err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
  }

  FormsArgs<T> args;
  args.centred = workspace;
  args.precision = precision;
  args.packed = packed;
  args.matrix_elements = packed ? packed_elements(c) : c * c;
  args.out = out;
  args.partial = workspace + plan.centred_elements;
  args.b = b, args.c = c, args.p = p, args.c_pad = plan.c_pad, args.groups = plan.groups;
  args.splits = plan.splits, args.tiles_per_side = plan.tiles_per_side;
  // Widest copy the rows allow: every row of every matrix must start on the vector's alignment.
  const uintptr_t address = reinterpret_cast<uintptr_t>(precision);
  const int64_t row_bytes = c * static_cast<int64_t>(sizeof(T));
  args.vec_bytes = (row_bytes % 16 == 0 && address % 16 == 0)  ? 16
                   : (row_bytes % 8 == 0 && address % 8 == 0) ? 8
                                                                : 4;
  // An entry is never split: a float64 matrix off the 8-byte grid is copied in 8-byte pieces
  // (such a pointer cannot come from a tensor; the copy would fault rather than skip entries).
  if (args.vec_bytes < static_cast<int>(sizeof(T))) args.vec_bytes = static_cast<int>(sizeof(T));
  if constexpr (std::is_same_v<T, float>) {  // float64 keeps the tiled kernel (not measured streamed)
    if (plan.streamed) {
      switch (plan.layout) {
        case 0: return launch_streamed_forms<T, 1>(args, plan, stream);
        case 1: return launch_streamed_forms<T, 4>(args, plan, stream);
        case 2: return launch_streamed_forms<T, 8>(args, plan, stream);
        case 3: return launch_streamed_forms<T, 16>(args, plan, stream);
        default: return launch_streamed_forms<T, 32>(args, plan, stream);
      }
    }
  }
  switch (plan.layout) {
    case 0: err = launch_forms<T, Layout1>(args, plan, stream); break;
    case 1: err = launch_forms<T, Layout4>(args, plan, stream); break;
    case 2: err = launch_forms<T, Layout8>(args, plan, stream); break;
    case 3: err = launch_forms<T, Layout16>(args, plan, stream); break;
    case 4: err = launch_forms<T, Layout32>(args, plan, stream); break;
    default: err = launch_forms<T, Layout64>(args, plan, stream); break;
  }
  if (err != cudaSuccess || plan.splits == 1) return err;
  const int64_t n = b * p;
  const int64_t blocks = (n + 255) / 256;
  finish_kernel<T><<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), 256, 0, stream>>>(
      args.partial, n, plan.splits, out);
  return cudaGetLastError();
}

template cudaError_t mahalanobis_workspace_elements<float>(int64_t, int64_t, int64_t, int, int64_t*);
template cudaError_t mahalanobis_workspace_elements<double>(int64_t, int64_t, int64_t, int, int64_t*);
template cudaError_t mahalanobis<float>(const float*, const float*, const float*, bool, int64_t, int64_t,
                                        int64_t, int, float*, float*, cudaStream_t, bool);
template cudaError_t mahalanobis<double>(const double*, const double*, const double*, bool, int64_t, int64_t,
                                         int64_t, int, double*, double*, cudaStream_t, bool);

}  // namespace anomaly_kernels::cuda
