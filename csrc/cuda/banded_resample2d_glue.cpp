// CUDA entry point of anomaly_kernels::banded_resample2d: checks, device guard, launch.
// Reading the band starts on the host would need a synchronisation, so they are not checked
// here: the kernel clamps every start into the input (a start outside it reads the nearest band
// inside), which keeps a direct dispatcher call from reading out of bounds. The Python wrapper
// rejects out-of-range starts before they get here; the CPU kernel rejects them too.
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/banded_resample2d_args.h"
#include "cuda/banded_resample2d.cuh"
#include "cuda/cuda_context.h"

namespace anomaly_kernels {
namespace {

template <typename T>
void launch(const Tensor& x, Tensor& out, const Tensor& sy, const Tensor& wy, const Tensor& sx,
            const Tensor& wx) {
  check_launch(cuda::banded_resample2d<T>(
                   x.const_data_ptr<T>(), out.mutable_data_ptr<T>(), x.size(0) * x.size(1),
                   x.size(2), x.size(3), sy.size(0), sx.size(0), sy.const_data_ptr<int64_t>(),
                   wy.const_data_ptr<T>(), wy.size(1), sx.const_data_ptr<int64_t>(),
                   wx.const_data_ptr<T>(), wx.size(1), current_stream(x)),
               "banded_resample2d");
}

Tensor banded_resample2d_cuda(Tensor input, Tensor start_y, Tensor weights_y, Tensor start_x,
                              Tensor weights_x) {
  check_banded_resample2d_args(input, start_y, weights_y, start_x, weights_x);
  // Shape-only part of the CPU kernel's band check: with more taps than input samples (an empty
  // input included) no start can be valid, so fail as the CPU kernel does.
  STD_TORCH_CHECK(start_y.size(0) == 0 || weights_y.size(1) <= input.size(2), "start_y with ",
                  weights_y.size(1), " taps reads outside the ", input.size(2), " input rows");
  STD_TORCH_CHECK(start_x.size(0) == 0 || weights_x.size(1) <= input.size(3), "start_x with ",
                  weights_x.size(1), " taps reads outside the ", input.size(3), " input columns");
  torch::stable::accelerator::DeviceGuard guard(input.get_device_index());
  const Tensor x = as_contiguous(input);
  const Tensor sy = as_contiguous(start_y), sx = as_contiguous(start_x);
  const Tensor wy = as_contiguous(weights_y), wx = as_contiguous(weights_x);
  std::vector<int64_t> out_shape{x.size(0), x.size(1), sy.size(0), sx.size(0)};
  Tensor out = torch::stable::new_empty(x, out_shape);
  if (out.numel() == 0) return out;
  if (x.scalar_type() == ScalarType::Float) launch<float>(x, out, sy, wy, sx, wx);
  else launch<double>(x, out, sy, wy, sx, wx);
  return out;
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CUDA, m) {
  m.impl("banded_resample2d", TORCH_BOX(&anomaly_kernels::banded_resample2d_cuda));
}
