// CPU kernels of the pseudo-label solvers (MATH.md), c = lam N. Both EMs share the E-step
// through v_k = c u_k / sum_j y_jk, so that c u_k S_ik = y_ik v_k. Reverse CE (seed 004
// eqs. 45-46) fuses E- and M-step into
//   y_ik <- (sigma_ik + y_ik v_k) / sum_m (sigma_im + y_im v_m),
// collision CE (seed 003) solves a per-row Newton M-step; each iteration is one pass over
// the rows that also accumulates the next column sums and max |dy|.
// Problems of a batch run in parallel, each with all its iterations on one thread; a single
// large problem instead splits its rows across threads every iteration. The row passes are
// per-ISA kernels (isa/row_kernels.h); this file holds the ISA-independent driver.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "chunks.h"
#include "isa/kernel_table.h"

namespace entclust {
namespace cpu {
namespace {

// One EM iteration on a range of rows (em_rce_rows, em_cce_rows of isa/row_kernels.h) runs
// the per-ISA kernel of the CPU capability in use (isa/capability.cpp).
float em_rce_rows(const float* s, float* y, int64_t K, int64_t b, int64_t e, const float* v, double* c) {
  return kernels().em_rce_f32(s, y, K, b, e, v, c);
}
double em_rce_rows(const double* s, double* y, int64_t K, int64_t b, int64_t e, const double* v, double* c) {
  return kernels().em_rce_f64(s, y, K, b, e, v, c);
}
template <typename T>
T em_cce_rows(const T* s, T* y, int64_t K, int64_t b, int64_t e, const T* v, double* c, double* x, double tol,
              int64_t iters) {
  std::vector<double> scratch(3 * K);
  if constexpr (std::is_same_v<T, float>) return kernels().em_cce_f32(s, y, K, b, e, v, c, x, tol, iters, scratch.data());
  else return kernels().em_cce_f64(s, y, K, b, e, v, c, x, tol, iters, scratch.data());
}

// The exact simplex projection of a row and one projected-gradient iteration on a range of rows
// (project_row, pgd_cce_rows of isa/row_kernels.h), on the CPU capability in use.
void project_row(const double* z, int64_t K, double* out) { kernels().project_row(z, K, out); }
template <typename T>
T pgd_cce_rows(const T* s, T* y, int64_t K, int64_t N, double step, int64_t b, int64_t e, const T* v, double* c) {
  std::vector<double> scratch(2 * K);
  if constexpr (std::is_same_v<T, float>) return kernels().pgd_cce_f32(s, y, K, N, step, b, e, v, c, scratch.data());
  else return kernels().pgd_cce_f64(s, y, K, N, step, b, e, v, c, scratch.data());
}

// v_k = c u_k / sum_j y_jk. A class no point uses gets `empty`: 0 for EM (its S_ik are 0),
// +inf for projected gradient (the fairness gradient -lam u_k / (N y_bar_k) is infinite there).
template <typename T>
void fairness_weights(const double* col, const double* cu, int64_t K, double empty, T* v) {
  for (int64_t k = 0; k < K; ++k) v[k] = static_cast<T>(col[k] > 0 ? cu[k] / col[k] : (cu[k] > 0 ? empty : 0.0));
}

template <typename T>
void column_sums(const T* y, int64_t N, int64_t K, double* col) {
  std::fill(col, col + K, 0.0);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t k = 0; k < K; ++k) col[k] += static_cast<double>(y[i * K + k]);
}

// The EM loop shared by both problems. `rows(begin, end, v, col_out, state) -> max |dy|`
// performs one iteration on a range of rows; `state` holds one float64 per row that persists
// across iterations (0 at the start; the collision-CE M-step keeps its Newton root there).
// One problem runs on the calling thread (`split` = false) or with its chunks of rows split
// across threads every iteration. The rows are cut into the same chunks either way
// (row_chunks, chunks.h), and the column sums are added chunk by chunk in order, so the result
// does not depend on the number of threads or on the plan: split, each chunk has its own K
// partial sums, added up after the pass; on one thread, one K-sized partial is reused chunk after
// chunk and added to col after each (the same sums in the same order, in cache).
template <typename T, typename Rows>
void em_loop(const T* y, int64_t N, int64_t K, const double* cu, double empty, double tol, int64_t max_iter,
             bool split, const Rows& rows, int64_t* iterations, bool* converged) {
  const int64_t chunks = row_chunks(N, K);
  const int64_t rows_per_chunk = (N + chunks - 1) / chunks;
  split = split && chunks > 1;
  std::vector<double> col(K), partial((split ? chunks : 1) * K), deltas(chunks), state(N, 0.0);
  std::vector<T> v(K);
  column_sums(y, N, K, col.data());
  *iterations = 0;
  *converged = false;
  for (int64_t it = 1; it <= max_iter; ++it) {
    fairness_weights(col.data(), cu, K, empty, v.data());
    auto run = [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t begin = c * rows_per_chunk, end = std::min(N, begin + rows_per_chunk);
        std::fill(partial.data() + c * K, partial.data() + (c + 1) * K, 0.0);
        deltas[c] = static_cast<double>(rows(begin, end, v.data(), partial.data() + c * K, state.data() + begin));
      }
    };
    if (split) {
      at::parallel_for(0, chunks, 1, run);
      add_partials(partial.data(), chunks, K, col.data());
    } else {
      std::fill(col.begin(), col.end(), 0.0);
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t begin = c * rows_per_chunk, end = std::min(N, begin + rows_per_chunk);
        std::fill(partial.begin(), partial.end(), 0.0);
        deltas[c] = static_cast<double>(rows(begin, end, v.data(), partial.data(), state.data() + begin));
        for (int64_t k = 0; k < K; ++k) col[k] += partial[k];
      }
    }
    *iterations = it;
    if (*std::max_element(deltas.begin(), deltas.end()) <= tol) {
      *converged = true;
      break;
    }
  }
}

using EmResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Checks, output allocation and the batch loop shared by em_rce and em_cce. `make_rows(s, y)`
// returns the per-iteration row function of one problem.
template <typename MakeRows>
EmResult em_driver(const char* name, const at::Tensor& sigma_in, const at::Tensor& prior, double lam, double tol,
                   int64_t max_iter, const std::optional<at::Tensor>& y0, double empty, const MakeRows& make_rows) {
  TORCH_CHECK(sigma_in.dim() == 3, name, ": sigma must have shape (B, N, K), got ", sigma_in.sizes());
  TORCH_CHECK(sigma_in.scalar_type() == at::kFloat || sigma_in.scalar_type() == at::kDouble, name,
              ": sigma must be float32 or float64, got ", sigma_in.scalar_type());
  const int64_t B = sigma_in.size(0), N = sigma_in.size(1), K = sigma_in.size(2);
  TORCH_CHECK(prior.dim() == 1 && prior.size(0) == K, name, ": prior must have shape (", K, "), got ", prior.sizes());
  TORCH_CHECK(lam >= 0 && tol >= 0 && max_iter >= 0, name, ": need lam >= 0, tol >= 0, max_iter >= 0");
  const at::Tensor sigma = sigma_in.contiguous();
  at::Tensor y;
  if (y0.has_value()) {
    TORCH_CHECK(y0->sizes() == sigma.sizes() && y0->scalar_type() == sigma.scalar_type(), name,
                ": y0 must match sigma in shape and dtype");
    y = y0->contiguous().clone();
  } else {
    y = sigma.clone();
  }
  at::Tensor iterations = at::zeros({B}, sigma.options().dtype(at::kLong));
  at::Tensor converged = at::zeros({B}, sigma.options().dtype(at::kBool));
  const at::Tensor cu = prior.to(at::kDouble).contiguous() * (lam * static_cast<double>(N));  // c u_k, c = lam N
  if (B == 0 || N == 0) return {y, iterations, converged};
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "entclust_em_cpu", [&] {
    const scalar_t* s = sigma.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    int64_t* its = iterations.data_ptr<int64_t>();
    bool* conv = converged.data_ptr<bool>();
    const double* cup = cu.data_ptr<double>();
    auto solve = [&](int64_t b, bool split) {
      const auto rows = make_rows(s + b * N * K, yp + b * N * K, K);
      em_loop(yp + b * N * K, N, K, cup, empty, tol, max_iter, split, rows, its + b, conv + b);
    };
    if (B < at::get_num_threads() && N * K >= (1 << 16)) {
      for (int64_t b = 0; b < B; ++b) solve(b, true);  // few large problems: rows in parallel
    } else {
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) solve(b, false);
      });
    }
  });
  return {y, iterations, converged};
}

EmResult em_rce_cpu(const at::Tensor& sigma, const at::Tensor& prior, double lam, double tol, int64_t max_iter,
                    const std::optional<at::Tensor>& y0) {
  return em_driver("em_rce", sigma, prior, lam, tol, max_iter, y0, 0.0, [](const auto* s, auto* y, int64_t K) {
    return [=](int64_t begin, int64_t end, const auto* v, double* col, double*) {
      return em_rce_rows(s, y, K, begin, end, v, col);
    };
  });
}

EmResult em_cce_cpu(const at::Tensor& sigma, const at::Tensor& prior, double lam, double tol, int64_t max_iter,
                    double newton_tol, int64_t newton_max_iter, const std::optional<at::Tensor>& y0) {
  TORCH_CHECK(newton_tol >= 0 && newton_max_iter >= 1, "em_cce: need newton_tol >= 0 and newton_max_iter >= 1");
  return em_driver("em_cce", sigma, prior, lam, tol, max_iter, y0, 0.0, [=](const auto* s, auto* y, int64_t K) {
    return [=](int64_t begin, int64_t end, const auto* v, double* col, double* x) {
      return em_cce_rows(s, y, K, begin, end, v, col, x, newton_tol, newton_max_iter);
    };
  });
}

EmResult pgd_cce_cpu(const at::Tensor& sigma, const at::Tensor& prior, double lam, double step, double tol,
                     int64_t max_iter, const std::optional<at::Tensor>& y0) {
  TORCH_CHECK(step > 0, "pgd_cce: step must be > 0, got ", step);
  const int64_t N = sigma.dim() == 3 ? sigma.size(1) : 0;
  return em_driver("pgd_cce", sigma, prior, lam, tol, max_iter, y0, std::numeric_limits<double>::infinity(),
                   [=](const auto* s, auto* y, int64_t K) {
                     return [=](int64_t begin, int64_t end, const auto* v, double* col, double*) {
                       return pgd_cce_rows(s, y, K, N, step, begin, end, v, col);
                     };
                   });
}

at::Tensor project_simplex_cpu(const at::Tensor& v_in) {
  TORCH_CHECK(v_in.dim() == 2, "project_simplex: v must have shape (M, K), got ", v_in.sizes());
  TORCH_CHECK(v_in.scalar_type() == at::kFloat || v_in.scalar_type() == at::kDouble,
              "project_simplex: v must be float32 or float64, got ", v_in.scalar_type());
  const at::Tensor v = v_in.contiguous();
  at::Tensor out = at::empty_like(v, at::MemoryFormat::Contiguous);
  const int64_t M = v.size(0), K = v.size(1);
  if (M == 0 || K == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "entclust_project_simplex_cpu", [&] {
    const scalar_t* src = v.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, M, std::max<int64_t>(1, 4096 / K), [&](int64_t r0, int64_t r1) {
      std::vector<double> z(K), projected(K);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t k = 0; k < K; ++k) z[k] = static_cast<double>(src[r * K + k]);
        project_row(z.data(), K, projected.data());
        for (int64_t k = 0; k < K; ++k) dst[r * K + k] = static_cast<scalar_t>(projected[k]);
      }
    });
  });
  return out;
}

// Sinkhorn-Knopp (entclust/solvers/sinkhorn.py, SeLa): for each problem, from its column shifts
// beta, sweeps of alpha_i = -ln N - lse_k(log_p_ik + beta_k), then beta_k = log_u_k -
// lse_i(log_p_ik + alpha_i), until the row sums' error max_i N |exp(alpha_i + lse_k(log_p_ik +
// beta_k)) - 1/N| <= tol (each problem on its own) or max_iter sweeps.
//
// The sweeps run on the scaled plan q_ik = exp(log_p_ik + b_k - m_i), m_i = max_k(log_p_ik + b_k)
// for column shifts b absorbed into it (Schmitzer 2019, "Stabilized sparse scaling algorithms for
// entropy regularized transport problems"): with beta = b + ln v, a row's log-sum-exp is m_i + ln s_i,
// s_i = sum_k q_ik v_k, so alpha_i = -m_i - ln(N s_i), and the column update is v_k = u_k / t_k,
// t_k = sum_i q_ik / (N s_i). A sweep is then one pass over q, a multiply-add an entry, where the
// log domain takes two exponentials and four reads of log_p. The shifts are absorbed afresh (one
// pass of exponentials) whenever a v_k leaves [1e-200, 1e50] or an s_i falls below 1e-50, so an
// entry of q lost to underflow weighs at most K 2.2e-308 1e50 against s_i >= 1e-50 (and at most
// 2.2e-308 1e50 in a column sum); a column sum t_k below 1e-200 (or not finite: NaN input) is taken
// in the log domain instead, then absorbed. The rows run in the fixed chunks of row_chunks
// (chunks.h), a column's sums added in chunk order, so the result does not depend on the threads.
// Problems side by side where there are enough of them, else one at a time over chunks.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sinkhorn_cpu(const at::Tensor& log_p_in,
                                                                        const at::Tensor& log_u_in,
                                                                        const at::Tensor& log_beta_in, double tol,
                                                                        int64_t max_iter) {
  TORCH_CHECK(log_p_in.dim() == 3 && log_p_in.scalar_type() == at::kDouble,
              "sinkhorn: log_p must be float64 (B, N, K), got ", log_p_in.scalar_type(), " ", log_p_in.sizes());
  const int64_t B = log_p_in.size(0), N = log_p_in.size(1), K = log_p_in.size(2);
  TORCH_CHECK(N >= 1 && K >= 1, "sinkhorn: need N >= 1 and K >= 1, got ", log_p_in.sizes());
  TORCH_CHECK(log_u_in.dim() == 1 && log_u_in.size(0) == K && log_u_in.scalar_type() == at::kDouble,
              "sinkhorn: log_u must be float64 (", K, "), got ", log_u_in.scalar_type(), " ", log_u_in.sizes());
  TORCH_CHECK(log_beta_in.dim() == 2 && log_beta_in.size(0) == B && log_beta_in.size(1) == K &&
                  log_beta_in.scalar_type() == at::kDouble,
              "sinkhorn: log_beta must be float64 (", B, ", ", K, "), got ", log_beta_in.scalar_type(), " ",
              log_beta_in.sizes());
  TORCH_CHECK(tol >= 0 && max_iter >= 1, "sinkhorn: need tol >= 0 and max_iter >= 1");
  const at::Tensor log_p = log_p_in.contiguous(), log_u = log_u_in.contiguous();
  at::Tensor beta = log_beta_in.contiguous().clone();
  at::Tensor alpha = at::empty({B, N}, log_p.options());
  at::Tensor sweeps = at::zeros({B}, log_p.options().dtype(at::kLong));
  at::Tensor error = at::empty({B}, log_p.options());
  const int64_t chunks = row_chunks(N, K), rows = (N + chunks - 1) / chunks;
  const double* lp_all = log_p.data_ptr<double>();
  const double* lu = log_u.data_ptr<double>();
  const SinkhornPassFn pass = kernels().sinkhorn_pass;
  const double log_n = std::log(static_cast<double>(N)), inv_n = 1.0 / static_cast<double>(N);
  const double inf = std::numeric_limits<double>::infinity(), big = std::numeric_limits<double>::max();
  constexpr double s_lo = 1e-50, v_lo = 1e-200, v_hi = 1e50, t_lo = 1e-200;
  std::vector<double> prior(K);
  for (int64_t k = 0; k < K; ++k) prior[k] = std::exp(lu[k]);
  auto one = [&](int64_t b) {
    const double* lp = lp_all + b * N * K;
    double* al = alpha.data_ptr<double>() + b * N;
    double* be = beta.data_ptr<double>() + b * K;
    // q: the scaled plan; m, s: its row maxima and sums, m_col, s_col: those the last column update
    // used; b_abs: the absorbed shifts, v the scalings on top (beta = b_abs + ln v)
    std::unique_ptr<double[]> q;  // (not zeroed: every entry is written first)
    try {
      q.reset(new double[N * K]);
    } catch (const std::bad_alloc&) {
      TORCH_CHECK(false, "sinkhorn: out of memory for the rescaled plan of a problem, ", N, " x ", K, " float64 (",
                  static_cast<double>(N * K) * 8e-9, " GB, one for each problem solved at once: at most one a thread)");
    }
    std::vector<double> m(N), s(N), m_col(N), s_col(N), b_abs(K), v(K), t(K), cmax(K), csum(K), partial(chunks * K);
    auto each_chunk = [&](auto&& fn) {  // inline where already inside a parallel region
      at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) fn(c * rows, std::min(N, (c + 1) * rows), partial.data() + c * K);
      });
    };
    auto absorb = [&](const double* shift) {  // q and m for the column shifts `shift`, v = 1
      std::copy(shift, shift + K, b_abs.begin());
      std::fill(v.begin(), v.end(), 1.0);
      each_chunk([&](int64_t r0, int64_t r1, double*) {
        pass({.mode = SinkhornPass::kAbsorb, .K = K, .log_p = lp, .q = q.get(), .column = b_abs.data(),
              .rows = m.data()},
             r0, r1);
      });
    };
    auto scaling_sweep = [&]() {  // s = q v, then t_k = sum_i q_ik / (N s_i)
      each_chunk([&](int64_t r0, int64_t r1, double* part) {
        std::fill(part, part + K, 0.0);
        pass({.mode = SinkhornPass::kScaling, .K = K, .q = q.get(), .column = v.data(), .rows = s.data(), .out = part,
              .scale = inv_n},
             r0, r1);
      });
      add_partials(partial.data(), chunks, K, t.data());
    };
    auto log_domain_columns = [&]() {  // be from alpha = al, as the log-domain sweep does
      each_chunk([&](int64_t r0, int64_t r1, double* part) {
        std::fill(part, part + K, -inf);
        pass({.mode = SinkhornPass::kColumnMax, .K = K, .log_p = lp, .alpha = al, .out = part}, r0, r1);
      });
      for (int64_t k = 0; k < K; ++k) {
        double mk = partial[k];
        for (int64_t c = 1; c < chunks; ++c) mk = std::max(mk, partial[c * K + k]);
        cmax[k] = mk;
      }
      each_chunk([&](int64_t r0, int64_t r1, double* part) {
        std::fill(part, part + K, 0.0);
        pass({.mode = SinkhornPass::kColumnExpSum, .K = K, .log_p = lp, .alpha = al, .column = cmax.data(),
              .out = part},
             r0, r1);
      });
      add_partials(partial.data(), chunks, K, csum.data());
      // (a class of prior 0 keeps beta = -inf: it receives nothing)
      for (int64_t k = 0; k < K; ++k) be[k] = lu[k] - (cmax[k] + std::log(csum[k]));
    };
    absorb(be);
    scaling_sweep();
    double err = 0;
    int64_t sweep = 0;
    bool absorbed = false;
    while (sweep < max_iter) {
      ++sweep;
      std::copy(m.begin(), m.end(), m_col.begin());
      std::copy(s.begin(), s.end(), s_col.begin());
      bool exact = true, in_range = true;  // (a NaN fails both tests)
      for (int64_t k = 0; k < K; ++k) {
        if (lu[k] == -inf) {
          v[k] = 0.0;
          continue;
        }
        exact = exact && t[k] >= t_lo && t[k] <= big;
        v[k] = prior[k] / t[k];
        in_range = in_range && v[k] >= v_lo && v[k] <= v_hi;
      }
      absorbed = !exact || !in_range;
      if (!exact) {
        for (int64_t i = 0; i < N; ++i) al[i] = -m_col[i] - log_n - std::log(s_col[i]);
        log_domain_columns();
      } else if (!in_range) {
        for (int64_t k = 0; k < K; ++k) be[k] = b_abs[k] + std::log(v[k]);
      }
      if (absorbed) absorb(be);
      scaling_sweep();
      if (!absorbed && !std::all_of(s.begin(), s.end(), [&](double x) { return x >= s_lo && x <= big; })) {
        for (int64_t k = 0; k < K; ++k) be[k] = b_abs[k] + std::log(v[k]);
        absorb(be);
        scaling_sweep();
        absorbed = true;
      }
      // the rows' sums under the new columns, against 1/N: N exp(alpha_i + m_i + ln s_i) - 1
      err = 0;
      for (int64_t i = 0; i < N; ++i) {  // (a NaN stays: never within tol)
        const double ratio =
            absorbed ? std::exp(m[i] - m_col[i] + std::log(s[i]) - std::log(s_col[i])) : s[i] / s_col[i];
        const double e = std::abs(ratio - 1.0);
        err = e > err || e != e ? e : err;
      }
      if (err <= tol) break;
    }
    for (int64_t i = 0; i < N; ++i) al[i] = -m_col[i] - log_n - std::log(s_col[i]);
    if (!absorbed)
      for (int64_t k = 0; k < K; ++k) be[k] = b_abs[k] + std::log(v[k]);
    sweeps.data_ptr<int64_t>()[b] = sweep;
    error.data_ptr<double>()[b] = err;
  };
  each_problem(B, chunks, one);
  return {alpha, beta, sweeps, error};
}

}  // namespace

TORCH_LIBRARY_IMPL(entclust, CPU, m) {
  m.impl("em_rce", &em_rce_cpu);
  m.impl("em_cce", &em_cce_cpu);
  m.impl("pgd_cce", &pgd_cce_cpu);
  m.impl("project_simplex", &project_simplex_cpu);
  m.impl("sinkhorn", &sinkhorn_cpu);
}

}  // namespace cpu
}  // namespace entclust
