// Execution contexts of the CUDA simulation's fibers: a stack and the registers to resume it.
//
// swapcontext saves and restores the signal mask with a system call at every switch; a kernel
// run switches millions of times, so x86-64 uses a switch of its own: the callee-saved
// registers pushed on the old stack, the stack pointer swapped. (The floating-point control
// words are not switched: no kernel changes rounding modes, and reloading them serialises.)
// Other machines keep ucontext.
//
// Built with AddressSanitizer, every switch tells it which stack the thread moves to, so that
// it checks the kernels' memory accesses without mistaking a fiber's stack for a corrupt one.
#pragma once
#include <pthread.h>
#include <ucontext.h>

#include <cstddef>
#include <cstdint>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUDA_SIM_ASAN 1
#else
#define CUDA_SIM_ASAN 0
#endif

namespace cuda_sim {

#if defined(__x86_64__)
// cuda_sim_switch(&from_sp, to_sp). Weak: every translation unit defines it, one is kept.
extern "C" void cuda_sim_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .weak cuda_sim_switch
  .hidden cuda_sim_switch
  .type cuda_sim_switch, @function
cuda_sim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuda_sim_switch, .-cuda_sim_switch
)");
#endif

struct Context {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
  const void* stack_bottom = nullptr;  // for AddressSanitizer
  size_t stack_bytes = 0;
  void* fake_stack = nullptr;          // AddressSanitizer's, saved while switched out
  bool ending = false;                 // the last switch away from this context

  // The calling OS thread's own stack (the scheduler's context).
  void adopt_this_thread_stack() {
    if (stack_bottom != nullptr) return;
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) return;
    void* bottom = nullptr;
    size_t bytes = 0;
    pthread_attr_getstack(&attr, &bottom, &bytes);
    pthread_attr_destroy(&attr);
    stack_bottom = bottom;
    stack_bytes = bytes;
  }
};

// A context that starts `entry` on the stack [stack, stack + bytes) at its first switch.
inline void make_context(Context& c, void* stack, size_t bytes, void (*entry)()) {
#if CUDA_SIM_ASAN
  // A reused stack still carries the redzones of the frames its last fiber never returned
  // from; the new fiber starts with all of it addressable.
  ASAN_UNPOISON_MEMORY_REGION(stack, bytes);
#endif
  c.stack_bottom = stack;
  c.stack_bytes = bytes;
  c.fake_stack = nullptr;
  c.ending = false;
#if defined(__x86_64__)
  auto top = reinterpret_cast<uintptr_t>(stack) + bytes;
  top &= ~uintptr_t(15);
  auto* words = reinterpret_cast<uint64_t*>(top);
  words[-1] = 0;                                  // entry's return address: never used
  words[-2] = reinterpret_cast<uint64_t>(entry);  // where the first switch returns to
  for (int i = 3; i <= 8; ++i) words[-i] = 0;     // rbp, rbx, r12-r15
  c.sp = &words[-8];
#else
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
#endif
}

// Marks memory that no kernel may touch (a no-op without AddressSanitizer).
inline void poison(const void* p, size_t bytes) {
#if CUDA_SIM_ASAN
  ASAN_POISON_MEMORY_REGION(p, bytes);
#else
  (void)p, (void)bytes;
#endif
}
inline void unpoison(const void* p, size_t bytes) {
#if CUDA_SIM_ASAN
  ASAN_UNPOISON_MEMORY_REGION(p, bytes);
#else
  (void)p, (void)bytes;
#endif
}

// Called first thing on a stack a switch has just moved to (for AddressSanitizer).
inline void arrived_on_new_stack(void* fake_stack = nullptr) {
#if CUDA_SIM_ASAN
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
  (void)fake_stack;
#endif
}

inline void switch_context(Context& from, Context& to) {
#if CUDA_SIM_ASAN
  __sanitizer_start_switch_fiber(from.ending ? nullptr : &from.fake_stack, to.stack_bottom, to.stack_bytes);
#endif
#if defined(__x86_64__)
  cuda_sim_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
  arrived_on_new_stack(from.fake_stack);  // back on `from`'s stack
}

}  // namespace cuda_sim
