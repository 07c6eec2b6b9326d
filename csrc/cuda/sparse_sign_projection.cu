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
// output at a time for all the tile's rows: the column indices it needs are the same for every
// lane (broadcast reads), so the index traffic is paid once per ROWS rows. Per-slab sums go to
// a shared (ROWS, chunk) result block, accumulated over the slabs and written out row segment
// by row segment (coalesced) after the last one. When the results of all k outputs do not fit
// next to the two buffers, the outputs are taken in chunks and each chunk stages the tile again.
//
// float: ROWS = 32, one row per lane. double: ROWS = 16; a 64-bit shared access is served per
// half warp, so lanes 0-15 and 16-31 take alternate entries of the same output for the same 16
// rows (bank-conflict free within each half with an odd S) and are summed at the end.
//
// The pattern is re-packed on the device first (two small kernels, no host synchronisation):
// per output row and slab, the valid columns as int32 byte offsets into the slab, positive-sign
// entries first and then the negative-sign ones, each list starting at a multiple of 4 so that a
// warp reads 4 of them with one 16-byte broadcast, and padded to a multiple of 4 with the offset
// of the zero column that ends every staged row (no per-entry bounds test in the inner loop).
// Per output and slab a descriptor {offset, #positive, #negative} is stored.
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
constexpr int64_t kMinSlabWidth = 256;    // narrower slabs only where the shared memory is small
constexpr int64_t kMinChunk = 32;         // fewest outputs per result block worth chunking for
constexpr int kPackThreads = 512;

__host__ __device__ constexpr int64_t round_up4(int64_t v) { return (v + 3) & ~int64_t{3}; }

// Entry slots of an output with L stored entries over `slabs` slabs: its 2 * slabs lists, each
// rounded up to 4, need at most L + 6 * slabs.
__host__ __device__ constexpr int64_t output_slots(int64_t length, int64_t slabs) {
  return round_up4(length) + 8 * slabs;
}

// Workspace layout in int32 words: desc (4 k slabs) | entries (entries_capacity) | clamped
// offsets (k + 1).
int64_t entries_capacity(int64_t nnz, int64_t k, int64_t slabs) { return nnz + (3 + 8 * slabs) * k; }

// ---------------------------------------------------------------------------------------------
// Pattern re-packing
// ---------------------------------------------------------------------------------------------

// One block. bound[i] = clamp(max(crow[0..i]), 0, nnz) for i in [0, k]; then per output j:
// desc[j * slabs] = {start of its entry slots, bound[j], bound[j+1] - bound[j], 0}.
__global__ void __launch_bounds__(kPackThreads) bound_kernel(const int64_t* __restrict__ crow,
                                                             int64_t k, int64_t nnz, int slabs,
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
      slots = static_cast<int>(output_slots(length, slabs));
    }
    int start, chunk_sum;
    SumScan(temp.sum_scan).ExclusiveSum(slots, start, chunk_sum);
    if (j < k) desc[j * slabs] = make_int4(running_sum + start, bound[j], length, 0);
    running_sum += chunk_sum;
    __syncthreads();
  }
}

// One warp per output j: for each slab s, copies the valid entries whose column lies in the
// slab, as byte offsets from the slab's first column, into j's slots (positive signs first,
// negative ones from the next multiple of 4), and writes desc[j * slabs + s] = {start,
// #positive, #negative, 0}. Unused slots up to the end of each list's last group of 4 hold the
// offset of column `width`: the zero column of a staged slab. O(slabs * L / 32) steps per output
// of L entries (slabs is 1-3 at PatchCore's sizes).
__global__ void __launch_bounds__(256) pack_kernel(const int64_t* __restrict__ col,
                                                   const int8_t* __restrict__ signs, int64_t k,
                                                   int64_t d, int width, int slabs, int elem_bytes,
                                                   int4* __restrict__ desc,
                                                   int32_t* __restrict__ entries) {
  const int64_t j = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (j >= k) return;  // the whole warp leaves together
  const int4 info = desc[j * slabs];
  const int first = info.y, length = info.z;
  const unsigned below = (1u << lane) - 1u;
  const int32_t zero_column = width * elem_bytes;
  __syncwarp();  // every lane has read desc[j * slabs] before lane 0 rewrites it
  int cursor = info.x;
  for (int s = 0; s < slabs; ++s) {
    const int64_t lo = static_cast<int64_t>(s) * width;
    const int64_t hi = lo + width < d ? lo + width : d;
    // Entry q's membership in this slab's positive and negative lists.
    const auto classify = [&](int q, bool* pos, bool* neg, int32_t* offset) {
      *pos = *neg = false;
      if (q < length) {
        const int64_t c = col[first + q];
        const int sign = signs[first + q];
        const bool inside = c >= lo && c < hi;
        *pos = inside && sign > 0;
        *neg = inside && sign < 0;
        *offset = static_cast<int32_t>(c - lo) * elem_bytes;
      }
    };
    int positives = 0, negatives = 0;
    for (int q = lane; q - lane < length; q += 32) {
      bool pos, neg;
      int32_t offset = 0;
      classify(q, &pos, &neg, &offset);
      positives += __popc(__ballot_sync(0xffffffffu, pos));
      negatives += __popc(__ballot_sync(0xffffffffu, neg));
    }
    const int negative_start = cursor + static_cast<int>(round_up4(positives));
    const int next_cursor = negative_start + static_cast<int>(round_up4(negatives));
    int pos_seen = 0, neg_seen = 0;
    for (int q = lane; q - lane < length; q += 32) {
      bool pos, neg;
      int32_t offset = 0;
      classify(q, &pos, &neg, &offset);
      const unsigned pos_mask = __ballot_sync(0xffffffffu, pos);
      const unsigned neg_mask = __ballot_sync(0xffffffffu, neg);
      if (pos) entries[cursor + pos_seen + __popc(pos_mask & below)] = offset;
      if (neg) entries[negative_start + neg_seen + __popc(neg_mask & below)] = offset;
      pos_seen += __popc(pos_mask);
      neg_seen += __popc(neg_mask);
    }
    if (lane < 4) {
      const int pos_pad = cursor + positives + lane;
      if (pos_pad < negative_start) entries[pos_pad] = zero_column;
      const int neg_pad = negative_start + negatives + lane;
      if (neg_pad < next_cursor) entries[neg_pad] = zero_column;
    }
    if (lane == 0) desc[j * slabs + s] = make_int4(cursor, positives, negatives, 0);
    cursor = next_cursor;
  }
}

// ---------------------------------------------------------------------------------------------
// Projection
// ---------------------------------------------------------------------------------------------

// Adds the groups [begin, end) of one sign list to acc. Entries are byte offsets into the staged
// slab row, whose zero column the pad entries point at, so every group is summed whole.
template <int HALVES, typename T>
__device__ __forceinline__ void sum_groups(const int32_t* __restrict__ slice, int slice_first,
                                           int begin, int end, const char* row, int half,
                                           T& acc) {
  const auto at = [row](int offset) -> T { return *reinterpret_cast<const T*>(row + offset); };
#pragma unroll 4
  for (int g = begin; g < end; ++g) {
    if constexpr (HALVES == 1) {
      // Same address in every lane: a broadcast.
      const int4 e = reinterpret_cast<const int4*>(slice)[g - slice_first];
      acc += (at(e.x) + at(e.y)) + (at(e.z) + at(e.w));
    } else {
      // Lanes 0-15 take entries 0 and 1 of the group, lanes 16-31 entries 2 and 3 (two
      // addresses, still one broadcast).
      const int2 e = reinterpret_cast<const int2*>(slice)[2 * (g - slice_first) + half];
      acc += at(e.x) + at(e.y);
    }
  }
}

// Warp-wide load of slice `s` of the entry lists described by `info`: lane i holds entries
// 2i, 2i+1.
__device__ __forceinline__ int2 load_slice(const int32_t* __restrict__ entries, int4 info, int s,
                                           int lane) {
  const int groups = static_cast<int>((round_up4(info.y) + round_up4(info.z)) / 4);
  const int offset = s * kSliceEntries + 2 * lane;
  if (offset < 4 * groups)
    return __ldg(reinterpret_cast<const int2*>(entries + info.x + offset));
  return make_int2(0, 0);
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
  const int lo = slab * width;
  const int w = d - lo < width ? d - lo : width;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < count; r += kWarps) {
    const T* src = input + (row0 + r) * d + lo;
    T* dst = buffer + r * stride;
    for (int c = lane; c < w; c += 32) copy_async(dst + c, src + c);
  }
}

// Sums the outputs [j0, j1) over the staged slab `slab` into results (ROWS, chunk_stride): slab 0
// stores, later slabs add. Warp w takes outputs j0 + w, j0 + w + kWarps, ..., one slice of at
// most kSliceEntries indices per step, and loads the next step's indices (and the descriptor of
// the output after) while it computes the current one.
template <typename T, int ROWS>
__device__ __forceinline__ void sum_slab(const int4* __restrict__ desc,
                                         const int32_t* __restrict__ entries, int slabs, int slab,
                                         int j0, int j1, const char* row_ptr, int32_t* my_slice,
                                         T* results, int chunk_stride) {
  constexpr int HALVES = 32 / ROWS;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row = lane % ROWS, half = lane / ROWS;
  const auto descriptor = [&](int j) { return __ldg(desc + static_cast<int64_t>(j) * slabs + slab); };
  int j = j0 + warp, s = 0;
  int4 info = j < j1 ? descriptor(j) : make_int4(0, 0, 0, 0);
  int4 info_next = j + kWarps < j1 ? descriptor(j + kWarps) : make_int4(0, 0, 0, 0);
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
      if (j_after + kWarps < j1) info_next = descriptor(j_after + kWarps);
    }
    if (j_after < j1) staged = load_slice(entries, info_after, s_after, lane);

    const int g_begin = s * kSliceGroups;
    const int g_end = g_begin + kSliceGroups < groups ? g_begin + kSliceGroups : groups;
    sum_groups<HALVES, T>(my_slice, g_begin, g_begin, g_end < pos_groups ? g_end : pos_groups,
                          row_ptr, half, pos);
    sum_groups<HALVES, T>(my_slice, g_begin, g_begin > pos_groups ? g_begin : pos_groups, g_end,
                          row_ptr, half, neg);
    if (s_after == 0) {  // output j is complete for this slab
      T total = pos - neg;
      if constexpr (HALVES == 2) total += __shfl_xor_sync(0xffffffffu, total, 16);
      if (half == 0) {
        T& r = results[row * chunk_stride + (j - j0)];
        r = slab == 0 ? total : r + total;
      }
      pos = 0;
      neg = 0;
    }
    j = j_after;
    s = s_after;
    info = info_after;
  }
}

template <typename T, int ROWS>
__global__ void __launch_bounds__(kThreads, 1)
    projection_kernel(const T* __restrict__ input, int64_t n, int d, int width, int slabs,
                      int stride, const int4* __restrict__ desc,
                      const int32_t* __restrict__ entries, int k, int chunk, int chunk_stride,
                      T scale, T* __restrict__ out) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  // Layout: two slab buffers (ROWS * stride T each) | results (ROWS * chunk_stride T) | one
  // slice of kSliceEntries indices per warp (16-byte aligned).
  const int64_t buffer_elems = static_cast<int64_t>(ROWS) * stride;
  T* buffers = reinterpret_cast<T*>(shared_bytes);
  T* results = buffers + 2 * buffer_elems;
  const size_t results_end = (2 * buffer_elems + static_cast<int64_t>(ROWS) * chunk_stride) * sizeof(T);
  int32_t* slices = reinterpret_cast<int32_t*>(shared_bytes + ((results_end + 15) & ~size_t{15}));
  int32_t* my_slice = slices + (threadIdx.x / 32) * kSliceEntries;
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
    sum_slab<T, ROWS>(desc, entries, slabs, step.slab, j0, j1,
                      reinterpret_cast<const char*>(my_row), my_slice, results, chunk_stride);
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

// Shared bytes of a block with slabs of `width` columns and a result block of `chunk` outputs.
size_t shared_bytes_for(int rows, int64_t elem_bytes, int64_t width, int64_t chunk) {
  const int64_t buffers = 2 * rows * ((width + 1) | 1);
  const int64_t results_end = (buffers + rows * (chunk | 1)) * elem_bytes;
  return static_cast<size_t>(((results_end + 15) & ~int64_t{15}) + int64_t{kWarps} * kSliceEntries * 4);
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

template <typename T, int ROWS>
cudaError_t launch_projection(const T* input, int64_t n, int64_t d, const int4* desc,
                              const int32_t* entries, int64_t k, const ProjectionPlan& plan,
                              T scale, T* out, int device, const DeviceLimits& limits,
                              cudaStream_t stream) {
  const auto kernel = projection_kernel<T, ROWS>;
  // Opted in once per device to all the shared memory a block may have: setting this call's
  // size at every call would race with another thread's launch of the same kernel.
  cudaError_t err = allow_shared_memory<projection_kernel<T, ROWS>>(device, limits.smem_optin, true);
  if (err != cudaSuccess) return err;
  const size_t shared = shared_bytes_for(ROWS, sizeof(T), plan.width, plan.chunk);
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
      stride, desc, entries, static_cast<int>(k), static_cast<int>(plan.chunk),
      static_cast<int>(plan.chunk | 1), scale, out);
  return cudaGetLastError();
}

}  // namespace

cudaError_t sparse_sign_projection_plan(int64_t d, int64_t k, int elem_bytes, int64_t slab_width,
                                        ProjectionPlan* plan) {
  int device = 0;
  DeviceLimits limits;
  cudaError_t err = current_device_limits(&device, &limits);
  if (err != cudaSuccess) return err;
  const int rows = elem_bytes == 4 ? 32 : 16;
  const size_t budget = static_cast<size_t>(limits.smem_optin);
  const int64_t columns = d > 0 ? d : 1;
  const int64_t outputs = k > 0 ? k : 1;
  const auto widest = [&](int64_t chunk) {
    return largest_fitting(columns, [&](int64_t w) { return shared_bytes_for(rows, elem_bytes, w, chunk) <= budget; });
  };
  const auto largest_chunk = [&](int64_t width) {
    return largest_fitting(outputs, [&](int64_t c) { return shared_bytes_for(rows, elem_bytes, width, c) <= budget; });
  };
  // All outputs in one result block, with slabs of at least kMinSlabWidth columns (or the whole
  // row). Otherwise chunks of at least kMinChunk outputs next to slabs of that width (the tile is
  // staged once per chunk, but narrow slabs would mostly sum the zero column: each output's
  // entry lists are padded to 4 per slab). Failing both, the widest slab next to one output.
  const int64_t wanted = columns < kMinSlabWidth ? columns : kMinSlabWidth;
  int64_t width = widest(outputs);
  if (slab_width > 0) {
    width = slab_width < columns ? slab_width : columns;
    if (largest_chunk(width) == 0) width = widest(1);  // the forced width does not fit
  } else if (width < wanted) {
    const int64_t chunk_at_wanted = largest_chunk(wanted);
    if (chunk_at_wanted >= kMinChunk || (width == 0 && chunk_at_wanted > 0)) {
      width = wanted;
    } else if (width == 0) {
      width = widest(1);
    }
  }
  if (width < 1) return cudaErrorInvalidConfiguration;  // not even one column of one output fits
  // Even slabs and even chunks: the same work per step, and never a sliver of a last one.
  plan->slabs = (columns + width - 1) / width;
  plan->width = (columns + plan->slabs - 1) / plan->slabs;
  const int64_t chunk = largest_chunk(plan->width);
  const int64_t chunks = (outputs + chunk - 1) / chunk;
  plan->chunk = (outputs + chunks - 1) / chunks;
  return cudaSuccess;
}

int64_t sparse_sign_projection_workspace_words(int64_t nnz, int64_t k, int64_t slabs) {
  const int64_t words = 4 * k * slabs + entries_capacity(nnz, k, slabs) + k + 1;
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
  if (d >= (int64_t{1} << 31) - 2 || plan.width < 1 || plan.slabs * plan.width < d ||
      plan.chunk < 1 || sparse_sign_projection_workspace_words(nnz, k, plan.slabs) < 0)
    return cudaErrorInvalidValue;

  const int slabs = static_cast<int>(plan.slabs);
  int4* desc = reinterpret_cast<int4*>(workspace);
  int32_t* entries = workspace + 4 * k * slabs;
  int32_t* bound = entries + entries_capacity(nnz, k, slabs);
  bound_kernel<<<1, kPackThreads, 0, stream>>>(crow, k, nnz, slabs, bound, desc);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t pack_blocks = (k * 32 + 255) / 256;
  pack_kernel<<<static_cast<unsigned>(pack_blocks), 256, 0, stream>>>(
      col, signs, k, d, static_cast<int>(plan.width), slabs, static_cast<int>(sizeof(T)), desc,
      entries);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  int device = 0;
  DeviceLimits limits;
  if ((err = current_device_limits(&device, &limits)) != cudaSuccess) return err;
  if (shared_bytes_for(sizeof(T) == 4 ? 32 : 16, sizeof(T), plan.width, plan.chunk) >
      static_cast<size_t>(limits.smem_optin))
    return cudaErrorInvalidConfiguration;
  if constexpr (sizeof(T) == 4) {
    return launch_projection<T, 32>(input, n, d, desc, entries, k, plan, scale, out, device, limits, stream);
  } else {
    return launch_projection<T, 16>(input, n, d, desc, entries, k, plan, scale, out, device, limits, stream);
  }
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
