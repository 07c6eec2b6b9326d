// CUDA kernel of the sparse sign projection: out[i, j] = scale * sum_p signs[p] * x[i, col[p]]
// over the entries p of pattern row j.
//
// Memory plan. The input is read from DRAM once: a block stages a tile of ROWS input rows in
// shared memory (row stride S = (d + 1) | 1, odd, so that the 32 lanes of a warp, each on its
// own row, reading one column hit 32 different banks; column d is kept 0), and every warp then
// works on one output column at a time for all the tile's rows: the column indices it needs are the same for every lane
// (broadcast reads), so the index traffic is paid once per ROWS rows. Results go to a shared
// (ROWS, G) block that is written out row segment by row segment (coalesced). Blocks are
// persistent and walk row tiles with a grid stride; while a block computes a tile it asks L2
// to prefetch its next one, so staging mostly reads L2 instead of waiting for DRAM.
//
// float: ROWS = 32, one row per lane. double: ROWS = 16; a 64-bit shared access is served per
// half warp, so lanes 0-15 and 16-31 take alternate entries of the same output for the same 16
// rows (bank-conflict free within each half with an odd S) and are summed at the end.
//
// The pattern is re-packed on the device first (two small kernels, no host synchronisation):
// per output row, the valid columns as int32 byte offsets into a row, positive-sign entries
// first and then the negative-sign ones, each list starting at a multiple of 4 so that a warp
// reads 4 of them with one 16-byte broadcast, and padded to a multiple of 4 with the offset of
// a zero column that ends every staged row (no per-entry bounds test in the inner loop). Per
// output a descriptor {offset, #positive, #negative} is stored.
//
// When even ROWS rows of the input do not fit in shared memory, the same kernel gathers from
// global memory instead (slow: one cache line per lane per read, but correct).
#include "cuda/async_copy.cuh"
#include "cuda/device_limits.cuh"
#include "cuda/sparse_sign_projection.cuh"

#include <cub/block/block_scan.cuh>

namespace anomaly_kernels::cuda {
namespace {

constexpr int kThreads = 1024;            // 32 warps per block
constexpr int kWarps = kThreads / 32;
constexpr int kSliceEntries = 64;         // indices a warp stages per step (16 groups of 4)
constexpr int kSliceGroups = kSliceEntries / 4;
constexpr int kMinChunk = 16;             // fewest outputs per shared result block (staged path)
constexpr int kPackThreads = 512;

__host__ __device__ constexpr int64_t round_up4(int64_t v) { return (v + 3) & ~int64_t{3}; }

// Workspace layout in int32 words: desc (4 k) | entries (nnz + 7 k) | clamped offsets (k + 1).
// Each output owns round_up4(L) + 4 entry slots for its L stored entries, enough for both of
// its sign lists rounded up to 4.
int64_t entries_capacity(int64_t nnz, int64_t k) { return nnz + 7 * k; }

// ---------------------------------------------------------------------------------------------
// Pattern re-packing
// ---------------------------------------------------------------------------------------------

// One block. bound[i] = clamp(max(crow[0..i]), 0, nnz) for i in [0, k]; then per output j:
// desc[j] = {start of its entry slots, bound[j], bound[j+1] - bound[j], 0}.
__global__ void __launch_bounds__(kPackThreads) bound_kernel(const int64_t* __restrict__ crow,
                                                             int64_t k, int64_t nnz,
                                                             int32_t* __restrict__ bound,
                                                             int4* __restrict__ desc) {
  using MaxScan = cub::BlockScan<long long, kPackThreads>;
  using SumScan = cub::BlockScan<int, kPackThreads>;
  __shared__ union {
    typename MaxScan::TempStorage max_scan;
    typename SumScan::TempStorage sum_scan;
  } temp;
  const auto max_op = [](long long a, long long b) { return a > b ? a : b; };
  long long running_max = 0;  // offsets below 0 clamp to 0 anyway
  for (int64_t base = 0; base <= k; base += kPackThreads) {
    const int64_t i = base + threadIdx.x;
    long long v = i <= k ? static_cast<long long>(crow[i]) : 0;
    long long chunk_max;
    MaxScan(temp.max_scan).InclusiveScan(v, v, max_op, chunk_max);
    v = max_op(v, running_max);
    running_max = max_op(running_max, chunk_max);
    if (i <= k) bound[i] = static_cast<int32_t>(v < 0 ? 0 : (v > nnz ? nnz : v));
    __syncthreads();  // temp reuse; bound[] visible to the whole block
  }
  int running_sum = 0;
  for (int64_t base = 0; base < k; base += kPackThreads) {
    const int64_t j = base + threadIdx.x;
    int length = 0, slots = 0;
    if (j < k) {
      length = bound[j + 1] - bound[j];
      slots = static_cast<int>(round_up4(length)) + 4;
    }
    int start, chunk_sum;
    SumScan(temp.sum_scan).ExclusiveSum(slots, start, chunk_sum);
    if (j < k) desc[j] = make_int4(running_sum + start, bound[j], length, 0);
    running_sum += chunk_sum;
    __syncthreads();
  }
}

// One warp per output: copies its valid entries, as byte offsets (column * elem_bytes), into its
// slots, positive signs first, negative ones from the next multiple of 4, and rewrites
// desc[j] = {start, #positive, #negative, 0}. Unused slots up to the end of each list's last
// group of 4 hold column d: the zero column of a staged tile.
__global__ void __launch_bounds__(256) pack_kernel(const int64_t* __restrict__ col,
                                                   const int8_t* __restrict__ signs, int64_t k,
                                                   int64_t d, int elem_bytes,
                                                   int4* __restrict__ desc,
                                                   int32_t* __restrict__ entries) {
  const int64_t j = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (j >= k) return;  // the whole warp leaves together
  const int4 info = desc[j];
  const int start = info.x, first = info.y, length = info.z;
  const unsigned below = (1u << lane) - 1u;
  int positives = 0, negatives = 0;
  for (int q = lane; q - lane < length; q += 32) {
    bool pos = false, neg = false;
    if (q < length) {
      const int64_t c = col[first + q];
      const int s = signs[first + q];
      pos = c >= 0 && c < d && s > 0;
      neg = c >= 0 && c < d && s < 0;
    }
    positives += __popc(__ballot_sync(0xffffffffu, pos));
    negatives += __popc(__ballot_sync(0xffffffffu, neg));
  }
  const int negative_start = start + static_cast<int>(round_up4(positives));
  int pos_seen = 0, neg_seen = 0;
  for (int q = lane; q - lane < length; q += 32) {
    bool pos = false, neg = false;
    int32_t c32 = 0;
    if (q < length) {
      const int64_t c = col[first + q];
      const int s = signs[first + q];
      pos = c >= 0 && c < d && s > 0;
      neg = c >= 0 && c < d && s < 0;
      c32 = static_cast<int32_t>(c) * elem_bytes;
    }
    const unsigned pos_mask = __ballot_sync(0xffffffffu, pos);
    const unsigned neg_mask = __ballot_sync(0xffffffffu, neg);
    if (pos) entries[start + pos_seen + __popc(pos_mask & below)] = c32;
    if (neg) entries[negative_start + neg_seen + __popc(neg_mask & below)] = c32;
    pos_seen += __popc(pos_mask);
    neg_seen += __popc(neg_mask);
  }
  if (lane < 4) {
    const int32_t zero_column = static_cast<int32_t>(d) * elem_bytes;
    const int pos_pad = start + positives + lane;
    if (pos_pad < negative_start) entries[pos_pad] = zero_column;
    const int neg_pad = negative_start + negatives + lane;
    if (neg_pad < negative_start + static_cast<int>(round_up4(negatives)))
      entries[neg_pad] = zero_column;
  }
  __syncwarp();  // every lane has read desc[j] (also when length == 0 and no ballot ran)
  if (lane == 0) desc[j] = make_int4(start, positives, negatives, 0);
}

// ---------------------------------------------------------------------------------------------
// Projection
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ void prefetch_l2(const void* p) {
#if defined(__CUDA_ARCH__)
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
  (void)p;  // a hint only: host compilations of this file (tests/cuda_sim) have nothing to do
#endif
}

template <bool STAGED, typename T>
__device__ __forceinline__ T read_value(const T* row, int c) {
  if constexpr (STAGED) {
    return row[c];
  } else {
    return __ldg(row + c);
  }
}

// Adds the groups [begin, end) of one sign list (count entries from its group list_first) to
// acc. Entries are byte offsets into the row. Staged rows end with a zero column that the pad
// entries point at, so every group is summed whole; rows in global memory have no such column
// and skip the pads instead.
template <int HALVES, bool STAGED, typename T>
__device__ __forceinline__ void sum_groups(const int32_t* __restrict__ slice, int slice_first,
                                           int begin, int end, int list_first, int count,
                                           const char* row, int half, T& acc) {
  const auto at = [row](int offset) -> T {
    if constexpr (STAGED) {
      return *reinterpret_cast<const T*>(row + offset);
    } else {
      return __ldg(reinterpret_cast<const T*>(row + offset));
    }
  };
#pragma unroll 4
  for (int g = begin; g < end; ++g) {
    if constexpr (HALVES == 1) {
      // Same address in every lane: a broadcast.
      const int4 e = reinterpret_cast<const int4*>(slice)[g - slice_first];
      if constexpr (STAGED) {
        acc += (at(e.x) + at(e.y)) + (at(e.z) + at(e.w));
      } else {
        const int valid = count - 4 * (g - list_first);  // >= 1; >= 4 for full groups
        const T a = at(e.x);
        const T b = valid > 1 ? at(e.y) : T(0);
        const T c = valid > 2 ? at(e.z) : T(0);
        const T dv = valid > 3 ? at(e.w) : T(0);
        acc += (a + b) + (c + dv);
      }
    } else {
      // Lanes 0-15 take entries 0 and 1 of the group, lanes 16-31 entries 2 and 3 (two
      // addresses, still one broadcast).
      const int2 e = reinterpret_cast<const int2*>(slice)[2 * (g - slice_first) + half];
      if constexpr (STAGED) {
        acc += at(e.x) + at(e.y);
      } else {
        const int valid = count - 4 * (g - list_first) - 2 * half;
        const T a = valid > 0 ? at(e.x) : T(0);
        const T b = valid > 1 ? at(e.y) : T(0);
        acc += a + b;
      }
    }
  }
}

// Warp-wide load of slice `s` of output `info`'s entry list: lane i holds entries 2i, 2i+1.
__device__ __forceinline__ int2 load_slice(const int32_t* __restrict__ entries, int4 info, int s,
                                           int lane) {
  const int groups = static_cast<int>((round_up4(info.y) + round_up4(info.z)) / 4);
  const int offset = s * kSliceEntries + 2 * lane;
  if (offset < 4 * groups)
    return __ldg(reinterpret_cast<const int2*>(entries + info.x + offset));
  return make_int2(0, 0);
}

template <typename T, int ROWS, bool STAGED>
__global__ void __launch_bounds__(kThreads, 1)
    projection_kernel(const T* __restrict__ input, int64_t n, int d, int stride,
                      const int4* __restrict__ desc, const int32_t* __restrict__ entries, int k,
                      int chunk, int chunk_stride, T scale, T* __restrict__ out) {
  constexpr int HALVES = 32 / ROWS;
  static_assert(ROWS * HALVES == 32, "ROWS must divide 32");
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  // Layout: tile (ROWS * stride T, staged path only) | results (ROWS * chunk_stride T) |
  // one slice of kSliceEntries indices per warp (16-byte aligned).
  const int64_t tile_elems = STAGED ? static_cast<int64_t>(ROWS) * stride : 0;
  T* tile = reinterpret_cast<T*>(shared_bytes);
  T* results = tile + tile_elems;
  const size_t results_end = (tile_elems + static_cast<int64_t>(ROWS) * chunk_stride) * sizeof(T);
  int32_t* slices = reinterpret_cast<int32_t*>(shared_bytes + ((results_end + 15) & ~size_t{15}));

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row = lane % ROWS, half = lane / ROWS;
  if constexpr (STAGED) {
    // Column d of every staged row stays 0 (the pad entries read it); staging never writes it.
    // The first tile's __syncthreads publishes it.
    for (int r = threadIdx.x; r < ROWS; r += kThreads) tile[r * stride + d] = T(0);
  }
  int32_t* my_slice = slices + warp * kSliceEntries;
  const int64_t tiles = (n + ROWS - 1) / ROWS;

  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t row0 = t * ROWS;
    const int count = static_cast<int>(n - row0 < ROWS ? n - row0 : ROWS);
    const char* row_ptr;
    if constexpr (STAGED) {
      // The previous tile's last __syncthreads (after its write-out) freed the tile.
      for (int r = warp; r < count; r += kWarps) {
        const T* src = input + (row0 + r) * d;
        T* dst = tile + r * stride;
        for (int c = lane; c < d; c += 32) copy_async(dst + c, src + c);
      }
      copy_wait();
      __syncthreads();
      const int64_t next = t + gridDim.x;
      if (next < tiles) {
        const int64_t first = next * ROWS;
        const int64_t last = first + ROWS < n ? first + ROWS : n;
        const char* begin = reinterpret_cast<const char*>(input + first * d);
        const char* end = reinterpret_cast<const char*>(input + last * d);
        const char* line = reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(begin) &
                                                         ~uintptr_t{127});
        for (line += 128 * static_cast<int64_t>(threadIdx.x); line < end; line += 128 * kThreads)
          prefetch_l2(line);
      }
      // Lanes past the last row repeat it: initialised data, results never written out.
      row_ptr = reinterpret_cast<const char*>(tile + (row < count ? row : count - 1) * stride);
    } else {
      row_ptr = reinterpret_cast<const char*>(input + (row0 + (row < count ? row : count - 1)) * d);
    }

    for (int j0 = 0; j0 < k; j0 += chunk) {
      const int j1 = j0 + chunk < k ? j0 + chunk : k;
      // Each warp walks outputs j0 + warp, j0 + warp + kWarps, ..., one slice of at most
      // kSliceEntries indices per step, and loads the next step's indices (and the descriptor
      // of the output after) while it computes the current one.
      int j = j0 + warp, s = 0;
      int4 info = j < j1 ? __ldg(desc + j) : make_int4(0, 0, 0, 0);
      int4 info_next = j + kWarps < j1 ? __ldg(desc + j + kWarps) : make_int4(0, 0, 0, 0);
      int2 staged = j < j1 ? load_slice(entries, info, 0, lane) : make_int2(0, 0);
      T pos = 0, neg = 0;
      while (j < j1) {  // warp-uniform
        __syncwarp();
        reinterpret_cast<int2*>(my_slice)[lane] = staged;
        __syncwarp();
        const int pos_groups = static_cast<int>(round_up4(info.y) / 4);
        const int groups = pos_groups + static_cast<int>(round_up4(info.z) / 4);
        const int slices_of_j = groups > 0 ? (groups + kSliceGroups - 1) / kSliceGroups : 1;
        int j_after = j, s_after = s + 1;
        int4 info_after = info;
        if (s_after == slices_of_j) {
          j_after = j + kWarps;
          s_after = 0;
          info_after = info_next;
          if (j_after + kWarps < j1) info_next = __ldg(desc + j_after + kWarps);
        }
        if (j_after < j1) staged = load_slice(entries, info_after, s_after, lane);

        const int g_begin = s * kSliceGroups;
        const int g_end = g_begin + kSliceGroups < groups ? g_begin + kSliceGroups : groups;
        sum_groups<HALVES, STAGED, T>(my_slice, g_begin, g_begin,
                                   g_end < pos_groups ? g_end : pos_groups, 0, info.y, row_ptr,
                                   half, pos);
        sum_groups<HALVES, STAGED, T>(my_slice, g_begin, g_begin > pos_groups ? g_begin : pos_groups,
                                   g_end, pos_groups, info.z, row_ptr, half, neg);
        if (s_after == 0) {  // output j is complete
          T total = pos - neg;
          if constexpr (HALVES == 2) total += __shfl_xor_sync(0xffffffffu, total, 16);
          if (half == 0) results[row * chunk_stride + (j - j0)] = scale * total;
          pos = 0;
          neg = 0;
        }
        j = j_after;
        s = s_after;
        info = info_after;
      }
      __syncthreads();
      const int width = j1 - j0;
      for (int r = warp; r < count; r += kWarps) {
        T* dst = out + (row0 + r) * k + j0;
        const T* src = results + r * chunk_stride;
        for (int c = lane; c < width; c += 32) dst[c] = src[c];
      }
      __syncthreads();
    }
  }
}

template <typename T, int ROWS, bool STAGED>
cudaError_t launch_projection(const T* input, int64_t n, int d, int stride, const int4* desc,
                              const int32_t* entries, int k, int chunk, T scale, T* out,
                              size_t shared, int device, const DeviceLimits& limits, cudaStream_t stream) {
  const auto kernel = projection_kernel<T, ROWS, STAGED>;
  // Opted in once per device to all the shared memory a block may have: setting this call's
  // size at every call would race with another thread's launch of the same kernel.
  cudaError_t err = allow_shared_memory<projection_kernel<T, ROWS, STAGED>>(device, limits.smem_optin, true);
  if (err != cudaSuccess) return err;
  int per_sm = 0;
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, shared);
  if (err != cudaSuccess) return err;
  if (per_sm < 1) per_sm = 1;
  const int64_t tiles = (n + ROWS - 1) / ROWS;
  const int64_t resident = static_cast<int64_t>(limits.sms) * per_sm;
  const unsigned blocks = static_cast<unsigned>(tiles < resident ? tiles : resident);
  kernel<<<blocks, kThreads, shared, stream>>>(input, n, d, stride, desc, entries, k, chunk,
                                               chunk | 1, scale, out);
  return cudaGetLastError();
}

// Shared bytes of a block with a tile of `tile_elems` values and a result block of `chunk`
// outputs.
template <typename T>
size_t shared_bytes_for(int rows, int64_t tile_elems, int64_t chunk) {
  const size_t results_end = (tile_elems + static_cast<int64_t>(rows) * (chunk | 1)) * sizeof(T);
  return ((results_end + 15) & ~size_t{15}) + static_cast<size_t>(kWarps) * kSliceEntries * 4;
}

}  // namespace

int64_t sparse_sign_projection_workspace_words(int64_t nnz, int64_t k) {
  const int64_t words = 4 * k + entries_capacity(nnz, k) + k + 1;
  return words < (int64_t{1} << 31) - 16 ? words : -1;
}

template <typename T>
cudaError_t sparse_sign_projection(const T* input, int64_t n, int64_t d, const int64_t* crow,
                                   const int64_t* col, const int8_t* signs, int64_t nnz, int64_t k,
                                   T scale, T* out, int32_t* workspace, cudaStream_t stream) {
  if (n == 0 || k == 0) return cudaSuccess;
  // No input columns: every output is an empty sum.
  if (d == 0) return cudaMemsetAsync(out, 0, static_cast<size_t>(n * k) * sizeof(T), stream);
  // Entries are int32 byte offsets into a row, up to the zero column at d.
  if ((d + 2) * static_cast<int64_t>(sizeof(T)) >= (int64_t{1} << 31) ||
      sparse_sign_projection_workspace_words(nnz, k) < 0)
    return cudaErrorInvalidValue;

  int4* desc = reinterpret_cast<int4*>(workspace);
  int32_t* entries = workspace + 4 * k;
  int32_t* bound = entries + entries_capacity(nnz, k);
  bound_kernel<<<1, kPackThreads, 0, stream>>>(crow, k, nnz, bound, desc);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t pack_blocks = (k * 32 + 255) / 256;
  pack_kernel<<<static_cast<unsigned>(pack_blocks), 256, 0, stream>>>(
      col, signs, k, d, static_cast<int>(sizeof(T)), desc, entries);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  int device = 0;
  DeviceLimits limits;
  if ((err = current_device_limits(&device, &limits)) != cudaSuccess) return err;

  constexpr int rows = sizeof(T) == 4 ? 32 : 16;
  // Odd, so a warp's rows fall in distinct banks; at least d + 1 for the zero column.
  const int64_t stride = (d + 1) | 1;
  const int64_t tile_elems = rows * stride;
  const size_t budget = static_cast<size_t>(limits.smem_optin);
  // Largest result block that fits next to `tile`, spread evenly over the chunks it needs.
  const auto pick_chunk = [&](int64_t tile) -> int64_t {
    if (shared_bytes_for<T>(rows, tile, k) <= budget) return k;
    int64_t lo = 1, hi = k;  // largest chunk that fits
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (shared_bytes_for<T>(rows, tile, mid) <= budget) lo = mid; else hi = mid - 1;
    }
    if (shared_bytes_for<T>(rows, tile, lo) > budget) return 0;
    const int64_t chunks = (k + lo - 1) / lo;
    return (k + chunks - 1) / chunks;
  };
  const int64_t staged_chunk = pick_chunk(tile_elems);
  if (staged_chunk >= kMinChunk || staged_chunk == k) {
    const size_t shared = shared_bytes_for<T>(rows, tile_elems, staged_chunk);
    return launch_projection<T, rows, true>(input, n, static_cast<int>(d), static_cast<int>(stride),
                                            desc, entries, static_cast<int>(k),
                                            static_cast<int>(staged_chunk), scale, out, shared, device,
                                            limits, stream);
  }
  const int64_t chunk = pick_chunk(0);
  if (chunk < 1) return cudaErrorInvalidConfiguration;
  const size_t shared = shared_bytes_for<T>(rows, 0, chunk);
  return launch_projection<T, rows, false>(input, n, static_cast<int>(d), static_cast<int>(stride),
                                           desc, entries, static_cast<int>(k),
                                           static_cast<int>(chunk), scale, out, shared, device, limits,
                                           stream);
}

template cudaError_t sparse_sign_projection<float>(const float*, int64_t, int64_t, const int64_t*,
                                                   const int64_t*, const int8_t*, int64_t, int64_t,
                                                   float, float*, int32_t*, cudaStream_t);
template cudaError_t sparse_sign_projection<double>(const double*, int64_t, int64_t,
                                                    const int64_t*, const int64_t*, const int8_t*,
                                                    int64_t, int64_t, double, double*, int32_t*,
                                                    cudaStream_t);

}  // namespace anomaly_kernels::cuda
