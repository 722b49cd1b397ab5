// Portable SIMD for the per-ISA kernels: GCC/Clang vector extensions of BYTES bytes (16: SSE2 or
// NEON, 32: AVX2, 64: AVX-512), so one source gives every width, and the compiler emits the
// ISA of the translation unit's target (isa/cap_*.cpp). Included *inside* a per-capability
// namespace (see row_kernels.h): it includes nothing itself; <cstdint>, <cstring>, <cmath>
// and <limits> come from isa/prelude.h, before the target pragma.
//
// exp and log are branch-free Cephes polynomials (the float32 ones of fastmath.h, vectorised):
// exp <= 1 ulp on [-87.3, 88.4], exact 0 below, inf above; log <= 1 ulp on normals and
// denormals, log 0 = -inf, log(x < 0) = NaN, log inf = inf; NaN propagates through both.
// vlog64 is Cephes's float64 log (the rational form on [sqrt(1/2), sqrt(2)) for every exponent),
// with the same special values; vexp64 Cephes's float64 exp on [-708.39, 709.78] (normal
// results), exact 0 below (-inf included), inf above, NaN through.

#define ENTCLUST_INLINE inline __attribute__((always_inline))

template <typename T, int BYTES>
struct Vec {
  static constexpr int kLanes = BYTES / static_cast<int>(sizeof(T));
  typedef T type __attribute__((vector_size(BYTES)));
  typedef int32_t mask32 __attribute__((vector_size(BYTES)));
  typedef int64_t mask64 __attribute__((vector_size(BYTES)));
};

template <int BYTES>
using vfloat = typename Vec<float, BYTES>::type;
template <int BYTES>
using vdouble = typename Vec<double, BYTES>::type;
template <int BYTES>
using vint = typename Vec<int32_t, BYTES>::type;
template <int BYTES>
using vlong = typename Vec<int64_t, BYTES>::type;

template <typename V>
ENTCLUST_INLINE V load(const void* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

template <typename V>
ENTCLUST_INLINE void store(void* p, V v) {
  __builtin_memcpy(p, &v, sizeof v);
}

template <typename V, typename S>
ENTCLUST_INLINE V splat(S s) {
  return V{} + static_cast<__typeof__(V{}[0] + 0)>(s);
}

// mask ? a : b, lane-wise; mask lanes are all-ones or zero (a comparison's result). GCC's
// vector ?: becomes one blend instruction where the ISA has one (SSE4.1 and up); elsewhere,
// and in Clang, the and/andnot/or form.
template <typename V, typename M>
ENTCLUST_INLINE V select(M mask, V a, V b) {
#if defined(__GNUC__) && !defined(__clang__)
  return mask ? a : b;
#else
  return reinterpret_cast<V>((reinterpret_cast<M>(a) & mask) | (reinterpret_cast<M>(b) & ~mask));
#endif
}

template <typename V>
ENTCLUST_INLINE V vmax(V a, V b) {
  return select(a > b, a, b);
}

template <typename V>
ENTCLUST_INLINE V vmin(V a, V b) {
  return select(a < b, a, b);
}

template <typename V>
ENTCLUST_INLINE V vabs(V a) {
  return select(a < V{}, -a, a);
}

template <typename V>
ENTCLUST_INLINE auto hsum(V v) -> decltype(v[0] + 0.0) {
  constexpr int n = sizeof(V) / sizeof(v[0]);
  decltype(v[0] + 0.0) s = 0;
  for (int j = 0; j < n; ++j) s += v[j];
  return s;
}

template <typename V>
ENTCLUST_INLINE auto hmax(V v) -> decltype(v[0] + 0) {
  constexpr int n = sizeof(V) / sizeof(v[0]);
  auto m = v[0];
  for (int j = 1; j < n; ++j) m = v[j] > m ? v[j] : m;
  return m;
}

template <typename V>
ENTCLUST_INLINE auto hmin(V v) -> decltype(v[0] + 0) {
  constexpr int n = sizeof(V) / sizeof(v[0]);
  auto m = v[0];
  for (int j = 1; j < n; ++j) m = v[j] < m ? v[j] : m;
  return m;
}

// Whether any lane of a comparison result (lanes all-ones or zero) is set.
template <typename M>
ENTCLUST_INLINE bool any_lane(M m) {
  constexpr int n = sizeof(M) / sizeof(m[0]);
  auto bits = m[0];
  for (int j = 1; j < n; ++j) bits |= m[j];
  return bits != 0;
}

// The two halves of a float32 vector as float64 vectors (lanes 0 .. L/2 - 1, then the rest).
template <int BYTES>
ENTCLUST_INLINE void widen(vfloat<BYTES> v, vdouble<BYTES>& lo, vdouble<BYTES>& hi) {
  typedef float half_float __attribute__((vector_size(BYTES / 2)));
  half_float a, b;
  __builtin_memcpy(&a, &v, sizeof a);
  __builtin_memcpy(&b, reinterpret_cast<const char*>(&v) + sizeof a, sizeof b);
  lo = __builtin_convertvector(a, vdouble<BYTES>);
  hi = __builtin_convertvector(b, vdouble<BYTES>);
}

// A float32 sum whose error does not grow with the number of terms: terms go into float lanes
// for at most kRun vectors, then the lanes are flushed into float64 lanes. The float part of
// each flush carries at most kRun - 1 roundings (relative 2^-24 each), the float64 part the
// rest, so the relative error stays near kRun * 2^-24 for any length.
template <int BYTES>
struct WideSum {
  static constexpr int kRun = 4;
  vfloat<BYTES> part{};
  vdouble<BYTES> lo{}, hi{};
  int count = 0;

  ENTCLUST_INLINE void add(vfloat<BYTES> v) {
    part += v;
    if (++count == kRun) flush();
  }
  ENTCLUST_INLINE void flush() {
    vdouble<BYTES> a, b;
    widen<BYTES>(part, a, b);
    lo += a;
    hi += b;
    part = vfloat<BYTES>{};
    count = 0;
  }
  ENTCLUST_INLINE double total() {
    flush();
    return hsum(lo + hi);
  }
};

template <int BYTES>
ENTCLUST_INLINE vfloat<BYTES> vexp(vfloat<BYTES> x) {
  using V = vfloat<BYTES>;
  using I = vint<BYTES>;
  const V lo = splat<V>(-87.3365447f), hi = splat<V>(88.3762626f);
  const V xc = select(x > hi, hi, select(x < lo, lo, x));  // NaN stays NaN
  // n = round(x / ln 2) by the 1.5 * 2^23 trick; r = x - n ln 2 in two parts (Cody-Waite).
  V n = xc * 1.44269504088896341f + 12582912.0f;
  n -= 12582912.0f;
  V r = xc - n * 0.693359375f;
  r -= n * -2.12194440e-4f;
  V p = splat<V>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const I ni = __builtin_convertvector(select(n == n, n, V{}), I);  // NaN lanes: any exponent
  const V res = p * reinterpret_cast<V>((ni + 127) << 23);
  return select(x > hi, splat<V>(__builtin_inff()), select(x < lo, V{}, res));
}

template <int BYTES>
ENTCLUST_INLINE vfloat<BYTES> vlog(vfloat<BYTES> x) {
  using V = vfloat<BYTES>;
  using I = vint<BYTES>;
  const I denormal = x < 1.17549435e-38f;
  const V xs = select(denormal, x * 8388608.0f, x);  // x * 2^23 for denormals
  const I bits = reinterpret_cast<I>(xs);
  V m = reinterpret_cast<V>((bits & 0x007fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  V ef = __builtin_convertvector((bits >> 23) & 0xff, V) - 126.0f;
  ef = select(denormal, ef - 23.0f, ef);
  const I low = m < 0.707106781186547524f;
  ef = select(low, ef - 1.0f, ef);
  m = select(low, m + m, m) - 1.0f;
  const V z = m * m;
  V q = splat<V>(7.0376836292e-2f);
  q = q * m - 1.1514610310e-1f;
  q = q * m + 1.1676998740e-1f;
  q = q * m - 1.2420140846e-1f;
  q = q * m + 1.4249322787e-1f;
  q = q * m - 1.6668057665e-1f;
  q = q * m + 2.0000714765e-1f;
  q = q * m - 2.4999993993e-1f;
  q = q * m + 3.3333331174e-1f;
  q = q * m * z;
  q += ef * -2.12194440e-4f;
  q += z * -0.5f;
  const V res = m + q + ef * 0.693359375f;
  // Outside (0, inf), NaN included: 0 -> -inf, inf -> inf, negative -> NaN, NaN -> NaN.
  const V inf = splat<V>(__builtin_inff());
  const V special = select(x == V{}, -inf, select(x == inf, inf, splat<V>(__builtin_nanf(""))));
  return select((x > V{}) & (x < inf), res, special);
}

template <int BYTES>
ENTCLUST_INLINE vdouble<BYTES> vlog64(vdouble<BYTES> x) {
  using V = vdouble<BYTES>;
  using I = vlong<BYTES>;
  const I denormal = x < 2.2250738585072014e-308;
  const V xs = select(denormal, x * 4503599627370496.0, x);  // x * 2^52 for denormals
  const I bits = reinterpret_cast<I>(xs);
  V m = reinterpret_cast<V>((bits & 0x000fffffffffffffLL) | 0x3fe0000000000000LL);  // mantissa in [0.5, 1)
  // the exponent as a double: its 11 bits as the low bits of 2^52's mantissa, less 2^52 (exact)
  V e = reinterpret_cast<V>(((bits >> 52) & 0x7ff) | 0x4330000000000000LL) - (4503599627370496.0 + 1022.0);
  e = select(denormal, e - 52.0, e);
  const I low = m < 0.70710678118654752440;
  e = select(low, e - 1.0, e);
  m = select(low, m + m, m) - 1.0;  // log(1 + m), m in [sqrt(1/2) - 1, sqrt(2) - 1)
  const V z = m * m;
  V p = splat<V>(1.01875663804580931796e-4);
  p = p * m + 4.97494994976747001425e-1;
  p = p * m + 4.70579119878881725854e0;
  p = p * m + 1.44989225341610930846e1;
  p = p * m + 1.79368678507819816313e1;
  p = p * m + 7.70838733755885391666e0;
  V q = m + 1.12873587189167450590e1;
  q = q * m + 4.52279145837532221105e1;
  q = q * m + 8.29875266912776603211e1;
  q = q * m + 7.11544750618563894466e1;
  q = q * m + 2.31251620126765340583e1;
  V r = m * (z * p / q);  // log(1 + m) = m - m^2 / 2 + m^3 P(m) / Q(m)
  r -= e * 2.121944400546905827679e-4;
  r -= z * 0.5;
  const V res = m + r + e * 0.693359375;
  const V inf = splat<V>(__builtin_inf());
  const V special = select(x == V{}, -inf, select(x == inf, inf, splat<V>(__builtin_nan(""))));
  return select((x > V{}) & (x < inf), res, special);
}

template <int BYTES>
ENTCLUST_INLINE vdouble<BYTES> vexp64(vdouble<BYTES> x) {
  using V = vdouble<BYTES>;
  using I = vlong<BYTES>;
  const V lo = splat<V>(-708.39641853226410622), hi = splat<V>(709.78271289338399678);
  const V xc = select(x > hi, hi, select(x < lo, lo, x));  // NaN stays NaN
  // n = round(x / ln 2) by the 1.5 * 2^52 trick (its low bits are n as an integer); r = x - n ln 2
  // in two parts (Cody-Waite)
  const V magic = splat<V>(6755399441055744.0);
  const V t = xc * 1.4426950408889634073599 + magic;
  const I ni = reinterpret_cast<I>(t) - reinterpret_cast<I>(magic);
  const V n = t - magic;
  V r = xc - n * 6.93145751953125e-1;
  r -= n * 1.42860682030941723212e-6;
  const V rr = r * r;
  V p = splat<V>(1.26177193074810590878e-4);
  p = p * rr + 3.02994407707441961300e-2;
  p = p * rr + 9.99999999999999999910e-1;
  p *= r;
  V q = splat<V>(3.00198505138664455042e-6);
  q = q * rr + 2.52448340349684104192e-3;
  q = q * rr + 2.27265548208155028766e-1;
  q = q * rr + 2.00000000000000000009e0;
  const V e = 1.0 + 2.0 * (p / (q - p));  // exp(r) = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2))
  // 2^n in two normal factors (n in [-1022, 1024]; NaN lanes: any bits, masked)
  const I half = ni >> 1;
  const V two_a = reinterpret_cast<V>(((half + 1023) & 0x7ff) << 52);
  const V two_b = reinterpret_cast<V>(((ni - half + 1023) & 0x7ff) << 52);
  const V res = e * two_a * two_b;
  return select(x > hi, splat<V>(__builtin_inf()), select(x < lo, V{}, res));
}
