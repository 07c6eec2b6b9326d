// Output size and padding of a separable 2-D blur, shared by the CPU and CUDA paths.
#pragma once
#include <cstdint>
#include <string>

#include "common/border.h"

namespace anomaly_kernels {

struct BlurGeometry {
  int64_t out_h, out_w;      // output plane size
  int64_t pad_top, pad_left;  // how far the first tap reaches before the first sample
};

// "same": pad (k-1)//2 before and the rest after, as kornia and F.conv2d(padding="same") do;
// "valid": no padding, the output shrinks by k-1 per axis.
inline BlurGeometry blur_geometry(int64_t h, int64_t w, int64_t ky, int64_t kx, bool same) {
  if (same) return {h, w, (ky - 1) / 2, (kx - 1) / 2};
  return {h - ky + 1, w - kx + 1, 0, 0};
}

inline bool parse_border(const std::string& name, Border* border) {
  if (name == "constant") *border = Border::Constant;
  else if (name == "reflect") *border = Border::Reflect;
  else if (name == "replicate") *border = Border::Replicate;
  else if (name == "circular") *border = Border::Circular;
  else return false;
  return true;
}

}  // namespace anomaly_kernels
