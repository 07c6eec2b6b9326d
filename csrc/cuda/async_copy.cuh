// Copies from global to shared memory that do not wait for the data (cp.async on sm_80 and
// newer, a plain load and store before), so a thread keeps every load of a tile in flight at
// once. Torch-free; device code only.
//
// Two ways to wait:
//  - copy_wait(): every copy this thread started has landed (single-buffered tiles);
//  - copy_commit() closes a group of copies, copy_wait<Pending>() waits until at most Pending of
//    this thread's committed groups are still in flight (pipelines several stages deep).
// Either way the copies are visible to other threads only after a barrier that follows the wait.
// (tests/cuda_sim has its own version of this header, which lands copies as late as these rules
// allow, so that a kernel reading a stage too early fails in the tests.)
#pragma once

namespace anomaly_kernels::cuda {

// Starts copying *src to *dst (shared memory).
template <typename T>
__device__ __forceinline__ void copy_async(T* dst, const T* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(d), "l"(src), "n"(sizeof(T)));
#else
  *dst = *src;
#endif
}

// Starts copying Bytes (4, 8 or 16) from src to dst (shared memory), or zero-fills them when
// !valid (src must then still be a valid address; it is not read).
template <int Bytes>
__device__ __forceinline__ void copy_async(void* dst, const void* src, bool valid) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int src_bytes = valid ? Bytes : 0;
  if constexpr (Bytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(src), "r"(src_bytes));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(address), "l"(src), "n"(Bytes),
                 "r"(src_bytes));
  }
#else
  if constexpr (Bytes == 16) {
    *static_cast<uint4*>(dst) = valid ? *static_cast<const uint4*>(src) : make_uint4(0, 0, 0, 0);
  } else if constexpr (Bytes == 8) {
    *static_cast<uint2*>(dst) = valid ? *static_cast<const uint2*>(src) : make_uint2(0, 0);
  } else {
    *static_cast<unsigned*>(dst) = valid ? *static_cast<const unsigned*>(src) : 0u;
  }
#endif
}

// Waits for every copy this thread started.
__device__ __forceinline__ void copy_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// Closes the group of copies this thread started since the last copy_commit().
__device__ __forceinline__ void copy_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most Pending of this thread's committed groups are still in flight.
template <int Pending>
__device__ __forceinline__ void copy_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
#endif
}

}  // namespace anomaly_kernels::cuda
