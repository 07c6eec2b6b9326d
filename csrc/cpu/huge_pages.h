// Large fresh outputs are first written page by page; with 4 KiB pages, faulting in a 125 MB
// precision tensor costs more CPU time than computing it. Asking the kernel for transparent
// huge pages on the buffer (honoured where THP is set to "madvise" or "always") turns some
// 30,000 page faults into about 60. Only whole 2 MiB pages inside the buffer are advised; the
// call is a hint, so failure (or a system without THP) changes nothing but speed.
#pragma once
#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace anomaly_kernels::cpu {

inline void advise_huge_pages(void* data, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t kHugePage = std::uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<std::uintptr_t>(data);
  const std::uintptr_t first = (begin + kHugePage - 1) & ~(kHugePage - 1);
  const std::uintptr_t last = (begin + bytes) & ~(kHugePage - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace anomaly_kernels::cpu
