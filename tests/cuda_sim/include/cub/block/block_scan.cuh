// cub::BlockScan for the CPU simulation: every thread publishes its value in the block's
// temporary storage, and after a barrier each one folds the values before (and at) its own.
// Threads are numbered x-fastest, as cub numbers them. As with cub, the caller must put a
// barrier between a scan and the next use of the same storage.
#pragma once
#include "cuda_runtime_api.h"

namespace cub {

template <typename T, int BlockThreads>
class BlockScan {
 public:
  struct TempStorage {
    T values[BlockThreads];
  };
  explicit BlockScan(TempStorage& storage) : storage_(storage) {}

  template <typename Op>
  void InclusiveScan(T input, T& output, Op op, T& aggregate) {
    const int me = publish(input);
    output = storage_.values[0];
    for (int i = 1; i <= me; ++i) output = op(output, storage_.values[i]);
    aggregate = storage_.values[0];
    for (int i = 1; i < BlockThreads; ++i) aggregate = op(aggregate, storage_.values[i]);
  }
  template <typename Op>
  void InclusiveScan(T input, T& output, Op op) {
    T aggregate;
    InclusiveScan(input, output, op, aggregate);
  }
  void ExclusiveSum(T input, T& output, T& aggregate) {
    const int me = publish(input);
    output = T(0);
    for (int i = 0; i < me; ++i) output += storage_.values[i];
    aggregate = T(0);
    for (int i = 0; i < BlockThreads; ++i) aggregate += storage_.values[i];
  }
  void ExclusiveSum(T input, T& output) {
    T aggregate;
    ExclusiveSum(input, output, aggregate);
  }
  void InclusiveSum(T input, T& output, T& aggregate) {
    ExclusiveSum(input, output, aggregate);
    output += input;
  }

 private:
  int publish(T input) {
    const dim3 t = threadIdx, b = blockDim;
    const int me = int(t.x + b.x * (t.y + b.y * t.z));
    storage_.values[me] = input;
    __syncthreads();
    return me;
  }
  TempStorage& storage_;
};

}  // namespace cub
