// Counts how often each 4-byte word of one watched buffer is read by copies to shared memory
// (cuda/async_copy.cuh) or by read-only loads (__ldg, cuda_sim/device.h), so that tests can check
// a kernel's memory traffic: which words it reads, and how many times (a tile of a matrix read
// once per image group, an input row staged once). A load of fewer than 4 bytes counts its word.
#pragma once
#include <cstddef>
#include <cstdint>

namespace cuda_sim {

struct CopyCounter {
  const unsigned char* begin = nullptr;
  const unsigned char* end = nullptr;
  int32_t* counts = nullptr;  // one per 4-byte word of [begin, end)

  void count(const void* src, int bytes) {
    if (counts == nullptr) return;
    const auto* first = static_cast<const unsigned char*>(src);
    for (const unsigned char* p = first; p < first + bytes; p += 4)
      if (p >= begin && p < end) ++counts[(p - begin) / 4];
  }

  static CopyCounter& instance() {
    static CopyCounter c;
    return c;
  }
};

}  // namespace cuda_sim
