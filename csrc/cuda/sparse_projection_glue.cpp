// CUDA entry point of anomaly_kernels::sparse_sign_projection: checks, device guard, stream,
// launch. The CSR pattern is not validated here (that would need a host synchronisation): the
// kernel clamps it so that a malformed one cannot read outside the tensors, and
// SparseRandomProjection only builds well-formed ones. The CPU kernel validates and raises.
#include <torch/csrc/stable/ops.h>

#include "common/sparse_projection_args.h"
#include "cuda/cuda_context.h"
#include "cuda/sparse_projection.cuh"

namespace anomaly_kernels {
namespace {

Tensor sparse_sign_projection_cuda(Tensor input, Tensor crow_indices, Tensor col_indices,
                                   Tensor signs, double scale) {
  check_sparse_projection_args(input, crow_indices, col_indices, signs);
  torch::stable::accelerator::DeviceGuard guard(input.get_device_index());
  const Tensor x = torch::stable::contiguous(input);
  const Tensor crow = torch::stable::contiguous(crow_indices);
  const Tensor col = torch::stable::contiguous(col_indices);
  const Tensor sgn = torch::stable::contiguous(signs);
  const int64_t n = x.size(0), d = x.size(1), k = crow.size(0) - 1;
  std::vector<int64_t> out_shape{n, k};
  Tensor out = torch::stable::new_empty(x, out_shape);
  const cudaStream_t stream = current_stream(x);
  if (x.scalar_type() == ScalarType::Float) {
    check_launch(cuda::sparse_sign_projection<float>(
                     x.const_data_ptr<float>(), n, d, crow.const_data_ptr<int64_t>(),
                     col.const_data_ptr<int64_t>(), sgn.const_data_ptr<int8_t>(), col.size(0), k,
                     static_cast<float>(scale), out.mutable_data_ptr<float>(), stream),
                 "sparse_sign_projection");
  } else {
    check_launch(cuda::sparse_sign_projection<double>(
                     x.const_data_ptr<double>(), n, d, crow.const_data_ptr<int64_t>(),
                     col.const_data_ptr<int64_t>(), sgn.const_data_ptr<int8_t>(), col.size(0), k,
                     scale, out.mutable_data_ptr<double>(), stream),
                 "sparse_sign_projection");
  }
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CUDA, m) {
  m.impl("sparse_sign_projection", TORCH_BOX(&anomaly_kernels::sparse_sign_projection_cuda));
}
