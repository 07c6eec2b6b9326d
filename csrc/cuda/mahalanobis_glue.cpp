// CUDA entry point of anomaly_kernels::mahalanobis: checks, device guard, stream, scratch
// buffer, launch.
//
// Environment (read at every call, for measurements):
//   ANOMALY_KERNELS_MAHALANOBIS_GROUP=g  score g images per read of the precisions (1, 4, 8,
//                                        16, 32 or 64) instead of the smallest group that
//                                        holds the batch
//   ANOMALY_KERNELS_MAHALANOBIS_STREAM=0 groups of up to 32 images take the tiled kernel, not
//                                        the one that streams the rows into registers
#include <cstdlib>

#include <torch/csrc/stable/ops.h>

#include "common/mahalanobis_args.h"
#include "cuda/cuda_context.h"
#include "cuda/mahalanobis.cuh"

namespace anomaly_kernels {
namespace {

template <typename T>
void launch(const Tensor& e, const Tensor& mu, const Tensor& m, Tensor& out) {
  const int64_t b = e.size(0), c = e.size(1), p = e.size(2) * e.size(3);
  const char* group_setting = std::getenv("ANOMALY_KERNELS_MAHALANOBIS_GROUP");
  const int group_images = group_setting ? std::atoi(group_setting) : 0;
  const char* stream_setting = std::getenv("ANOMALY_KERNELS_MAHALANOBIS_STREAM");
  const bool allow_streamed = !(stream_setting && std::atoi(stream_setting) == 0);
  int64_t elements = 0;
  const cudaError_t planned = cuda::mahalanobis_workspace_elements<T>(b, c, p, group_images, &elements);
  STD_TORCH_CHECK(planned != cudaErrorInvalidValue, "mahalanobis: C = ", c,
                  " channels exceed what the CUDA kernel holds in shared memory on this GPU; score with the ",
                  "batched-matmul form instead");
  check_launch(planned, "mahalanobis");
  // The centred vectors in the kernel's layout (about the embedding's size) and partial forms.
  std::vector<int64_t> workspace_shape{elements};
  Tensor workspace = torch::stable::new_empty(e, workspace_shape);
  check_launch(cuda::mahalanobis<T>(e.const_data_ptr<T>(), mu.const_data_ptr<T>(), m.const_data_ptr<T>(),
                                    /*packed=*/m.dim() == 2, b, c, p, group_images, workspace.mutable_data_ptr<T>(),
                                    out.mutable_data_ptr<T>(), current_stream(e), allow_streamed),
               "mahalanobis");
}

Tensor mahalanobis_cuda(Tensor embedding, Tensor mean, Tensor precision) {
  check_mahalanobis_args(embedding, mean, precision);
  torch::stable::accelerator::DeviceGuard guard(embedding.get_device_index());
  const Tensor e = as_contiguous(embedding);
  const Tensor mu = as_contiguous(mean);
  const Tensor m = as_contiguous(precision);
  std::vector<int64_t> out_shape{e.size(0), 1, e.size(2), e.size(3)};
  Tensor out = torch::stable::new_empty(e, out_shape);
  if (out.numel() == 0) return out;
  if (e.size(1) == 0) return torch::stable::zero_(out);
  if (e.scalar_type() == ScalarType::Float) launch<float>(e, mu, m, out);
  else launch<double>(e, mu, m, out);
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CUDA, m) {
  m.impl("mahalanobis", TORCH_BOX(&anomaly_kernels::mahalanobis_cuda));
}
