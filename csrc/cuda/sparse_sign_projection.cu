// CUDA kernel of the sparse sign projection: out[i, j] = scale * sum_p signs[p] * x[i, col[p]]
// over the entries p of pattern row j.
//
// Memory plan. The input is read from DRAM once (once per output chunk, see below). A block
// owns a tile of ROWS input rows at a time and walks it in slabs of `width` columns: while it
// sums the outputs over one slab, the next slab (of this tile, or of its next tile) is already
// being copied into the other of two shared buffers (cp.async), so staging and arithmetic
// overlap even with one 1024-thread block per multiprocessor. A staged row has the odd stride
// S = (width + 1) | 1, so that the 32 lanes of a warp, each on its own row, reading one column
// hit 32 different banks; column `width` of every buffer row is kept 0. Each warp works on one
// output at a time for all the tile's rows: the column offsets it needs are the same for every
// lane (broadcast reads). Per-slab sums go to a shared (ROWS, chunk) result block, accumulated
// over the slabs and written out row segment by row segment (coalesced) after the last one. When
// the results of all k outputs do not fit next to the two buffers, the outputs are taken in
// chunks and each chunk stages the tile again.
//
// The re-packed pattern (below) is copied into shared memory once per block when it fits beside
// the buffers (PatchCore's 303 x 1536 pattern takes ~70 KB: slabs of 384 columns leave room for
// it), so that the only per-tile traffic is the input and the output; otherwise it is read from
// global memory (L2) at every tile.
//
// float: ROWS = 32, one row per lane. double: ROWS = 16; a 64-bit shared access is served per
// half warp, so lanes 0-15 and 16-31 take alternate entries of the same output for the same 16
// rows (bank-conflict free within each half with an odd S) and are summed at the end.
//
// The pattern is re-packed on the device first (four small kernels, no host synchronisation):
// per output row and slab, the valid columns as int32 byte offsets into the slab, positive-sign
// entries first and then the negative-sign ones, each list starting at a multiple of 4 so that a
// warp reads 4 of them with one 16-byte broadcast, and padded to a multiple of 4 with the offset
// of the zero column that ends every staged row (no per-entry bounds test in the inner loop).
// The lists of all outputs are stored back to back; per output and slab a descriptor {first
// entry, #positive groups | #groups << 16} is stored. Slabs are at most 65535 columns wide, so a
// pattern without repeated columns never has more entries per list than 16 bits count; a list
// with more (repeats) keeps its first 65535 entries.
#include <type_traits>

#include "cuda/async_copy.cuh"
#include "cuda/device_limits.cuh"
#include "cuda/sparse_sign_projection.cuh"

#include <cub/block/block_scan.cuh>

namespace anomaly_kernels::cuda {
namespace {

constexpr int kThreads = 1024;            // 32 warps per block
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMinSlabWidth = 256;    // narrower slabs only where the shared memory is small
constexpr int64_t kMaxSlabWidth = 65535;  // a list's entry count fits 16 bits
constexpr int kMaxListEntries = 65535;
constexpr int64_t kMinChunk = 32;         // fewest outputs per result block worth chunking for
constexpr int64_t kMaxPlannedSlabs = 1024;  // slab counts the planner tries for a shared pattern
constexpr int kPackThreads = 512;

__host__ __device__ constexpr int64_t round_up4(int64_t v) { return (v + 3) & ~int64_t{3}; }

// Workspace in int32 words, every part 16-byte aligned:
//   descriptors: k * slabs int2 {first entry, #positive groups | #groups << 16} (the pack
//                kernels pass entry counts {0, #positive | #negative << 16} through it first)
//   entries:     the lists, back to back; each (output, slab) pair pads its two lists by at
//                most 3 entries each, so nnz + 6 k slabs bound them (+ 4: the shared copy reads
//                whole 16-byte words)
//   bound:       k + 1 clamped row offsets
//   starts:      k first entries of each output's lists, then their total
__host__ __device__ constexpr int64_t max_entries(int64_t nnz, int64_t k, int64_t slabs) {
  return round_up4(nnz + 6 * k * slabs);
}
struct Workspace {
  int64_t desc_words, entry_words, bound_words, start_words;
  Workspace(int64_t nnz, int64_t k, int64_t slabs)
      : desc_words(round_up4(2 * k * slabs)),
        entry_words(max_entries(nnz, k, slabs) + 4),
        bound_words(round_up4(k + 1)),
        start_words(round_up4(k + 1)) {}
  int64_t total() const { return desc_words + entry_words + bound_words + start_words; }
};

// Shared bytes of the pattern when copied into shared memory: its descriptors and at most
// nnz + 6 k slabs entries.
int64_t pattern_bytes(int64_t nnz, int64_t k, int64_t slabs) {
  return 4 * (Workspace(nnz, k, slabs).desc_words + max_entries(nnz, k, slabs));
}

// ---------------------------------------------------------------------------------------------
// Pattern re-packing
// ---------------------------------------------------------------------------------------------

// One block. bound[i] = clamp(max(crow[0..i]), 0, nnz) for i in [0, k].
__global__ void __launch_bounds__(kPackThreads) bound_kernel(const int64_t* __restrict__ crow,
                                                             int64_t k, int64_t nnz,
                                                             int32_t* __restrict__ bound) {
  using MaxScan = cub::BlockScan<long long, kPackThreads>;
  __shared__ typename MaxScan::TempStorage temp;
  const auto max_op = [](long long a, long long b) { return a > b ? a : b; };
  long long running_max = 0;  // offsets below 0 clamp to 0 anyway
  for (int64_t base = 0; base <= k; base += kPackThreads) {
    const int64_t i = base + threadIdx.x;
    long long v = i <= k ? static_cast<long long>(crow[i]) : 0;
    long long chunk_max;
    MaxScan(temp).InclusiveScan(v, v, max_op, chunk_max);
    v = max_op(v, running_max);
    running_max = max_op(running_max, chunk_max);
    if (i <= k) bound[i] = static_cast<int32_t>(v < 0 ? 0 : (v > nnz ? nnz : v));
    __syncthreads();  // temp reuse
  }
}

// Visits the entries of output j (one warp, lanes on consecutive entries) that belong to slab
// [lo, hi) with a non-zero sign: f(is_positive_mask, is_negative_mask, lane_positive,
// lane_negative, lane_offset) once per round of 32 entries, with the lane's byte offset into
// the slab.
template <typename F>
__device__ __forceinline__ void for_slab_entries(const int64_t* __restrict__ col,
                                                 const int8_t* __restrict__ signs, int first,
                                                 int length, int64_t lo, int64_t hi,
                                                 int elem_bytes, F f) {
  const int lane = threadIdx.x % 32;
  for (int q = lane; q - lane < length; q += 32) {
    bool pos = false, neg = false;
    int32_t offset = 0;
    if (q < length) {
      const int64_t c = col[first + q];
      const int sign = signs[first + q];
      const bool inside = c >= lo && c < hi;
      pos = inside && sign > 0;
      neg = inside && sign < 0;
      offset = inside ? static_cast<int32_t>(c - lo) * elem_bytes : 0;
    }
    f(__ballot_sync(0xffffffffu, pos), __ballot_sync(0xffffffffu, neg), pos, neg, offset);
  }
}

// One warp per output j: the entry counts of its lists in every slab (at most kMaxListEntries
// each) into desc[j * slabs + s].y, and the entries its lists take, padded, into starts[j].
__global__ void __launch_bounds__(256) count_kernel(const int64_t* __restrict__ col,
                                                    const int8_t* __restrict__ signs,
                                                    const int32_t* __restrict__ bound, int64_t k,
                                                    int64_t d, int width, int slabs,
                                                    int2* __restrict__ desc,
                                                    int32_t* __restrict__ starts) {
  const int64_t j = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (j >= k) return;  // the whole warp leaves together
  const int first = bound[j], length = bound[j + 1] - bound[j];
  int used = 0;
  for (int s = 0; s < slabs; ++s) {
    const int64_t lo = static_cast<int64_t>(s) * width;
    const int64_t hi = lo + width < d ? lo + width : d;
    int positives = 0, negatives = 0;
    for_slab_entries(col, signs, first, length, lo, hi, 1,
                     [&](unsigned pos_mask, unsigned neg_mask, bool, bool, int32_t) {
                       positives += __popc(pos_mask);
                       negatives += __popc(neg_mask);
                     });
    positives = positives < kMaxListEntries ? positives : kMaxListEntries;
    negatives = negatives < kMaxListEntries ? negatives : kMaxListEntries;
    used += static_cast<int>(round_up4(positives) + round_up4(negatives));
    if (threadIdx.x % 32 == 0)
      desc[j * slabs + s] = make_int2(0, static_cast<int>(static_cast<unsigned>(positives) |
                                                          (static_cast<unsigned>(negatives) << 16)));
  }
  if (threadIdx.x % 32 == 0) starts[j] = used;
}

// One block: starts[j] = sum of the entries of the outputs before j; starts[k] = all of them.
__global__ void __launch_bounds__(kPackThreads) start_kernel(int64_t k,
                                                             int32_t* __restrict__ starts) {
  using SumScan = cub::BlockScan<int, kPackThreads>;
  __shared__ typename SumScan::TempStorage temp;
  int running_sum = 0;
  for (int64_t base = 0; base < k; base += kPackThreads) {
    const int64_t j = base + threadIdx.x;
    const int used = j < k ? starts[j] : 0;
    int start, chunk_sum;
    SumScan(temp).ExclusiveSum(used, start, chunk_sum);
    if (j < k) starts[j] = running_sum + start;
    running_sum += chunk_sum;
    __syncthreads();  // temp reuse
  }
  if (threadIdx.x == 0) starts[k] = running_sum;
}

// One warp per output j: writes its lists slab by slab from starts[j] on (positive offsets,
// then negative ones from the next multiple of 4, each padded with the zero column `width`) and
// the first entry of each into desc[j * slabs + s].x.
__global__ void __launch_bounds__(256) write_kernel(const int64_t* __restrict__ col,
                                                    const int8_t* __restrict__ signs,
                                                    const int32_t* __restrict__ bound,
                                                    const int32_t* __restrict__ starts, int64_t k,
                                                    int64_t d, int width, int slabs,
                                                    int elem_bytes, int2* __restrict__ desc,
                                                    int32_t* __restrict__ entries) {
  const int64_t j = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (j >= k) return;  // the whole warp leaves together
  const int first = bound[j], length = bound[j + 1] - bound[j];
  const unsigned below = (1u << lane) - 1u;
  const int32_t zero_column = width * elem_bytes;
  int cursor = starts[j];
  for (int s = 0; s < slabs; ++s) {
    const int64_t lo = static_cast<int64_t>(s) * width;
    const int64_t hi = lo + width < d ? lo + width : d;
    const unsigned counts = static_cast<unsigned>(desc[j * slabs + s].y);
    const int positives = static_cast<int>(counts & 0xffffu), negatives = static_cast<int>(counts >> 16);
    const int negative_start = cursor + static_cast<int>(round_up4(positives));
    const int next_cursor = negative_start + static_cast<int>(round_up4(negatives));
    int pos_seen = 0, neg_seen = 0;
    for_slab_entries(col, signs, first, length, lo, hi, elem_bytes,
                     [&](unsigned pos_mask, unsigned neg_mask, bool pos, bool neg, int32_t offset) {
                       const int pos_rank = pos_seen + __popc(pos_mask & below);
                       const int neg_rank = neg_seen + __popc(neg_mask & below);
                       if (pos && pos_rank < positives) entries[cursor + pos_rank] = offset;
                       if (neg && neg_rank < negatives) entries[negative_start + neg_rank] = offset;
                       pos_seen += __popc(pos_mask);
                       neg_seen += __popc(neg_mask);
                     });
    if (lane < 4) {
      const int pos_pad = cursor + positives + lane;
      if (pos_pad < negative_start) entries[pos_pad] = zero_column;
      const int neg_pad = negative_start + negatives + lane;
      if (neg_pad < next_cursor) entries[neg_pad] = zero_column;
    }
    __syncwarp();  // every lane has read the counts
    if (lane == 0) {
      const int positive_groups = static_cast<int>(round_up4(positives) / 4);
      const int groups = positive_groups + static_cast<int>(round_up4(negatives) / 4);
      desc[j * slabs + s] = make_int2(cursor, positive_groups | (groups << 16));
    }
    cursor = next_cursor;
  }
}

// ---------------------------------------------------------------------------------------------
// Projection
// ---------------------------------------------------------------------------------------------

// Adds the groups [begin, end) of a list to acc. Entries are byte offsets into the staged slab
// row, whose zero column the pad entries point at, so every group is summed whole. Lists are
// short (about 2 groups at PatchCore's density and slab width): a plain loop, since an unrolled
// one spends more on its setup and remainder than it saves.
template <int HALVES, bool SHARED_PATTERN, typename T>
__device__ __forceinline__ void sum_groups(const int32_t* __restrict__ list, int begin, int end,
                                           const char* row, int half, T& acc) {
  // HALVES 1: the whole group of 4, the same address in every lane (a broadcast). HALVES 2:
  // lanes 0-15 take entries 0 and 1 of the group, lanes 16-31 entries 2 and 3 (two addresses,
  // still one broadcast).
  using Entries = std::conditional_t<HALVES == 1, int4, int2>;
  const auto load = [&](int g) -> Entries {
    const Entries* p = reinterpret_cast<const Entries*>(list) + (HALVES == 1 ? g : 2 * g + half);
    if constexpr (SHARED_PATTERN) {
      return *p;
    } else {
      return __ldg(p);
    }
  };
  const auto at = [row](int offset) -> T { return *reinterpret_cast<const T*>(row + offset); };
  const auto add = [&](Entries e) {
    if constexpr (HALVES == 1) {
      acc += (at(e.x) + at(e.y)) + (at(e.z) + at(e.w));
    } else {
      acc += at(e.x) + at(e.y);
    }
  };
  if constexpr (SHARED_PATTERN) {
#pragma unroll 1
    for (int g = begin; g < end; ++g) add(load(g));
  } else if (begin < end) {
    // From L2: the next group's entries are requested before this group's sums wait on them.
    Entries e = load(begin);
#pragma unroll 1
    for (int g = begin + 1; g < end; ++g) {
      const Entries next = load(g);
      add(e);
      e = next;
    }
    add(e);
  }
}

// One unit of a block's work: the slab `slab` of row tile `tile` for the output chunk `chunk`.
struct Step {
  int64_t tile;
  int chunk, slab;
};

// The step after `s` in a block's walk: slabs, then chunks, then the block's next tile.
__device__ __forceinline__ Step next_step(Step s, int chunks, int slabs) {
  if (s.slab + 1 < slabs) return {s.tile, s.chunk, s.slab + 1};
  if (s.chunk + 1 < chunks) return {s.tile, s.chunk + 1, 0};
  return {s.tile + gridDim.x, 0, 0};
}

// Starts copying slab `slab` of the rows [row0, row0 + count) into `buffer` (stride `stride`).
template <typename T>
__device__ __forceinline__ void stage_slab(const T* __restrict__ input, int64_t row0, int count,
                                           int d, int width, int slab, int stride, T* buffer) {
  const int lo = slab * width;  // < d: the launcher checks that no slab starts past the row
  const int w = d - lo < width ? d - lo : width;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < count; r += kWarps) {
    const T* src = input + (row0 + r) * d + lo;
    T* dst = buffer + r * stride;
    for (int c = lane; c < w; c += 32) copy_async(dst + c, src + c);
  }
}

// Sums the outputs [j0, j1) over the staged slab `slab` into results (ROWS, chunk_stride): slab 0
// stores, later slabs add. Warp w takes outputs j0 + w, j0 + w + kWarps, ...
template <typename T, int ROWS, bool SHARED_PATTERN>
__device__ __forceinline__ void sum_slab(const int2* __restrict__ desc,
                                         const int32_t* __restrict__ entries, int slabs, int slab,
                                         int j0, int j1, const char* row_ptr, T* results,
                                         int chunk_stride) {
  constexpr int HALVES = 32 / ROWS;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row = lane % ROWS, half = lane / ROWS;
  for (int j = j0 + warp; j < j1; j += kWarps) {  // warp-uniform
    const int2* p = desc + static_cast<int64_t>(j) * slabs + slab;
    const int2 info = SHARED_PATTERN ? *p : __ldg(p);
    const int pos_groups = info.y & 0xffff, groups = info.y >> 16;
    const int32_t* list = entries + info.x;
    T pos = 0, neg = 0;
    sum_groups<HALVES, SHARED_PATTERN, T>(list, 0, pos_groups, row_ptr, half, pos);
    sum_groups<HALVES, SHARED_PATTERN, T>(list, pos_groups, groups, row_ptr, half, neg);
    T total = pos - neg;
    if constexpr (HALVES == 2) total += __shfl_xor_sync(0xffffffffu, total, 16);
    if (half == 0) {
      T& r = results[row * chunk_stride + (j - j0)];
      r = slab == 0 ? total : r + total;
    }
  }
}

template <typename T, int ROWS, bool SHARED_PATTERN>
__global__ void __launch_bounds__(kThreads, 1)
    projection_kernel(const T* __restrict__ input, int64_t n, int d, int width, int slabs,
                      int stride, const int2* __restrict__ desc,
                      const int32_t* __restrict__ entries, const int32_t* __restrict__ entry_count,
                      int k, int chunk, int chunk_stride, T scale, T* __restrict__ out) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  // Layout: two slab buffers (ROWS * stride T each) | results (ROWS * chunk_stride T) | with
  // SHARED_PATTERN, the descriptors and the entries (16-byte aligned).
  const int64_t buffer_elems = static_cast<int64_t>(ROWS) * stride;
  T* buffers = reinterpret_cast<T*>(shared_bytes);
  T* results = buffers + 2 * buffer_elems;
  const int2* pattern_desc = desc;
  const int32_t* pattern_entries = entries;
  if constexpr (SHARED_PATTERN) {
    const size_t results_end = (2 * buffer_elems + static_cast<int64_t>(ROWS) * chunk_stride) * sizeof(T);
    int32_t* shared_desc = reinterpret_cast<int32_t*>(shared_bytes + ((results_end + 15) & ~size_t{15}));
    const int64_t desc_words = round_up4(2 * static_cast<int64_t>(k) * slabs);
    int32_t* shared_entries = shared_desc + desc_words;
    // Entries in whole 16-byte words (every list is a multiple of 4 entries, 16-byte aligned);
    // visible after the first step's __syncthreads.
    const int64_t entry_words = round_up4(*entry_count);
    for (int64_t i = threadIdx.x; i < static_cast<int64_t>(k) * slabs; i += kThreads)
      reinterpret_cast<int2*>(shared_desc)[i] = __ldg(desc + i);
    for (int64_t i = threadIdx.x; i < entry_words / 4; i += kThreads)
      reinterpret_cast<int4*>(shared_entries)[i] = __ldg(reinterpret_cast<const int4*>(entries) + i);
    pattern_desc = reinterpret_cast<const int2*>(shared_desc);
    pattern_entries = shared_entries;
  }
  const int row = (threadIdx.x % 32) % ROWS;

  // Column `width` of every buffer row stays 0 (the pad entries read it); staging never writes
  // it. The first step's __syncthreads publishes it.
  for (int r = threadIdx.x; r < 2 * ROWS; r += kThreads) buffers[r * stride + width] = T(0);

  const int64_t tiles = (n + ROWS - 1) / ROWS;
  const int chunks = (k + chunk - 1) / chunk;
  const auto rows_of = [&](int64_t tile) {
    const int64_t left = n - tile * ROWS;
    return static_cast<int>(left < ROWS ? left : ROWS);
  };
  Step step{blockIdx.x, 0, 0};  // the grid has at most `tiles` blocks
  stage_slab(input, step.tile * ROWS, rows_of(step.tile), d, width, 0, stride, buffers);
  for (int b = 0;; b ^= 1) {
    // This step's slab has landed and is visible to the block; every thread is done with the
    // previous step, so the other buffer and the result block are free.
    copy_wait();
    __syncthreads();
    const Step next = next_step(step, chunks, slabs);
    const bool more = next.tile < tiles;  // block-uniform
    if (more)
      stage_slab(input, next.tile * ROWS, rows_of(next.tile), d, width, next.slab, stride,
                 buffers + (b ^ 1) * buffer_elems);

    const int count = rows_of(step.tile);
    // Lanes past the last row repeat it: staged data, results never written out.
    const T* my_row = buffers + b * buffer_elems + (row < count ? row : count - 1) * stride;
    const int j0 = step.chunk * chunk;
    const int j1 = j0 + chunk < k ? j0 + chunk : k;
    sum_slab<T, ROWS, SHARED_PATTERN>(pattern_desc, pattern_entries, slabs, step.slab, j0, j1,
                                      reinterpret_cast<const char*>(my_row), results,
                                      chunk_stride);
    if (step.slab == slabs - 1) {  // the chunk's outputs are complete for the tile
      __syncthreads();
      const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
      for (int r = warp; r < count; r += kWarps) {
        T* dst = out + (step.tile * ROWS + r) * k + j0;
        const T* src = results + r * chunk_stride;
        for (int c = lane; c < j1 - j0; c += 32) dst[c] = scale * src[c];
      }
    }
    if (!more) break;
    step = next;
  }
}

// Shared bytes of a block with slabs of `width` columns, a result block of `chunk` outputs and
// `pattern` bytes of re-packed pattern (0: read from global memory).
size_t shared_bytes_for(int rows, int64_t elem_bytes, int64_t width, int64_t chunk, int64_t pattern) {
  const int64_t buffers = 2 * rows * ((width + 1) | 1);
  const int64_t results_end = (buffers + rows * (chunk | 1)) * elem_bytes;
  return static_cast<size_t>(((results_end + 15) & ~int64_t{15}) + pattern);
}

// Largest v in [1, hi] with fits(v), or 0 if none (fits is monotone: true up to some v).
template <typename Fits>
int64_t largest_fitting(int64_t hi, Fits fits) {
  if (hi < 1 || !fits(1)) return 0;
  int64_t lo = 1;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (fits(mid)) lo = mid; else hi = mid - 1;
  }
  return lo;
}

template <typename T, int ROWS, bool SHARED_PATTERN>
cudaError_t launch_projection(const T* input, int64_t n, int64_t d, const int2* desc,
                              const int32_t* entries, const int32_t* entry_count, int64_t nnz,
                              int64_t k, const ProjectionPlan& plan, T scale, T* out, int device,
                              const DeviceLimits& limits, cudaStream_t stream) {
  const auto kernel = projection_kernel<T, ROWS, SHARED_PATTERN>;
  // Opted in once per device to all the shared memory a block may have: setting this call's
  // size at every call would race with another thread's launch of the same kernel.
  cudaError_t err = allow_shared_memory<projection_kernel<T, ROWS, SHARED_PATTERN>>(device, limits.smem_optin, true);
  if (err != cudaSuccess) return err;
  const size_t shared = shared_bytes_for(ROWS, sizeof(T), plan.width, plan.chunk,
                                         SHARED_PATTERN ? pattern_bytes(nnz, k, plan.slabs) : 0);
  if (shared > static_cast<size_t>(limits.smem_optin)) return cudaErrorInvalidConfiguration;
  int per_sm = 0;
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, shared);
  if (err != cudaSuccess) return err;
  if (per_sm < 1) per_sm = 1;
  const int64_t tiles = (n + ROWS - 1) / ROWS;
  const int64_t resident = static_cast<int64_t>(limits.sms) * per_sm;
  const unsigned blocks = static_cast<unsigned>(tiles < resident ? tiles : resident);
  const int stride = static_cast<int>((plan.width + 1) | 1);
  kernel<<<blocks, kThreads, shared, stream>>>(
      input, n, static_cast<int>(d), static_cast<int>(plan.width), static_cast<int>(plan.slabs),
      stride, desc, entries, entry_count, static_cast<int>(k), static_cast<int>(plan.chunk),
      static_cast<int>(plan.chunk | 1), scale, out);
  return cudaGetLastError();
}

template <typename T, int ROWS>
cudaError_t launch_projection(const T* input, int64_t n, int64_t d, const int2* desc,
                              const int32_t* entries, const int32_t* entry_count, int64_t nnz,
                              int64_t k, const ProjectionPlan& plan, T scale, T* out, int device,
                              const DeviceLimits& limits, cudaStream_t stream) {
  if (plan.pattern_shared)
    return launch_projection<T, ROWS, true>(input, n, d, desc, entries, entry_count, nnz, k, plan,
                                            scale, out, device, limits, stream);
  return launch_projection<T, ROWS, false>(input, n, d, desc, entries, entry_count, nnz, k, plan,
                                           scale, out, device, limits, stream);
}

}  // namespace

cudaError_t sparse_sign_projection_plan(int64_t d, int64_t k, int64_t nnz, int elem_bytes,
                                        int64_t slab_width, ProjectionPlan* plan) {
  int device = 0;
  DeviceLimits limits;
  cudaError_t err = current_device_limits(&device, &limits);
  if (err != cudaSuccess) return err;
  const int rows = elem_bytes == 4 ? 32 : 16;
  const size_t budget = static_cast<size_t>(limits.smem_optin);
  const int64_t columns = d > 0 ? d : 1;
  const int64_t outputs = k > 0 ? k : 1;
  const int64_t widest_slab = columns < kMaxSlabWidth ? columns : kMaxSlabWidth;
  const auto slabs_of = [&](int64_t width) { return (columns + width - 1) / width; };
  const auto fits = [&](int64_t width, int64_t chunk, bool pattern_shared) {
    const int64_t pattern = pattern_shared ? pattern_bytes(nnz, outputs, slabs_of(width)) : 0;
    return shared_bytes_for(rows, elem_bytes, width, chunk, pattern) <= budget;
  };
  const auto largest_chunk = [&](int64_t width, bool pattern_shared) {
    return largest_fitting(outputs, [&](int64_t c) { return fits(width, c, pattern_shared); });
  };
  // For a slab width: every output in one result block with the pattern in shared memory, or
  // in global memory, or chunks of outputs (the tile staged once per chunk). Fails (false) when
  // not even one output fits beside the slabs.
  const auto plan_for_width = [&](int64_t width) {
    int64_t chunk = outputs;
    bool pattern_shared = fits(width, outputs, true);
    if (!pattern_shared && !fits(width, outputs, false)) chunk = largest_chunk(width, false);
    if (chunk < 1) return false;
    const int64_t chunks = (outputs + chunk - 1) / chunk;
    plan->width = width;
    plan->slabs = slabs_of(width);
    plan->chunk = (outputs + chunks - 1) / chunks;  // even chunks: never a sliver of a last one
    plan->pattern_shared = pattern_shared;
    return true;
  };

  // Forced: as given (the last slab may be narrower).
  if (slab_width > 0 && plan_for_width(slab_width < widest_slab ? slab_width : widest_slab))
    return cudaSuccess;
  // 1. Every output in one result block and the pattern in shared memory, in as few (even)
  //    slabs of at least kMinSlabWidth columns (or the whole row) as that allows.
  const int64_t wanted = columns < kMinSlabWidth ? columns : kMinSlabWidth;
  for (int64_t slabs = slabs_of(widest_slab); slabs <= kMaxPlannedSlabs; ++slabs) {
    const int64_t width = (columns + slabs - 1) / slabs;
    if (width < wanted) break;
    if (fits(width, outputs, true) && plan_for_width(width)) return cudaSuccess;
  }
  // 2. The pattern in global memory: all outputs in one result block next to slabs of at least
  //    kMinSlabWidth columns; otherwise chunks of at least kMinChunk outputs next to slabs of
  //    that width (narrow slabs would mostly sum the zero column: each output's lists are padded
  //    to 4 per slab); failing both, the widest slab next to one output.
  const auto widest = [&](int64_t chunk) {
    return largest_fitting(widest_slab, [&](int64_t w) { return fits(w, chunk, false); });
  };
  int64_t width = widest(outputs);
  if (width < wanted) {
    const int64_t chunk_at_wanted = largest_chunk(wanted, false);
    if (chunk_at_wanted >= kMinChunk || (width == 0 && chunk_at_wanted > 0)) {
      width = wanted;
    } else if (width == 0) {
      width = widest(1);
    }
  }
  if (width < 1) return cudaErrorInvalidConfiguration;  // not even one column of one output fits
  width = (columns + slabs_of(width) - 1) / slabs_of(width);  // even slabs
  return plan_for_width(width) ? cudaSuccess : cudaErrorInvalidConfiguration;
}

int64_t sparse_sign_projection_workspace_words(int64_t nnz, int64_t k, int64_t slabs) {
  const int64_t words = Workspace(nnz, k, slabs).total();
  return words < (int64_t{1} << 31) - 16 ? words : -1;
}

template <typename T>
cudaError_t sparse_sign_projection(const T* input, int64_t n, int64_t d, const int64_t* crow,
                                   const int64_t* col, const int8_t* signs, int64_t nnz, int64_t k,
                                   T scale, T* out, const ProjectionPlan& plan, int32_t* workspace,
                                   cudaStream_t stream) {
  if (n == 0 || k == 0) return cudaSuccess;
  // No input columns: every output is an empty sum.
  if (d == 0) return cudaMemsetAsync(out, 0, static_cast<size_t>(n * k) * sizeof(T), stream);
  if (d >= (int64_t{1} << 31) - 2 || plan.width < 1 || plan.width > kMaxSlabWidth ||
      plan.slabs * plan.width < d || (plan.slabs - 1) * plan.width >= d || plan.chunk < 1 ||
      sparse_sign_projection_workspace_words(nnz, k, plan.slabs) < 0)
    return cudaErrorInvalidValue;

  const int slabs = static_cast<int>(plan.slabs);
  const Workspace layout(nnz, k, plan.slabs);
  int2* desc = reinterpret_cast<int2*>(workspace);
  int32_t* entries = workspace + layout.desc_words;
  int32_t* bound = entries + layout.entry_words;
  int32_t* starts = bound + layout.bound_words;
  const unsigned warp_blocks = static_cast<unsigned>((k * 32 + 255) / 256);
  bound_kernel<<<1, kPackThreads, 0, stream>>>(crow, k, nnz, bound);
  count_kernel<<<warp_blocks, 256, 0, stream>>>(col, signs, bound, k, d, static_cast<int>(plan.width),
                                                slabs, desc, starts);
  start_kernel<<<1, kPackThreads, 0, stream>>>(k, starts);
  write_kernel<<<warp_blocks, 256, 0, stream>>>(col, signs, bound, starts, k, d,
                                                static_cast<int>(plan.width), slabs,
                                                static_cast<int>(sizeof(T)), desc, entries);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  int device = 0;
  DeviceLimits limits;
  if ((err = current_device_limits(&device, &limits)) != cudaSuccess) return err;
  constexpr int rows = sizeof(T) == 4 ? 32 : 16;
  return launch_projection<T, rows>(input, n, d, desc, entries, starts + k, nnz, k, plan, scale,
                                    out, device, limits, stream);
}

template cudaError_t sparse_sign_projection<float>(const float*, int64_t, int64_t, const int64_t*,
                                                   const int64_t*, const int8_t*, int64_t, int64_t,
                                                   float, float*, const ProjectionPlan&, int32_t*,
                                                   cudaStream_t);
template cudaError_t sparse_sign_projection<double>(const double*, int64_t, int64_t,
                                                    const int64_t*, const int64_t*, const int8_t*,
                                                    int64_t, int64_t, double, double*,
                                                    const ProjectionPlan&, int32_t*, cudaStream_t);

}  // namespace anomaly_kernels::cuda
