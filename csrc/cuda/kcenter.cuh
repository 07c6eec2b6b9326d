// Launchers of the CUDA k-center passes (torch-free; implemented in kcenter.cu), shared by the
// k-center family: kcenter_step_ and kcenter_step_to_ (one pass), kcenter_greedy_ (many).
// All pointers are device pointers unless named host_*; features is row-major (n, d).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace anomaly_kernels::cuda {

// One pass: lowers min_distances[i] to ||features[i] - c|| for the center c = features[*center]
// (center_row == nullptr) or c = center_row (d values; center == nullptr), and writes the
// farthest row index (ties: smallest) to *argmax. An out-of-range *center leaves min_distances
// unchanged and writes -1 to *argmax. Never synchronises the host. scratch: device memory of
// kcenter_step_scratch_bytes(), 16-byte aligned.
int64_t kcenter_step_scratch_bytes();
cudaError_t kcenter_step(const float* features, int64_t n, int64_t d, float* min_distances,
                         const int64_t* center, const float* center_row, int64_t* argmax,
                         void* scratch, cudaStream_t stream);

// How kcenter_greedy runs the passes.
struct KCenterLaunch {
  // Run all passes in one cooperative kernel with a grid barrier per pass when the device
  // supports it and the grid can be co-resident; otherwise one or two launches per pass.
  bool allow_cooperative = true;
  // Upper bound on the blocks per SM of the cooperative grid (0: what occupancy allows). Fewer
  // blocks make each grid barrier and the per-pass atomics cheaper.
  int max_blocks_per_sm = 0;
  // Share of the L2 cache given to rows read with the default eviction priority; all other
  // rows are streamed with evict-first loads, so that part of the rows stays cached across
  // passes when the features do not fit in L2. Negative: the built-in default.
  float l2_share = -1.0f;
  // Budget in bytes of the center-to-center distances kept across passes, which let a pruned
  // pass bound its center's distances instead of waiting for them (one grid barrier per pass
  // instead of two). Negative: the built-in default (at most 1 GiB and 8x the rows' bytes);
  // 0: none.
  int64_t triangle_bytes = -1;
};

// What the device reported; kind 0: no error.
struct KCenterError {
  int64_t kind = 0;   // KCenterErrorKind
  int64_t where = 0;  // the position in centers, or the row of nearest
  int64_t value = 0;  // the offending index
};
enum KCenterErrorKind : int64_t {
  kCenterOutOfRange = 1,   // centers[where] = value is not in [0, n)
  kNearestOutOfRange = 2,  // nearest[where] = value is not in [-1, end)
};

// Bytes of device scratch that kcenter_greedy needs for passes [begin, end) over features of
// feature_bytes bytes, with the same pick, prune and launch (256-byte aligned pointer expected).
int64_t kcenter_greedy_scratch_bytes(int64_t begin, int64_t end, bool pick, bool prune,
                                     int64_t feature_bytes, const KCenterLaunch& launch);

// Passes begin .. end-1 of a greedy selection over features stored as S (float or
// __nv_bfloat16; distances in float). Pass t applies centers[t] (recording position t in
// nearest[] for the rows it brings closer) and, when `pick`, writes the farthest row to
// centers[t + 1]. With `prune`, rows that the triangle inequality proves unaffected are not read.
// Enqueues the passes, then waits for them (one host synchronisation per call) and stores in
// *host_error what the kernels found wrong with centers[] or nearest[].
template <typename S>
cudaError_t kcenter_greedy(const S* features, int64_t n, int64_t d, float* min_distances,
                           int32_t* nearest, int64_t* centers, int64_t begin, int64_t end,
                           bool pick, bool prune, void* scratch, const KCenterLaunch& launch,
                           KCenterError* host_error, cudaStream_t stream);

}  // namespace anomaly_kernels::cuda
