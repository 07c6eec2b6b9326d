// CUDA kernels of the k-center-greedy passes.
//
// A pass applies one center: every row's distance to it lowers the row's running minimum, and
// the farthest row (largest minimum, ties to the smallest index) becomes the next center. Rows
// are read by subgroups of kLanes lanes with 16-byte loads; the farthest row is found as the
// largest packed 64-bit key (distance bits above the complemented row index).
//
// kcenter_greedy runs all of a call's passes in ONE cooperative kernel: each block owns a fixed
// contiguous range of rows for the whole selection, merges its rows' keys into one atomicMax
// per pass, and a grid barrier later every block reads the same winner, so the next center is
// known on the device without a host round trip. The keys rotate through three slots: block 0
// clears the slot of pass t + 1 during pass t, after the barrier that ends every read of it
// (pass t - 2's), and before the barrier that opens pass t + 1's atomics.
//
// Pruning (exact): a row whose nearest center p lies at center_distance[p] >= 2 m from the new
// center (m: the row's distance to p) cannot get closer, by the triangle inequality, and is not
// read. Such a pass has two forms:
//  - exact: the distances of the new center to every earlier center first (one more grid
//    barrier), then the row test with them;
//  - bounded (cooperative kernel only): no wait for those distances. With q* the new center's
//    own nearest center and R its distance to it (R: the previous pass's winning key), every
//    center p lies at least max(D(q*, p) - R, R) from the new center, where D is the
//    center-to-center distance kept from earlier passes (a triangle in scratch memory: row t
//    holds D(t, p) for p < t). Row tests use that bound instead of the exact distance, and the
//    new center's own row of D is computed in the same barrier interval (by the warps that
//    have no row to read), for later passes. Clustered data spends most of its passes here:
//    one grid barrier per pass instead of two. The bound is loose while the new center lies
//    about as far from its nearest center as centers lie from one another (the first passes,
//    which find the data's modes): a bounded pass that reads far more rows than the last
//    exact one (one pass in kExactEvery stays exact to keep that count recent) sends the
//    next passes back to the exact form for a doubling run. The triangle lives for one call:
//    a call resumed at `begin` bounds only through centers from `begin` on.
// Each block tests its rows thread by thread, compacts the rows that must be read into shared
// memory and reads only those. When a pruned pass still reads most rows (iid data), pruning is
// switched off for a run of passes that doubles each time it fails again.
//
// Bad state (a center outside [0, n), a nearest entry outside [-1, end)) never causes a read
// outside the buffers: the kernels record the first such error in device memory, which the
// host reads once at the end of the call.
#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstddef>

#include "cuda/device_limits.cuh"
#include "cuda/kcenter.cuh"

namespace cg = cooperative_groups;

namespace anomaly_kernels::cuda {
namespace {

constexpr int kThreads = 512;                 // threads per block
constexpr int kWarps = kThreads / 32;
constexpr int kLanes = 8;                     // lanes that read one row together
constexpr int kRowsPerWarp = 32 / kLanes;
// A pruned pass tests kTileRows rows of its block at a time, kTestsPerThread per thread.
constexpr int kTestsPerThread = 4;
constexpr int kTileRows = kTestsPerThread * kThreads;
// Rows are skipped only when center_distance >= 2 * kMargin * min_distance: the margin absorbs
// the rounding of both computed distances, so pruning never changes the selection.
constexpr float kMargin = 1.0f + 1e-5f;
// A pruned pass pays for itself when it skips at least 1/kWorthSkipping of the rows; otherwise
// pruning pauses for kFirstPause passes, doubling up to kLongestPause while it keeps failing.
constexpr int64_t kWorthSkipping = 8;
constexpr int kFirstPause = 4;
constexpr int kLongestPause = 256;
// The bounded form of a pruned pass tests rows against looser bounds than the exact form; it
// has failed when it read more than kBoundedExcess times the rows of the last exact pass plus
// n / kBoundedSlack (while the new center is about as far from its nearest center as centers
// are from one another, as when the first centers find the data's modes). Only the exact form
// is then used for a run of passes that doubles (up to kLongestPause) while it keeps failing.
constexpr int64_t kBoundedExcess = 2;
constexpr int64_t kBoundedSlack = 64;
// Every kExactEvery-th pruned pass in a run of bounded ones is exact, so that the rows of the
// last exact pass, which judge the bounded ones, stay those of a recent center.
constexpr int kExactEvery = 32;
constexpr float kDefaultL2Share = 0.5f;
// The cooperative grid is capped so that the per-block slots of the bounded passes have a fixed
// size in scratch memory.
constexpr int kMaxGridBlocks = 8192;
// Default budget of the center-to-center distance triangle: at most this many bytes and at most
// kTriangleRowsFactor times the rows' own bytes.
constexpr int64_t kDefaultTriangleBytes = int64_t{1} << 30;
constexpr int64_t kTriangleRowsFactor = 8;

struct State {
  unsigned long long best[3];       // the farthest row's key of passes t % 3
  unsigned long long rows_read[3];  // rows read by pruned passes t % 3
  unsigned long long done;          // blocks finished (per-pass launches)
  unsigned long long error_kind;    // KCenterError, in this order
  long long error_where;
  long long error_value;
};
static_assert(offsetof(State, error_where) == offsetof(State, error_kind) + 8 &&
                  offsetof(State, error_value) == offsetof(State, error_kind) + 16,
              "the error fields are copied to KCenterError as one block");
constexpr int64_t kStateBytes = 256;
static_assert(sizeof(State) <= kStateBytes, "State must fit in its scratch slot");

// Position of D(t, p) (p < t) in a triangle whose first stored row is `first`.
__host__ __device__ __forceinline__ int64_t triangle_offset(int64_t t, int64_t first) {
  return t * (t - 1) / 2 - first * (first - 1) / 2;
}

template <typename S>
struct Pass {
  const S* x = nullptr;             // (n, d) rows
  int64_t n = 0, d = 0;
  float* min_distances = nullptr;   // (n,)
  int32_t* nearest = nullptr;       // (n,) or nullptr (kcenter_step)
  int64_t* centers = nullptr;       // coreset positions (kcenter_step: the one center index)
  int64_t end = 0;                  // passes end before this position: nearest must be < end
  float* center_distance = nullptr; // (end,) the exact passes' distances when not in the triangle
  State* state = nullptr;
  int64_t keep_rows = 0;            // per block: rows read with the default L2 priority
  // Bounded passes (cooperative kernel, pick, prune); triangle == nullptr: none.
  float* triangle = nullptr;        // rows [triangle_first, triangle_end) of D
  int64_t triangle_first = 0, triangle_end = 0;
  int32_t* ready = nullptr;         // (end,) ready[t] != 0: triangle row t is complete
  int32_t* star = nullptr;          // (2, kMaxGridBlocks) nearest center of each block's
                                    // farthest row, by pass parity (-1 unless that center's
                                    // triangle row is complete)
};

// What a bounded pass knows of its center: its nearest earlier center `star` and the distance
// `reach` to it (no center is closer).
struct Bound {
  bool on = false;
  int64_t star = -1;
  float reach = 0.f;
  const float* star_row = nullptr;  // D(star, p) for p < star
};

struct Shared {
  unsigned long long keys[kWarps];
  int32_t near[kWarps];
  uint32_t rows[kTileRows];  // rows of the current tile that must be read
  float m[kTileRows];        // and their running minima
  int32_t q[kTileRows];      // and their nearest centers
  int count[2];             // tiles alternate between the two counters
  int last;                 // this block finished a per-pass launch last
};

// The bits of a non-negative float order as unsigned integers do; negative, -0 and NaN
// distances (only from an invalid caller state) count as 0, as the CPU kernel never prefers them.
__device__ __forceinline__ unsigned long long pack_key(float distance, int64_t index) {
  const float ordered = distance > 0.f ? distance : 0.f;
  return (static_cast<unsigned long long>(__float_as_uint(ordered)) << 32) |
         (0xFFFFFFFFull - static_cast<unsigned long long>(index));
}
__device__ __forceinline__ int64_t key_index(unsigned long long key) {
  return static_cast<int64_t>(0xFFFFFFFFull - (key & 0xFFFFFFFFull));
}
__device__ __forceinline__ unsigned long long max_key(unsigned long long a, unsigned long long b) {
  return a > b ? a : b;
}
// Keeps the larger key and the nearest center of its row (keys are unique per row, so the
// payload follows the key deterministically).
__device__ __forceinline__ void fold(unsigned long long& key, int32_t& near, unsigned long long k,
                                     int32_t q) {
  if (k > key) {
    key = k;
    near = q;
  }
}

// Sum over the kLanes lanes of a subgroup (every lane of the warp must take part).
__device__ __forceinline__ float subgroup_sum(float value) {
  for (int offset = kLanes / 2; offset > 0; offset >>= 1)
    value += __shfl_xor_sync(0xFFFFFFFFu, value, offset);
  return value;
}

__device__ void report(State* state, long long kind, long long where, long long value) {
  if (atomicCAS(&state->error_kind, 0ull, static_cast<unsigned long long>(kind)) == 0ull) {
    state->error_where = where;
    state->error_value = value;
  }
}

__device__ __forceinline__ float widen(float value) { return value; }
__device__ __forceinline__ float widen(__nv_bfloat16 value) { return __bfloat162float(value); }

__device__ __forceinline__ float squares(const uint4& a, const uint4& b, float sum, float) {
  const float d0 = __uint_as_float(a.x) - __uint_as_float(b.x);
  const float d1 = __uint_as_float(a.y) - __uint_as_float(b.y);
  const float d2 = __uint_as_float(a.z) - __uint_as_float(b.z);
  const float d3 = __uint_as_float(a.w) - __uint_as_float(b.w);
  return fmaf(d3, d3, fmaf(d2, d2, fmaf(d1, d1, fmaf(d0, d0, sum))));
}
// A 32-bit word holds two bfloat16: the low one in bits 0-15, each the top half of a float.
__device__ __forceinline__ float bf16_pair(uint32_t a, uint32_t b, float sum) {
  const float lo = __uint_as_float(a << 16) - __uint_as_float(b << 16);
  const float hi = __uint_as_float(a & 0xFFFF0000u) - __uint_as_float(b & 0xFFFF0000u);
  return fmaf(hi, hi, fmaf(lo, lo, sum));
}
__device__ __forceinline__ float squares(const uint4& a, const uint4& b, float sum,
                                        __nv_bfloat16) {
  return bf16_pair(a.w, b.w, bf16_pair(a.z, b.z, bf16_pair(a.y, b.y, bf16_pair(a.x, b.x, sum))));
}

// This lane's share of ||row - center||^2 (lanes `sub` = 0..kLanes-1 of a subgroup). kVec:
// both rows start 16-byte aligned and d * sizeof(S) is a multiple of 16. `stream`: the row is
// loaded with evict-first priority (it will not be reused before it is evicted anyway).
template <typename S, bool kVec>
__device__ __forceinline__ float partial_squares(const S* __restrict__ row,
                                                 const S* __restrict__ center, int64_t d, int sub,
                                                 bool stream) {
  float sum = 0.f;
  if constexpr (kVec) {
    const int64_t vectors = d * static_cast<int64_t>(sizeof(S)) / 16;
    const uint4* a = reinterpret_cast<const uint4*>(row);
    const uint4* b = reinterpret_cast<const uint4*>(center);
    if (stream) {
#pragma unroll 4
      for (int64_t k = sub; k < vectors; k += kLanes) sum = squares(__ldcs(a + k), __ldg(b + k), sum, S());
    } else {
#pragma unroll 4
      for (int64_t k = sub; k < vectors; k += kLanes) sum = squares(__ldg(a + k), __ldg(b + k), sum, S());
    }
  } else {
    for (int64_t j = sub; j < d; j += kLanes) {
      const float diff = widen(row[j]) - widen(center[j]);
      sum = fmaf(diff, diff, sum);
    }
  }
  return sum;
}

// Lowers the running minimum of `row` (m: its current value) by `dist`, recording position t.
__device__ __forceinline__ float apply(float* min_distances, int32_t* nearest, int64_t row, float m,
                                       float dist, int64_t t, bool writer) {
  if (dist < m) {
    if (writer) {
      min_distances[row] = dist;
      if (nearest) nearest[row] = static_cast<int32_t>(t);
    }
    return dist;
  }
  return m;
}

// Applies the center row to rows [rb, re) (this block's range), reading every row, and folds
// every row's key into *key. Not inlined (nor are the other pass phases): each phase gets the
// kernel's registers to itself, so the streaming loop of unpruned passes keeps its values in
// registers.
template <typename S, bool kVec>
__device__ __noinline__ unsigned long long stream_rows(const S* __restrict__ x, int64_t d,
                                                       float* min_distances, int32_t* nearest,
                                                       int64_t keep_rows, int64_t t,
                                                       const S* center, int64_t rb, int64_t re,
                                                       unsigned long long key) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int sub = lane % kLanes, group = lane / kLanes;
  for (int64_t base = rb + warp * kRowsPerWarp; base < re; base += kWarps * kRowsPerWarp) {
    const int64_t row = base + group;
    const bool active = row < re;
    const float m = active ? __ldcg(min_distances + row) : 0.f;
    float sq = active ? partial_squares<S, kVec>(x + row * d, center, d, sub, row - rb >= keep_rows)
                      : 0.f;
    sq = subgroup_sum(sq);
    if (active) {
      const float m_new = apply(min_distances, nearest, row, m, sqrtf(sq), t, sub == 0);
      key = max_key(key, pack_key(m_new, row));
    }
  }
  return key;
}

template <typename S, bool kVec>
__device__ __noinline__ void center_distances(const Pass<S>& p, const S* center, float* out,
                                              int64_t first, int64_t last, int64_t worker,
                                              int64_t workers);

// The pruned form of stream_rows: tests each row against center_distance (exact form) or
// `bound` (bounded form) and reads only the rows that may get closer; also folds, with every
// key, the row's nearest center after the pass into *near, and counts the rows read in *reads
// (thread 0 only). With `fill` (bounded form), the block also computes its share of the
// center's distances to the earlier centers into fill[0, t), on the warps that have no row to
// read while the others read theirs. The block's threads must all call it (shared memory,
// __syncthreads). Not inlined: its registers do not weigh on the streaming loop.
template <typename S, bool kVec>
__device__ __noinline__ void prune_rows(const Pass<S>& p, int64_t t, const S* center,
                                        const float* center_distance, const Bound& bound,
                                        float* fill, int64_t rb, int64_t re, Shared& sh,
                                        uint32_t& tile, unsigned long long& key, int32_t& near,
                                        unsigned long long& reads) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int sub = lane % kLanes, group = lane / kLanes;
  const int64_t d = p.d;
  // This block's share of fill: entries [fill_first, fill_last).
  const int64_t fill_chunk = (t + gridDim.x - 1) / gridDim.x;
  const int64_t fill_first = fill ? min(t, blockIdx.x * fill_chunk) : 0;
  const int64_t fill_last = fill ? min(t, fill_first + fill_chunk) : 0;
  if (rb >= re && fill_first < fill_last)  // no rows here: every warp fills
    center_distances<S, kVec>(p, center, fill, fill_first, fill_last, warp, kWarps);
  for (int64_t base = rb; base < re; base += kTileRows, ++tile) {
    const int slot = tile & 1;
    // Each thread tests kTestsPerThread rows, all loads issued before any is used.
    float m[kTestsPerThread];
    int32_t q[kTestsPerThread];
#pragma unroll
    for (int i = 0; i < kTestsPerThread; ++i) {
      const int64_t row = base + i * kThreads + tid;
      m[i] = row < re ? __ldcg(p.min_distances + row) : 0.f;
      q[i] = row < re ? __ldcg(p.nearest + row) : -1;
    }
    // A lower bound on the distance from the row's nearest center to the new one (exact in the
    // exact form); -1 (never skipped) where nothing is known.
    float reach[kTestsPerThread];
#pragma unroll
    for (int i = 0; i < kTestsPerThread; ++i) {
      const int64_t row = base + i * kThreads + tid;
      const bool known = row < re && q[i] >= 0 && q[i] < t;
      reach[i] = -1.f;
      if (!bound.on) {
        if (known) reach[i] = __ldcg(center_distance + q[i]);
      } else if (known && q[i] < bound.star) {
        reach[i] = __ldcg(bound.star_row + q[i]);
      } else if (known && q[i] > bound.star && q[i] < p.triangle_end) {
        // Row q of the triangle exists (q > star >= triangle_first); it is complete when ready.
        const int32_t complete = __ldcg(p.ready + q[i]);
        const float distance =
            __ldcg(p.triangle + triangle_offset(q[i], p.triangle_first) + bound.star);
        if (complete) reach[i] = distance;
      }
      if (row < re && (q[i] < -1 || q[i] >= p.end)) report(p.state, kNearestOutOfRange, row, q[i]);
    }
#pragma unroll
    for (int i = 0; i < kTestsPerThread; ++i) {
      const int64_t row = base + i * kThreads + tid;
      bool need = false;
      if (row < re) {
        // Exact form: d(new, q) >= 2 m. Bounded form: d(new, q) >= max(D(star, q) - R, R)
        // with R = bound.reach, so either R >= 2 m or D(star, q) >= 2 m + R suffices (for a
        // row whose m is its distance to a center already placed).
        const bool known = q[i] >= 0 && q[i] < t;
        const bool skip = bound.on ? known && (bound.reach >= 2.f * kMargin * m[i] ||
                                               reach[i] >= kMargin * (2.f * m[i] + bound.reach))
                                   : reach[i] >= 2.f * kMargin * m[i];
        if (skip) fold(key, near, pack_key(m[i], row), q[i]);
        need = !skip;
      }
      const unsigned ballot = __ballot_sync(0xFFFFFFFFu, need);
      int first = 0;
      if (lane == 0 && ballot) first = atomicAdd(&sh.count[slot], __popc(ballot));
      first = __shfl_sync(0xFFFFFFFFu, first, 0);
      if (need) {
        const int at = first + __popc(ballot & ((1u << lane) - 1u));
        sh.rows[at] = static_cast<uint32_t>(row);
        sh.m[at] = m[i];
        sh.q[at] = q[i];
      }
    }
    __syncthreads();
    const int count = sh.count[slot];
    if (tid == 0) {
      sh.count[slot ^ 1] = 0;  // the next tile's counter: its last readers are done
      reads += static_cast<unsigned long long>(count);
    }
    // Warps [0, readers) read the listed rows; in the last tile the others fill meanwhile (all
    // warps after reading when every warp has rows to read).
    const int readers = min(kWarps, (count + kRowsPerWarp - 1) / kRowsPerWarp);
    const bool fill_here = base + kTileRows >= re && fill_first < fill_last;
    if (fill_here && warp >= readers)
      center_distances<S, kVec>(p, center, fill, fill_first, fill_last, warp - readers,
                                kWarps - readers);
    for (int i0 = warp * kRowsPerWarp; i0 < count; i0 += kWarps * kRowsPerWarp) {
      const int i = i0 + group;
      const bool active = i < count;
      const int64_t r = active ? static_cast<int64_t>(sh.rows[i]) : 0;
      const float mr = active ? sh.m[i] : 0.f;
      float sq = active ? partial_squares<S, kVec>(p.x + r * d, center, d, sub, r - rb >= p.keep_rows)
                        : 0.f;
      sq = subgroup_sum(sq);
      if (active) {
        const float m_new = apply(p.min_distances, p.nearest, r, mr, sqrtf(sq), t, sub == 0);
        fold(key, near, pack_key(m_new, r), m_new < mr ? static_cast<int32_t>(t) : sh.q[i]);
      }
    }
    if (fill_here && readers == kWarps)
      center_distances<S, kVec>(p, center, fill, fill_first, fill_last, warp, kWarps);
    __syncthreads();  // the list is rewritten by the next tile
  }
}

// Merges the block's keys (and thread 0's read count) into the pass's slot and returns, in
// thread 0, the nearest center of the block's farthest row. The caller must synchronise the
// block before sh.keys is written again.
__device__ int32_t merge_block(Shared& sh, unsigned long long key, int32_t near,
                               unsigned long long reads, unsigned long long* best,
                               unsigned long long* rows_read) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1)
    fold(key, near, __shfl_xor_sync(0xFFFFFFFFu, key, offset),
         __shfl_xor_sync(0xFFFFFFFFu, near, offset));
  if (lane == 0) {
    sh.keys[warp] = key;
    sh.near[warp] = near;
  }
  __syncthreads();
  if (warp == 0) {
    key = lane < kWarps ? sh.keys[lane] : 0ull;
    near = lane < kWarps ? sh.near[lane] : -1;
    for (int offset = 16; offset > 0; offset >>= 1)
      fold(key, near, __shfl_xor_sync(0xFFFFFFFFu, key, offset),
           __shfl_xor_sync(0xFFFFFFFFu, near, offset));
    if (lane == 0) {
      if (key) atomicMax(best, key);
      if (rows_read && reads) atomicAdd(rows_read, reads);
    }
  }
  return near;
}

// out[j] = ||features[centers[j]] - center|| for j in [first, last), a subgroup per center;
// warp `worker` of `workers` warps taking part (every lane of those warps must call it).
template <typename S, bool kVec>
__device__ __noinline__ void center_distances(const Pass<S>& p, const S* center, float* out,
                                              int64_t first, int64_t last, int64_t worker,
                                              int64_t workers) {
  const int lane = threadIdx.x & 31;
  const int sub = lane % kLanes, group = lane / kLanes;
  for (int64_t base = first + worker * kRowsPerWarp; base < last; base += workers * kRowsPerWarp) {
    const int64_t j = base + group;
    const bool active = j < last;
    const long long cj = active ? __ldcg(reinterpret_cast<const long long*>(p.centers) + j) : 0;
    const bool valid = cj >= 0 && cj < p.n;
    if (active && !valid && sub == 0) report(p.state, kCenterOutOfRange, j, cj);
    float sq = active && valid ? partial_squares<S, kVec>(p.x + cj * p.d, center, p.d, sub, false)
                               : 0.f;
    sq = subgroup_sum(sq);
    // An invalid center gets distance 0, which proves nothing about any row that could change.
    if (active && sub == 0) out[j] = valid ? sqrtf(sq) : 0.f;
  }
}

// The same for every j < t, spread over the whole grid.
template <typename S, bool kVec>
__device__ __forceinline__ void all_center_distances(const Pass<S>& p, int64_t t, const S* center,
                                                     float* out) {
  const int64_t warp = threadIdx.x >> 5;
  center_distances<S, kVec>(p, center, out, 0, t, blockIdx.x * int64_t{kWarps} + warp,
                            gridDim.x * int64_t{kWarps});
}

__device__ __forceinline__ void block_range(int64_t n, int64_t& rb, int64_t& re) {
  const int64_t per = (n + gridDim.x - 1) / gridDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * per;
  rb = first < n ? first : n;
  re = rb + per < n ? rb + per : n;
}

// What pass t knows of its center from pass t - 1 (cooperative kernel, uniform over the grid):
// the bounded form applies when pass t - 1 was pruned (so each block stored the nearest center
// of its farthest row), the winner's nearest center `star` has a complete row in the triangle,
// and its distance (the winning key's) is finite.
template <typename S>
__device__ __noinline__ Bound bound_of(const Pass<S>& p, int64_t t, long long winner, float winner_distance) {
  Bound bound;
  const int64_t per = (p.n + gridDim.x - 1) / gridDim.x;  // block_range's split
  const int64_t owner = winner / per;
  if (winner < 0 || owner >= gridDim.x) return bound;  // no row won (never with n > 0)
  // -1 unless the star's triangle row is complete (see the merge in greedy_cooperative).
  const int32_t star = __ldcg(p.star + ((t - 1) & 1) * kMaxGridBlocks + owner);
  if (star < p.triangle_first || star >= t || star >= p.triangle_end) return bound;
  if (!isfinite(winner_distance)) return bound;
  bound.on = true;
  bound.star = star;
  bound.reach = winner_distance;
  bound.star_row = p.triangle + triangle_offset(star, p.triangle_first);
  return bound;
}

// All passes [begin, end) in one launch; must be launched cooperatively.
template <typename S, bool kVec>
__global__ void __launch_bounds__(kThreads, 2)
    greedy_cooperative(Pass<S> p, int64_t begin, int64_t end, bool pick, bool prune) {
  __shared__ Shared sh;
  if (threadIdx.x < 2) sh.count[threadIdx.x] = 0;
  __syncthreads();
  cg::grid_group grid = cg::this_grid();
  const bool leader = blockIdx.x == 0 && threadIdx.x == 0;
  int64_t rb, re;
  block_range(p.n, rb, re);
  State* st = p.state;
  uint32_t tile = 0;
  int pause_left = 0, pause = kFirstPause / 2;
  long long winner = -1;
  float winner_distance = 0.f;
  bool previous_pruned = false;
  long long exact_read = p.n;  // rows read by the last pruned pass in the exact form
  int bounded_pause_left = 0, bounded_pause = 1;
  int bounded_run = 0;  // bounded passes since the last exact one
  for (int64_t t = begin; t < end; ++t) {
    // Uniform over the grid: every block reads the same entry or the same winner.
    const long long c = (t == begin || !pick)
                            ? __ldcg(reinterpret_cast<const long long*>(p.centers) + t)
                            : winner;
    if (c < 0 || c >= p.n) {
      if (leader) report(st, kCenterOutOfRange, t, c);
      break;
    }
    const S* center = p.x + c * p.d;
    const int slot = static_cast<int>(t % 3), next = static_cast<int>((t + 1) % 3);
    const bool pruned = prune && t > 0 && pause_left == 0;
    // This pass's row of the triangle, when it has room for one.
    float* triangle_row = pruned && p.triangle && t >= p.triangle_first && t < p.triangle_end
                              ? p.triangle + triangle_offset(t, p.triangle_first)
                              : nullptr;
    const Bound bound = pruned && p.triangle && pick && t > begin && previous_pruned &&
                                bounded_pause_left == 0 && bounded_run < kExactEvery
                            ? bound_of(p, t, winner, winner_distance)
                            : Bound{};
    const float* exact = nullptr;
    if (pruned && !bound.on) {
      float* out = triangle_row ? triangle_row : p.center_distance;
      all_center_distances<S, kVec>(p, t, center, out);
      grid.sync();
      exact = out;
    }
    if (leader) {
      st->best[next] = 0ull;
      st->rows_read[next] = 0ull;
      // Read only by later passes, after this pass's closing barrier.
      if (triangle_row) p.ready[t] = 1;
    }
    unsigned long long key = 0, reads = 0;
    int32_t near = -1;
    if (pruned)
      prune_rows<S, kVec>(p, t, center, exact, bound, bound.on ? triangle_row : nullptr, rb, re,
                          sh, tile, key, near, reads);
    else
      key = stream_rows<S, kVec>(p.x, p.d, p.min_distances, p.nearest, p.keep_rows, t, center, rb,
                                 re, key);
    near = merge_block(sh, key, near, reads, &st->best[slot],
                       pruned ? &st->rows_read[slot] : nullptr);
    if (threadIdx.x == 0 && pruned && p.star) {
      // The nearest center of this block's farthest row, for the next pass's bound when this
      // row wins: kept only when that center's triangle row will be complete by then (row t
      // is this pass's own), so the next pass reads one word to know.
      const bool complete = near == t ? triangle_row != nullptr
                                      : near >= p.triangle_first && near < t &&
                                            near < p.triangle_end && __ldcg(p.ready + near);
      p.star[(t & 1) * kMaxGridBlocks + blockIdx.x] = complete ? near : -1;
    }
    grid.sync();
    const unsigned long long best = __ldcg(&st->best[slot]);
    winner = key_index(best);
    winner_distance = __uint_as_float(static_cast<uint32_t>(best >> 32));
    previous_pruned = pruned;
    if (pick && leader) p.centers[t + 1] = winner;
    if (pruned && bound.on) {
      // Only exact passes judge pruning itself; a bounded pass judges the bounded form.
      const long long read = static_cast<long long>(__ldcg(&st->rows_read[slot]));
      ++bounded_run;
      if (read > kBoundedExcess * exact_read + p.n / kBoundedSlack ||
          (p.n - read) * kWorthSkipping < p.n) {
        bounded_pause = 2 * bounded_pause < kLongestPause ? 2 * bounded_pause : kLongestPause;
        bounded_pause_left = bounded_pause;
      } else {
        bounded_pause = 1;
      }
    } else if (pruned) {
      const long long read = static_cast<long long>(__ldcg(&st->rows_read[slot]));
      exact_read = read;
      bounded_run = 0;
      if (bounded_pause_left > 0) --bounded_pause_left;
      if ((p.n - read) * kWorthSkipping < p.n) {
        pause = 2 * pause < kLongestPause ? 2 * pause : kLongestPause;
        pause_left = pause;
      } else {
        pause = kFirstPause / 2;
      }
    } else if (pause_left > 0) {
      --pause_left;
    }
  }
}

// Per-pass launches (no cooperative launch): the distances of center centers[t] to the earlier
// ones.
template <typename S, bool kVec>
__global__ void __launch_bounds__(kThreads) center_distance_pass(Pass<S> p, int64_t t) {
  const long long c = __ldcg(reinterpret_cast<const long long*>(p.centers) + t);
  if (c < 0 || c >= p.n) return;  // update_pass reports it
  all_center_distances<S, kVec>(p, t, p.x + c * p.d, p.center_distance);
}

// Per-pass launches: pass t with center centers[t] (or center_row), pruned in the exact form;
// the last block to finish writes the winner to centers[t + 1] (pick) and/or *argmax (-1 for
// an invalid center) and clears the key for the next launch.
template <typename S, bool kVec>
__global__ void __launch_bounds__(kThreads, 2)
    update_pass(Pass<S> p, int64_t t, const S* center_row, int64_t* argmax, bool pick, bool pruned) {
  __shared__ Shared sh;
  if (threadIdx.x < 2) sh.count[threadIdx.x] = 0;
  __syncthreads();
  State* st = p.state;
  const long long c =
      center_row ? 0 : __ldcg(reinterpret_cast<const long long*>(p.centers) + t);
  const bool valid = center_row || (c >= 0 && c < p.n);
  if (!valid && blockIdx.x == 0 && threadIdx.x == 0) report(st, kCenterOutOfRange, t, c);
  unsigned long long key = 0, reads = 0;
  int32_t near = -1;
  if (valid) {
    int64_t rb, re;
    block_range(p.n, rb, re);
    uint32_t tile = 0;
    const S* center = center_row ? center_row : p.x + c * p.d;
    if (pruned)
      prune_rows<S, kVec>(p, t, center, p.center_distance, Bound{}, nullptr, rb, re, sh, tile, key,
                          near, reads);
    else
      key = stream_rows<S, kVec>(p.x, p.d, p.min_distances, p.nearest, p.keep_rows, t, center, rb,
                                 re, key);
  }
  merge_block(sh, key, near, reads, &st->best[0], nullptr);
  if (threadIdx.x == 0) {
    __threadfence();  // this block's key before its count
    sh.last = atomicAdd(&st->done, 1ull) == gridDim.x - 1;
  }
  __syncthreads();
  if (sh.last && threadIdx.x == 0) {
    __threadfence();
    const unsigned long long best = atomicExch(&st->best[0], 0ull);
    st->done = 0ull;
    const long long winner = valid ? key_index(best) : -1;
    if (argmax) *argmax = winner;
    if (pick && valid) p.centers[t + 1] = winner;
  }
}

bool vectorizable(const void* a, const void* b, int64_t row_bytes) {
  return row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(a) % 16 == 0 &&
         (b == nullptr || reinterpret_cast<uintptr_t>(b) % 16 == 0);
}

using Device = DeviceLimits;
cudaError_t query_device(Device& dev) {
  int id = 0;
  return current_device_limits(&id, &dev);  // cached: kcenter_step_ runs once per selected point
}

// Rows per block read with the default L2 priority: all of them when the rows fit in L2 with
// room to spare, else the block's share of `share` of the L2.
int64_t keep_rows(int64_t n, int64_t row_bytes, int blocks, const Device& dev, float share) {
  const double total = static_cast<double>(n) * static_cast<double>(row_bytes);
  if (total <= 0.75 * dev.l2_bytes) return n;
  const double rows = share * dev.l2_bytes / static_cast<double>(row_bytes);
  return static_cast<int64_t>(rows / blocks);
}

// Blocks of a per-pass launch (update_pass): one block per kThreads rows, at most as many as
// stay resident at once, so every block gets an even share of the rows in a single wave (no
// tail of a last, partly filled wave).
template <typename S, bool kVec>
int fallback_blocks(int64_t n, const Device& dev) {
  int device = 0, per_sm = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      resident_blocks_per_sm<update_pass<S, kVec>, kThreads>(device, &per_sm) != cudaSuccess ||
      per_sm <= 0) {
    (void)cudaGetLastError();
    per_sm = 1;
  }
  const int64_t wanted = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, int64_t{per_sm} * dev.sms)));
}

template <typename S, bool kVec>
cudaError_t run_greedy(Pass<S> p, int64_t begin, int64_t end, bool pick, bool prune,
                       const KCenterLaunch& launch, cudaStream_t stream) {
  Device dev;
  cudaError_t err = query_device(dev);
  if (err != cudaSuccess) return err;
  const int64_t row_bytes = p.d * static_cast<int64_t>(sizeof(S));
  const float share = launch.l2_share >= 0.f ? launch.l2_share : kDefaultL2Share;
  int per_sm = 0;
  if (launch.allow_cooperative && dev.cooperative) {
    int device = 0;
    err = cudaGetDevice(&device);
    if (err == cudaSuccess)
      err = resident_blocks_per_sm<greedy_cooperative<S, kVec>, kThreads>(device, &per_sm);
    if (err != cudaSuccess) return err;
    if (launch.max_blocks_per_sm > 0) per_sm = std::min(per_sm, launch.max_blocks_per_sm);
  }
  if (per_sm > 0) {
    const int blocks = std::min(per_sm * dev.sms, kMaxGridBlocks);
    p.keep_rows = keep_rows(p.n, row_bytes, blocks, dev, share);
    void* args[] = {&p, &begin, &end, &pick, &prune};
    err = cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(greedy_cooperative<S, kVec>),
                                      dim3(blocks), dim3(kThreads), args, 0, stream);
    if (err != cudaErrorCooperativeLaunchTooLarge) return err;
    (void)cudaGetLastError();  // clear it and run the passes one launch at a time
  }
  const int blocks = fallback_blocks<S, kVec>(p.n, dev);
  p.keep_rows = keep_rows(p.n, row_bytes, blocks, dev, share);
  for (int64_t t = begin; t < end; ++t) {
    const bool pruned = prune && t > 0;
    if (pruned) {
      const int64_t per_block = kWarps * kRowsPerWarp;
      const int cd_blocks = static_cast<int>(std::min<int64_t>((t + per_block - 1) / per_block, 8LL * dev.sms));
      center_distance_pass<S, kVec><<<cd_blocks, kThreads, 0, stream>>>(p, t);
    }
    update_pass<S, kVec><<<blocks, kThreads, 0, stream>>>(p, t, nullptr, nullptr, pick, pruned);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

// Where kcenter_greedy keeps its device state in the scratch buffer (byte offsets, each
// 256-byte aligned): State | center_distance (end floats) | ready (end int32) | star slots
// (2 x kMaxGridBlocks int32) | triangle rows [begin, triangle_end). Only State without prune;
// no bounded-pass parts without pick, without a cooperative launch (the per-pass launches
// prune in the exact form only) or with a zero triangle budget.
struct ScratchLayout {
  int64_t center_distance = 0, ready = 0, star = 0, triangle = 0, total = kStateBytes;
  int64_t triangle_end = 0;  // == begin: no triangle
};

int64_t align256(int64_t bytes) { return (bytes + 255) / 256 * 256; }

// Whether kcenter_greedy may run its passes in one cooperative kernel on the current device.
bool cooperative_launch(const KCenterLaunch& launch) {
  Device dev;
  return launch.allow_cooperative && query_device(dev) == cudaSuccess && dev.cooperative;
}

ScratchLayout scratch_layout(int64_t begin, int64_t end, bool pick, bool prune,
                             int64_t feature_bytes, const KCenterLaunch& launch) {
  ScratchLayout layout;
  layout.triangle_end = begin;
  if (!prune) return layout;
  layout.center_distance = layout.total;
  layout.total = align256(layout.total + end * static_cast<int64_t>(sizeof(float)));
  const int64_t budget = launch.triangle_bytes >= 0
                             ? launch.triangle_bytes
                             : std::min(kDefaultTriangleBytes, kTriangleRowsFactor * feature_bytes);
  if (!pick || !cooperative_launch(launch) || budget <= 0) return layout;
  // The most rows [begin, T) whose distances fit the budget (the triangle grows with T).
  int64_t lo = begin, hi = end;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (triangle_offset(mid, begin) * static_cast<int64_t>(sizeof(float)) <= budget)
      lo = mid;
    else
      hi = mid - 1;
  }
  if (lo - begin < 2) return layout;  // a single row is too little to bound anything
  layout.triangle_end = lo;
  layout.ready = layout.total;
  layout.total = align256(layout.total + end * static_cast<int64_t>(sizeof(int32_t)));
  layout.star = layout.total;
  layout.total = align256(layout.total + 2 * kMaxGridBlocks * static_cast<int64_t>(sizeof(int32_t)));
  layout.triangle = layout.total;
  layout.total = align256(layout.total + triangle_offset(lo, begin) * static_cast<int64_t>(sizeof(float)));
  return layout;
}

}  // namespace

int64_t kcenter_step_scratch_bytes() { return kStateBytes; }

int64_t kcenter_greedy_scratch_bytes(int64_t begin, int64_t end, bool pick, bool prune,
                                     int64_t feature_bytes, const KCenterLaunch& launch) {
  return scratch_layout(begin, end, pick, prune, feature_bytes, launch).total;
}

cudaError_t kcenter_step(const float* features, int64_t n, int64_t d, float* min_distances,
                         const int64_t* center, const float* center_row, int64_t* argmax,
                         void* scratch, cudaStream_t stream) {
  auto* state = static_cast<State*>(scratch);
  cudaError_t err = cudaMemsetAsync(state, 0, sizeof(State), stream);
  if (err != cudaSuccess) return err;
  Device dev;
  err = query_device(dev);
  if (err != cudaSuccess) return err;
  const bool vec = vectorizable(features, center_row, d * 4);
  const int blocks = vec ? fallback_blocks<float, true>(n, dev) : fallback_blocks<float, false>(n, dev);
  Pass<float> p;
  p.x = features;
  p.n = n;
  p.d = d;
  p.min_distances = min_distances;
  p.centers = const_cast<int64_t*>(center);
  p.state = state;
  p.keep_rows = keep_rows(n, d * 4, blocks, dev, kDefaultL2Share);
  if (vec)
    update_pass<float, true><<<blocks, kThreads, 0, stream>>>(p, 0, center_row, argmax, false, false);
  else
    update_pass<float, false><<<blocks, kThreads, 0, stream>>>(p, 0, center_row, argmax, false, false);
  return cudaGetLastError();
}

template <typename S>
cudaError_t kcenter_greedy(const S* features, int64_t n, int64_t d, float* min_distances,
                           int32_t* nearest, int64_t* centers, int64_t begin, int64_t end,
                           bool pick, bool prune, void* scratch, const KCenterLaunch& launch,
                           KCenterError* host_error, cudaStream_t stream) {
  *host_error = KCenterError{};
  if (begin >= end) return cudaSuccess;
  char* base = static_cast<char*>(scratch);
  const ScratchLayout layout =
      scratch_layout(begin, end, pick, prune, n * d * static_cast<int64_t>(sizeof(S)), launch);
  auto* state = reinterpret_cast<State*>(base);
  cudaError_t err = cudaMemsetAsync(state, 0, sizeof(State), stream);
  if (err != cudaSuccess) return err;
  Pass<S> p;
  p.x = features;
  p.n = n;
  p.d = d;
  p.min_distances = min_distances;
  p.nearest = nearest;
  p.centers = centers;
  p.end = end;
  p.state = state;
  if (prune) p.center_distance = reinterpret_cast<float*>(base + layout.center_distance);
  if (layout.triangle_end > begin) {
    p.triangle = reinterpret_cast<float*>(base + layout.triangle);
    p.triangle_first = begin;
    p.triangle_end = layout.triangle_end;
    p.ready = reinterpret_cast<int32_t*>(base + layout.ready);
    p.star = reinterpret_cast<int32_t*>(base + layout.star);
    err = cudaMemsetAsync(p.ready, 0, end * sizeof(int32_t), stream);
    if (err != cudaSuccess) return err;
  }
  err = vectorizable(features, nullptr, d * static_cast<int64_t>(sizeof(S)))
            ? run_greedy<S, true>(p, begin, end, pick, prune, launch, stream)
            : run_greedy<S, false>(p, begin, end, pick, prune, launch, stream);
  if (err != cudaSuccess) return err;
  static_assert(sizeof(KCenterError) == 24, "KCenterError mirrors State's error fields");
  err = cudaMemcpyAsync(host_error, &state->error_kind, sizeof(KCenterError),
                        cudaMemcpyDeviceToHost, stream);
  if (err != cudaSuccess) return err;
  return cudaStreamSynchronize(stream);
}

template cudaError_t kcenter_greedy<float>(const float*, int64_t, int64_t, float*, int32_t*,
                                           int64_t*, int64_t, int64_t, bool, bool, void*,
                                           const KCenterLaunch&, KCenterError*, cudaStream_t);
template cudaError_t kcenter_greedy<__nv_bfloat16>(const __nv_bfloat16*, int64_t, int64_t, float*,
                                                   int32_t*, int64_t*, int64_t, int64_t, bool,
                                                   bool, void*, const KCenterLaunch&,
                                                   KCenterError*, cudaStream_t);

}  // namespace anomaly_kernels::cuda
