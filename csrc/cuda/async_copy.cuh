// Element copies from global to shared memory that do not wait for the data (cp.async on
// sm_80 and newer, a plain load and store before), so a thread keeps every load of a tile in
// flight at once. Torch-free; device code only.
#pragma once

namespace anomaly_kernels::cuda {

// Starts copying *src to *dst (shared memory); call copy_wait() before the barrier that
// publishes the tile.
template <typename T>
__device__ __forceinline__ void copy_async(T* dst, const T* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(d), "l"(src), "n"(sizeof(T)));
#else
  *dst = *src;
#endif
}

// Waits for every copy_async this thread started.
__device__ __forceinline__ void copy_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

}  // namespace anomaly_kernels::cuda
