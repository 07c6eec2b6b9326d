// The execution model of the CPU simulation of CUDA kernels: every CUDA thread of a launch is a
// fiber (its own stack, switched on this one OS thread), and the fibers of a block
// (of the whole grid for a cooperative launch) run in turns until each reaches a barrier or
// returns. A barrier lets its fibers go when every live participant has arrived; threads that
// have returned no longer count (as on Volta and later). Between barriers a fiber runs alone,
// so read-modify-writes of global or shared memory are atomic by construction.
//
// A fiber that waits hands the thread straight to the next fiber that can run. When none can,
// though some have not finished, that is a deadlock (a barrier that some live thread never
// reaches): the launch stops with an error instead of hanging.
#pragma once
#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <new>
#include <string>
#include <vector>

#include "cuda_sim/context.h"

namespace cuda_sim {

struct Barrier {
  int arrived = 0;
  uint64_t generation = 0;
};

struct Warp {
  Barrier barrier;
  int live = 0;
  unsigned live_mask = 0;   // lanes still running
  // Values exchanged by shuffles and votes, in two sets by the parity of the barrier generation
  // they were written in: a lane may write the next exchange's set while a slower one still
  // reads this one, so an exchange needs one barrier, not two. `written` holds the generation
  // each slot was written in, so a read can tell a lane that took part in this exchange from
  // one that did not (or has since returned).
  uint64_t slots[2][32] = {};
  uint64_t written[2][32];
  Warp() {
    for (auto& set : written)
      for (uint64_t& g : set) g = ~uint64_t(0);  // no generation: never written
  }
};

struct BlockState;

// A copy from global to shared memory started with cp.async (cuda/async_copy.cuh), not yet
// landed: it lands when the thread waits for it, or when the thread ends.
struct Copy {
  void* dst;
  const void* src;
  int bytes;
  bool valid;  // false: zero-fill
  void land() const {
    if (valid) {
      std::memcpy(dst, src, static_cast<size_t>(bytes));
    } else {
      std::memset(dst, 0, static_cast<size_t>(bytes));
    }
  }
};

struct Fiber {
  Context context;
  void* stack = nullptr;
  bool done = false;
  const Barrier* waiting = nullptr;  // the barrier this fiber waits at, if any ...
  uint64_t waiting_generation = 0;   // ... while it is still in this generation
  unsigned tid[3] = {0, 0, 0};
  int lane = 0;
  BlockState* block = nullptr;
  Warp* warp = nullptr;
  std::vector<Copy> open_copies;                  // started since the last commit
  std::deque<std::vector<Copy>> committed_copies;  // committed groups, oldest first

  void land_all_copies() {
    for (const std::vector<Copy>& group : committed_copies)
      for (const Copy& c : group) c.land();
    committed_copies.clear();
    for (const Copy& c : open_copies) c.land();
    open_copies.clear();
  }
};

struct GridState {
  bool cooperative = false;  // all blocks run together and may wait at grid barriers
  Barrier barrier;           // of the blocks (their thread 0), as cooperative groups builds it
  int blocks = 0;
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
};

struct BlockState {
  unsigned idx[3] = {0, 0, 0};
  Barrier barrier;
  int live = 0;
  std::vector<Warp> warps;
  std::vector<unsigned char> dynamic_shared;
  std::vector<std::pair<const void*, void*>> static_shared;  // (declaration key, storage)
  GridState* grid = nullptr;
  BlockState() = default;
  BlockState(const BlockState&) = delete;
  BlockState& operator=(const BlockState&) = delete;
  ~BlockState() {
    for (auto& entry : static_shared) ::operator delete(entry.second, std::align_val_t(64));
  }
};

// Shared memory starts as this byte (all-ones: a NaN in every floating-point type), so a kernel
// that reads shared memory it never wrote gets NaN rather than a lucky zero.
constexpr unsigned char kUnwrittenShared = 0xFF;
constexpr size_t kStackBytes = 256 * 1024;

struct Scheduler {
  Context main_context;
  std::vector<Fiber>* fibers = nullptr;  // of the running launch (or of its running block)
  Fiber* current = nullptr;
  std::function<void()> body;  // what every fiber of the launch runs
  std::string error;           // first failure inside a fiber
  std::vector<void*> stack_pool;
  // Turn order: launch order, or its reverse. Threads that share data without a barrier
  // between the write and the read get different results in the two orders, so a kernel whose
  // results change with the order has a race.
  bool reverse = false;
  // Copies started with cp.async land at the thread's wait for them (the latest moment the
  // rules allow) instead of at once, so a kernel that reads a stage before waiting for it
  // reads stale or unwritten (NaN) shared memory.
  bool late_copies = false;

  void* take_stack() {
    if (!stack_pool.empty()) {
      void* s = stack_pool.back();
      stack_pool.pop_back();
      return s;
    }
    void* s = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s == MAP_FAILED) {
      std::fprintf(stderr, "cuda_sim: cannot map a fiber stack\n");
      std::abort();
    }
    return s;
  }

  static bool runnable(const Fiber& f) {
    return !f.done && !(f.waiting != nullptr && f.waiting->generation == f.waiting_generation);
  }

  // The next fiber after `from` in turn order that can run, or nullptr when none can: every
  // unfinished fiber then waits at a barrier that only another unfinished fiber could open.
  Fiber* next_runnable(Fiber* from) {
    Fiber* const first = fibers->data();
    Fiber* const last = first + fibers->size() - 1;
    if (reverse) {
      for (Fiber* f = from; f != first;)
        if (runnable(*--f)) return f;
      for (Fiber* f = last; f >= from; --f)
        if (runnable(*f)) return f;
      return nullptr;
    }
    for (Fiber* f = from; f != last;)
      if (runnable(*++f)) return f;
    for (Fiber* f = first; f <= from; ++f)
      if (runnable(*f)) return f;
    return nullptr;
  }

  // Hands the thread to the next fiber that can run (directly, not through the scheduler's
  // own context: half the switches), or back to run() when none can.
  void pass_on(Fiber* self) {
    Fiber* next = next_runnable(self);
    if (next == self) return;
    if (next == nullptr) {
      bool unfinished = false;
      for (const Fiber& f : *fibers) unfinished |= !f.done;
      if (unfinished && error.empty()) error = "deadlock: threads wait at a barrier that the others never reach";
      switch_context(self->context, main_context);
      return;
    }
    current = next;
    switch_context(self->context, next->context);
  }

  // Arrives at `b`, which opens once `*live` participants are in; waits for that.
  void arrive_and_wait(Barrier& b, const int* live) {
    if (++b.arrived >= *live) {
      b.arrived = 0;
      ++b.generation;
      return;
    }
    Fiber* self = current;
    self->waiting = &b;
    self->waiting_generation = b.generation;
    while (b.generation == self->waiting_generation) pass_on(self);
    self->waiting = nullptr;
  }

  // A participant left for good: a barrier whose other live participants all wait opens.
  static void leave(Barrier& b, int* live) {
    --*live;
    if (b.arrived > 0 && b.arrived >= *live) {
      b.arrived = 0;
      ++b.generation;
    }
  }

  static void entry() {
    arrived_on_new_stack();
    Scheduler& s = instance();
    Fiber* self = s.current;
    if (s.error.empty()) {
      try {
        s.body();
      } catch (const std::exception& e) {
        s.error = e.what();
      }
    }
    self->land_all_copies();
    self->done = true;
    self->warp->live_mask &= ~(1u << self->lane);
    leave(self->warp->barrier, &self->warp->live);
    leave(self->block->barrier, &self->block->live);
    self->context.ending = true;
    s.pass_on(self);  // never comes back: a finished fiber is not runnable
  }

  // Runs every fiber to completion. Returns an empty string, or what went wrong.
  std::string run(std::vector<Fiber>& all) {
    error.clear();
    if (all.empty()) return error;
    for (Fiber& f : all) {
      f.stack = take_stack();
      make_context(f.context, f.stack, kStackBytes, &Scheduler::entry);
    }
    fibers = &all;
    main_context.adopt_this_thread_stack();
    current = reverse ? &all.back() : &all.front();
    switch_context(main_context, current->context);  // back when all are done, or none can run
    for (Fiber& f : all) stack_pool.push_back(f.stack);  // a deadlocked fiber is never resumed
    fibers = nullptr;
    current = nullptr;
    return error;
  }

  static Scheduler& instance() {
    static Scheduler s;
    return s;
  }
};

inline Fiber& this_fiber() { return *Scheduler::instance().current; }

}  // namespace cuda_sim
