// The simulation's version of csrc/cuda/async_copy.cuh (found first on the include path): the
// same functions, with copies that land when the rules say they must have landed, not earlier,
// when Scheduler::late_copies is set (at once otherwise).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_runtime_api.h"
#include "cuda_sim/copy_counter.h"

namespace anomaly_kernels::cuda {

inline void start_copy(void* dst, const void* src, int bytes, bool valid) {
  // cp.async copies 4, 8 or 16 bytes between addresses aligned to the size (else it faults).
  if ((bytes != 4 && bytes != 8 && bytes != 16) || reinterpret_cast<uintptr_t>(dst) % bytes != 0 ||
      (valid && reinterpret_cast<uintptr_t>(src) % bytes != 0))
    throw std::runtime_error("cp.async of " + std::to_string(bytes) + " bytes from or to a misaligned address");
  if (valid) ::cuda_sim::CopyCounter::instance().count(src, bytes);
  const ::cuda_sim::Copy copy{dst, src, bytes, valid};
  if (!::cuda_sim::Scheduler::instance().late_copies) {
    copy.land();
  } else {
    ::cuda_sim::this_fiber().open_copies.push_back(copy);
  }
}

template <typename T>
inline void copy_async(T* dst, const T* src) {
  start_copy(dst, src, static_cast<int>(sizeof(T)), true);
}

template <int Bytes>
inline void copy_async(void* dst, const void* src, bool valid) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
  start_copy(dst, src, Bytes, valid);
}

// cp.async.wait_all: commits what is open and waits for everything.
inline void copy_wait() { ::cuda_sim::this_fiber().land_all_copies(); }

inline void copy_commit() {
  ::cuda_sim::Fiber& f = ::cuda_sim::this_fiber();
  f.committed_copies.push_back(std::move(f.open_copies));
  f.open_copies.clear();
}

// cp.async.wait_group Pending: the oldest committed groups land until Pending are left; copies
// not yet committed stay in flight.
template <int Pending>
inline void copy_wait() {
  ::cuda_sim::Fiber& f = ::cuda_sim::this_fiber();
  while (f.committed_copies.size() > static_cast<size_t>(Pending)) {
    for (const ::cuda_sim::Copy& c : f.committed_copies.front()) c.land();
    f.committed_copies.pop_front();
  }
}

}  // namespace anomaly_kernels::cuda
