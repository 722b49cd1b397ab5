// CPU kernels of the pseudo-label solvers. EM for the reverse-CE problem (seed 004 eqs. 45-46,
// c = lam N): with v_k = c u_k / sum_j y_jk, the E- and M-steps fuse into
//   y_ik <- (sigma_ik + y_ik v_k) / sum_m (sigma_im + y_im v_m),
// one pass per iteration that also accumulates the next column sums and max |dy|.
// Problems of a batch run in parallel, each with all its iterations on one thread; a single
// large problem instead splits its rows across threads every iteration.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "fastmath.h"

namespace entclust {
namespace cpu {
namespace {

// Rows [begin, end) of one EM iteration: updates y in place, adds the new column sums to
// `col_out` (float64), returns max |dy|. Row arithmetic in the dtype of sigma.
template <typename T>
ENTCLUST_ALWAYS_INLINE T em_rce_rows_impl(const T* __restrict__ sigma, T* __restrict__ y, int64_t K, int64_t begin,
                                          int64_t end, const T* __restrict__ v, double* __restrict__ col_out) {
  T max_delta = 0;
  for (int64_t i = begin; i < end; ++i) {
    const T* __restrict__ s = sigma + i * K;
    T* __restrict__ yi = y + i * K;
    T norm = 0;
#pragma omp simd reduction(+ : norm)
    for (int64_t k = 0; k < K; ++k) norm += s[k] + yi[k] * v[k];
    const T inv = T(1) / norm;
    T row_delta = 0;
#pragma omp simd reduction(max : row_delta)
    for (int64_t k = 0; k < K; ++k) {
      const T next = (s[k] + yi[k] * v[k]) * inv;
      const T d = std::fabs(next - yi[k]);
      row_delta = d > row_delta ? d : row_delta;
      yi[k] = next;
      col_out[k] += static_cast<double>(next);
    }
    max_delta = std::max(max_delta, row_delta);
  }
  return max_delta;
}

ENTCLUST_ISA_CLONES float em_rce_rows_f32(const float* sigma, float* y, int64_t K, int64_t begin, int64_t end,
                                          const float* v, double* col_out) {
  return em_rce_rows_impl(sigma, y, K, begin, end, v, col_out);
}
ENTCLUST_ISA_CLONES double em_rce_rows_f64(const double* sigma, double* y, int64_t K, int64_t begin, int64_t end,
                                           const double* v, double* col_out) {
  return em_rce_rows_impl(sigma, y, K, begin, end, v, col_out);
}
float em_rce_rows(const float* s, float* y, int64_t K, int64_t b, int64_t e, const float* v, double* c) {
  return em_rce_rows_f32(s, y, K, b, e, v, c);
}
double em_rce_rows(const double* s, double* y, int64_t K, int64_t b, int64_t e, const double* v, double* c) {
  return em_rce_rows_f64(s, y, K, b, e, v, c);
}

// c u_k / sum_j y_jk, 0 for a class no point uses (its S_ik are 0).
template <typename T>
void fairness_weights(const double* col, const double* cu, int64_t K, T* v) {
  for (int64_t k = 0; k < K; ++k) v[k] = static_cast<T>(col[k] > 0 ? cu[k] / col[k] : 0.0);
}

template <typename T>
void column_sums(const T* y, int64_t N, int64_t K, double* col) {
  std::fill(col, col + K, 0.0);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t k = 0; k < K; ++k) col[k] += static_cast<double>(y[i * K + k]);
}

// One problem, all iterations on the calling thread.
template <typename T>
void em_rce_serial(const T* sigma, T* y, int64_t N, int64_t K, const double* cu, double tol, int64_t max_iter,
                   int64_t* iterations, bool* converged) {
  std::vector<double> col(K);
  std::vector<T> v(K);
  column_sums(y, N, K, col.data());
  *iterations = 0;
  *converged = false;
  for (int64_t it = 1; it <= max_iter; ++it) {
    fairness_weights(col.data(), cu, K, v.data());
    std::fill(col.begin(), col.end(), 0.0);
    const double delta = em_rce_rows(sigma, y, K, 0, N, v.data(), col.data());
    *iterations = it;
    if (delta <= tol) {
      *converged = true;
      break;
    }
  }
}

// One large problem: rows split into chunks across threads every iteration.
template <typename T>
void em_rce_rows_parallel(const T* sigma, T* y, int64_t N, int64_t K, const double* cu, double tol,
                          int64_t max_iter, int64_t* iterations, bool* converged) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), N / 16));
  const int64_t rows_per_chunk = (N + chunks - 1) / chunks;
  std::vector<double> col(K), partial(chunks * K), deltas(chunks);
  std::vector<T> v(K);
  column_sums(y, N, K, col.data());
  *iterations = 0;
  *converged = false;
  for (int64_t it = 1; it <= max_iter; ++it) {
    fairness_weights(col.data(), cu, K, v.data());
    std::fill(partial.begin(), partial.end(), 0.0);
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t begin = c * rows_per_chunk, end = std::min(N, begin + rows_per_chunk);
        deltas[c] = em_rce_rows(sigma, y, K, begin, end, v.data(), partial.data() + c * K);
      }
    });
    std::fill(col.begin(), col.end(), 0.0);
    for (int64_t c = 0; c < chunks; ++c)
      for (int64_t k = 0; k < K; ++k) col[k] += partial[c * K + k];
    *iterations = it;
    if (*std::max_element(deltas.begin(), deltas.end()) <= tol) {
      *converged = true;
      break;
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> em_rce_cpu(const at::Tensor& sigma_in, const at::Tensor& prior,
                                                          double lam, double tol, int64_t max_iter,
                                                          const std::optional<at::Tensor>& y0) {
  TORCH_CHECK(sigma_in.dim() == 3, "em_rce: sigma must have shape (B, N, K), got ", sigma_in.sizes());
  TORCH_CHECK(at::isFloatingType(sigma_in.scalar_type()), "em_rce: sigma must be floating point");
  const int64_t B = sigma_in.size(0), N = sigma_in.size(1), K = sigma_in.size(2);
  TORCH_CHECK(prior.dim() == 1 && prior.size(0) == K, "em_rce: prior must have shape (", K, "), got ", prior.sizes());
  TORCH_CHECK(lam >= 0 && tol >= 0 && max_iter >= 0, "em_rce: need lam >= 0, tol >= 0, max_iter >= 0");
  const at::Tensor sigma = sigma_in.contiguous();
  at::Tensor y;
  if (y0.has_value()) {
    TORCH_CHECK(y0->sizes() == sigma.sizes() && y0->scalar_type() == sigma.scalar_type(),
                "em_rce: y0 must match sigma in shape and dtype");
    y = y0->contiguous().clone();
  } else {
    y = sigma.clone();
  }
  at::Tensor iterations = at::zeros({B}, sigma.options().dtype(at::kLong));
  at::Tensor converged = at::zeros({B}, sigma.options().dtype(at::kBool));
  // c u_k with c = lam N, in float64
  const at::Tensor cu = (prior.to(at::kDouble).contiguous() * (lam * static_cast<double>(N))).contiguous();
  if (B == 0 || N == 0) return {y, iterations, converged};
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "em_rce_cpu", [&] {
    const scalar_t* s = sigma.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    int64_t* its = iterations.data_ptr<int64_t>();
    bool* conv = converged.data_ptr<bool>();
    const double* cup = cu.data_ptr<double>();
    const bool one_large = B < at::get_num_threads() && N * K >= (1 << 16);
    if (one_large) {
      for (int64_t b = 0; b < B; ++b)
        em_rce_rows_parallel(s + b * N * K, yp + b * N * K, N, K, cup, tol, max_iter, its + b, conv + b);
    } else {
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b)
          em_rce_serial(s + b * N * K, yp + b * N * K, N, K, cup, tol, max_iter, its + b, conv + b);
      });
    }
  });
  return {y, iterations, converged};
}

}  // namespace

TORCH_LIBRARY_IMPL(entclust, CPU, m) { m.impl("em_rce", &em_rce_cpu); }

}  // namespace cpu
}  // namespace entclust
