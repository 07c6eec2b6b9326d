// exp(x) for x <= 0 in float, written without branches so loops over it vectorise (the C library
// exp does not without -ffast-math). Cody-Waite range reduction x = k ln2 + r, |r| <= ln2/2, a
// degree-6 polynomial for exp(r) and 2^k built in the exponent bits; relative error below 2e-7.
// Inputs below -87 (where float exp underflows) give 0.
#pragma once
#include <cstdint>
#include <cstring>

namespace anomaly_kernels {

inline float exp_nonpositive(float x) {
  const float lowest = -87.0f;
  const float clamped = x < lowest ? lowest : x;
  const float t = clamped * 1.44269504088896341f;  // x / ln 2
  const float k = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  float r = clamped - k * 0.693145751953125f;       // ln 2, high part
  r -= k * 1.428606765330187045e-06f;               // ln 2, low part
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < lowest ? 0.0f : p * scale;
}

}  // namespace anomaly_kernels
