// The per-ISA row kernels, written once over a vector width of BYTES bytes. Included inside a
// per-capability namespace by isa/cap_*.cpp (after isa/prelude.h and the target pragma) and
// by losses.cpp (namespace `portable`, default flags), so each inclusion makes distinct
// functions compiled for its own ISA. Nothing here includes a header or calls a standard
// template (see prelude.h).
#include "simd.h"

constexpr float kInfF = __builtin_inff();

template <typename T>
ENTCLUST_INLINE T smax(T a, T b) {
  return a > b ? a : b;
}

// Padded copy of a row's last K % lanes classes, so that they run through the vector code:
// logit -inf (e_k = 0: no contribution to any sum) and label 1 (-ln y_k = 0).
template <int BYTES>
struct Tail {
  static constexpr int kLanes = Vec<float, BYTES>::kLanes;
  alignas(BYTES) float l[kLanes];
  alignas(BYTES) float y[kLanes];
  Tail(const float* l_src, const float* y_src, int64_t n) {
    for (int j = 0; j < kLanes; ++j) {
      l[j] = j < n ? l_src[j] : -kInfF;
      y[j] = j < n ? y_src[j] : 1.0f;
    }
  }
};

template <int BYTES>
ENTCLUST_INLINE float row_max(const float* l, int64_t K) {
  using V = vfloat<BYTES>;
  constexpr int L = Vec<float, BYTES>::kLanes;
  V m = splat<V>(-kInfF);
  int64_t k = 0;
  for (; k + L <= K; k += L) m = vmax(m, load<V>(l + k));
  float r = hmax(m);
  for (; k < K; ++k) r = l[k] > r ? l[k] : r;
  return r;
}

// Forward sums of one row (MATH.md): s = sum_k e_k with e_k = exp(l_k - m); w = sum_k e_k (-ln y_k)
// (reverse CE; sigma_k = 0 contributes 0 even where y_k = 0) or w = sum_k e_k y_k (collision
// CE); the sum and minimum of y. With STORE, e_k (and -ln y_k) go to e_out (v_out).
struct RowSums {
  double s, w, ysum;
  float ymin;
};

template <bool RCE, bool STORE, int BYTES>
ENTCLUST_INLINE void sums_step(const float* l, const float* y, float m, float* e_out, float* v_out,
                               WideSum<BYTES>& s, WideSum<BYTES>& w) {
  using V = vfloat<BYTES>;
  const V yk = load<V>(y);
  const V e = vexp<BYTES>(load<V>(l) - m);
  s.add(e);
  if (RCE) {
    const V v = -vlog<BYTES>(yk);
    w.add(select(e > 0.0f, e * v, V{}));
    if (STORE) store(v_out, v);
  } else {
    w.add(e * yk);
  }
  if (STORE) store(e_out, e);
}

template <bool RCE, bool STORE, int BYTES>
ENTCLUST_INLINE RowSums row_sums(const float* l, const float* y, int64_t K, float m, float* e_buf, float* v_buf) {
  using V = vfloat<BYTES>;
  constexpr int L = Vec<float, BYTES>::kLanes;
  WideSum<BYTES> s, w, ys;
  V ymin = splat<V>(kInfF);
  int64_t k = 0;
  for (; k + L <= K; k += L) {
    sums_step<RCE, STORE, BYTES>(l + k, y + k, m, e_buf + k, v_buf + k, s, w);
    const V yk = load<V>(y + k);
    ys.add(yk);
    ymin = vmin(ymin, yk);
  }
  RowSums r{0, 0, 0, hmin(ymin)};
  if (k < K) {
    const int64_t rest = K - k;
    Tail<BYTES> t(l + k, y + k, rest);
    alignas(BYTES) float te[L], tv[L];
    sums_step<RCE, true, BYTES>(t.l, t.y, m, te, tv, s, w);
    for (int64_t j = 0; j < rest; ++j) {
      r.ysum += y[k + j];
      r.ymin = y[k + j] < r.ymin ? y[k + j] : r.ymin;
      if (STORE) {
        e_buf[k + j] = te[j];
        if (RCE) v_buf[k + j] = tv[j];
      }
    }
  }
  r.s = s.total();
  r.w = w.total();
  r.ysum += ys.total();
  return r;
}

ENTCLUST_INLINE void record_row(const LossRows& t, int64_t i, double loss, double ysum, double ymin) {
  t.rows[i] = static_cast<float>(loss);
  t.ysum[i] = static_cast<float>(ysum);
  t.ymin[i] = static_cast<float>(ymin);
  const bool ok = __builtin_isfinite(loss) && __builtin_isfinite(ysum) && ymin >= 0 && !(__builtin_fabs(ysum - 1.0) > t.sum_tol);
  t.bad[i] = ok ? 0.0f : 1.0f;
}

// Reverse CE gradients (MATH.md): dH/dl_j = sigma_j (-ln y_j - H), dH/dy_j = -sigma_j / y_j, both
// 0 where sigma_j = 0. H enters as float hi + lo parts, so its rounding to float is not added
// to every gradient.
template <bool GL, bool GY, int BYTES>
ENTCLUST_INLINE void rce_grads(const float* y, int64_t K, float inv_s, double h, float scale, const float* e_buf,
                               const float* v_buf, float* gl, float* gy) {
  using V = vfloat<BYTES>;
  constexpr int L = Vec<float, BYTES>::kLanes;
  const float h_hi = static_cast<float>(h), h_lo = static_cast<float>(h - static_cast<double>(h_hi));
  int64_t k = 0;
  for (; k + L <= K; k += L) {
    const V sig = load<V>(e_buf + k) * inv_s;
    const auto live = sig > 0.0f;
    if (GL) store(gl + k, select(live, scale * sig * ((load<V>(v_buf + k) - h_hi) - h_lo), V{}));
    if (GY) store(gy + k, select(live, -scale * sig / load<V>(y + k), V{}));
  }
  for (; k < K; ++k) {
    const float sig = e_buf[k] * inv_s;
    if (GL) gl[k] = sig > 0.0f ? scale * sig * ((v_buf[k] - h_hi) - h_lo) : 0.0f;
    if (GY) gy[k] = sig > 0.0f ? -scale * sig / y[k] : 0.0f;
  }
}

// Collision CE gradients with p = sigma . y: dL/dl_j = sigma_j - y_j sigma_j / p, dL/dy_j = -sigma_j / p;
// sigma_j / p = e_j inv_p with inv_p = 1 / sum_k e_k y_k.
template <bool GL, bool GY, int BYTES>
ENTCLUST_INLINE void cce_grads(const float* y, int64_t K, float inv_s, float inv_p, float scale, const float* e_buf,
                               float* gl, float* gy) {
  using V = vfloat<BYTES>;
  constexpr int L = Vec<float, BYTES>::kLanes;
  int64_t k = 0;
  for (; k + L <= K; k += L) {
    const V e = load<V>(e_buf + k);
    if (GL) store(gl + k, scale * (e * inv_s - load<V>(y + k) * e * inv_p));
    if (GY) store(gy + k, -scale * e * inv_p);
  }
  for (; k < K; ++k) {
    const float e = e_buf[k];
    if (GL) gl[k] = scale * (e * inv_s - y[k] * e * inv_p);
    if (GY) gy[k] = -scale * e * inv_p;
  }
}

// Collision CE for a row whose sigma . y underflowed: everything in float64 log space.
// Returns the loss; writes gradients when gl / gy are not null.
template <typename T>
double cce_row_logspace(const T* l, const T* y, int64_t K, double scale, T* gl, T* gy) {
  const double inf = __builtin_inf();
  double m = -inf;
  for (int64_t k = 0; k < K; ++k) m = smax(m, static_cast<double>(l[k]));
  double s = 0;
  for (int64_t k = 0; k < K; ++k) s += __builtin_exp(static_cast<double>(l[k]) - m);
  const double lse = m + __builtin_log(s);
  double m2 = -inf;
  for (int64_t k = 0; k < K; ++k) {
    const double yk = static_cast<double>(y[k]);
    if (yk > 0) m2 = smax(m2, static_cast<double>(l[k]) + __builtin_log(yk));
  }
  double ln_p;  // ln(sigma . y)
  if (m2 == -inf) {
    ln_p = -inf;
  } else {
    double t = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double yk = static_cast<double>(y[k]);
      if (yk > 0) t += __builtin_exp(static_cast<double>(l[k]) + __builtin_log(yk) - m2);
    }
    ln_p = m2 + __builtin_log(t) - lse;
  }
  for (int64_t k = 0; gl != nullptr && k < K; ++k) {
    const double lk = static_cast<double>(l[k]) - lse;
    const double yk = static_cast<double>(y[k]);
    // y_k sigma_k / p, formed in log space: sigma_k / p alone may overflow where y_k = 0
    const double y_ratio = yk > 0 ? __builtin_exp(lk + __builtin_log(yk) - ln_p) : 0.0;
    gl[k] = static_cast<T>(scale * (__builtin_exp(lk) - y_ratio));
  }
  for (int64_t k = 0; gy != nullptr && k < K; ++k) {
    const double lk = static_cast<double>(l[k]) - lse;
    gy[k] = static_cast<T>(-scale * __builtin_exp(lk - ln_p));
  }
  return -ln_p;
}

// Short rows (K = 10: digits, CIFAR-10) go L at a time, one row per lane. Row by row, such a
// row is shorter than a vector or ends in a padded tail, and the per-row work (a max, four
// horizontal sums, the tail, scalar gradients) was the time: 2.2 ms at 65536 x 10 on AVX-512,
// against 1.6 ms for torch.compile of the reference. Here the L rows are transposed into
// class-major scratch (K vectors of L rows), the maximum and every sum are lane-wise (no
// horizontal step), and the gradients are transposed back. The sums s and w go to float64
// lanes after runs of WideSum::kRun terms, and H and ln(s / w) are formed in float64, as row by
// row; sum and minimum of y, which only feed the input check, stay in float lanes. Collision-CE
// lanes whose sigma . y underflowed (or met a NaN) are redone row by row after.
// Where it pays (forward + backward, the two layouts interleaved in one process, 2026-12-07,
// Zen 5): below two vectors, and below four where the row ends in a tail (1.5-2.3x at K = 6-15
// on the SSE2 path, 1.2-2.7x at 8-31 on AVX2, 1.0-2.7x at 8-40 on AVX-512); two or more whole
// vectors, and on AVX-512 K >= 48, are as fast or faster row by row (0.7-1.05x).
template <int BYTES>
ENTCLUST_INLINE bool narrow_pays(int64_t K) {
  constexpr int64_t L = Vec<float, BYTES>::kLanes;
  return K < 2 * L || (K % L != 0 && K < (4 * L < 48 ? 4 * L : 48));
}
constexpr int64_t kNarrowScratch = 48 * 16;  // floats: classes x lanes, at most 47 x 16

// A float32 vector from the float64 halves of widen (lanes 0 .. L/2 - 1, then the rest).
template <int BYTES>
ENTCLUST_INLINE vfloat<BYTES> narrow(vdouble<BYTES> lo, vdouble<BYTES> hi) {
  typedef float half_float __attribute__((vector_size(BYTES / 2)));
  const half_float a = __builtin_convertvector(lo, half_float), b = __builtin_convertvector(hi, half_float);
  vfloat<BYTES> v;
  __builtin_memcpy(&v, &a, sizeof a);
  __builtin_memcpy(reinterpret_cast<char*>(&v) + sizeof a, &b, sizeof b);
  return v;
}

template <bool RCE, bool GL, bool GY, int BYTES>
void narrow_rows(const LossRows& t, int64_t begin, int64_t end) {
  using V = vfloat<BYTES>;
  using D = vdouble<BYTES>;
  constexpr int L = Vec<float, BYTES>::kLanes;
  constexpr bool STORE = GL || GY;
  static_assert((4 * L < 48 ? 4 * L : 48) * L <= kNarrowScratch, "narrow scratch too small");
  const int64_t K = t.K;
  alignas(64) float lt[kNarrowScratch], yt[kNarrowScratch], et[kNarrowScratch], vt[kNarrowScratch];
  alignas(64) float loss_out[L], ysum_out[L], ymin_out[L], bad_out[L];
  const V inf = splat<V>(kInfF);
  const float sum_tol = t.sum_tol < 3e38 ? static_cast<float>(t.sum_tol) : kInfF;
  for (int64_t r0 = begin; r0 < end; r0 += L) {
    const int n = static_cast<int>(end - r0 < L ? end - r0 : L);
    const float* l = t.l + r0 * K;
    const float* y = t.y + r0 * K;
    for (int j = 0; j < n; ++j) {
      for (int64_t k = 0; k < K; ++k) {
        lt[k * L + j] = l[j * K + k];
        yt[k * L + j] = y[j * K + k];
      }
    }
    for (int j = n; j < L; ++j) {  // padding lanes: finite values, results dropped
      for (int64_t k = 0; k < K; ++k) {
        lt[k * L + j] = 0.0f;
        yt[k * L + j] = 1.0f;
      }
    }
    V m = load<V>(lt);
    for (int64_t k = 1; k < K; ++k) m = vmax(m, load<V>(lt + k * L));
    // runs of WideSum::kRun terms in float lanes, flushed into float64 lanes; the runs are loops
    // of their own (WideSum::add's count, kept across a runtime loop, went through memory)
    WideSum<BYTES> s, w;
    V ys{}, ymin = inf;
    for (int64_t k0 = 0; k0 < K; k0 += WideSum<BYTES>::kRun) {
      for (int64_t k = k0; k < (k0 + WideSum<BYTES>::kRun < K ? k0 + WideSum<BYTES>::kRun : K); ++k) {
        const V yk = load<V>(yt + k * L);
        const V e = vexp<BYTES>(load<V>(lt + k * L) - m);
        s.part += e;
        if (RCE) {
          const V v = -vlog<BYTES>(yk);
          w.part += select(e > 0.0f, e * v, V{});
          if (STORE) store(vt + k * L, v);
        } else {
          w.part += e * yk;
        }
        ys += yk;
        ymin = vmin(ymin, yk);
        if (STORE) store(et + k * L, e);
      }
      s.flush();
      w.flush();
    }
    const V inv_s = narrow<BYTES>(1.0 / s.lo, 1.0 / s.hi);
    V loss;
    auto redo = inv_s != inv_s;  // collision CE: lanes for the row-by-row code (none for reverse CE)
    if (RCE) {
      const D h_lo = w.lo / s.lo, h_hi = w.hi / s.hi;  // H(sigma, y) = sum_k e_k (-ln y_k) / sum_k e_k
      loss = narrow<BYTES>(h_lo, h_hi);
      V rest;  // H - float(H), so that H's rounding to float is not added to every gradient
      {
        D a, b;
        widen<BYTES>(loss, a, b);
        rest = narrow<BYTES>(h_lo - a, h_hi - b);
      }
      for (int64_t k = 0; STORE && k < K; ++k) {
        const V sig = load<V>(et + k * L) * inv_s;
        const auto live = sig > 0.0f;
        if (GL) store(lt + k * L, select(live, t.scale * sig * ((load<V>(vt + k * L) - loss) - rest), V{}));
        if (GY) store(yt + k * L, select(live, -t.scale * sig / load<V>(yt + k * L), V{}));
      }
    } else {
      const V sv = narrow<BYTES>(s.lo, s.hi), wv = narrow<BYTES>(w.lo, w.hi);
      // below p / s = 1e-20, sigma . y has lost precision to underflow of exp and of e_k y_k
      redo = (wv <= sv * 1e-20f) | (sv == inf) | (wv != wv) | (sv != sv);
      loss = narrow<BYTES>(vlog64<BYTES>(s.lo / w.lo), vlog64<BYTES>(s.hi / w.hi));  // -ln(w / s)
      const V inv_p = narrow<BYTES>(1.0 / w.lo, 1.0 / w.hi);
      for (int64_t k = 0; STORE && k < K; ++k) {
        const V e = load<V>(et + k * L);
        if (GL) store(lt + k * L, t.scale * (e * inv_s - load<V>(yt + k * L) * e * inv_p));
        if (GY) store(yt + k * L, -t.scale * e * inv_p);
      }
    }
    store(loss_out, loss);
    store(ysum_out, ys);
    store(ymin_out, ymin);
    // record_row's verdict, lane-wise (x - x is 0 exactly for finite x)
    const auto ok = (loss - loss == 0.0f) & (ys - ys == 0.0f) & (ymin >= 0.0f) & ~(vabs(ys - 1.0f) > sum_tol);
    store(bad_out, select(ok, V{}, splat<V>(1.0f)));
    for (int j = 0; j < n; ++j) {
      const int64_t i = r0 + j;
      t.rows[i] = loss_out[j];
      t.ysum[i] = ysum_out[j];
      t.ymin[i] = ymin_out[j];
      t.bad[i] = bad_out[j];
      for (int64_t k = 0; GL && k < K; ++k) t.gl[i * K + k] = lt[k * L + j];
      for (int64_t k = 0; GY && k < K; ++k) t.gy[i * K + k] = yt[k * L + j];
    }
    if (!RCE && any_lane(redo)) {
      for (int j = 0; j < n; ++j) {
        if (!redo[j]) continue;
        const int64_t i = r0 + j;
        const float* li = t.l + i * K;
        const float* yi = t.y + i * K;
        float* gl = GL ? t.gl + i * K : nullptr;
        float* gy = GY ? t.gy + i * K : nullptr;
        const double sj = j < L / 2 ? s.lo[j] : s.hi[j - L / 2], wj = j < L / 2 ? w.lo[j] : w.hi[j - L / 2];
        double value;
        if (wj != wj || sj != sj) {  // NaN in the input: propagate, the caller reports it
          value = __builtin_nan("");
          for (int64_t k = 0; gl != nullptr && k < K; ++k) gl[k] = static_cast<float>(value);
          for (int64_t k = 0; gy != nullptr && k < K; ++k) gy[k] = static_cast<float>(value);
        } else {
          value = cce_row_logspace(li, yi, K, static_cast<double>(t.scale), gl, gy);
        }
        record_row(t, i, value, ysum_out[j], ymin_out[j]);
      }
    }
  }
}

template <bool GL, bool GY, int BYTES>
void rce_rows(const LossRows& t, int64_t begin, int64_t end, float* scratch) {
  if (narrow_pays<BYTES>(t.K)) return narrow_rows<true, GL, GY, BYTES>(t, begin, end);
  constexpr bool STORE = GL || GY;
  const int64_t K = t.K;
  for (int64_t i = begin; i < end; ++i) {
    const float* l = t.l + i * K;
    const float* y = t.y + i * K;
    const float m = row_max<BYTES>(l, K);
    const RowSums r = row_sums<true, STORE, BYTES>(l, y, K, m, scratch, scratch + K);
    const double h = r.w / r.s;  // H(sigma, y) = sum_k e_k (-ln y_k) / sum_k e_k
    record_row(t, i, h, r.ysum, r.ymin);
    if (STORE) {
      rce_grads<GL, GY, BYTES>(y, K, static_cast<float>(1.0 / r.s), h, t.scale, scratch, scratch + K,
                               GL ? t.gl + i * K : nullptr, GY ? t.gy + i * K : nullptr);
    }
  }
}

template <bool GL, bool GY, int BYTES>
void cce_rows(const LossRows& t, int64_t begin, int64_t end, float* scratch) {
  if (narrow_pays<BYTES>(t.K)) return narrow_rows<false, GL, GY, BYTES>(t, begin, end);
  constexpr bool STORE = GL || GY;
  const int64_t K = t.K;
  for (int64_t i = begin; i < end; ++i) {
    const float* l = t.l + i * K;
    const float* y = t.y + i * K;
    float* gl = GL ? t.gl + i * K : nullptr;
    float* gy = GY ? t.gy + i * K : nullptr;
    const float m = row_max<BYTES>(l, K);
    const RowSums r = row_sums<false, STORE, BYTES>(l, y, K, m, scratch, scratch + K);
    double loss;
    // Below p / s = 1e-20, sigma . y has lost precision to underflow of exp and of e_k y_k.
    if (r.w > r.s * 1e-20 && r.s < __builtin_inf()) {
      loss = __builtin_log(r.s / r.w);  // -ln(w / s)
      if (STORE) {
        cce_grads<GL, GY, BYTES>(y, K, static_cast<float>(1.0 / r.s), static_cast<float>(1.0 / r.w), t.scale,
                                 scratch, gl, gy);
      }
    } else if (r.w != r.w || r.s != r.s) {  // NaN in the input: propagate, the caller reports it
      loss = __builtin_nan("");
      for (int64_t k = 0; gl != nullptr && k < K; ++k) gl[k] = static_cast<float>(loss);
      for (int64_t k = 0; gy != nullptr && k < K; ++k) gy[k] = static_cast<float>(loss);
    } else {
      loss = cce_row_logspace(l, y, K, static_cast<double>(t.scale), gl, gy);
    }
    record_row(t, i, loss, r.ysum, r.ymin);
  }
}

// The gradient flags become template arguments, so each variant's loops carry no branch on them.
#define ENTCLUST_ROWS_BY_GRADS(ROWS)                                                       \
  template <int BYTES>                                                                     \
  void ROWS##_f32(const LossRows& t, int64_t begin, int64_t end, float* scratch) {         \
    if (t.gl && t.gy) ROWS<true, true, BYTES>(t, begin, end, scratch);                     \
    else if (t.gl) ROWS<true, false, BYTES>(t, begin, end, scratch);                       \
    else if (t.gy) ROWS<false, true, BYTES>(t, begin, end, scratch);                       \
    else ROWS<false, false, BYTES>(t, begin, end, scratch);                                \
  }
ENTCLUST_ROWS_BY_GRADS(rce_rows)
ENTCLUST_ROWS_BY_GRADS(cce_rows)
#undef ENTCLUST_ROWS_BY_GRADS

// One fused reverse-CE EM iteration on rows [begin, end) (seed 004 eqs. 45-46, solvers.cpp):
// y_ik <- (sigma_ik + y_ik v_k) / sum_m (sigma_im + y_im v_m). Row sums in float64 lanes for
// float64 and in WideSum for float32. Rows go in blocks of kRows: their column sums are
// gathered in T lanes on the stack, kColumns classes at a time, and added to the float64
// col_out once per block (a float64 read-modify-write per element cost more than the update).
template <typename T, int BYTES>
T em_rce_rows(const T* sigma, T* y, int64_t K, int64_t begin, int64_t end, const T* v, double* col_out) {
  using V = typename Vec<T, BYTES>::type;
  constexpr int L = Vec<T, BYTES>::kLanes;
  constexpr bool kFloat = sizeof(T) == 4;
  constexpr int64_t kRows = 8, kColumns = 512;
  alignas(BYTES) T col_block[kColumns];
  T inv[kRows];
  V delta{};
  T max_delta = 0;
  for (int64_t i0 = begin; i0 < end; i0 += kRows) {
    const int64_t rows = end - i0 < kRows ? end - i0 : kRows;
    for (int64_t r = 0; r < rows; ++r) {
      const T* s = sigma + (i0 + r) * K;
      const T* yi = y + (i0 + r) * K;
      WideSum<BYTES> wide;
      V narrow{};
      int64_t k = 0;
      for (; k + L <= K; k += L) {
        const V t = load<V>(s + k) + load<V>(yi + k) * load<V>(v + k);
        if constexpr (kFloat) wide.add(t);
        else narrow += t;
      }
      double norm = kFloat ? wide.total() : static_cast<double>(hsum(narrow));
      for (; k < K; ++k) norm += static_cast<double>(s[k] + yi[k] * v[k]);
      inv[r] = static_cast<T>(1.0 / norm);
    }
    for (int64_t c0 = 0; c0 < K; c0 += kColumns) {
      const int64_t n = K - c0 < kColumns ? K - c0 : kColumns;
      const int64_t nv = n - n % L;
      for (int64_t k = 0; k < n; ++k) col_block[k] = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const T* s = sigma + (i0 + r) * K + c0;
        T* yi = y + (i0 + r) * K + c0;
        const T* vc = v + c0;
        int64_t k = 0;
        for (; k < nv; k += L) {
          const V old = load<V>(yi + k);
          const V next = (load<V>(s + k) + old * load<V>(vc + k)) * inv[r];
          const V d = vabs(next - old);
          delta = select(d > delta, d, delta);
          store(yi + k, next);
          store(col_block + k, load<V>(col_block + k) + next);
        }
        for (; k < n; ++k) {
          const T next = (s[k] + yi[k] * vc[k]) * inv[r];
          const T d = __builtin_fabs(next - yi[k]);
          max_delta = d > max_delta ? d : max_delta;
          yi[k] = next;
          col_block[k] += next;
        }
      }
      for (int64_t k = 0; k < n; ++k) col_out[c0 + k] += static_cast<double>(col_block[k]);
    }
  }
  return smax(max_delta, hmax(delta));
}

// em_rce_rows at the vector width that leaves the least work for its scalar tail: a row of K
// takes K / L vector steps and K % L scalar ones at L lanes, so a short row on a wide ISA (K = 10
// in float32 on AVX-512: no whole vector, ten scalar steps) runs on half or quarter vectors of
// the same ISA instead (250 x 10 on an AVX-512 Xeon: 7.0 -> 2.7 us an iteration,
// `python benchmarks/bench_short_rows.py`).
template <typename T, int BYTES>
ENTCLUST_INLINE int64_t em_rce_steps(int64_t K) {
  constexpr int64_t L = Vec<T, BYTES>::kLanes;
  return K / L + K % L;
}
template <typename T, int BYTES>
ENTCLUST_INLINE int64_t em_rce_fewest_steps(int64_t K) {  // at this width or a narrower one
  const int64_t here = em_rce_steps<T, BYTES>(K);
  if constexpr (BYTES > 16) {
    const int64_t narrower = em_rce_fewest_steps<T, BYTES / 2>(K);
    return narrower < here ? narrower : here;
  }
  return here;
}
template <typename T, int BYTES>
T em_rce_rows_isa(const T* sigma, T* y, int64_t K, int64_t begin, int64_t end, const T* v, double* col_out) {
  if constexpr (BYTES > 16) {
    if (em_rce_fewest_steps<T, BYTES / 2>(K) < em_rce_steps<T, BYTES>(K))
      return em_rce_rows_isa<T, BYTES / 2>(sigma, y, K, begin, end, v, col_out);
  }
  return em_rce_rows<T, BYTES>(sigma, y, K, begin, end, v, col_out);
}

// Collision-CE M-step for rows [begin, end) (seed 003 §4 and appendix C; MATH.md), with
// a_k = y_ik v_k (= c u_k S_ik) and b = 1 + sum_k a_k: minimise -ln(sigma . y) - sum_k a_k ln y_k.
// * some a_k = 0: free mass on c* = argmax_{a_k = 0} sigma_k, y_k = a_k / (b (1 - sigma_k / sigma_c*)),
//   y_c* = 1 - sum, if that is feasible;
// * otherwise y_k = a_k / (b - sigma_k / x), x the root of sum_k y_k(x) = 1 by Newton from
//   Lemma 1's start max_k sigma_k / (b - a_k), which rises monotonically to the root.
// Float64 throughout; the `omp simd` loops are vectorised for the ISA of the inclusion.
// Updates y in place, adds the new column sums to col_out, returns max |dy|.
constexpr double kFreeClass = 1e-12;  // a_k <= kFreeClass * b counts as a_k = 0

template <typename T>
T em_cce_rows(const T* sigma, T* y, int64_t K, int64_t begin, int64_t end, const T* v, double* col_out,
              double* x_state, double newton_tol, int64_t newton_max_iter, double* scratch) {
  double* a = scratch;
  double* sd = scratch + K;
  double* next = scratch + 2 * K;
  T max_delta = 0;
  for (int64_t i = begin; i < end; ++i) {
    const T* s = sigma + i * K;
    T* yi = y + i * K;
    double raw_sum = 0;
#pragma omp simd reduction(+ : raw_sum)
    for (int64_t k = 0; k < K; ++k) {
      sd[k] = static_cast<double>(s[k]);
      a[k] = static_cast<double>(yi[k]) * static_cast<double>(v[k]);
      raw_sum += a[k];
    }
    // a_k below the rounding of b = 1 + sum a would make b - sigma_k / x cancel to 0: such
    // classes are numerically free (a_k = 0), the appendix-C case.
    const double floor_a = kFreeClass * (1 + raw_sum);
    double a_sum = 0;
    int64_t free_classes = 0;
#pragma omp simd reduction(+ : a_sum, free_classes)
    for (int64_t k = 0; k < K; ++k) {
      const bool free = !(a[k] > floor_a);
      a[k] = free ? 0.0 : a[k];
      free_classes += free;
      a_sum += a[k];
    }
    double s_star = -1;  // c* = argmax sigma_k over the free classes (the first of ties)
    int64_t c_star = -1;
    for (int64_t k = 0; k < K && free_classes > 0; ++k) {
      if (a[k] == 0 && sd[k] > s_star) {
        s_star = sd[k];
        c_star = k;
      }
    }
    const double b = 1 + a_sum;
    bool solved = false;
    if (c_star >= 0 && s_star > 0) {  // appendix C: closed form with the free mass on c*
      double total = 0;
      bool ok = true;
      for (int64_t k = 0; k < K && ok; ++k) {
        next[k] = 0;
        if (a[k] > 0) {
          const double den = b * (1 - sd[k] / s_star);
          ok = den > 0;
          next[k] = ok ? a[k] / den : 0;
          total += next[k];
        }
      }
      if (ok && total <= 1) {
        next[c_star] = 1 - total;
        solved = true;
      }
    }
    if (!solved) {  // Newton on x over the classes with a_k > 0 (lanes with a_k = 0 masked)
      // Lemma 1's point l has f(l) >= 0. Warm start from this row's root of the previous
      // iteration: f is convex and decreasing, so a step from the right of the root lands left
      // of it; clamping every iterate to >= l keeps it in the domain, and from the left the
      // iterates rise monotonically to the root.
      double lo = __DBL_MIN__;
#pragma omp simd reduction(max : lo)
      for (int64_t k = 0; k < K; ++k) {
        const double l = a[k] > 0 ? sd[k] / (b - a[k]) : 0.0;  // b - 0 = b: no division to mask
        lo = lo > l ? lo : l;
      }
      double x = smax(lo, x_state[i - begin]);
      // each Newton pass leaves y_k(x) = a_k / d_k in next and their sum in total; after a step
      // they are stale (fresh = false) and one more pass recomputes them at the final x
      bool fresh = false;
      double total = 0;
      for (int64_t it = 0; it < newton_max_iter; ++it) {
        const double inv_x = 1.0 / x;
        double sum = 0, g = 0;  // f(x) = sum_k a_k / d_k - 1, f'(x) = -g / x^2, d_k = b - sigma_k / x
#pragma omp simd reduction(+ : sum, g)
        for (int64_t k = 0; k < K; ++k) {
          // a_k = 0 lanes divide by 1 and contribute 0: no division to mask, so targets
          // without masked vectors (AVX2, SSE2) vectorise the loop too
          const double inv_d = 1.0 / (a[k] > 0 ? b - sd[k] * inv_x : 1.0);
          const double r = a[k] * inv_d;
          next[k] = r;
          sum += r;
          g += r * sd[k] * inv_d;
        }
        const double f = sum - 1;
        total = sum;
        fresh = true;
        if (__builtin_fabs(f) <= newton_tol || !(g > 0)) break;
        x = smax(lo, x + f * x * x / g);  // x - f / f'
        fresh = false;
      }
      x_state[i - begin] = x;
      if (!fresh) {
        const double inv_x = 1.0 / x;
        total = 0;
#pragma omp simd reduction(+ : total)
        for (int64_t k = 0; k < K; ++k) {
          next[k] = a[k] / (a[k] > 0 ? b - sd[k] * inv_x : 1.0);
          total += next[k];
        }
      }
      const double inv_total = 1.0 / total;
#pragma omp simd
      for (int64_t k = 0; k < K; ++k) next[k] *= inv_total;
    }
    T row_delta = 0;
#pragma omp simd reduction(max : row_delta)
    for (int64_t k = 0; k < K; ++k) {
      const T value = static_cast<T>(next[k]);
      const T d = __builtin_fabs(value - yi[k]);
      row_delta = d > row_delta ? d : row_delta;
      yi[k] = value;
      col_out[k] += next[k];
    }
    max_delta = smax(max_delta, row_delta);
  }
  return max_delta;
}

// The same M-step for short rows (K = 10), L rows at a time, one row per float64 lane. Row by
// row, each of a short row's six passes over its K classes is mostly loop overhead, and the
// Newton root (2-3 steps) a dependent chain: 110 ns a row at K = 10 on AVX-512, so collision-CE
// fits spent most of their time here. The rows are transposed into class-major scratch; the
// free classes, c*, the closed form and Newton run lane-wise, each lane stopping on its own
// test (a finished lane keeps its x); the closed form's y_c* is set per lane after. Sums over
// classes run in class order in each lane, as the scalar loops of em_cce_rows do, except f, g and
// the final total, which em_cce_rows sums in its vector order: the roots agree to rounding.
template <int BYTES>
constexpr int64_t cce_narrow_max() {
  // classes; 16-byte vectors (2 rows) gain little. Was 128 (measured on a Zen 5 against the row-by-row
  // code of then: 1.0-2.5x); with the row-by-row passes vectorised (lo, the delta pass, the
  // final y taken from the last Newton pass), a 2-core Intel Xeon (AVX-512) KVM guest, 2026-12-07,
  // ns a row of one EM iteration at N = 250, lanes / row by row: AVX-512 K = 10 95 / 200,
  // K = 16 144 / 144, K = 24 210 / 180, K = 32 280 / 215, K = 100 870 / 545; AVX2 K = 10 103 /
  // 136, K = 24 224 / 225, K = 32 300 / 260.
  return BYTES >= 32 ? 24 : 0;
}

// Rows r0 .. r0 + n - 1 of s and y (N x K) as class-major float64 scratch, s_out[k * L + j] and
// y_out[k * L + j] (y times scale[k] where scale is given), for the layouts that run a row per
// lane; lanes j >= n repeat row r0: valid numbers, whose results are dropped.
template <int L, typename T>
ENTCLUST_INLINE void rows_to_lanes(const T* s, const T* y, const T* scale, int64_t K, int64_t r0, int n,
                                   double* s_out, double* y_out) {
  for (int j = 0; j < L; ++j) {
    const int64_t i = r0 + (j < n ? j : 0);
    for (int64_t k = 0; k < K; ++k) {
      s_out[k * L + j] = static_cast<double>(s[i * K + k]);
      const double yk = static_cast<double>(y[i * K + k]);
      y_out[k * L + j] = scale ? yk * static_cast<double>(scale[k]) : yk;
    }
  }
}

template <typename T, int BYTES>
T em_cce_rows_narrow(const T* sigma, T* y, int64_t K, int64_t begin, int64_t end, const T* v, double* col_out,
                     double* x_state, double newton_tol, int64_t newton_max_iter) {
  using D = vdouble<BYTES>;
  constexpr int L = Vec<double, BYTES>::kLanes;
  alignas(64) double sd[128 * 8], a[128 * 8], cf[128 * 8], nx[128 * 8];
  alignas(64) double lanes[L], stars[L], totals[L];
  static_assert(cce_narrow_max<BYTES>() * L <= 128 * 8, "narrow scratch too small");
  const D one = splat<D>(1.0), zero{};
  T max_delta = 0;
  for (int64_t r0 = begin; r0 < end; r0 += L) {
    const int n = static_cast<int>(end - r0 < L ? end - r0 : L);
    rows_to_lanes<L>(sigma, y, v, K, r0, n, sd, a);  // a = y v
    for (int j = 0; j < L; ++j) lanes[j] = x_state[r0 + (j < n ? j : 0) - begin];
    D raw_sum{};
    for (int64_t k = 0; k < K; ++k) raw_sum += load<D>(a + k * L);
    const D floor_a = kFreeClass * (one + raw_sum);
    D a_sum{}, s_star = splat<D>(-1.0), c_star = splat<D>(-1.0);
    for (int64_t k = 0; k < K; ++k) {
      const D ak = load<D>(a + k * L), sk = load<D>(sd + k * L);
      const auto free_class = ~(ak > floor_a);
      const D kept = select(free_class, zero, ak);
      const auto better = free_class & (sk > s_star);
      s_star = select(better, sk, s_star);
      c_star = select(better, splat<D>(static_cast<double>(k)), c_star);
      store(a + k * L, kept);
      a_sum += kept;
    }
    const D b = one + a_sum;
    // appendix C: the closed form with the free mass on c*, where every denominator is positive
    // and the rest sums to at most 1
    auto ok = (c_star >= 0.0) & (s_star > 0.0);
    D total{};
    for (int64_t k = 0; k < K; ++k) {
      const D ak = load<D>(a + k * L);
      const auto pos = ak > 0.0;
      const D den = b * (one - load<D>(sd + k * L) / select(ok, s_star, one));
      ok &= ~pos | (den > 0.0);
      const D value = select(pos & (den > 0.0), ak / select(den > 0.0, den, one), zero);
      store(cf + k * L, value);
      total += value;
    }
    const auto solved = ok & (total <= 1.0);
    // Newton on x for the other lanes, from max(Lemma 1's l, the row's previous root)
    D lo = splat<D>(__DBL_MIN__);
    for (int64_t k = 0; k < K; ++k) {
      const D ak = load<D>(a + k * L);
      lo = select(ak > 0.0, vmax(lo, load<D>(sd + k * L) / (b - ak)), lo);
    }
    D x = vmax(lo, load<D>(lanes));
    auto active = ~solved;
    for (int64_t it = 0; it < newton_max_iter && any_lane(active); ++it) {
      const D inv_x = one / x;
      D f = splat<D>(-1.0), g{};
      for (int64_t k = 0; k < K; ++k) {
        const D ak = load<D>(a + k * L), sk = load<D>(sd + k * L);
        const D inv_d = one / select(ak > 0.0, b - sk * inv_x, one);
        const D r = ak * inv_d;
        f += r;
        g += r * sk * inv_d;
      }
      active &= ~((vabs(f) <= newton_tol) | ~(g > 0.0));
      x = select(active, vmax(lo, x + f * x * x / select(active, g, one)), x);
    }
    const D inv_x = one / x;
    D sum{};
    for (int64_t k = 0; k < K; ++k) {
      const D ak = load<D>(a + k * L);
      const D value = ak / select(ak > 0.0, b - load<D>(sd + k * L) * inv_x, one);
      store(nx + k * L, value);
      sum += value;
    }
    const D inv_sum = one / sum;
    for (int64_t k = 0; k < K; ++k) store(nx + k * L, select(solved, load<D>(cf + k * L), load<D>(nx + k * L) * inv_sum));
    store(lanes, select(solved, load<D>(lanes), x));
    store(stars, c_star);
    store(totals, total);
    for (int j = 0; j < n; ++j) {
      const int64_t i = r0 + j;
      if (solved[j]) nx[static_cast<int64_t>(stars[j]) * L + j] = 1 - totals[j];
      else x_state[i - begin] = lanes[j];
      T row_delta = 0;
      T* yi = y + i * K;
      for (int64_t k = 0; k < K; ++k) {
        const T value = static_cast<T>(nx[k * L + j]);
        const T d = __builtin_fabs(value - yi[k]);
        row_delta = d > row_delta ? d : row_delta;
        yi[k] = value;
        col_out[k] += nx[k * L + j];
      }
      max_delta = smax(max_delta, row_delta);
    }
  }
  return max_delta;
}

template <typename T, int BYTES>
T em_cce_rows_isa(const T* sigma, T* y, int64_t K, int64_t begin, int64_t end, const T* v, double* col_out,
                  double* x_state, double newton_tol, int64_t newton_max_iter, double* scratch) {
  if (K <= cce_narrow_max<BYTES>())
    return em_cce_rows_narrow<T, BYTES>(sigma, y, K, begin, end, v, col_out, x_state, newton_tol, newton_max_iter);
  return em_cce_rows<T>(sigma, y, K, begin, end, v, col_out, x_state, newton_tol, newton_max_iter, scratch);
}

// Fused linear self-labeling rows (kernel_table.h, LinearRows), float32. The M-steps need no
// pass of their own: from y = sigma, y_k <- (sigma_k + a_k y_k) / s_t keeps y_k = sigma_k P_t(a_k)
// with P_0 = 1, P_{t+1}(a) = (1 + a P_t(a)) / s_t, a polynomial of degree t whose coefficients
// depend on the row only through s_t = 1 + sum_k sigma_k a_k P_t(a_k), i.e. through the moments
// mu_j = sum_k sigma_k (a_k / alpha)^j, j <= T (alpha = max_k a_k, so every term is in [0, 1]
// and all sums are of positive terms). So a row takes four passes that stream from memory: max;
// exp and the moments; y = sigma P(a) with H and argmax, y stored and -ln y in place of l;
// gradients from y and -ln y (sigma = y / P(a): no exp or log). Rows whose
// coefficients would overflow float32 (T > kMaxMoments, or huge weights) take the direct
// iteration instead (one pass per M-step; `y` is its scratch). The last K % lanes classes run
// through the same vector code as a padded vector (logit -inf: sigma = 0; a = 0).
constexpr int kMaxMoments = 16;

template <int BYTES>
struct Part {
  static constexpr int L = Vec<float, BYTES>::kLanes;
  using V = vfloat<BYTES>;
  ENTCLUST_INLINE static V load_n(const float* p, int64_t n, float fill) {
    if (n >= L) return load<V>(p);
    alignas(BYTES) float t[L];
    for (int j = 0; j < L; ++j) t[j] = j < n ? p[j] : fill;
    return load<V>(t);
  }
  ENTCLUST_INLINE static void store_n(float* p, V v, int64_t n) {
    if (n >= L) {
      store(p, v);
      return;
    }
    alignas(BYTES) float t[L];
    store(t, v);
    for (int64_t j = 0; j < n; ++j) p[j] = t[j];
  }
};

// Horner: sum_j c[j] x^j, j = 0..T.
template <int BYTES>
ENTCLUST_INLINE vfloat<BYTES> poly(const float* c, int64_t T, vfloat<BYTES> x) {
  vfloat<BYTES> p = splat<vfloat<BYTES>>(c[T]);
  for (int64_t j = T - 1; j >= 0; --j) p = p * x + c[j];
  return p;
}

// The first index of the largest lane value (lanes hold their own first maxima).
template <int BYTES>
ENTCLUST_INLINE int64_t first_argmax(vfloat<BYTES> best, vint<BYTES> where) {
  constexpr int L = Vec<float, BYTES>::kLanes;
  float top = -kInfF;
  int64_t label = 0;
  for (int j = 0; j < L; ++j) {
    if (best[j] > top || (best[j] == top && where[j] < label)) {
      top = best[j];
      label = where[j];
    }
  }
  return label;
}

template <int BYTES>
void linear_rce_rows_f32(const LinearRows<float>& t, int64_t begin, int64_t end) {
  using V = vfloat<BYTES>;
  using I = vint<BYTES>;
  using P = Part<BYTES>;
  constexpr int L = Vec<float, BYTES>::kLanes;
  const int64_t K = t.K, T = t.iterations;
  const bool moments = T <= kMaxMoments;
  I iota;
  for (int j = 0; j < L; ++j) iota[j] = j;
  for (int64_t i = begin; i < end; ++i) {
    float* l = t.l + i * K;
    float* y = t.y + i * K;
    const float m = row_max<BYTES>(l, K);
    // Z = sum e, e = exp(l - m); M_j = sum e u^j, u = a / alpha (moments path) or M_1 = sum e a
    WideSum<BYTES> z, mom[kMaxMoments];
    for (int64_t k = 0; k < K; k += L) {
      const int64_t n = K - k;
      const V e = vexp<BYTES>(P::load_n(l + k, n, -kInfF) - m);
      z.add(e);
      if (moments) {
        const V u = P::load_n(t.a_unit + k, n, 0.0f);
        V term = e;
        for (int64_t j = 0; j < T; ++j) {
          term = term * u;
          mom[j].add(term);
        }
      } else {
        mom[0].add(e * P::load_n(t.a + k, n, 0.0f));
      }
    }
    const double zs = z.total();
    const float lse = static_cast<float>(static_cast<double>(m) + __builtin_log(zs));
    if (!__builtin_isfinite(lse)) {  // a NaN or +inf logit: say so (the sigma > 0 guards below would drop it)
      t.loss[i] = __builtin_nan("");
      t.labels[i] = 0;
      for (int64_t k = 0; k < K; ++k) y[k] = l[k] = __builtin_nanf("");
      continue;
    }
    // coefficients of P_T in u (double): d_0 = 1; d' = (1, alpha d) / s, s = 1 + alpha sum_j d_j mu_{j+1}
    double d[kMaxMoments + 1], mu[kMaxMoments + 1];
    alignas(BYTES) float c[kMaxMoments + 1];
    bool direct = !moments;
    if (moments) {
      for (int64_t j = 0; j < T; ++j) mu[j + 1] = mom[j].total() / zs;
      d[0] = 1.0;
      for (int64_t it = 0; it < T; ++it) {
        double s = 1.0;
        for (int64_t j = 0; j <= it; ++j) s += t.alpha * d[j] * mu[j + 1];
        for (int64_t j = it + 1; j >= 1; --j) d[j] = t.alpha * d[j - 1] / s;
        d[0] = 1.0 / s;
      }
      for (int64_t j = 0; j <= T; ++j) {
        direct = direct || !(d[j] < 1e30);
        c[j] = static_cast<float>(d[j]);
      }
    }
    if (direct) {
      // one pass per M-step: y <- (sigma + a y) / s, each pass summing a . y for the next s
      double s = 1.0 + (moments ? 0.0 : mom[0].total() / zs);
      if (moments) {
        WideSum<BYTES> first;
        for (int64_t k = 0; k < K; k += L)
          first.add(vexp<BYTES>(P::load_n(l + k, K - k, -kInfF) - lse) * P::load_n(t.a + k, K - k, 0.0f));
        s += first.total();
      }
      for (int64_t it = 0; it < T; ++it) {
        const float inv_s = static_cast<float>(1.0 / s);
        WideSum<BYTES> next;
        for (int64_t k = 0; k < K; k += L) {
          const int64_t n = K - k;
          const V a = P::load_n(t.a + k, n, 0.0f);
          const V sig = vexp<BYTES>(P::load_n(l + k, n, -kInfF) - lse);
          const V old = it == 0 ? sig : P::load_n(y + k, n, 0.0f);
          const V yn = (sig + a * old) * inv_s;
          P::store_n(y + k, yn, n);
          next.add(a * yn);
        }
        s = 1.0 + next.total();
      }
    }
    // y = sigma P(u), ln y = (l - lse) + ln P(u); H = -sum sigma ln y (sigma = 0 contributes 0); argmax y
    WideSum<BYTES> h;
    V best = splat<V>(-kInfF);
    I where{};
    for (int64_t k = 0; k < K; k += L) {
      const int64_t n = K - k;
      const V shifted = P::load_n(l + k, n, -kInfF) - lse;
      const V sig = vexp<BYTES>(shifted);
      V yk, log_y;
      if (direct) {
        yk = T == 0 ? sig : P::load_n(y + k, n, 0.0f);
        log_y = vlog<BYTES>(yk);
      } else {
        const V pk = poly<BYTES>(c, T, P::load_n(t.a_unit + k, n, 0.0f));
        yk = sig * pk;
        log_y = shifted + vlog<BYTES>(pk);
      }
      P::store_n(y + k, yk, n);
      if (!direct && t.grad) P::store_n(l + k, -log_y, n);  // l is not read again: -ln y for the gradients
      h.add(select(sig > 0.0f, -sig * log_y, V{}));
      const V ycmp = n >= L ? yk : select(iota < static_cast<int32_t>(n), yk, splat<V>(-kInfF));  // padding never wins
      const I up = ycmp > best;
      best = select(up, ycmp, best);
      where = select(up, iota + static_cast<int32_t>(k), where);
    }
    const double H = h.total();
    t.loss[i] = H;
    t.labels[i] = first_argmax<BYTES>(best, where);
    if (!t.grad) continue;
    // gradients scale sigma (-ln y - H), H as float hi + lo parts (see rce_grads)
    const float h_hi = static_cast<float>(H), h_lo = static_cast<float>(H - static_cast<double>(h_hi));
    for (int64_t k = 0; k < K; k += L) {
      const int64_t n = K - k;
      V sig, v;
      if (direct) {
        sig = vexp<BYTES>(P::load_n(l + k, n, -kInfF) - lse);
        v = -vlog<BYTES>(P::load_n(y + k, n, 1.0f));
      } else {  // sigma = y / P(u), -ln y stored in l by the pass above
        sig = P::load_n(y + k, n, 0.0f) / poly<BYTES>(c, T, P::load_n(t.a_unit + k, n, 0.0f));
        v = P::load_n(l + k, n, 0.0f);
      }
      P::store_n(l + k, select(sig > 0.0f, t.scale * sig * ((v - h_hi) - h_lo), V{}), n);
    }
  }
}

// ---- linear_tile_f32: logit tiles of linear_top_entries (see LinearTile in kernel_table.h) ----

// Bit j set where lane j of a comparison result is set.
template <int BYTES>
ENTCLUST_INLINE uint32_t lane_bits(vint<BYTES> m) {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (BYTES == 16) {
    return static_cast<uint32_t>(__builtin_ia32_movmskps(reinterpret_cast<vfloat<16>>(m)));
  } else {  // 32-byte halves (AVX2 is part of every wider target here)
    using Half = vfloat<(BYTES > 32 ? 32 : BYTES)>;  // (dependent: the builtin is looked up per target)
    uint32_t bits = 0;
    for (int h = 0; h < BYTES / 32; ++h) {
      Half part;
      __builtin_memcpy(&part, reinterpret_cast<const char*>(&m) + 32 * h, 32);
      bits |= static_cast<uint32_t>(__builtin_ia32_movmskps256(part)) << (8 * h);
    }
    return bits;
  }
#else
  constexpr int L = Vec<float, BYTES>::kLanes;
  uint32_t bits = 0;
  for (int j = 0; j < L; ++j) bits |= static_cast<uint32_t>(m[j] != 0) << j;
  return bits;
#endif
}

#if defined(__x86_64__) || defined(_M_X64)
// For each 8-bit mask, the lanes set in it, first (a compress by one permute: AVX2 has no compress).
struct CompressTable {
  int32_t lanes[256][8];
  constexpr CompressTable() : lanes{} {
    for (int m = 0; m < 256; ++m) {
      int n = 0;
      for (int j = 0; j < 8; ++j)
        if (m >> j & 1) lanes[m][n++] = j;
      for (; n < 8; ++n) lanes[m][n] = 0;
    }
  }
};
alignas(64) inline constexpr CompressTable kCompress{};
#endif

// Rows per tile: 2 MR accumulators, 2 weight vectors and a broadcast fit the register file (16
// vector registers below AVX-512, 32 with it).
template <int BYTES>
constexpr int tile_rows() {
  return BYTES == 64 ? 12 : 6;
}

// One tile: MR rows (x, stride D) by one panel (2 L classes from class `col`).
template <int BYTES, bool STORE>
ENTCLUST_INLINE bool linear_tile_one(const LinearTile& t, const float* x, int64_t row, const float* w,
                                     const float* b, int64_t col, float* out) {
  using V = vfloat<BYTES>;
  using I = vint<BYTES>;
  constexpr int L = Vec<float, BYTES>::kLanes, MR = tile_rows<BYTES>();
  const int64_t D = t.D;
  V a[MR][2];
  for (int i = 0; i < MR; ++i) a[i][0] = a[i][1] = V{};
  for (int64_t d = 0; d < D; ++d) {
    const V w0 = load<V>(w + d * 2 * L), w1 = load<V>(w + d * 2 * L + L);
    for (int i = 0; i < MR; ++i) {
      const V xs = x[i * D + d] - V{};  // a broadcast (x - 0 = x for every x, -0 included)
      a[i][0] += xs * w0;
      a[i][1] += xs * w1;
    }
  }
  const V b0 = load<V>(b), b1 = load<V>(b + L);
  I nan{};
  uint32_t nan_bits = 0;  // (AVX-512's mask registers)
  // the lists' fields in locals: the stores below go through memcpy, which may alias t
  const int64_t ld = t.ld, cap = t.cap, K = t.K;
  float* const cand_v = t.cand_v;
  int32_t* const cand_i = t.cand_i;
  int64_t* const cand_n = t.cand_n;
  for (int i = 0; i < MR; ++i) {
    const V l0 = a[i][0] + b0, l1 = a[i][1] + b1;
    if (STORE) {
      store(out + i * t.ldo, l0);
      store(out + i * t.ldo + L, l1);
      continue;
    }
    const V th = t.threshold[row + i] - V{};
#if defined(__x86_64__) || defined(_M_X64)
    if constexpr (BYTES == 64) {  // AVX-512: compares into mask registers, compressed in registers
      nan_bits |= _mm512_cmp_ps_mask(l0, l1, _CMP_UNORD_Q);  // (set where either lane is NaN)
      __mmask16 m0 = _mm512_cmp_ps_mask(l0, th, _CMP_GE_OQ), m1 = _mm512_cmp_ps_mask(l1, th, _CMP_GE_OQ);
      if (col + 2 * L > K) {  // padding classes
        const uint32_t valid = (1u << (K - col)) - 1;
        m0 &= static_cast<__mmask16>(valid);
        m1 &= static_cast<__mmask16>(valid >> 16);
      }
      const int64_t r = row + i;
      const int64_t n = cand_n[r];
      float* const cv = cand_v + r * ld;
      int32_t* const ci = cand_i + r * ld;
      int64_t pos = n < cap ? n : cap;  // (ld leaves room for 2 L entries past cap)
      const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
      const __m512i c0 = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int32_t>(col)));
      _mm512_storeu_ps(cv + pos, _mm512_maskz_compress_ps(m0, l0));
      _mm512_storeu_si512(ci + pos, _mm512_maskz_compress_epi32(m0, c0));
      pos += __builtin_popcount(m0);
      pos = pos < cap ? pos : cap;
      _mm512_storeu_ps(cv + pos, _mm512_maskz_compress_ps(m1, l1));
      _mm512_storeu_si512(ci + pos, _mm512_maskz_compress_epi32(m1, _mm512_add_epi32(c0, _mm512_set1_epi32(L))));
      cand_n[r] = n + __builtin_popcount(m0) + __builtin_popcount(m1);
      continue;
    }
#endif
    nan |= (l0 != l0) | (l1 != l1);
    uint32_t bits = lane_bits<BYTES>(l0 >= th) | lane_bits<BYTES>(l1 >= th) << L;
#if defined(__x86_64__) || defined(_M_X64)
    if constexpr (BYTES >= 32) {  // branch-free: each 8 lanes compressed by a permute, stored whole
      if (col + 2 * L > K) bits &= (1u << (K - col)) - 1;  // padding classes
      const int64_t r = row + i;
      const int64_t n = cand_n[r];
      float* const cv = cand_v + r * ld;
      int32_t* const ci = cand_i + r * ld;
      int64_t pos = n < cap ? n : cap;  // (ld leaves room for 2 L entries past cap)
      using H = vfloat<(BYTES > 32 ? 32 : BYTES)>;
      using HI = vint<(BYTES > 32 ? 32 : BYTES)>;
      alignas(BYTES) float v[2 * L];
      store(v, l0);
      store(v + L, l1);
      for (int h = 0; h < 2 * L / 8; ++h) {
        const uint32_t m8 = bits >> (8 * h) & 255u;
        const HI perm = load<HI>(kCompress.lanes[m8]);
        store(cv + pos, __builtin_ia32_permvarsf256(load<H>(v + 8 * h), perm));
        store(ci + pos, perm + static_cast<int32_t>(col + 8 * h));
        pos += __builtin_popcount(m8);
        pos = pos < cap ? pos : cap;
      }
      cand_n[r] = n + __builtin_popcount(bits);
      continue;
    }
#endif
    if (!bits) continue;
    alignas(BYTES) float v[2 * L];
    store(v, l0);
    store(v + L, l1);
    const int64_t r = row + i;
    int64_t n = t.cand_n[r];
    float* cv = t.cand_v + r * t.ld;
    int32_t* ci = t.cand_i + r * t.ld;
    for (; bits; bits &= bits - 1, ++n) {
      const int j = __builtin_ctz(bits);
      if (col + j >= t.K) break;  // padding classes (the last panel's tail, bits in class order)
      if (n < t.cap) {
        cv[n] = v[j];
        ci[n] = static_cast<int32_t>(col + j);
      }
    }
    t.cand_n[r] = n;
  }
  return nan_bits != 0 || lane_bits<BYTES>(nan) != 0;
}

template <int BYTES>
bool linear_tile_f32(const LinearTile& t) {
  constexpr int L = Vec<float, BYTES>::kLanes, MR = tile_rows<BYTES>();
  bool nan = false;
  for (int64_t q = 0; q < t.count; ++q) {  // each panel stays in L1 while every row passes it
    const int64_t p = t.first + q;
    const float* w = t.panels + p * t.D * 2 * L;
    const float* b = t.bias + p * 2 * L;
    for (int64_t r = 0; r < t.rows; r += MR) {
      if (t.out)
        linear_tile_one<BYTES, true>(t, t.x + r * t.D, r, w, b, p * 2 * L, t.out + r * t.ldo + q * 2 * L);
      else
        nan |= linear_tile_one<BYTES, false>(t, t.x + r * t.D, r, w, b, p * 2 * L, nullptr);
    }
  }
  return nan;
}

// ---- project_row, pgd_cce_rows: the exact simplex projection and projected gradient ----

// Euclidean projection of z (K values) onto the simplex: out = max(z - theta, 0) with
// sum out = 1. Michelot's algorithm (1986): theta = (sum of the active z - 1) / #active, drop
// the z <= theta, repeat until none drops. From any theta below the optimum, theta only grows
// and stays below it, so it ends exactly after at most K passes (a handful in practice), each
// a vectorised loop with no sort. The values are shifted by their maximum first (the
// projection is invariant to adding a constant to every entry): theta - max lies in [-1, 0),
// entries below max - 1 are never active, so |z| up to 1e308 neither cancels nor overflows.
// A row with a non-finite value projects to NaN.
template <int S>
void project_row_lanes(const double* z, int64_t K, double* out) {
  double top = -__builtin_inf();
  bool finite = true;
  for (int64_t k = 0; k < K; ++k) {
    top = smax(top, z[k]);
    finite = finite && __builtin_isfinite(z[k]);
  }
  if (!finite) {
    for (int64_t k = 0; k < K; ++k) out[k] = __builtin_nan("");
    return;
  }
  double theta = -1;  // in shifted values z - top; the optimum's theta is >= top - 1
  int64_t active = K + 1;
  for (int64_t pass = 0; pass <= K; ++pass) {
    double sum = 0;
    int64_t count = 0;
#pragma omp simd simdlen(S) reduction(+ : sum, count)
    for (int64_t k = 0; k < K; ++k) {
      const double shifted = z[k] - top;
      const bool keep = shifted > theta;
      sum += keep ? shifted : 0.0;
      count += keep ? 1 : 0;
    }
    theta = (sum - 1) / static_cast<double>(count);
    if (count == active) break;
    active = count;
  }
#pragma omp simd simdlen(S)
  for (int64_t k = 0; k < K; ++k) out[k] = smax((z[k] - top) - theta, 0.0);
}

// Projected gradient on the collision-CE problem (strong fairness, eq. 11) for rows
// [begin, end): g_ik = -(sigma_ik / p_i + v_k) / N with p_i = sigma_i . y_i, then
// y_i <- proj(y_i - step g_i). Updates y in place, adds the new column sums to col_out, returns
// max |dy|. Float64 throughout (scratch: 2 K doubles).
template <typename T, int S, int SD>  // S lanes where T and float64 mix, SD in the projection
T pgd_cce_rows_lanes(const T* sigma, T* y, int64_t K, int64_t N, double step, int64_t begin, int64_t end, const T* v,
                     double* col_out, double* scratch) {
  double* z = scratch;
  double* next = scratch + K;
  T max_delta = 0;
  const double scale = step / static_cast<double>(N);
  for (int64_t i = begin; i < end; ++i) {
    const T* s = sigma + i * K;
    T* yi = y + i * K;
    double p = 0;
#pragma omp simd simdlen(S) reduction(+ : p)
    for (int64_t k = 0; k < K; ++k) p += static_cast<double>(s[k]) * static_cast<double>(yi[k]);
#pragma omp simd simdlen(S)
    for (int64_t k = 0; k < K; ++k)
      z[k] = static_cast<double>(yi[k]) + scale * (static_cast<double>(s[k]) / p + static_cast<double>(v[k]));
    project_row_lanes<SD>(z, K, next);
    T row_delta = 0;
    for (int64_t k = 0; k < K; ++k) {
      const T value = static_cast<T>(next[k]);
      const T d = __builtin_fabs(value - yi[k]);
      row_delta = d > row_delta || d != d ? d : row_delta;  // NaN (divergence) propagates
      yi[k] = value;
      col_out[k] += next[k];
    }
    max_delta = row_delta > max_delta || row_delta != row_delta ? row_delta : max_delta;
  }
  return max_delta;
}

// The lanes that the projection and the projected-gradient rows use for a row of K on this ISA:
// 1 (scalar) up to K = 10, 4 on AVX-512 below K = 256, else 0: the ISA's own (BYTES / 8 float64
// lanes; BYTES / sizeof(T) where the row's T mixes with float64, as the compiler picks). On short
// rows a lane's reductions and masked tails cost more than the lanes save. Chosen on an AVX-512
// Xeon (2026-12-07) with each loop's lanes forced: scalar fastest to K = 10 on every path, 4
// lanes to about K = 200 on AVX-512. At 250 x 10 an iteration took 42-44 us on AVX-512 and 28-30
// on AVX2 before, 19-20 on both now; at 250 x 50 94 -> 72-76 on AVX-512
// (`python benchmarks/bench_short_rows.py` on 32c8d91 and after).
template <int BYTES>
ENTCLUST_INLINE int pgd_lanes(int64_t K) {
  return K <= 10 ? 1 : BYTES == 64 && K < 256 ? 4 : 0;
}
template <int BYTES>
void project_row(const double* z, int64_t K, double* out) {
  switch (pgd_lanes<BYTES>(K)) {
    case 1: return project_row_lanes<1>(z, K, out);
    case 4: return project_row_lanes<4>(z, K, out);
    default: return project_row_lanes<BYTES / 8>(z, K, out);
  }
}
template <typename T, int BYTES>
T pgd_cce_rows(const T* sigma, T* y, int64_t K, int64_t N, double step, int64_t begin, int64_t end, const T* v,
               double* col_out, double* scratch) {
  switch (pgd_lanes<BYTES>(K)) {
    case 1: return pgd_cce_rows_lanes<T, 1, 1>(sigma, y, K, N, step, begin, end, v, col_out, scratch);
    case 4: return pgd_cce_rows_lanes<T, 4, 4>(sigma, y, K, N, step, begin, end, v, col_out, scratch);
    default:
      return pgd_cce_rows_lanes<T, BYTES / static_cast<int>(sizeof(T)), BYTES / 8>(sigma, y, K, N, step, begin, end,
                                                                                  v, col_out, scratch);
  }
}

// ---- cert_fw, cert_dual: the rows of the two certificates (see CertRows) ----

// src (K values) as float64 in out, padded with `pad` to whole vectors; returns the padded length.
template <typename T, int BYTES>
ENTCLUST_INLINE int64_t padded_row(const T* src, int64_t K, double pad, double* out) {
  constexpr int LD = BYTES / 8;
  const int64_t Kp = (K + LD - 1) / LD * LD;
#pragma omp simd
  for (int64_t k = 0; k < K; ++k) out[k] = static_cast<double>(src[k]);
  for (int64_t k = K; k < Kp; ++k) out[k] = pad;
  return Kp;
}

// f of each lane, f a C library function of a double (log, exp): the vectorised float64 versions
// of simd.h on vectors of 32 bytes and more; on 16-byte vectors (SSE2, NEON) the C library's
// a lane, which measured faster on SSE2 than the polynomials on two lanes.
template <int BYTES>
ENTCLUST_INLINE vdouble<BYTES> lanes_c(vdouble<BYTES> x, double (*f)(double)) {
  vdouble<BYTES> r;
  for (int j = 0; j < BYTES / 8; ++j) r[j] = f(x[j]);
  return r;
}
template <int BYTES>
ENTCLUST_INLINE vdouble<BYTES> log_lanes(vdouble<BYTES> x) {
  if constexpr (BYTES > 16) return vlog64<BYTES>(x);
  else return lanes_c<BYTES>(x, log);
}
template <int BYTES>
ENTCLUST_INLINE vdouble<BYTES> exp_lanes(vdouble<BYTES> x) {
  if constexpr (BYTES > 16) return vexp64<BYTES>(x);
  else return lanes_c<BYTES>(x, exp);
}

// n < lanes values of p as a vector, the other lanes `pad`: a masked load where the ISA has one
// (lanes written one by one to memory and read back as a vector would stall the load).
template <int BYTES>
ENTCLUST_INLINE vdouble<BYTES> load_part(const double* p, int64_t n, double pad) {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (BYTES == 64) {
    return _mm512_mask_loadu_pd(_mm512_set1_pd(pad), static_cast<__mmask8>((1u << n) - 1), p);
  } else if constexpr (BYTES == 32) {
    const __m256i on = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    return _mm256_blendv_pd(_mm256_set1_pd(pad), _mm256_maskload_pd(p, on), _mm256_castsi256_pd(on));
  }
#endif
  if constexpr (BYTES == 16) {
    return vdouble<BYTES>{n > 0 ? p[0] : pad, pad};
  } else {
    vdouble<BYTES> v = splat<vdouble<BYTES>>(pad);
    for (int64_t j = 0; j < n; ++j) v[j] = p[j];
    return v;
  }
}

// n < lanes float32 values of p as a float64 vector, the other lanes 0 (a masked load, as load_part).
template <int BYTES>
ENTCLUST_INLINE vdouble<BYTES> load_part_f32(const float* p, int64_t n) {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (BYTES == 64) {
    return _mm512_cvtps_pd(_mm256_maskz_loadu_ps(static_cast<__mmask8>((1u << n) - 1), p));
  } else if constexpr (BYTES == 32) {
    return _mm256_cvtps_pd(_mm_maskload_ps(p, _mm_cmpgt_epi32(_mm_set1_epi32(static_cast<int>(n)),
                                                               _mm_setr_epi32(0, 1, 2, 3))));
  }
#endif
  if constexpr (BYTES == 16) {
    return vdouble<BYTES>{n > 0 ? static_cast<double>(p[0]) : 0.0, 0.0};
  } else {
    vdouble<BYTES> v{};
    for (int64_t j = 0; j < n; ++j) v[j] = p[j];
    return v;
  }
}

// A row of T as float64 vectors: whole vectors read in place, the last K % lanes by a masked
// load, zeros in the other lanes.
template <typename T, int BYTES>
struct RowF64 {
  const T* p;
  int64_t main;
  vdouble<BYTES> tail;
  ENTCLUST_INLINE RowF64(const T* src, int64_t K) : p(src), main(K / (BYTES / 8) * (BYTES / 8)), tail{} {
    if (K > main) {
      if constexpr (sizeof(T) == 8) tail = load_part<BYTES>(src + main, K - main, 0.0);
      else tail = load_part_f32<BYTES>(src + main, K - main);
    }
  }
  ENTCLUST_INLINE vdouble<BYTES> at(int64_t k) const {
    if (k >= main) return tail;
    if constexpr (sizeof(T) == 8) {
      return load<vdouble<BYTES>>(p + k);
    } else {
      typedef float half_float __attribute__((vector_size(BYTES / 2)));
      return __builtin_convertvector(load<half_float>(p + k), vdouble<BYTES>);
    }
  }
};

// y . g (over y > 0), whether a g is NaN, and min g, a vector of classes at a time.
template <int BYTES>
ENTCLUST_INLINE void fw_add(vdouble<BYTES> g, vdouble<BYTES> yv, vdouble<BYTES>& inner, vlong<BYTES>& nan,
                            vdouble<BYTES>& low) {
  inner += select(yv > vdouble<BYTES>{}, yv * g, vdouble<BYTES>{});
  nan |= g != g;
  low = select(g < low, g, low);
}

// Padding classes: s = y = 0 (no term, no mass) and w = +inf (never the smallest gradient).
template <typename T, int BYTES>
void cert_fw(const CertRows<T>& c, int64_t begin, int64_t end, double* ce, double* gap) {
  using V = vdouble<BYTES>;
  constexpr int LD = BYTES / 8;
  const int64_t K = c.K;
  double* wd = c.scratch;
  const int64_t Kp = padded_row<double, BYTES>(c.w, K, __builtin_inf(), wd);
  const V zero{}, one = splat<V>(1.0), inv_n = splat<V>(c.inv_n);
  double ce_sum = 0, gap_sum = 0;
  for (int64_t i = begin; i < end; ++i) {
    const RowF64<T, BYTES> s(c.sigma + i * K, K), y(c.y + i * K, K);
    double term = 0;
    V inner{}, low = splat<V>(__builtin_inf());
    vlong<BYTES> nan{};
    if (c.reverse) {  // one pass: -s ln y and g = -s / (N y) + w
      V acc{};
      for (int64_t k = 0; k < Kp; k += LD) {
        const V sv = s.at(k), yv = y.at(k);
        const auto on = sv > zero;
        acc -= select(on, sv * log_lanes<BYTES>(select(on, yv, one)), zero);
        fw_add<BYTES>(select(on, -sv * inv_n / yv, zero) + load<V>(wd + k), yv, inner, nan, low);
      }
      term = hsum(acc);
    } else {  // s . y first, then g = -s / (N s . y) + w
      V acc{};
      for (int64_t k = 0; k < Kp; k += LD) acc += s.at(k) * y.at(k);
      const double p = hsum(acc);
      term = -log(p);
      const V scale = splat<V>(c.inv_n / p);
      for (int64_t k = 0; k < Kp; k += LD) fw_add<BYTES>(-s.at(k) * scale + load<V>(wd + k), y.at(k), inner, nan, low);
    }
    ce_sum += term;
    gap_sum += any_lane(nan) ? __builtin_nan("") : hsum(inner) - hmin(low);
  }
  *ce += ce_sum;
  *gap += gap_sum;
}

// phi(tau) and -phi'(tau) over a padded row; a zero s_k adds nothing (its denominator is kept
// >= the least normal double: the positive entries have tau + d_k > 0, as tau >= s_k - d_k)
template <int BYTES>
ENTCLUST_INLINE double dual_phi(const double* sd, const double* dd, int64_t Kp, double tau, double* slope) {
  using V = vdouble<BYTES>;
  constexpr int LD = BYTES / 8;
  const V t = splat<V>(tau), one = splat<V>(1.0), tiny = splat<V>(2.2250738585072014e-308);
  V f{}, g{};
  for (int64_t k = 0; k < Kp; k += LD) {
    const V q = one / vmax(t + load<V>(dd + k), tiny);
    const V r = load<V>(sd + k) * q;
    f += r;
    g += r * q;
  }
  *slope = hsum(g);
  return hsum(f) - 1;
}

// cert_dual with a row per float64 lane: at K = 10 a row is two vectors of which one is mostly
// padding, and each Newton step a dependent chain of horizontal sums and a scalar division, so
// the certificate cost about as much as the EM steps it checks. L rows are transposed into
// class-major scratch (d_k is the same for every row: broadcast); the start, Newton (each lane
// stopping on its own test) and the logarithms run lane-wise, sums over classes in class order.
// The dual gap's terms s_k ln(s_k / ((tau + d_k) y_k)) that its one-logarithm form leaves out, where
// the quotient leaves the normal range (a denormal or zero y, a tiny s over a large denominator),
// as two logarithms; s and y of a row at a stride (1: a row, L: a lane of class-major scratch).
ENTCLUST_INLINE double dual_rare_terms(const double* s, const double* y, const double* d, double tau, int64_t K,
                                       int64_t stride) {
  constexpr double kTiny = 2.2250738585072014e-308, kHuge = 1.7976931348623157e308;
  double sum = 0;
  for (int64_t k = 0; k < K; ++k) {
    const double sk = s[k * stride], yk = y[k * stride], den = (tau + d[k]) * yk, q = sk / den;
    if (sk > 0 && !(den >= kTiny && q >= kTiny && q <= kHuge)) sum += sk * (log(sk / (tau + d[k])) - log(yk));
  }
  return sum;
}

template <int BYTES>
constexpr int64_t cert_narrow_max() {
  // classes; measured against the row layout at 10 x 250 x K after 20 EM steps (2026-12-07, AMD
  // EPYC Zen 5): AVX-512 2.1-4.0x at K <= 10, 1.6-1.7x at 16-20, 1.1x at 32, 0.96x at 48;
  // AVX2 1.3-1.9x at K <= 10, 1.1-1.2x at 16-20, 0.99x at 32. 16-byte vectors (2 rows) keep rows.
  return BYTES == 64 ? 32 : BYTES == 32 ? 24 : 0;
}

template <typename T, int BYTES>
void cert_dual_narrow(const CertRows<T>& c, int64_t begin, int64_t end, double* gap) {
  using D = vdouble<BYTES>;
  constexpr int L = Vec<double, BYTES>::kLanes;
  constexpr double kFloor = 4 * 2.220446049250313e-16, kTiny = 2.2250738585072014e-308,
                   kHuge = 1.7976931348623157e308;
  alignas(64) double sd[32 * 8], yd[32 * 8], rows[L], taus[L];
  static_assert(cert_narrow_max<BYTES>() * L <= 32 * 8, "narrow scratch too small");
  const int64_t K = c.K;
  const double* dd = c.w;
  const D zero{}, one = splat<D>(1.0), tiny = splat<D>(kTiny), huge = splat<D>(kHuge);
  // phi(t) and -phi'(t) of each lane's row (a zero s_k adds nothing, as in dual_phi)
  auto phi = [&](D t, D& slope) {
    D f{}, g{};
    for (int64_t k = 0; k < K; ++k) {
      const D q = one / vmax(t + splat<D>(dd[k]), tiny);
      const D r = load<D>(sd + k * L) * q;
      f += r;
      g += r * q;
    }
    slope = g;
    return f - one;
  };
  double total = 0;
  for (int64_t r0 = begin; r0 < end; r0 += L) {
    const int n = static_cast<int>(end - r0 < L ? end - r0 : L);
    rows_to_lanes<L, T>(c.sigma, c.y, nullptr, K, r0, n, sd, yd);
    D mass{}, excess{}, left{};
    for (int64_t k = 0; k < K; ++k) {
      const D sv = load<D>(sd + k * L), dv = splat<D>(dd[k]);
      mass += sv;
      excess += dv * load<D>(yd + k * L);
      left = vmax(left, select(sv > zero, sv - dv, zero));
    }
    // the start of cert_dual, lane by lane: the guess, or one Newton step left of it, or left
    const D guess = mass - excess;
    const auto has_guess = guess > left;
    D slope;
    const D f0 = phi(select(has_guess, guess, left), slope);
    D tau = select(has_guess & (f0 >= zero), guess, left);
    tau = select(has_guess & ~(f0 >= zero) & (slope > zero), vmax(left, guess + f0 / select(slope > zero, slope, one)),
                 tau);
    auto active = tau == tau;  // every lane
    for (int it = 0; it < 100 && any_lane(active); ++it) {
      const D f = phi(tau, slope);
      const D ratio = f / select(slope > zero, slope, one);
      active &= (f > zero) & (slope > zero) & ((ratio - ratio) == zero);  // phi(0) <= 0 keeps tau = 0
      const D next = select(active, tau + ratio, tau);
      active &= ~(ratio <= kFloor * next);
      tau = next;
    }
    D acc{};
    vlong<BYTES> rare{};
    for (int64_t k = 0; k < K; ++k) {
      const D sv = load<D>(sd + k * L), den = (tau + splat<D>(dd[k])) * load<D>(yd + k * L), q = sv / den;
      const auto normal = (den >= tiny) & (q >= tiny) & (q <= huge);
      const auto on = (sv > zero) & normal;
      acc += select(on, sv * log_lanes<BYTES>(select(on, q, one)), zero);
      rare |= (sv > zero) & ~normal;
    }
    store(rows, tau - mass + excess + acc);
    store(taus, tau);
    for (int j = 0; j < n; ++j) {
      total += rare[j] ? rows[j] + dual_rare_terms(sd + j, yd + j, dd, taus[j], K, L) : rows[j];
    }
  }
  *gap += total;
}

// Newton on the convex decreasing phi(tau) = sum_k s_k / (tau + d_k) - 1 from a point where
// phi >= 0, so that it rises monotonically to the root; any tau gives a valid bound, the
// iteration only makes it tight. Padding classes: s = y = d = 0.
template <typename T, int BYTES>
void cert_dual(const CertRows<T>& c, int64_t begin, int64_t end, double*, double* gap) {
  if (c.K <= cert_narrow_max<BYTES>()) return cert_dual_narrow<T, BYTES>(c, begin, end, gap);
  using V = vdouble<BYTES>;
  constexpr int LD = BYTES / 8;
  constexpr double kFloor = 4 * 2.220446049250313e-16, kTiny = 2.2250738585072014e-308,
                   kHuge = 1.7976931348623157e308;
  const int64_t K = c.K;
  double* sd = c.scratch;
  double* yd = sd + K + 8;
  double* dd = yd + K + 8;
  const int64_t Kp = padded_row<double, BYTES>(c.w, K, 0.0, dd);
  const V zero{}, one = splat<V>(1.0), tiny = splat<V>(kTiny), huge = splat<V>(kHuge);
  // each row copied once as padded float64 (unlike cert_fw's RowF64): Newton reads it many times
  double total = 0;
  for (int64_t i = begin; i < end; ++i) {
    padded_row<T, BYTES>(c.sigma + i * K, K, 0.0, sd);
    padded_row<T, BYTES>(c.y + i * K, K, 0.0, yd);
    V mass_v{}, excess_v{}, left_v{};
    for (int64_t k = 0; k < Kp; k += LD) {
      const V sv = load<V>(sd + k), dv = load<V>(dd + k);
      mass_v += sv;
      excess_v += dv * load<V>(yd + k);
      left_v = vmax(left_v, select(sv > zero, sv - dv, zero));
    }
    const double mass = hsum(mass_v), excess = hsum(excess_v), left = hmax(left_v);
    // start at the guess (the root itself where y is optimal for these multipliers) or, where
    // phi(guess) < 0, one Newton step left of it (phi is convex: the step lands left of the root),
    // else at the left end
    double tau = left, slope = 0;
    const double guess = mass - excess;
    if (guess > left) {
      const double f = dual_phi<BYTES>(sd, dd, Kp, guess, &slope);
      if (f >= 0) tau = guess;
      else if (slope > 0) tau = smax(left, guess + f / slope);
    }
    for (int it = 0; it < 100; ++it) {
      const double f = dual_phi<BYTES>(sd, dd, Kp, tau, &slope);
      if (!(f > 0) || !(slope > 0) || !__builtin_isfinite(f / slope)) break;  // phi(0) <= 0 keeps tau = 0
      const double step = f / slope;
      tau += step;
      if (step <= kFloor * tau) break;
    }
    // one logarithm a class, ln(s / ((tau + d) y)); two where that quotient leaves the normal
    // range (a denormal or zero y, or a tiny s over a large denominator), so no precision is lost
    const V t = splat<V>(tau);
    V acc{};
    vlong<BYTES> rare{};
    for (int64_t k = 0; k < Kp; k += LD) {
      const V sv = load<V>(sd + k), den = (t + load<V>(dd + k)) * load<V>(yd + k), q = sv / den;
      const auto normal = (den >= tiny) & (q >= tiny) & (q <= huge);
      const auto on = (sv > zero) & normal;
      acc += select(on, sv * log_lanes<BYTES>(select(on, q, one)), zero);
      rare |= (sv > zero) & ~normal;
    }
    double row = tau - mass + excess + hsum(acc);
    if (any_lane(rare)) row += dual_rare_terms(sd, yd, dd, tau, K, 1);
    total += row;
  }
  *gap += total;
}

// ---- sinkhorn_pass: one pass of a Sinkhorn-Knopp sweep (see SinkhornPass) ----

template <int BYTES>
void sinkhorn_pass(const SinkhornPass& t, int64_t begin, int64_t end) {
  using V = vdouble<BYTES>;
  constexpr int LD = BYTES / 8;
  const int64_t K = t.K, main = K / LD * LD, rest = K - main;
  const double inf = __builtin_inf();
  const double* c = t.column;
  for (int64_t i = begin; i < end; ++i) {
    const double* l = t.mode == SinkhornPass::kScaling ? nullptr : t.log_p + i * K;  // (no log_p there)
    if (t.mode == SinkhornPass::kColumnMax) {
      const V a = splat<V>(t.alpha[i]);
      for (int64_t k = 0; k < main; k += LD) store(t.out + k, vmax(load<V>(t.out + k), load<V>(l + k) + a));
      for (int64_t k = main; k < K; ++k) t.out[k] = smax(t.out[k], l[k] + t.alpha[i]);
    } else if (t.mode == SinkhornPass::kColumnExpSum) {
      const V a = splat<V>(t.alpha[i]);
      for (int64_t k = 0; k < main; k += LD)
        store(t.out + k, load<V>(t.out + k) + exp_lanes<BYTES>(load<V>(l + k) + a - load<V>(c + k)));
      if (rest) {
        const V e = exp_lanes<BYTES>(load_part<BYTES>(l + main, rest, 0.0) + a - load_part<BYTES>(c + main, rest, 0.0));
        for (int64_t j = 0; j < rest; ++j) t.out[main + j] += e[j];
      }
    } else if (t.mode == SinkhornPass::kAbsorb) {
      double* q = t.q + i * K;
      V m = splat<V>(-inf);
      for (int64_t k = 0; k < main; k += LD) m = vmax(m, load<V>(l + k) + load<V>(c + k));
      if (rest) m = vmax(m, load_part<BYTES>(l + main, rest, -inf) + load_part<BYTES>(c + main, rest, -inf));
      const double top = hmax(m);
      const V shift = splat<V>(top);
      for (int64_t k = 0; k < main; k += LD) store(q + k, exp_lanes<BYTES>(load<V>(l + k) + load<V>(c + k) - shift));
      if (rest) {
        const V e =
            exp_lanes<BYTES>(load_part<BYTES>(l + main, rest, -inf) + load_part<BYTES>(c + main, rest, -inf) - shift);
        for (int64_t j = 0; j < rest; ++j) q[main + j] = e[j];
      }
      t.rows[i] = top;
    } else {
      // four accumulators: the dot product is bound by the multiply-add latency, not the loads
      const double* q = t.q + i * K;
      const int64_t main4 = main / (4 * LD) * (4 * LD);
      V s0{}, s1{}, s2{}, s3{};
      for (int64_t k = 0; k < main4; k += 4 * LD) {
        s0 += load<V>(q + k) * load<V>(c + k);
        s1 += load<V>(q + k + LD) * load<V>(c + k + LD);
        s2 += load<V>(q + k + 2 * LD) * load<V>(c + k + 2 * LD);
        s3 += load<V>(q + k + 3 * LD) * load<V>(c + k + 3 * LD);
      }
      for (int64_t k = main4; k < main; k += LD) s0 += load<V>(q + k) * load<V>(c + k);
      if (rest) s1 += load_part<BYTES>(q + main, rest, 0.0) * load_part<BYTES>(c + main, rest, 0.0);
      const double row = hsum((s0 + s1) + (s2 + s3));
      t.rows[i] = row;
      const double w = t.scale / row;
      const V wv = splat<V>(w);
      for (int64_t k = 0; k < main; k += LD) store(t.out + k, load<V>(t.out + k) + wv * load<V>(q + k));
      for (int64_t k = main; k < K; ++k) t.out[k] += w * q[k];
    }
  }
}

// ---- kpp_gains_f32 and kpp_update_f32: the k-means++ candidates (see KppDistances) ----

// x.c of NB blocks of points (gs) against G candidates (from t0): NB * G accumulators in
// registers, a multiply-add per coordinate in order. Both kernels take their distances from here
// (and kpp_distance), so a point's distance to a candidate is the same float in both.
template <int BYTES, int NB, int G>
ENTCLUST_INLINE void kpp_dots(const KppDistances& k, const int64_t (&gs)[NB], int64_t t0, vfloat<BYTES> (&acc)[NB][G]) {
  using V = vfloat<BYTES>;
  constexpr int L = Vec<float, BYTES>::kLanes;
  const int64_t D = k.D, T = k.T;
  const float* xg[NB];
  for (int b = 0; b < NB; ++b) xg[b] = k.xt + gs[b] * D * L;
  const float* c = k.cand + t0;
  for (int b = 0; b < NB; ++b)
    for (int j = 0; j < G; ++j) acc[b][j] = V{};
  for (int64_t d = 0; d < D; ++d) {
    V xv[NB];
    for (int b = 0; b < NB; ++b) xv[b] = load<V>(xg[b] + d * L);
    for (int j = 0; j < G; ++j) {
      const V cj = c[d * T + j] - V{};
      for (int b = 0; b < NB; ++b) acc[b][j] += xv[b] * cj;
    }
  }
}

// max(0, |x|^2 + |c|^2 - 2 x.c) from the dot products
template <int BYTES>
ENTCLUST_INLINE vfloat<BYTES> kpp_distance(vfloat<BYTES> norm, float cnorm, vfloat<BYTES> dot) {
  using V = vfloat<BYTES>;
  const V dist = norm + (cnorm - V{}) - 2.0f * dot;
  return select(dist > 0.0f, dist, V{});
}

// One block against G candidates: each candidate's gains on it and its flag.
template <int BYTES, int G>
ENTCLUST_INLINE void kpp_gain_block(const KppDistances& k, int64_t g, int64_t t0) {
  using V = vfloat<BYTES>;
  using VD = vdouble<BYTES>;
  constexpr int L = Vec<float, BYTES>::kLanes, LD = L / 2;  // LD: float64 lanes of a vector
  const int64_t gs[1] = {g};
  V acc[1][G];
  kpp_dots<BYTES, 1, G>(k, gs, t0, acc);
  const V norm = load<V>(k.norms + g * L), d2 = load<V>(k.d2 + g * L);
  for (int j = 0; j < G; ++j) {
    const V dist = kpp_distance<BYTES>(norm, k.cnorm[t0 + j], acc[0][j]);
    const auto closer = dist < d2;
    const bool any = any_lane(closer);
    k.flags[g * k.T + t0 + j] = any;
    if (any) {  // (late in a seeding, rarely: most blocks are far from a candidate)
      VD a, b, c, e;
      widen<BYTES>(d2, a, b);
      widen<BYTES>(select(closer, dist, d2), c, e);
      double* s = k.gains + (t0 + j) * L;
      store(s, load<VD>(s) + (a - c));
      store(s + LD, load<VD>(s + LD) + (b - e));
    }
  }
}

template <int BYTES>
void kpp_gains_f32(const KppDistances& k, int64_t begin, int64_t end) {
  // the candidates in near-equal groups of at most GMAX (GMAX accumulators, a block of x and a
  // broadcast fit the register file: 16 vector registers below AVX-512, 32 with it). (Two blocks
  // against half as many candidates, a broadcast for two multiply-adds, took 2.3 ms a seed of
  // 2 * 10^5 points and 13 candidates against 1.3 with one block, AVX-512: their two streams of
  // points, 4 KiB apart, came from memory more slowly.)
  constexpr int GMAX = BYTES == 64 ? 16 : 12;
  const int64_t groups = (k.T + GMAX - 1) / GMAX, size = (k.T + groups - 1) / groups;
  for (int64_t g = begin; g < end; ++g) {  // a block of points stays in L1 for every candidate
    for (int64_t t0 = 0; t0 < k.T; t0 += size) {
      switch (k.T - t0 < size ? k.T - t0 : size) {
#define ENTCLUST_KPP_CASE(n) \
  case n:                    \
    if constexpr (n <= GMAX) kpp_gain_block<BYTES, n>(k, g, t0); \
    break;
        ENTCLUST_KPP_CASE(1) ENTCLUST_KPP_CASE(2) ENTCLUST_KPP_CASE(3) ENTCLUST_KPP_CASE(4)
        ENTCLUST_KPP_CASE(5) ENTCLUST_KPP_CASE(6) ENTCLUST_KPP_CASE(7) ENTCLUST_KPP_CASE(8)
        ENTCLUST_KPP_CASE(9) ENTCLUST_KPP_CASE(10) ENTCLUST_KPP_CASE(11) ENTCLUST_KPP_CASE(12)
        ENTCLUST_KPP_CASE(13) ENTCLUST_KPP_CASE(14) ENTCLUST_KPP_CASE(15) ENTCLUST_KPP_CASE(16)
#undef ENTCLUST_KPP_CASE
      }
    }
  }
}

// d2 = min(d2, dist to candidate t) on NB flagged blocks
template <int BYTES, int NB>
ENTCLUST_INLINE void kpp_update_blocks(const KppDistances& k, const int64_t (&gs)[NB], int64_t t) {
  using V = vfloat<BYTES>;
  constexpr int L = Vec<float, BYTES>::kLanes;
  V acc[NB][1];
  kpp_dots<BYTES, NB, 1>(k, gs, t, acc);
  for (int b = 0; b < NB; ++b) {
    float* p = k.d2 + gs[b] * L;
    const V d2 = load<V>(p), dist = kpp_distance<BYTES>(load<V>(k.norms + gs[b] * L), k.cnorm[t], acc[b][0]);
    store(p, select(dist < d2, dist, d2));
  }
}

template <int BYTES>
void kpp_update_f32(const KppDistances& k, int64_t t, double* sums, int64_t begin, int64_t end) {
  using V = vfloat<BYTES>;
  using VD = vdouble<BYTES>;
  constexpr int L = Vec<float, BYTES>::kLanes, LD = L / 2;
  // the flagged blocks four at a time (four independent chains of multiply-adds; early in a
  // seeding every block is flagged)
  int64_t gs[4];
  int n = 0;
  for (int64_t g = begin; g < end; ++g) {
    if (!k.flags[g * k.T + t]) continue;
    gs[n++] = g;
    if (n == 4) {
      kpp_update_blocks<BYTES, 4>(k, gs, t);
      n = 0;
    }
  }
  for (int b = 0; b < n; ++b) {
    const int64_t one[1] = {gs[b]};
    kpp_update_blocks<BYTES, 1>(k, one, t);
  }
  VD lo{}, hi{};
  for (int64_t g = begin; g < end; ++g) {
    VD a, b;
    widen<BYTES>(load<V>(k.d2 + g * L), a, b);
    lo += a;
    hi += b;
  }
  store(sums, load<VD>(sums) + lo);
  store(sums + LD, load<VD>(sums + LD) + hi);
}

// ---- centre_sums_f32: the weighted points added to their classes' sums (see CentreSums) ----

template <int BYTES>
void centre_sums_f32(const CentreSums& c, int64_t k0, int64_t k1) {
  using V = vfloat<BYTES>;
  using VD = vdouble<BYTES>;
  constexpr int L = Vec<float, BYTES>::kLanes, LD = L / 2;
  constexpr int64_t BATCH = 256;
  int64_t mine[BATCH];
  const int64_t D = c.D;
  const uint64_t span = static_cast<uint64_t>(k1 - k0);
  for (int64_t e0 = 0; e0 < c.entries; e0 += BATCH) {
    // this range's entries of the batch, without a branch per entry (a range is 1 / threads of
    // the classes: a test per entry would be mispredicted about half the time)
    const int64_t e1 = e0 + BATCH < c.entries ? e0 + BATCH : c.entries;
    int64_t n = 0;
    for (int64_t e = e0; e < e1; ++e) {
      mine[n] = e;
      n += static_cast<uint64_t>(c.index[e] - k0) < span;
    }
    for (int64_t q = 0; q < n; ++q) {
      const int64_t e = mine[q], k = c.index[e];
      const double a = c.alpha * static_cast<double>(c.y[e]);
      c.mass[k] += a;
      double* s = c.sums + k * D;
      const float* x = c.x + (e / c.t) * D;
      const VD av = splat<VD>(a);
      int64_t d = 0;
      for (; d + L <= D; d += L) {
        VD lo, hi;
        widen<BYTES>(load<V>(x + d), lo, hi);
        store(s + d, load<VD>(s + d) + av * lo);
        store(s + d + LD, load<VD>(s + d + LD) + av * hi);
      }
      for (; d < D; ++d) s[d] += a * static_cast<double>(x[d]);
    }
  }
}

// ---- prediction fairness (kernel_table.h, FairnessChunk; cpu/fairness.cpp) ----------------------

// x[i] = exp(x[i]) over n entries in place: the exps of a chunk in one run of whole vectors (a
// short row's exps, row by row, would not fill one)
template <typename T, int BYTES>
void exp_all(T* x, int64_t n) {
  using V = typename Vec<T, BYTES>::type;
  constexpr int L = Vec<T, BYTES>::kLanes;
  const auto vec_exp = [](V v) {
    if constexpr (sizeof(T) == 4) {
      return vexp<BYTES>(v);
    } else {
      return vexp64<BYTES>(v);
    }
  };
  if constexpr (sizeof(T) == 8 && BYTES == 16) {  // two float64 lanes: the C library's exp a lane measured faster
    for (int64_t i = 0; i < n; ++i) x[i] = __builtin_exp(x[i]);
    return;
  }
  int64_t i = 0;
  for (; i + L <= n; i += L) store(x + i, vec_exp(load<V>(x + i)));
  if (i < n) {  // the tail through a padded vector
    alignas(64) T tail[L] = {};
    for (int64_t j = i; j < n; ++j) tail[j - i] = x[j];
    store(tail, vec_exp(load<V>(tail)));
    for (int64_t j = i; j < n; ++j) x[j] = tail[j - i];
  }
}

// sum_k x[k] in float64 (float32 lanes widened)
template <typename T, int BYTES>
ENTCLUST_INLINE double wide_sum(const T* x, int64_t K) {
  using V = typename Vec<T, BYTES>::type;
  constexpr int L = Vec<T, BYTES>::kLanes;
  vdouble<BYTES> lo{}, hi{};
  int64_t k = 0;
  for (; k + L <= K; k += L) {
    if constexpr (sizeof(T) == 4) {
      vdouble<BYTES> a, b;
      widen<BYTES>(load<V>(x + k), a, b);
      lo += a;
      hi += b;
    } else {
      lo += load<V>(x + k);
    }
  }
  double s0 = 0, s1 = 0;
  for (; k + 1 < K; k += 2) {
    s0 += static_cast<double>(x[k]);
    s1 += static_cast<double>(x[k + 1]);
  }
  if (k < K) s0 += static_cast<double>(x[k]);
  return hsum(lo + hi) + (s0 + s1);
}

// max_k x[k] in T: whole vectors, then the tail in two independent maxima
template <typename T, int BYTES>
ENTCLUST_INLINE T vec_row_max(const T* x, int64_t K) {
  using V = typename Vec<T, BYTES>::type;
  constexpr int L = Vec<T, BYTES>::kLanes;
  V m = splat<V>(-__builtin_inf());
  int64_t k = 0;
  for (; k + L <= K; k += L) m = vmax(m, load<V>(x + k));
  T a = hmax(m), b = -__builtin_inf();
  for (; k + 1 < K; k += 2) {
    a = x[k] > a ? x[k] : a;
    b = x[k + 1] > b ? x[k + 1] : b;
  }
  if (k < K) a = x[k] > a ? x[k] : a;
  return a > b ? a : b;  // (a NaN is passed over here and caught by the row's sum)
}

template <typename T, int BYTES>
bool fairness_rows(const FairnessChunk<T>& c) {
  using V = typename Vec<T, BYTES>::type;
  constexpr int L = Vec<T, BYTES>::kLanes;
  const int64_t K = c.K, rows = c.rows;
  for (int64_t i = 0; i < rows; ++i) {
    const T* z = c.z + i * K;
    T* e = c.e + i * K;
    const T m = vec_row_max<T, BYTES>(z, K);
    int64_t k = 0;
    for (; k + L <= K; k += L) store(e + k, load<V>(z + k) - m);
    for (; k < K; ++k) e[k] = z[k] - m;
    c.lse[i] = static_cast<double>(m);  // the row's max until its sum is known
  }
  exp_all<T, BYTES>(c.e, rows * K);
  T* col = c.col;
  for (int64_t k = 0; k < K; ++k) col[k] = -__builtin_inf();
  bool bad = false;
  for (int64_t i = 0; i < rows; ++i) {
    const double l = c.lse[i] + __builtin_log(wide_sum<T, BYTES>(c.e + i * K, K));
    bad |= l != l;
    c.lse[i] = l;
    const T lt = static_cast<T>(l);
    const T* z = c.z + i * K;
    int64_t k = 0;
    for (; k + L <= K; k += L) store(col + k, vmax(load<V>(col + k), load<V>(z + k) - lt));
    for (; k < K; ++k) col[k] = z[k] - lt > col[k] ? z[k] - lt : col[k];
  }
  return bad;
}

template <typename T, int BYTES>
void fairness_exps(const FairnessChunk<T>& c) {
  using V = typename Vec<T, BYTES>::type;
  constexpr int L = Vec<T, BYTES>::kLanes;
  const int64_t K = c.K, rows = c.rows;
  for (int64_t i = 0; i < rows; ++i) {
    const T lt = static_cast<T>(c.lse[i]);
    const T* z = c.z + i * K;
    T* e = c.e + i * K;
    int64_t k = 0;
    for (; k + L <= K; k += L) store(e + k, (load<V>(z + k) - lt) - load<V>(c.col + k));
    for (; k < K; ++k) e[k] = (z[k] - lt) - c.col[k];
  }
  exp_all<T, BYTES>(c.e, rows * K);
  for (int64_t k = 0; k < K; ++k) c.S[k] = 0.0;
  for (int64_t i = 0; i < rows; ++i) {
    const T* e = c.e + i * K;
    int64_t k = 0;
    for (; k + L <= K; k += L) {
      if constexpr (sizeof(T) == 4) {
        vdouble<BYTES> a, b;
        widen<BYTES>(load<V>(e + k), a, b);
        store(c.S + k, load<vdouble<BYTES>>(c.S + k) + a);
        store(c.S + k + L / 2, load<vdouble<BYTES>>(c.S + k + L / 2) + b);
      } else {
        store(c.S + k, load<V>(c.S + k) + load<V>(e + k));
      }
    }
    for (; k < K; ++k) c.S[k] += static_cast<double>(e[k]);
  }
}

template <typename T, int BYTES>
void fairness_grad(T* e0, int64_t rows, int64_t K, const T* f, const T* g, T scale) {
  using V = typename Vec<T, BYTES>::type;
  constexpr int L = Vec<T, BYTES>::kLanes;
  for (int64_t i = 0; i < rows; ++i) {
    T* e = e0 + i * K;
    V acc{};
    int64_t k = 0;
    for (; k + L <= K; k += L) acc += load<V>(f + k) * load<V>(e + k);
    T r0 = 0, r1 = 0;
    for (; k + 1 < K; k += 2) {
      r0 += f[k] * e[k];
      r1 += f[k + 1] * e[k + 1];
    }
    if (k < K) r0 += f[k] * e[k];
    const T R = static_cast<T>(hsum(acc)) + (r0 + r1);
    k = 0;
    for (; k + L <= K; k += L) store(e + k, scale * load<V>(e + k) * (load<V>(f + k) - load<V>(g + k) * R));
    for (; k < K; ++k) e[k] = scale * e[k] * (f[k] - g[k] * R);
  }
}

template <typename T, int BYTES>
void softmax_rows(const T* z0, double* out0, int64_t rows, int64_t K) {
  using V = typename Vec<T, BYTES>::type;
  using D = vdouble<BYTES>;
  constexpr int L = Vec<T, BYTES>::kLanes, LD = Vec<double, BYTES>::kLanes;
  for (int64_t i = 0; i < rows; ++i) {
    const T* z = z0 + i * K;
    double* out = out0 + i * K;
    const double m = static_cast<double>(vec_row_max<T, BYTES>(z, K));
    int64_t k = 0;
    for (; k + L <= K; k += L) {
      if constexpr (sizeof(T) == 4) {
        D a, b;
        widen<BYTES>(load<V>(z + k), a, b);
        store(out + k, a - m);
        store(out + k + LD, b - m);
      } else {
        store(out + k, load<V>(z + k) - m);
      }
    }
    for (; k < K; ++k) out[k] = static_cast<double>(z[k]) - m;
  }
  exp_all<double, BYTES>(out0, rows * K);
  for (int64_t i = 0; i < rows; ++i) {
    double* out = out0 + i * K;
    const double inv = 1.0 / wide_sum<double, BYTES>(out, K);
    int64_t k = 0;
    for (; k + LD <= K; k += LD) store(out + k, load<D>(out + k) * inv);
    for (; k < K; ++k) out[k] *= inv;
  }
}

template <int BYTES>
constexpr KernelTable make_table(const char* name) {
  return KernelTable{name,
                     &rce_rows_f32<BYTES>,
                     &cce_rows_f32<BYTES>,
                     &em_rce_rows_isa<float, BYTES>,
                     &em_rce_rows_isa<double, BYTES>,
                     &em_cce_rows_isa<float, BYTES>,
                     &em_cce_rows_isa<double, BYTES>,
                     &pgd_cce_rows<float, BYTES>,
                     &pgd_cce_rows<double, BYTES>,
                     &project_row<BYTES>,
                     &cert_fw<float, BYTES>,
                     &cert_fw<double, BYTES>,
                     &cert_dual<float, BYTES>,
                     &cert_dual<double, BYTES>,
                     &sinkhorn_pass<BYTES>,
                     &linear_rce_rows_f32<BYTES>,
                     &linear_tile_f32<BYTES>,
                     tile_rows<BYTES>(),
                     2 * Vec<float, BYTES>::kLanes,
                     &kpp_gains_f32<BYTES>,
                     &kpp_update_f32<BYTES>,
                     &centre_sums_f32<BYTES>,
                     Vec<float, BYTES>::kLanes,
                     &fairness_rows<float, BYTES>,
                     &fairness_rows<double, BYTES>,
                     &fairness_exps<float, BYTES>,
                     &fairness_exps<double, BYTES>,
                     &fairness_grad<float, BYTES>,
                     &fairness_grad<double, BYTES>,
                     &softmax_rows<float, BYTES>,
                     &softmax_rows<double, BYTES>};
}
