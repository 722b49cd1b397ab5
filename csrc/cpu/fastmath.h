// Branch-free float32 exp and log for the portable loss templates of losses.cpp (float16 and
// bfloat16 compute in float32); the same Cephes polynomials as the vector versions in
// isa/simd.h. float64 uses libm: float64 speed is not a target.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#define ENTCLUST_ALWAYS_INLINE inline __attribute__((always_inline))

namespace entclust {
namespace cpu {

ENTCLUST_ALWAYS_INLINE float as_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

ENTCLUST_ALWAYS_INLINE int32_t as_int(float f) {
  int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}

// exp(x); exact 0 below ln(FLT_MIN) (no denormal results), inf above 88.376 (where 2^n
// would overflow; the losses only take exp(l - max l) <= 1), NaN passes through.
ENTCLUST_ALWAYS_INLINE float fast_exp(float x) {
  constexpr float lo = -87.3365447f, hi = 88.3762626f;
  const float xc = x < lo ? lo : (x > hi ? hi : x);
  // n = round(x / ln 2) by the 1.5 * 2^23 trick; r = x - n ln 2 in two parts (Cody-Waite).
  float n = xc * 1.44269504088896341f + 12582912.0f;
  n -= 12582912.0f;
  float r = xc - n * 0.693359375f;
  r -= n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float res = p * as_float((static_cast<int32_t>(n) + 127) << 23);
  // One nested select: chains of selects on one variable keep GCC from vectorising for AVX2.
  return x > hi ? std::numeric_limits<float>::infinity() : (x < lo ? 0.0f : res);
}

// log(x); log(0) = -inf, log(x < 0) = NaN, log(inf) = inf, denormals handled. Written with
// selects only (no branches), so that the loops calling it vectorise.
ENTCLUST_ALWAYS_INLINE float fast_log(float x) {
  const float denormal = x < 1.17549435e-38f ? 1.0f : 0.0f;
  const float xs = x * (1.0f + denormal * 8388607.0f);  // x * 2^23 for denormals
  const int32_t bits = as_int(xs);
  float m = as_float((bits & 0x007fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  float ef = static_cast<float>((bits >> 23) & 0xff) - 126.0f - 23.0f * denormal;
  const float low = m < 0.707106781186547524f ? 1.0f : 0.0f;
  ef -= low;
  m = m + m * low - 1.0f;
  const float z = m * m;
  float q = 7.0376836292e-2f;
  q = q * m - 1.1514610310e-1f;
  q = q * m + 1.1676998740e-1f;
  q = q * m - 1.2420140846e-1f;
  q = q * m + 1.4249322787e-1f;
  q = q * m - 1.6668057665e-1f;
  q = q * m + 2.0000714765e-1f;
  q = q * m - 2.4999993993e-1f;
  q = q * m + 3.3333331174e-1f;
  q = q * m * z;
  q += -2.12194440e-4f * ef;
  q += -0.5f * z;
  const float res = m + q + 0.693359375f * ef;
  constexpr float inf = std::numeric_limits<float>::infinity();
  // One nested select (see fast_exp): NaN, +inf, negative, zero, else the polynomial.
  return x != x ? x
                : (x == inf ? inf
                            : (x < 0.0f ? std::numeric_limits<float>::quiet_NaN() : (x == 0.0f ? -inf : res)));
}

ENTCLUST_ALWAYS_INLINE float op_exp(float x) { return fast_exp(x); }
ENTCLUST_ALWAYS_INLINE double op_exp(double x) { return std::exp(x); }
ENTCLUST_ALWAYS_INLINE float op_log(float x) { return fast_log(x); }
ENTCLUST_ALWAYS_INLINE double op_log(double x) { return std::log(x); }

}  // namespace cpu
}  // namespace entclust
