// Kernels that test the simulation itself (test_simulator.py): each one either computes
// something the test knows independently, or breaks a CUDA rule the simulation must report.
#include <cooperative_groups.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/async_copy.cuh"

namespace cg = cooperative_groups;

namespace {

// out[thread] = the warp's sum of (lane + 1) by an xor butterfly, the ballot of odd lanes, and
// the value of lane 3, for a block of `blockDim.x` threads.
__global__ void warp_collectives(int* out) {
  const int t = threadIdx.x, lane = t % 32;
  int sum = lane + 1;
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, offset);
  const unsigned odd = __ballot_sync(0xFFFFFFFFu, lane % 2 == 1);
  const int from_three = __shfl_sync(0xFFFFFFFFu, lane * 10, 3);
  out[3 * t] = sum;
  out[3 * t + 1] = static_cast<int>(odd);
  out[3 * t + 2] = from_three;
}

// Every lane votes and returns at once: the last lane to vote may return before the others
// read the vote, which must still count it.
__global__ void vote_then_return(long long* out) {
  out[threadIdx.x] = static_cast<long long>(__ballot_sync(0xFFFFFFFFu, 1));
}

// Block-wide reversal through shared memory: correct only if __syncthreads orders the writes
// before the reads.
__global__ void reverse_block(const float* in, float* out) {
  __shared__ float buffer[256];
  const int t = threadIdx.x, n = blockDim.x;
  buffer[t] = in[blockIdx.x * n + t];
  __syncthreads();
  out[blockIdx.x * n + t] = buffer[n - 1 - t];
}

// Every block adds its index to a counter, waits at the grid barrier, then reads the total.
__global__ void grid_total(int* counter, int* seen) {
  if (threadIdx.x == 0) atomicAdd(counter, static_cast<int>(blockIdx.x) + 1);
  cg::this_grid().sync();
  if (threadIdx.x == 0) seen[blockIdx.x] = *counter;
}

// Each thread reads its neighbour's shared slot with no barrier after the writes: a race.
__global__ void racy_neighbour(int* out) {
  __shared__ int slot[64];
  const int t = threadIdx.x;
  slot[t] = t;
  out[t] = slot[(t + 1) % blockDim.x];
}

// Stages 32 floats with asynchronous copies and reads a neighbour's after the barrier; with
// `wait` false the thread never waits for its copy (wrong on a GPU, whatever the timing).
__global__ void staged_copy(const float* in, float* out, bool wait) {
  __shared__ float stage[32];
  const int t = threadIdx.x;
  anomaly_kernels::cuda::copy_async(stage + t, in + t);
  if (wait) anomaly_kernels::cuda::copy_wait();
  __syncthreads();
  out[t] = stage[(t + 1) % 32];
}

// Thread t copies in[t + 1]: the last thread reads one element past the end.
__global__ void read_past_end(const float* in, float* out) { out[threadIdx.x] = in[threadIdx.x + 1]; }

// Block 1's thread 0 returns before the grid barrier: that block never arrives (a hang on a GPU).
__global__ void grid_sync_without_a_leader(int* out) {
  if (blockIdx.x == 1 && threadIdx.x == 0) return;
  cg::this_grid().sync();
  out[blockIdx.x] = 1;
}

// Lane 0 waits at the block barrier while the others shuffle: a deadlock on a GPU.
__global__ void skipped_shuffle(int* out) {
  int v = threadIdx.x;
  if (threadIdx.x % 32 == 0) {
    __syncthreads();
  } else {
    v = __shfl_xor_sync(0xFFFFFFFFu, v, 1);
  }
  out[threadIdx.x] = v;
}

// Writes one float past the dynamic shared memory it was given.
__global__ void shared_overflow(int floats) {
  extern __shared__ float dynamic[];
  if (threadIdx.x == 0) dynamic[floats] = 1.f;
}

// Copies shared memory that nobody wrote.
__global__ void unwritten_shared(float* out) {
  __shared__ float never_written[32];
  out[threadIdx.x] = never_written[threadIdx.x];
}

// Uses `bytes` of dynamic shared memory.
__global__ void uses_shared(float* out) {
  extern __shared__ float dynamic[];
  dynamic[threadIdx.x] = 1.f;
  out[threadIdx.x] = dynamic[threadIdx.x];
}

}  // namespace

extern "C" {

int selftest_warp_collectives(int threads, int* out) {
  warp_collectives<<<1, threads>>>(out);
  return cudaGetLastError();
}
int selftest_vote_then_return(long long* out) {
  vote_then_return<<<1, 32>>>(out);
  return cudaGetLastError();
}
int selftest_reverse_block(int blocks, int threads, const float* in, float* out) {
  reverse_block<<<blocks, threads>>>(in, out);
  return cudaGetLastError();
}
int selftest_grid_total(int blocks, int* counter, int* seen) {
  void* args[] = {&counter, &seen};
  const cudaError_t err = cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(grid_total), dim3(blocks),
                                                      dim3(64), args, 0, nullptr);
  (void)cudaGetLastError();  // a refused launch is also the last error: leave none for the next test
  return err;
}
int selftest_grid_sync_without_cooperative_launch(int* counter, int* seen) {
  grid_total<<<2, 64>>>(counter, seen);
  return cudaGetLastError();
}
int selftest_racy_neighbour(int* out) {
  racy_neighbour<<<1, 64>>>(out);
  return cudaGetLastError();
}
int selftest_staged_copy(const float* in, float* out, int wait) {
  staged_copy<<<1, 32>>>(in, out, wait != 0);
  return cudaGetLastError();
}
int selftest_read_past_end(int n, const float* in, float* out) {
  read_past_end<<<1, n>>>(in, out);
  return cudaGetLastError();
}
int selftest_grid_sync_without_a_leader(int* out) {
  void* args[] = {&out};
  const cudaError_t err = cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(grid_sync_without_a_leader),
                                                      dim3(2), dim3(64), args, 0, nullptr);
  (void)cudaGetLastError();
  return err;
}
int selftest_skipped_shuffle(int* out) {
  skipped_shuffle<<<1, 64>>>(out);
  return cudaGetLastError();
}
int selftest_shared_overflow(int floats) {
  shared_overflow<<<1, 32, floats * sizeof(float)>>>(floats);
  return cudaGetLastError();
}
int selftest_unwritten_shared(float* out) {
  unwritten_shared<<<1, 32>>>(out);
  return cudaGetLastError();
}
// opt_in < 0: launch without asking for more than the default dynamic shared memory.
int selftest_uses_shared(int threads, int bytes, int opt_in, float* out) {
  if (opt_in >= 0) {
    const cudaError_t err = cudaFuncSetAttribute(uses_shared, cudaFuncAttributeMaxDynamicSharedMemorySize, opt_in);
    if (err != cudaSuccess) return cudaGetLastError();
  }
  uses_shared<<<1, threads, bytes>>>(out);
  return cudaGetLastError();
}

}  // extern "C"
