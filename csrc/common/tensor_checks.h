// Argument checks for operator entry points on the LibTorch stable ABI. Messages name the
// argument, what was expected and what came, e.g. "features must be 2-D (N, D), got [3]".
#pragma once
#include <string>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

namespace anomaly_kernels {

using torch::stable::Tensor;
using torch::headeronly::ScalarType;

inline std::string shape_str(const Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(t.size(i));
  }
  return s + "]";
}

inline const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return "float32";
    case ScalarType::Double: return "float64";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Long: return "int64";
    case ScalarType::Int: return "int32";
    default: return "another dtype";
  }
}

// The tensor itself when it is already contiguous, else a contiguous copy. The query is one
// shim call; torch::stable::contiguous goes through the dispatcher even when it has nothing to
// do (about 1 us a call), which small launches notice.
inline Tensor as_contiguous(const Tensor& t) { return t.is_contiguous() ? t : torch::stable::contiguous(t); }

inline void check_same_device(const Tensor& a, const char* a_name, const Tensor& b,
                              const char* b_name) {
  STD_TORCH_CHECK(a.is_cuda() == b.is_cuda() && a.get_device() == b.get_device(), b_name,
                  " must be on the same device as ", a_name);
}

}  // namespace anomaly_kernels
