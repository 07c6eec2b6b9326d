// The host half of the CUDA runtime, for kernels simulated on the CPU: simulated devices (their
// multiprocessor count, opt-in shared memory and resident blocks per multiprocessor are set by
// the tests), the sticky-free last error, memory operations on host memory, and kernel
// launches with the checks a GPU makes (block size, grid size, dynamic shared memory above
// 48 KB only after the kernel opted in, cooperative grids that fit the device at once).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_sim/scheduler.h"
#include "cuda_sim/vector_types.h"

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
  cudaErrorCooperativeLaunchTooLarge = 720,
  cudaErrorNotSupported = 801,
};
using cudaError = cudaError_t;

struct CUstream_st;
using cudaStream_t = CUstream_st*;

enum cudaDeviceAttr {
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrL2CacheSize = 38,
  cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
  cudaDevAttrCooperativeLaunch = 95,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};
enum cudaSharedCarveout { cudaSharedmemCarveoutDefault = -1, cudaSharedmemCarveoutMaxShared = 100 };
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

namespace cuda_sim {

struct Device {
  int sms = 4;
  int smem_optin = 227 * 1024;
  int blocks_per_sm = 2;  // what the occupancy query answers for every kernel
  int l2_bytes = 1 << 20;
};

constexpr int kDefaultSharedBytes = 48 * 1024;  // a block's dynamic shared memory without opt-in
// Bytes after a block's dynamic shared memory that must keep their value.
constexpr size_t kGuardBytes = 64;
constexpr unsigned char kGuard = 0xA5;

struct Runtime {
  std::vector<Device> devices{Device{}};
  int current = 0;
  cudaError_t last_error = cudaSuccess;
  std::string last_failure;                     // what the last failed kernel did
  std::map<std::pair<int, const void*>, int> opted_in;  // (device, kernel) -> dynamic bytes allowed

  static Runtime& instance() {
    static Runtime r;
    return r;
  }
  Device& device() { return devices[current]; }
  cudaError_t fail(cudaError_t e) {
    last_error = e;
    return e;
  }
};

// Runs `body` as every thread of the grid: block after block, or all blocks at once for a
// cooperative launch (a grid barrier needs them all).
inline cudaError_t run_grid(const void* kernel, dim3 grid, dim3 block, size_t shared, bool cooperative,
                            const std::function<void()>& body) {
  Runtime& rt = Runtime::instance();
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.y > 65535 || grid.z > 65535 || grid.x > 0x7FFFFFFFu)
    return rt.fail(cudaErrorInvalidConfiguration);
  const auto opt = rt.opted_in.find({rt.current, kernel});
  const size_t allowed = opt == rt.opted_in.end() ? kDefaultSharedBytes : size_t(opt->second);
  if (shared > allowed || shared > size_t(rt.device().smem_optin)) return rt.fail(cudaErrorInvalidValue);
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  if (cooperative && blocks > uint64_t(rt.device().sms) * rt.device().blocks_per_sm)
    return rt.fail(cudaErrorCooperativeLaunchTooLarge);

  Scheduler& s = Scheduler::instance();
  s.body = body;
  GridState grid_state;
  grid_state.cooperative = cooperative;
  grid_state.grid[0] = grid.x, grid_state.grid[1] = grid.y, grid_state.grid[2] = grid.z;
  grid_state.block[0] = block.x, grid_state.block[1] = block.y, grid_state.block[2] = block.z;
  const uint64_t group = cooperative ? blocks : 1;  // blocks that run together
  for (uint64_t first = 0; first < blocks; first += group) {
    std::vector<BlockState> states(group);
    std::vector<Fiber> fibers(group * threads);
    grid_state.blocks = int(group);
    for (uint64_t k = 0; k < group; ++k) {
      // Reverse turn order reverses the blocks too: a block must not rely on another's output.
      const uint64_t linear = s.reverse && !cooperative ? blocks - 1 - (first + k) : first + k;
      BlockState& b = states[k];
      b.idx[0] = unsigned(linear % grid.x);
      b.idx[1] = unsigned(linear / grid.x % grid.y);
      b.idx[2] = unsigned(linear / (uint64_t(grid.x) * grid.y));
      b.live = int(threads);
      b.warps.resize((threads + 31) / 32);
      for (uint64_t t = 0; t < threads; ++t) {
        b.warps[t / 32].live++;
        b.warps[t / 32].live_mask |= 1u << (t % 32);
      }
      // Dynamic shared memory, followed by a guard that must survive the block.
      b.dynamic_shared.assign(shared + kGuardBytes, kUnwrittenShared);
      std::memset(b.dynamic_shared.data() + shared, kGuard, kGuardBytes);
      poison(b.dynamic_shared.data() + shared, kGuardBytes);  // a read there stops an ASan build
      b.grid = &grid_state;
      for (uint64_t t = 0; t < threads; ++t) {
        Fiber& f = fibers[k * threads + t];
        f.tid[0] = unsigned(t % block.x);
        f.tid[1] = unsigned(t / block.x % block.y);
        f.tid[2] = unsigned(t / (uint64_t(block.x) * block.y));
        f.lane = int(t % 32);
        f.block = &b;
        f.warp = &b.warps[t / 32];
      }
    }
    grid_state.barrier = Barrier{};
    std::string error = s.run(fibers);
    for (BlockState& b : states) {
      unpoison(b.dynamic_shared.data() + shared, kGuardBytes);
      for (size_t i = shared; i < shared + kGuardBytes && error.empty(); ++i)
        if (b.dynamic_shared[i] != kGuard)
          error = "a block wrote past the end of its " + std::to_string(shared) + " bytes of dynamic shared memory";
    }
    if (!error.empty()) {
      rt.last_failure = error;
      return rt.fail(cudaErrorLaunchFailure);
    }
  }
  return cudaSuccess;
}

// kernel<<<grid, block, shared, stream>>>(args...) becomes launch(kernel, grid, block, shared,
// stream)(args...) in the translated source.
template <typename... P>
struct Launch {
  void (*kernel)(P...);
  dim3 grid, block;
  size_t shared;
  template <typename... A>
  void operator()(A&&... args) const {
    std::tuple<P...> params(static_cast<P>(std::forward<A>(args))...);
    auto k = kernel;
    run_grid(reinterpret_cast<const void*>(kernel), grid, block, shared, false,
             [&params, k] { std::apply(k, params); });
  }
};

template <typename... P>
Launch<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t shared = 0, cudaStream_t = nullptr) {
  return Launch<P...>{kernel, grid, block, shared};
}

// cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, block, args, shared,
// stream) becomes launch_cooperative(kernel, ...): the parameter types come from the kernel.
template <typename... P, size_t... I>
std::tuple<P...> unpack_arguments(void** args, std::index_sequence<I...>) {
  return std::tuple<P...>(*static_cast<std::remove_reference_t<P>*>(args[I])...);
}
template <typename... P>
cudaError_t launch_cooperative(void (*kernel)(P...), dim3 grid, dim3 block, void** args, size_t shared,
                               cudaStream_t) {
  std::tuple<P...> params = unpack_arguments<P...>(args, std::index_sequence_for<P...>{});
  auto k = kernel;
  return run_grid(reinterpret_cast<const void*>(kernel), grid, block, shared, true, [&params, k] { std::apply(k, params); });
}

}  // namespace cuda_sim

// ---- the runtime API that the launchers call ---------------------------------------------
inline cudaError_t cudaGetDevice(int* device) {
  *device = cuda_sim::Runtime::instance().current;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  auto& rt = cuda_sim::Runtime::instance();
  if (device < 0 || device >= int(rt.devices.size())) return rt.fail(cudaErrorInvalidDevice);
  const cuda_sim::Device& d = rt.devices[device];
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = d.sms; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = d.smem_optin; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = cuda_sim::kDefaultSharedBytes; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = d.smem_optin + 1024; return cudaSuccess;
    case cudaDevAttrL2CacheSize: *value = d.l2_bytes; return cudaSuccess;
    case cudaDevAttrCooperativeLaunch: *value = 1; return cudaSuccess;
  }
  return rt.fail(cudaErrorInvalidValue);
}
inline cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute attr, int value) {
  auto& rt = cuda_sim::Runtime::instance();
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > rt.device().smem_optin) return rt.fail(cudaErrorInvalidValue);
    rt.opted_in[{rt.current, kernel}] = value;
  }
  return cudaSuccess;
}
template <typename... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
// The device's resident blocks per multiprocessor for every kernel, fewer where the threads
// (2048 per multiprocessor) or the dynamic shared memory (the opt-in size plus 1 KB) run out.
template <typename... P>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, void (*)(P...), int threads, size_t shared) {
  const cuda_sim::Device& d = cuda_sim::Runtime::instance().device();
  if (threads <= 0 || threads > 1024) {
    *blocks = 0;
    return cudaSuccess;
  }
  const int by_threads = 2048 / threads;
  const int by_shared = shared == 0 ? d.blocks_per_sm : static_cast<int>((size_t(d.smem_optin) + 1024) / shared);
  *blocks = std::min({d.blocks_per_sm, by_threads, by_shared});
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() {
  auto& rt = cuda_sim::Runtime::instance();
  const cudaError_t e = rt.last_error;
  rt.last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return cuda_sim::Runtime::instance().last_error; }
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorCooperativeLaunchTooLarge: return "too many blocks in cooperative launch";
    default: return "simulated CUDA error";
  }
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t = nullptr) {
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
