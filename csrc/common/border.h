// Border handling shared by the CPU and CUDA blur kernels (torch-free, host and device).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define AK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define AK_HOST_DEVICE inline
#endif

namespace anomaly_kernels {

// Same names and meaning as torch.nn.functional.pad's modes.
enum class Border : int32_t { Constant = 0, Reflect = 1, Replicate = 2, Circular = 3 };

// Maps coordinate `i` (possibly outside [0, n)) to the input coordinate whose value a padded
// tensor holds there, or -1 where constant (zero) padding applies. Reflect mirrors about the edge
// sample without repeating it (… 2 1 | 0 1 2 … n-1 | n-2 …) and keeps mirroring when the
// padding exceeds the size, where F.pad would refuse; circular wraps around likewise.
AK_HOST_DEVICE int64_t map_border(int64_t i, int64_t n, Border border) {
  if (i >= 0 && i < n) return i;
  switch (border) {
    case Border::Constant:
      return -1;
    case Border::Replicate:
      return i < 0 ? 0 : n - 1;
    case Border::Circular: {
      const int64_t r = i % n;
      return r < 0 ? r + n : r;
    }
    case Border::Reflect:
    default: {
      if (n == 1) return 0;
      const int64_t period = 2 * (n - 1);
      int64_t r = i % period;
      if (r < 0) r += period;
      return r < n ? r : period - r;
    }
  }
}

}  // namespace anomaly_kernels
