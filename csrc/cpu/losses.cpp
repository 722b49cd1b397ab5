// CPU kernels of the fused losses (reverse and collision cross-entropy from logits).
// One task per block of rows (at::parallel_for); each row is processed in at most three
// contiguous passes that stay in L1/L2: max of the logits, exp + sums (+ log y), gradients.
// float32, the hot path, runs the per-ISA row kernels of isa/row_kernels.h through the table
// of the CPU capability in use (isa/capability.cpp); so do float16 and bfloat16, on blocks of
// rows converted to float32 (half_via_f32). float64 runs the portable templates below (default
// flags; sums in float64).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "../losses.h"
#include "fastmath.h"
#include "isa/prelude.h"

namespace entclust {
namespace cpu {
namespace portable {
#include "isa/row_kernels.h"
}  // namespace portable

namespace {

constexpr int64_t kBlock = 1024;

template <typename A>
constexpr A inf() {
  return std::numeric_limits<A>::infinity();
}

// Below this p / s the collision sum sigma . y has lost precision to underflow of exp and of
// the products e_k y_k; such rows are recomputed in the log domain (float64).
template <typename A>
constexpr double underflow_threshold();
template <>
constexpr double underflow_threshold<float>() { return 1e-20; }
template <>
constexpr double underflow_threshold<double>() { return 1e-280; }

template <typename T, typename A>
ENTCLUST_ALWAYS_INLINE A row_max(const T* l, int64_t K) {
  A m = -inf<A>();
#pragma omp simd reduction(max : m)
  for (int64_t k = 0; k < K; ++k) {
    const A v = static_cast<A>(l[k]);
    m = v > m ? v : m;
  }
  return m;
}

// Per-row sums of the forward pass: s = sum e_k with e_k = exp(l_k - max l), and
// w = sum e_k v_k with v_k = -ln y_k (reverse CE) or v_k = y_k (collision CE).
struct RowSums {
  double s = 0, w = 0, ysum = 0;
  double ymin = std::numeric_limits<double>::infinity();
};

// Rows are processed in whole vectors of kLanes classes; the remaining K % kLanes classes go
// through the same vectorised block code on a padded copy (logit -inf, label 1: e_k = 0 and
// no contribution), because a scalar remainder of exp/log costs more than the vector body
// for K of a few hundred and everything for K < kLanes. Row sums/minima of y for the
// remainder are taken separately, in scalar code (no transcendentals there).
constexpr int64_t kLanes = 16;

// The padded remainder has a constant trip count, which GCC unrolls completely before the
// vectoriser runs (and then leaves scalar); an opaque count keeps it a vectorisable loop.
ENTCLUST_ALWAYS_INLINE int64_t opaque(int64_t n) {
#if defined(__GNUC__)
  asm("" : "+r"(n));
#endif
  return n;
}

// Block sums over n classes: s += e_k with e_k = exp(l_k - m), and w += e_k (-ln y_k)
// (reverse CE) or w += e_k y_k (collision CE); with STATS also the sum and minimum of y;
// with STORE, e_k (and -ln y_k for reverse CE) are written to e_out (v_out).
template <bool RCE, bool STORE, bool STATS, typename L, typename A>
ENTCLUST_ALWAYS_INLINE void block_sums(const L* l, const L* y, int64_t n, A m, A* e_out, A* v_out, A& bs,
                                       A& bw, A& by, A& ym) {
#pragma omp simd reduction(+ : bs, bw, by) reduction(min : ym)
  for (int64_t k = 0; k < n; ++k) {
    const A yk = static_cast<A>(y[k]);
    const A e = op_exp(static_cast<A>(static_cast<A>(l[k]) - m));
    bs += e;
    if (RCE) {
      const A v = -op_log(yk);
      bw += e > A(0) ? e * v : A(0);  // sigma_k = 0 contributes 0, even where y_k = 0
      if (STORE) v_out[k] = v;
    } else {
      bw += e * yk;
    }
    if (STATS) {
      by += yk;
      ym = yk < ym ? yk : ym;
    }
    if (STORE) e_out[k] = e;
  }
}

// Forward sums of one row; with STORE, e_k (and -ln y_k) go to the scratch rows e_buf (v_buf).
template <bool RCE, bool STORE, typename T, typename A>
ENTCLUST_ALWAYS_INLINE RowSums row_sums(const T* l, const T* y, int64_t K, A m, A* e_buf, A* v_buf) {
  RowSums r;
  A ym = inf<A>();
  const int64_t kv = K - K % kLanes;
  for (int64_t k0 = 0; k0 < kv; k0 += kBlock) {
    const int64_t n = std::min(kv - k0, kBlock);
    A bs = 0, bw = 0, by = 0;
    block_sums<RCE, STORE, true>(l + k0, y + k0, n, m, e_buf + k0, v_buf + k0, bs, bw, by, ym);
    r.s += bs;
    r.w += bw;
    r.ysum += by;
  }
  if (kv < K) {
    const int64_t rest = K - kv;
    A tl[kLanes], ty[kLanes], te[kLanes], tv[kLanes];
    for (int64_t j = 0; j < kLanes; ++j) {
      tl[j] = j < rest ? static_cast<A>(l[kv + j]) : -inf<A>();
      ty[j] = j < rest ? static_cast<A>(y[kv + j]) : A(1);
    }
    A bs = 0, bw = 0, unused_sum = 0, unused_min = 0;
    block_sums<RCE, true, false>(tl, ty, opaque(kLanes), m, te, tv, bs, bw, unused_sum, unused_min);
    r.s += bs;
    r.w += bw;
    for (int64_t j = 0; j < rest; ++j) {
      r.ysum += ty[j];
      ym = ty[j] < ym ? ty[j] : ym;
      if (STORE) {
        e_buf[kv + j] = te[j];
        if (RCE) v_buf[kv + j] = tv[j];
      }
    }
  }
  r.ymin = ym;
  return r;
}

// Reverse CE gradients (MATH.md): dH/dl_j = sigma_j (-ln y_j - H), dH/dy_j = -sigma_j / y_j,
// both 0 where sigma_j = 0.
template <bool GL, bool GY, typename T, typename A>
ENTCLUST_ALWAYS_INLINE void rce_grads(const T* y, int64_t K, A inv_s, A h, A scale, const A* e_buf,
                                      const A* v_buf, T* gl, T* gy) {
#pragma omp simd
  for (int64_t k = 0; k < K; ++k) {
    const A sig = e_buf[k] * inv_s;
    const bool live = sig > A(0);
    if (GL) gl[k] = static_cast<T>(live ? scale * sig * (v_buf[k] - h) : A(0));
    if (GY) gy[k] = static_cast<T>(live ? -scale * sig / static_cast<A>(y[k]) : A(0));
  }
}

// Collision CE gradients with p = sigma . y: dL/dl_j = sigma_j - y_j sigma_j / p,
// dL/dy_j = -sigma_j / p; sigma_j / p = e_j * inv_p with inv_p = 1 / sum_k e_k y_k.
template <bool GL, bool GY, typename T, typename A>
ENTCLUST_ALWAYS_INLINE void cce_grads(const T* y, int64_t K, A inv_s, A inv_p, A scale, const A* e_buf,
                                      T* gl, T* gy) {
#pragma omp simd
  for (int64_t k = 0; k < K; ++k) {
    const A e = e_buf[k];
    if (GL) gl[k] = static_cast<T>(scale * (e * inv_s - static_cast<A>(y[k]) * e * inv_p));
    if (GY) gy[k] = static_cast<T>(-scale * e * inv_p);
  }
}

// Arguments of one call, shared by every row task.
template <typename T, typename A>
struct RowTask {
  const T* l;
  const T* y;
  int64_t K;
  A scale;
  T* gl;  // nullptr when not requested
  T* gy;
  A* rows;
  A* ysum;
  A* ymin;
  A* bad;
  double sum_tol;
};

// Per-row verdict for the Python-side check (1 = something to report): a non-finite loss,
// non-finite or negative y, or a row sum off by more than sum_tol (sum_tol = inf: unchecked).
template <typename T, typename A>
ENTCLUST_ALWAYS_INLINE void record_row(const RowTask<T, A>& t, int64_t i, double loss, double ysum, double ymin) {
  t.rows[i] = static_cast<A>(loss);
  t.ysum[i] = static_cast<A>(ysum);
  t.ymin[i] = static_cast<A>(ymin);
  const bool ok = std::isfinite(loss) && std::isfinite(ysum) && ymin >= 0 && !(std::fabs(ysum - 1.0) > t.sum_tol);
  t.bad[i] = ok ? A(0) : A(1);
}

template <bool GL, bool GY, typename T, typename A>
ENTCLUST_ALWAYS_INLINE void rce_rows(const RowTask<T, A>& t, int64_t begin, int64_t end, A* scratch) {
  constexpr bool STORE = GL || GY;
  const int64_t K = t.K;
  for (int64_t i = begin; i < end; ++i) {
    const T* l = t.l + i * K;
    const T* y = t.y + i * K;
    const A m = row_max<T, A>(l, K);
    const RowSums r = row_sums<true, STORE>(l, y, K, m, scratch, scratch + K);
    const double h = r.w / r.s;  // H(sigma, y) = sum_k e_k (-ln y_k) / sum_k e_k
    record_row(t, i, h, r.ysum, r.ymin);
    if (STORE) {
      rce_grads<GL, GY>(y, K, static_cast<A>(1.0 / r.s), static_cast<A>(h), t.scale, scratch,
                        scratch + K, GL ? t.gl + i * K : nullptr, GY ? t.gy + i * K : nullptr);
    }
  }
}

template <bool GL, bool GY, typename T, typename A>
ENTCLUST_ALWAYS_INLINE void cce_rows(const RowTask<T, A>& t, int64_t begin, int64_t end, A* scratch) {
  constexpr bool STORE = GL || GY;
  const int64_t K = t.K;
  for (int64_t i = begin; i < end; ++i) {
    const T* l = t.l + i * K;
    const T* y = t.y + i * K;
    T* gl = GL ? t.gl + i * K : nullptr;
    T* gy = GY ? t.gy + i * K : nullptr;
    const A m = row_max<T, A>(l, K);
    const RowSums r = row_sums<false, STORE>(l, y, K, m, scratch, scratch + K);
    double loss;
    if (r.w > r.s * underflow_threshold<A>() && r.s < inf<double>()) {
      loss = std::log(r.s / r.w);  // -ln(w / s)
      if (STORE) {
        cce_grads<GL, GY>(y, K, static_cast<A>(1.0 / r.s), static_cast<A>(1.0 / r.w), t.scale,
                          scratch, gl, gy);
      }
    } else if (r.w != r.w || r.s != r.s) {  // NaN in the input: propagate, the caller reports it
      loss = std::numeric_limits<double>::quiet_NaN();
      for (int64_t k = 0; gl != nullptr && k < K; ++k) gl[k] = static_cast<T>(loss);
      for (int64_t k = 0; gy != nullptr && k < K; ++k) gy[k] = static_cast<T>(loss);
    } else {
      loss = portable::cce_row_logspace(l, y, K, static_cast<double>(t.scale), gl, gy);
    }
    record_row(t, i, loss, r.ysum, r.ymin);
  }
}

// Runs ROWS<GL, GY> over rows [begin, end) with the gradient flags known at compile time.
#define ENTCLUST_DISPATCH_GRADS(ROWS, t, begin, end, scratch)               \
  do {                                                                      \
    if ((t).gl && (t).gy) ROWS<true, true>((t), (begin), (end), (scratch)); \
    else if ((t).gl) ROWS<true, false>((t), (begin), (end), (scratch));     \
    else if ((t).gy) ROWS<false, true>((t), (begin), (end), (scratch));     \
    else ROWS<false, false>((t), (begin), (end), (scratch));                \
  } while (0)

template <typename T, typename A>
void rce_range(const RowTask<T, A>& t, int64_t begin, int64_t end, A* scratch) {
  ENTCLUST_DISPATCH_GRADS(rce_rows, t, begin, end, scratch);
}
template <typename T, typename A>
void cce_range(const RowTask<T, A>& t, int64_t begin, int64_t end, A* scratch) {
  ENTCLUST_DISPATCH_GRADS(cce_rows, t, begin, end, scratch);
}

enum class Loss { kReverse, kCollision };

// float16 and bfloat16 run the float32 kernels of the CPU capability in use, a block of rows at a
// time: the block's logits and y converted to float32 scratch (ATen's vectorised copy), the
// kernel, the gradients converted back (round to nearest even, as a cast). The numbers are
// those of a float32 call on the converted inputs. Per-row losses and checks are float32 for
// these types already (their opmath type). The portable template below, which converted each
// element in scalar SSE2 code, took 30 ms for bfloat16 reverse CE at 4096 x 1000 (forward +
// backward, 2 threads, Zen 5); this takes 4 ms, float32 2.4 ms (docs/benchmarks.md).
void half_via_f32(LossRowsFn rows, const at::Tensor& logits, const at::Tensor& y, LossBuffers& b, double sum_tol) {
  const int64_t N = logits.size(0), K = logits.size(1);
  const bool gl = b.grad_logits.numel() > 0, gy = b.grad_y.numel() > 0;
  const int64_t block = std::max<int64_t>(1, 32768 / K);  // rows: 4 float32 arrays of ~128 KB
  float* out_rows = b.rows.data_ptr<float>();
  float* stats = b.stats.data_ptr<float>();
  at::parallel_for(0, N, block, [&](int64_t begin, int64_t end) {
    const int64_t cap = std::min(block, end - begin);
    const auto f32 = logits.options().dtype(at::kFloat);
    at::Tensor lf = at::empty({cap, K}, f32), yf = at::empty({cap, K}, f32);
    at::Tensor glf = gl ? at::empty({cap, K}, f32) : at::Tensor(), gyf = gy ? at::empty({cap, K}, f32) : at::Tensor();
    std::vector<float> scratch(gl || gy ? 2 * K : 0);
    for (int64_t r0 = begin; r0 < end; r0 += block) {
      const int64_t n = std::min(block, end - r0);
      lf.narrow(0, 0, n).copy_(logits.narrow(0, r0, n));
      yf.narrow(0, 0, n).copy_(y.narrow(0, r0, n));
      const LossRows task{lf.data_ptr<float>(),
                          yf.data_ptr<float>(),
                          K,
                          static_cast<float>(b.scale),
                          gl ? glf.data_ptr<float>() : nullptr,
                          gy ? gyf.data_ptr<float>() : nullptr,
                          out_rows + r0,
                          stats + r0,
                          stats + N + r0,
                          stats + 2 * N + r0,
                          sum_tol};
      rows(task, 0, n, scratch.data());
      if (gl) b.grad_logits.narrow(0, r0, n).copy_(glf.narrow(0, 0, n));
      if (gy) b.grad_y.narrow(0, r0, n).copy_(gyf.narrow(0, 0, n));
    }
  });
}

template <Loss LOSS>
LossResult loss_cpu(const at::Tensor& logits_in, const at::Tensor& y_in, int64_t reduction,
                    bool grad_logits, bool grad_y, double sum_tol) {
  const char* name = LOSS == Loss::kReverse ? "reverse_cross_entropy" : "collision_cross_entropy";
  check_loss_inputs(name, logits_in, y_in, reduction);
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor y = y_in.contiguous();
  LossBuffers b = allocate_loss_buffers(logits, y, reduction, grad_logits, grad_y);
  const int64_t N = logits.size(0), K = logits.size(1);
  const int64_t grain = std::max<int64_t>(1, 16384 / K);
  if (logits.scalar_type() == at::kFloat) {
    const LossRows task{logits.data_ptr<float>(),
                        y.data_ptr<float>(),
                        K,
                        static_cast<float>(b.scale),
                        grad_logits ? b.grad_logits.data_ptr<float>() : nullptr,
                        grad_y ? b.grad_y.data_ptr<float>() : nullptr,
                        b.rows.data_ptr<float>(),
                        b.stats.data_ptr<float>(),
                        b.stats.data_ptr<float>() + N,
                        b.stats.data_ptr<float>() + 2 * N,
                        sum_tol};
    const KernelTable& table = kernels();
    const LossRowsFn rows = LOSS == Loss::kReverse ? table.rce_f32 : table.cce_f32;
    at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(grad_logits || grad_y ? 2 * K : 0);
      rows(task, begin, end, scratch.data());
    });
    return finish(b, reduction, logits.scalar_type());
  }
  if (logits.scalar_type() == at::kHalf || logits.scalar_type() == at::kBFloat16) {
    half_via_f32(LOSS == Loss::kReverse ? kernels().rce_f32 : kernels().cce_f32, logits, y, b, sum_tol);
    return finish(b, reduction, logits.scalar_type());
  }
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "entclust_loss_cpu", [&] {
    using A = at::opmath_type<scalar_t>;
    if constexpr (!std::is_same_v<scalar_t, float>) {  // float32 returned above
      RowTask<scalar_t, A> task{logits.data_ptr<scalar_t>(),
                                y.data_ptr<scalar_t>(),
                                K,
                                static_cast<A>(b.scale),
                                grad_logits ? b.grad_logits.data_ptr<scalar_t>() : nullptr,
                                grad_y ? b.grad_y.data_ptr<scalar_t>() : nullptr,
                                b.rows.data_ptr<A>(),
                                b.stats.data_ptr<A>(),
                                b.stats.data_ptr<A>() + N,
                                b.stats.data_ptr<A>() + 2 * N,
                                sum_tol};
      at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
        std::vector<A> scratch(grad_logits || grad_y ? 2 * K : 0);
        if (LOSS == Loss::kReverse) rce_range(task, begin, end, scratch.data());
        else cce_range(task, begin, end, scratch.data());
      });
    }
  });
  return finish(b, reduction, logits.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(entclust, CPU, m) {
  m.impl("reverse_cross_entropy", &loss_cpu<Loss::kReverse>);
  m.impl("collision_cross_entropy", &loss_cpu<Loss::kCollision>);
}

}  // namespace cpu
}  // namespace entclust
