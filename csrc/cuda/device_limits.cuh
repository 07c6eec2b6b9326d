// Device facts a launcher sizes its grid and tiles by, read once per device and cached: the
// launchers run at every operator call, and attribute queries cost microseconds each.
// Torch-free, host code.
#pragma once
#include <atomic>

#include <cuda_runtime_api.h>

namespace anomaly_kernels::cuda {

// Devices past this many are queried at every call instead of cached.
constexpr int kCachedDevices = 64;

struct DeviceLimits {
  int sms = 0;          // multiprocessors
  int smem_optin = 0;   // shared memory a block may have once it opts in, bytes
  int l2_bytes = 0;     // L2 cache
  int cooperative = 0;  // 1: cooperative launches (grid-wide barriers) are supported
};

// The current device (written to *device) and its limits.
inline cudaError_t current_device_limits(int* device, DeviceLimits* limits) {
  // sms is stored last and read first: a non-zero count means the other fields are there.
  static std::atomic<int> sms_cache[kCachedDevices], smem_cache[kCachedDevices], l2_cache[kCachedDevices],
      cooperative_cache[kCachedDevices];
  cudaError_t err = cudaGetDevice(device);
  if (err != cudaSuccess) return err;
  const int dev = *device;
  const bool cached = dev >= 0 && dev < kCachedDevices;
  if (cached && sms_cache[dev].load() > 0) {
    limits->sms = sms_cache[dev].load();
    limits->smem_optin = smem_cache[dev].load();
    limits->l2_bytes = l2_cache[dev].load();
    limits->cooperative = cooperative_cache[dev].load();
    return cudaSuccess;
  }
  err = cudaDeviceGetAttribute(&limits->sms, cudaDevAttrMultiProcessorCount, dev);
  if (err == cudaSuccess)
    err = cudaDeviceGetAttribute(&limits->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&limits->l2_bytes, cudaDevAttrL2CacheSize, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&limits->cooperative, cudaDevAttrCooperativeLaunch, dev);
  if (err != cudaSuccess) return err;
  if (cached) {
    smem_cache[dev].store(limits->smem_optin);
    l2_cache[dev].store(limits->l2_bytes);
    cooperative_cache[dev].store(limits->cooperative);
    sms_cache[dev].store(limits->sms);
  }
  return cudaSuccess;
}

// Lets `Kernel` take `bytes` of dynamic shared memory on `device` (once per kernel and device);
// with `prefer_shared`, also asks for the largest shared-memory carve-out of L1, so more blocks
// stay resident per multiprocessor (a hint).
template <auto Kernel>
cudaError_t allow_shared_memory(int device, int bytes, bool prefer_shared) {
  static std::atomic<bool> done[kCachedDevices];
  const bool cached = device >= 0 && device < kCachedDevices;
  if (cached && done[device].load()) return cudaSuccess;
  cudaError_t err = cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (err == cudaSuccess && prefer_shared)
    err = cudaFuncSetAttribute(Kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                               cudaSharedmemCarveoutMaxShared);
  if (err != cudaSuccess) return err;
  if (cached) done[device].store(true);
  return cudaSuccess;
}

// Blocks of `Kernel`, launched with `threads` threads and no dynamic shared memory, that stay
// resident on one multiprocessor of `device` (asked once per kernel and device).
template <auto Kernel, int threads>
cudaError_t resident_blocks_per_sm(int device, int* per_sm) {
  static std::atomic<int> cache[kCachedDevices];
  const bool cached = device >= 0 && device < kCachedDevices;
  if (cached && (*per_sm = cache[device].load()) > 0) return cudaSuccess;
  const cudaError_t err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(per_sm, Kernel, threads, 0);
  if (err != cudaSuccess) return err;
  if (cached) cache[device].store(*per_sm);
  return cudaSuccess;
}

}  // namespace anomaly_kernels::cuda
