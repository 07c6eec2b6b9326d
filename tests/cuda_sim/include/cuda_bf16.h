// bfloat16 for the CPU simulation: the storage type and its conversions (round to nearest even,
// NaN kept quiet), as cuda_bf16.h gives them.
#pragma once
#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  uint16_t __x;
};
using nv_bfloat16 = __nv_bfloat16;

inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t bits = uint32_t(h.__x) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return {uint16_t((bits >> 16) | 0x40)};
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return {uint16_t(bits >> 16)};
}
