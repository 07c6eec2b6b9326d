// CUDA entry point of anomaly_kernels::kde_log_sum_exp: checks, device guard, scratch, launch.
#include <torch/csrc/stable/ops.h>

#include "common/kde_log_sum_exp_args.h"
#include "cuda/cuda_context.h"
#include "cuda/kde_log_sum_exp.cuh"

namespace anomaly_kernels {
namespace {

template <typename T>
void launch(const Tensor& q, const Tensor& x, Tensor& partial, Tensor& out) {
  check_launch(cuda::kde_log_sum_exp<T>(q.const_data_ptr<T>(), x.const_data_ptr<T>(), q.size(0),
                                        x.size(0), x.size(1), partial.mutable_data_ptr<T>(),
                                        out.mutable_data_ptr<T>(), current_stream(q)),
               "kde_log_sum_exp");
}

Tensor kde_log_sum_exp_cuda(Tensor queries, Tensor dataset) {
  check_kde_log_sum_exp_args(queries, dataset);
  const int64_t max_dims = 48 * 1024 / (64 * static_cast<int64_t>(queries.element_size()));
  STD_TORCH_CHECK(dataset.size(1) <= max_dims, "the CUDA KDE kernel supports up to ", max_dims,
                  " dimensions for this dtype, got ", dataset.size(1));
  torch::stable::accelerator::DeviceGuard guard(queries.get_device_index());
  const Tensor q = as_contiguous(queries);
  const Tensor x = as_contiguous(dataset);
  std::vector<int64_t> out_shape{q.size(0)}, partial_shape{2 * q.size(0) * cuda::kde_splits(x.size(0))};
  Tensor out = torch::stable::new_empty(q, out_shape);
  if (q.size(0) == 0) return out;
  Tensor partial = torch::stable::new_empty(q, partial_shape);
  if (q.scalar_type() == ScalarType::Float) launch<float>(q, x, partial, out);
  else launch<double>(q, x, partial, out);
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CUDA, m) {
  m.impl("kde_log_sum_exp", TORCH_BOX(&anomaly_kernels::kde_log_sum_exp_cuda));
}
