// The device half: CUDA's keywords, built-in variables and intrinsics, for kernels compiled as
// plain C++ and run as fibers (cuda_sim/scheduler.h). Shuffles and votes exchange values through
// the warp's slots around a warp barrier; every lane that is still running takes part, so a
// full-mask shuffle or __syncthreads that some running thread skips is reported as a deadlock.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda_sim/copy_counter.h"
#include "cuda_sim/scheduler.h"
#include "cuda_sim/vector_types.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __constant__ static

namespace cuda_sim {

inline uint3 thread_index() {
  const Fiber& f = this_fiber();
  return {f.tid[0], f.tid[1], f.tid[2]};
}
inline uint3 block_index() {
  const BlockState& b = *this_fiber().block;
  return {b.idx[0], b.idx[1], b.idx[2]};
}
inline dim3 block_dim() {
  const GridState& g = *this_fiber().block->grid;
  return dim3(g.block[0], g.block[1], g.block[2]);
}
inline dim3 grid_dim() {
  const GridState& g = *this_fiber().block->grid;
  return dim3(g.grid[0], g.grid[1], g.grid[2]);
}

inline unsigned char* dynamic_shared() { return this_fiber().block->dynamic_shared.data(); }

// One __shared__ declaration's storage in the running block, made on first use. `Key` is unique
// per declaration (and per instantiation of a template kernel).
template <typename T, long long Id>
T& block_shared() {
  static const char key = 0;
  BlockState& b = *this_fiber().block;
  for (auto& entry : b.static_shared)
    if (entry.first == &key) return *static_cast<T*>(entry.second);
  // Exactly sizeof(T) bytes, so that an AddressSanitizer build stops at the first byte past it.
  void* storage = ::operator new(sizeof(T), std::align_val_t(64));
  std::memset(storage, kUnwrittenShared, sizeof(T));
  b.static_shared.emplace_back(&key, storage);
  return *static_cast<T*>(storage);
}

inline void sync_block() {
  BlockState& b = *this_fiber().block;
  Scheduler::instance().arrive_and_wait(b.barrier, &b.live);
}
inline void sync_warp() {
  Warp& w = *this_fiber().warp;
  Scheduler::instance().arrive_and_wait(w.barrier, &w.live);
}
// As cooperative groups implements grid.sync(): a block barrier, thread 0 of each block meets
// the other blocks' thread 0, a block barrier. A block whose thread 0 has returned never
// arrives, so the others wait for ever (reported as a deadlock), as they would on a GPU.
inline void sync_grid() {
  Fiber& f = this_fiber();
  GridState* g = f.block->grid;
  if (!g->cooperative) throw std::runtime_error("grid.sync() in a kernel that was not launched cooperatively");
  sync_block();
  if (f.tid[0] == 0 && f.tid[1] == 0 && f.tid[2] == 0) Scheduler::instance().arrive_and_wait(g->barrier, &g->blocks);
  sync_block();
}

template <typename T>
uint64_t bits_of(T v) {
  static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

// This lane writes `bits` to its slot of the current exchange and waits until every live lane
// has written; returns the exchange's generation (the slots it wrote are Warp::slots[g & 1]).
inline uint64_t publish(uint64_t bits) {
  Fiber& f = this_fiber();
  Warp& w = *f.warp;
  const uint64_t generation = w.barrier.generation;
  w.slots[generation & 1][f.lane] = bits;
  w.written[generation & 1][f.lane] = generation;
  sync_warp();
  return generation;
}

// Every live lane publishes `value`; returns the value lane `source(lane)` published.
template <typename T, typename Source>
T exchange(T value, Source source) {
  Fiber& f = this_fiber();
  Warp& w = *f.warp;
  const uint64_t generation = publish(bits_of(value));
  const uint64_t* slots = w.slots[generation & 1];
  const int from = source(f.lane);
  if (from == f.lane) return value;
  if (from < 0 || from >= 32 || w.written[generation & 1][from] != generation)
    throw std::runtime_error("a shuffle reads lane " + std::to_string(from) +
                             ", which does not take part in it (undefined on a GPU)");
  return from_bits<T>(slots[from]);
}

}  // namespace cuda_sim

#define threadIdx (::cuda_sim::thread_index())
#define blockIdx (::cuda_sim::block_index())
#define blockDim (::cuda_sim::block_dim())
#define gridDim (::cuda_sim::grid_dim())
constexpr int warpSize = 32;

inline void __syncthreads() { cuda_sim::sync_block(); }
inline void __syncwarp(unsigned = 0xFFFFFFFFu) { cuda_sim::sync_warp(); }
inline void __threadfence() {}
inline void __threadfence_block() {}

template <typename T>
T __shfl_xor_sync(unsigned, T value, int lane_mask, int width = 32) {
  return cuda_sim::exchange(value, [=](int lane) {
    const int to = lane ^ lane_mask;
    return to / width == lane / width ? to : lane;
  });
}
template <typename T>
T __shfl_sync(unsigned, T value, int source, int width = 32) {
  return cuda_sim::exchange(value, [=](int lane) { return lane / width * width + source % width; });
}
template <typename T>
T __shfl_down_sync(unsigned, T value, unsigned delta, int width = 32) {
  return cuda_sim::exchange(value, [=](int lane) {
    const int to = lane + int(delta);
    return to / width == lane / width ? to : lane;
  });
}
inline unsigned __ballot_sync(unsigned, int predicate) {
  cuda_sim::Warp& w = *cuda_sim::this_fiber().warp;
  const uint64_t generation = cuda_sim::publish(predicate ? 1 : 0);
  const uint64_t* slots = w.slots[generation & 1];
  // The lanes that voted in this generation, even those that have returned since.
  unsigned ballot = 0;
  for (int lane = 0; lane < 32; ++lane)
    if (w.written[generation & 1][lane] == generation && slots[lane] == 1) ballot |= 1u << lane;
  return ballot;
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) {
  return __ballot_sync(mask, !predicate) == 0;
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }

inline float __uint_as_float(unsigned x) { return cuda_sim::from_bits<float>(x); }
inline unsigned __float_as_uint(float x) { return unsigned(cuda_sim::bits_of(x)); }
inline float __int_as_float(int x) { return cuda_sim::from_bits<float>(unsigned(x)); }
inline int __float_as_int(float x) { return int(unsigned(cuda_sim::bits_of(x))); }
inline double __longlong_as_double(long long x) { return cuda_sim::from_bits<double>(uint64_t(x)); }
inline long long __double_as_longlong(double x) { return (long long)cuda_sim::bits_of(x); }

inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
using std::exp;
using std::fma;
using std::isfinite;
using std::isinf;
using std::isnan;
using std::log;
using std::sqrt;

// Cache-hinted loads and stores: plain ones here. Read-only loads (__ldg) are counted like
// copies to shared memory (copy_counter.h): both are how kernels read their inputs' bulk. A GPU
// faults on a load from an address off its type's alignment (a float4 off 16 bytes), which the
// CPU would serve: refused here.
template <typename T>
T __ldg(const T* p) {
  if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0)
    throw std::runtime_error("__ldg of " + std::to_string(sizeof(T)) + " bytes from a misaligned address");
  ::cuda_sim::CopyCounter::instance().count(p, static_cast<int>(sizeof(T)));
  return *p;
}
#define CUDA_SIM_PLAIN_LOAD(name) \
  template <typename T>           \
  T name(const T* p) {            \
    return *p;                    \
  }
CUDA_SIM_PLAIN_LOAD(__ldcg)
CUDA_SIM_PLAIN_LOAD(__ldcs)
CUDA_SIM_PLAIN_LOAD(__ldlu)
#undef CUDA_SIM_PLAIN_LOAD
template <typename T>
void __stcs(T* p, T v) {
  *p = v;
}
template <typename T>
void __stcg(T* p, T v) {
  *p = v;
}

// Atomics: a fiber runs alone between barriers, so a plain read-modify-write is atomic.
namespace cuda_sim {
template <typename T, typename F>
T read_modify_write(T* p, F f) {
  const T old = *p;
  *p = f(old);
  return old;
}
}  // namespace cuda_sim
template <typename T>
T atomicAdd(T* p, T v) {
  return cuda_sim::read_modify_write(p, [v](T old) { return old + v; });
}
template <typename T>
T atomicMax(T* p, T v) {
  return cuda_sim::read_modify_write(p, [v](T old) { return old < v ? v : old; });
}
template <typename T>
T atomicMin(T* p, T v) {
  return cuda_sim::read_modify_write(p, [v](T old) { return v < old ? v : old; });
}
template <typename T>
T atomicExch(T* p, T v) {
  return cuda_sim::read_modify_write(p, [v](T) { return v; });
}
template <typename T>
T atomicCAS(T* p, T compare, T v) {
  return cuda_sim::read_modify_write(p, [compare, v](T old) { return old == compare ? v : old; });
}
template <typename T>
T atomicOr(T* p, T v) {
  return cuda_sim::read_modify_write(p, [v](T old) { return old | v; });
}

// CUDA's min and max take mixed integer types (the wider one wins).
template <typename A, typename B>
auto min(A a, B b) -> std::common_type_t<A, B> {
  using C = std::common_type_t<A, B>;
  return C(b) < C(a) ? C(b) : C(a);
}
template <typename A, typename B>
auto max(A a, B b) -> std::common_type_t<A, B> {
  using C = std::common_type_t<A, B>;
  return C(a) < C(b) ? C(b) : C(a);
}
