// CUDA entry point of anomaly_kernels::sparse_sign_projection: checks, device guard, stream,
// launch. The CSR pattern is not validated here (that would need a host synchronisation): the
// kernel clamps it so that a malformed one cannot read outside the tensors (see
// sparse_sign_projection.cuh for what it then computes), and SparseRandomProjection only builds
// well-formed ones. The CPU kernel validates and raises.
//
// Environment (read at every call, for measurements):
//   ANOMALY_KERNELS_PROJECTION_SLAB=w  stage rows w columns at a time instead of the width the
//                                      device's shared memory allows
#include <cstdlib>

#include <torch/csrc/stable/ops.h>

#include "common/sparse_sign_projection_args.h"
#include "cuda/cuda_context.h"
#include "cuda/sparse_sign_projection.cuh"

namespace anomaly_kernels {
namespace {

Tensor sparse_sign_projection_cuda(Tensor input, Tensor crow_indices, Tensor col_indices,
                                   Tensor signs, double scale) {
  check_sparse_sign_projection_args(input, crow_indices, col_indices, signs);
  torch::stable::accelerator::DeviceGuard guard(input.get_device_index());
  const Tensor x = as_contiguous(input);
  const Tensor crow = as_contiguous(crow_indices);
  const Tensor col = as_contiguous(col_indices);
  const Tensor sgn = as_contiguous(signs);
  const int64_t n = x.size(0), d = x.size(1), k = crow.size(0) - 1;
  std::vector<int64_t> out_shape{n, k};
  Tensor out = torch::stable::new_empty(x, out_shape);
  if (n == 0 || k == 0) return out;
  const int64_t nnz = col.size(0);
  // The kernel counts columns in int32.
  STD_TORCH_CHECK(d < (int64_t{1} << 31) - 2, "input may have at most ", (int64_t{1} << 31) - 3,
                  " columns on CUDA, got ", d);
  const char* slab_setting = std::getenv("ANOMALY_KERNELS_PROJECTION_SLAB");
  cuda::ProjectionPlan plan;
  check_launch(cuda::sparse_sign_projection_plan(d, k, nnz, static_cast<int>(x.element_size()),
                                                 slab_setting ? std::atoll(slab_setting) : 0, &plan),
               "sparse_sign_projection");
  const int64_t words = cuda::sparse_sign_projection_workspace_words(nnz, k, plan.slabs);
  STD_TORCH_CHECK(words > 0, "the pattern (", k, " rows, ", nnz,
                  " entries) is too large for the CUDA kernel's int32 offsets");
  // Re-packed pattern (int32 column offsets grouped by slab and sign), rebuilt on the device
  // each call.
  std::vector<int64_t> workspace_shape{words};
  Tensor workspace = torch::stable::new_empty(x, workspace_shape, ScalarType::Int);
  const cudaStream_t stream = current_stream(x);
  if (x.scalar_type() == ScalarType::Float) {
    check_launch(cuda::sparse_sign_projection<float>(
                     x.const_data_ptr<float>(), n, d, crow.const_data_ptr<int64_t>(),
                     col.const_data_ptr<int64_t>(), sgn.const_data_ptr<int8_t>(), nnz, k,
                     static_cast<float>(scale), out.mutable_data_ptr<float>(), plan,
                     workspace.mutable_data_ptr<int32_t>(), stream),
                 "sparse_sign_projection");
  } else {
    check_launch(cuda::sparse_sign_projection<double>(
                     x.const_data_ptr<double>(), n, d, crow.const_data_ptr<int64_t>(),
                     col.const_data_ptr<int64_t>(), sgn.const_data_ptr<int8_t>(), nnz, k,
                     scale, out.mutable_data_ptr<double>(), plan,
                     workspace.mutable_data_ptr<int32_t>(), stream),
                 "sparse_sign_projection");
  }
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CUDA, m) {
  m.impl("sparse_sign_projection", TORCH_BOX(&anomaly_kernels::sparse_sign_projection_cuda));
}
