// The certificate of a pseudo-label solve (MATH.md, "Pseudo-label problems and solvers"), fused:
// pass 1 gathers the column sums of y in float64, pass 2 walks each row once for its
// cross-entropy term, its gradient g_ik = dCE/dy_ik / N + f_k (f_k = -lam u_k / (N y_bar_k)),
// sum_k y_ik g_ik and min_k g_ik. Gap = sum_i (y_i . g_i - min_k g_ik). All in float64; no
// N x K temporary (the Python version needed float64 blocks and ~12 passes over them). The rows
// run in the per-ISA kernels (cert_fw, cert_dual of isa/row_kernels.h: vectors of float64, a
// vectorised float64 logarithm), except the collision-CE duality gap's (cce_dual_row below: one
// logarithm a row, its passes vectorised by the compiler for the build's baseline ISA).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "chunks.h"
#include "isa/kernel_table.h"

namespace entclust {
namespace cpu {
namespace {

// Partial sums over the chunks of a fixed partition of the rows (row_chunks, chunks.h), so the
// result does not depend on how many threads ran.
struct Chunks {
  int64_t count, rows;
  Chunks(int64_t N, int64_t K) : count(row_chunks(N, K)), rows((N + count - 1) / count) {}
};

template <typename T>
void column_sums(const T* y, int64_t N, int64_t K, const Chunks& chunks, double* out) {
  std::vector<double> partial(chunks.count * K, 0.0);
  at::parallel_for(0, chunks.count, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double* acc = partial.data() + c * K;
      const int64_t end = std::min(N, (c + 1) * chunks.rows);
      for (int64_t i = c * chunks.rows; i < end; ++i) {
        const T* row = y + i * K;
        for (int64_t k = 0; k < K; ++k) acc[k] += static_cast<double>(row[k]);
      }
    }
  });
  add_partials(partial.data(), chunks.count, K, out);
}

// The certificates' rows on the CPU capability in use (cert_fw / cert_dual of isa/row_kernels.h)
// over the chunk [begin, end), with a scratch of its own.
template <typename T>
void cert_rows(bool dual, const T* s, const T* y, int64_t K, const double* w, double inv_n, bool reverse,
               int64_t begin, int64_t end, double* ce, double* gap) {
  std::vector<double> scratch(3 * (K + 8));
  const CertRows<T> rows{s, y, K, w, inv_n, reverse, scratch.data()};
  const KernelTable& isa = kernels();
  if constexpr (std::is_same_v<T, float>) (dual ? isa.cert_dual_f32 : isa.cert_fw_f32)(rows, begin, end, ce, gap);
  else (dual ? isa.cert_dual_f64 : isa.cert_fw_f64)(rows, begin, end, ce, gap);
}

// Most lines a collision-CE row's walk along its envelope passes (certificate.py's ENVELOPE_STEPS):
// any x gives a valid bound; near the optimum the walk ends after one or two.
constexpr int kEnvelopeSteps = 64;

// max_k (x s_k - d_k) over a row (vectorised: -fopenmp-simd).
inline double envelope_at(const double* sd, const double* d, int64_t K, double x) {
  double top = -std::numeric_limits<double>::infinity();
#pragma omp simd reduction(max : top)
  for (int64_t k = 0; k < K; ++k) {
    const double v = x * sd[k] - d[k];
    top = top > v ? top : v;
  }
  return top;
}

// One collision-CE row's duality gap (certificate.py, cce_dual_row_sums): with the distances d_k =
// w_max - w_k >= 0, the x > 0 minimising max_k (x s_k - d_k) - ln x is found by walking the upper
// envelope of those lines from x = 1 / p (p = s . y; there the gap is the row's Frank-Wolfe gap);
// the gap is sum_k y_k (M - v_k) + (x p - 1 - ln(x p)) + M (1 - sum_k y_k), v_k = x s_k - d_k,
// M = max_k v_k; infinite where p = 0. sd: K doubles of scratch (the row of s in float64).
// On the line a that is highest at x the minimum is at t = 1 / s_a unless another line overtakes a
// before t: one pass of the envelope at t says whether one does (near the optimum none does, and
// that pass gives M); only then a pass finds the nearest crossing, and the walk goes on from it.
template <typename T>
double cce_dual_row(const T* s, const T* y, int64_t K, const double* d, double* sd) {
  double p = 0, mass = 0;
#pragma omp simd reduction(+ : p, mass)
  for (int64_t k = 0; k < K; ++k) {
    sd[k] = static_cast<double>(s[k]);
    p += sd[k] * static_cast<double>(y[k]);
    mass += static_cast<double>(y[k]);
  }
  if (!(p > 0)) return std::numeric_limits<double>::infinity();
  double x = 1.0 / p;
  double top = envelope_at(sd, d, K, x);
  int64_t a = 0;  // the first line at the top
  while (a < K - 1 && !(x * sd[a] - d[a] >= top)) ++a;
  const int direction = sd[a] * x < 1 ? 1 : sd[a] * x > 1 ? -1 : 0;
  for (int step = 0; direction != 0 && step < kEnvelopeSteps; ++step) {
    const double slope = sd[a], dist = d[a];
    const double target = 1.0 / slope;  // inf for a line of slope 0: some steeper line overtakes
    if (std::isfinite(target)) {
      const double at_target = envelope_at(sd, d, K, target);
      if (at_target <= target * slope - dist) {  // no line overtakes a before its minimum
        x = target;
        top = at_target;
        break;
      }
    }
    // the nearest crossing ahead (a steeper line, to the right) or behind (a flatter one, to the left)
    int64_t next = -1;
    double at = direction > 0 ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < K; ++j) {
      const double rise = sd[j] - slope;
      if (direction > 0 ? !(rise > 0) : !(rise < 0)) continue;
      const double cross = direction > 0 ? std::max(x, (d[j] - dist) / rise) : std::min(x, (d[j] - dist) / rise);
      if (direction > 0 ? cross < at : cross > at) {
        at = cross;
        next = j;
      }
    }
    if (next < 0 || (direction > 0 ? target <= at : target >= at)) {  // rounding: the check above said otherwise
      x = target;
      top = envelope_at(sd, d, K, x);
      break;
    }
    x = at;
    a = next;
    top = envelope_at(sd, d, K, x);
    if (direction > 0 ? sd[a] * x >= 1 : sd[a] * x <= 1) break;
  }
  double spread = 0;
#pragma omp simd reduction(+ : spread)
  for (int64_t k = 0; k < K; ++k) spread += static_cast<double>(y[k]) * (top - (x * sd[k] - d[k]));
  const double q1 = x * p - 1;
  return spread + (q1 - std::log1p(q1)) + top * (1 - mass);
}

// The checks both certificate ops make of their inputs: sigma and y (B, N, K) of one float dtype,
// prior (K,).
void check_inputs(const char* op, const at::Tensor& sigma, const at::Tensor& y, const at::Tensor& prior) {
  TORCH_CHECK(sigma.dim() == 3 && y.sizes() == sigma.sizes(), op,
              ": sigma and y must have the same shape (B, N, K), got ", sigma.sizes(), " and ", y.sizes());
  TORCH_CHECK(sigma.scalar_type() == y.scalar_type() &&
                  (sigma.scalar_type() == at::kFloat || sigma.scalar_type() == at::kDouble),
              op, ": sigma and y must both be float32 or both float64");
  TORCH_CHECK(prior.dim() == 1 && prior.size(0) == sigma.size(2), op, ": prior must have shape (", sigma.size(2),
              ")");
}

std::tuple<at::Tensor, at::Tensor> certificate_cpu(const at::Tensor& sigma_in, const at::Tensor& y_in,
                                                   const at::Tensor& prior, double lam, int64_t problem) {
  check_inputs("certificate", sigma_in, y_in, prior);
  TORCH_CHECK(problem == 0 || problem == 1, "certificate: problem must be 0 (reverse CE) or 1 (collision CE)");
  const int64_t B = sigma_in.size(0), N = sigma_in.size(1), K = sigma_in.size(2);
  const at::Tensor sigma = sigma_in.contiguous(), y = y_in.contiguous();
  const at::Tensor u = prior.to(at::kDouble).contiguous();
  at::Tensor objective = at::zeros({B}, sigma.options().dtype(at::kDouble));
  at::Tensor gap = at::zeros({B}, sigma.options().dtype(at::kDouble));
  if (N == 0) return {objective, gap};
  const double* up = u.data_ptr<double>();
  double* obj = objective.data_ptr<double>();
  double* gap_out = gap.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "entclust_certificate_cpu", [&] {
    const scalar_t* s = sigma.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    const Chunks chunks(N, K);
    const double inv_n = 1.0 / static_cast<double>(N);
    each_problem(B, chunks.count, [&](int64_t b) {
      std::vector<double> col(K), f(K), ce(chunks.count), gp(chunks.count);
      const scalar_t* sb = s + b * N * K;
      const scalar_t* yb = yp + b * N * K;
      column_sums(yb, N, K, chunks, col.data());
      double fairness = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double y_bar = col[k] * inv_n;
        const bool active = lam != 0 && up[k] > 0;
        // d/dy_ik of lam KL(u || y_bar) = -lam u_k / (N y_bar_k); 0 where u_k = 0
        f[k] = active ? -lam * up[k] * inv_n / y_bar : 0.0;
        if (active) fairness += up[k] * std::log(up[k] / y_bar);
      }
      std::fill(ce.begin(), ce.end(), 0.0);
      std::fill(gp.begin(), gp.end(), 0.0);
      at::parallel_for(0, chunks.count, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t begin = c * chunks.rows, end = std::min(N, begin + chunks.rows);
          cert_rows<scalar_t>(false, sb, yb, K, f.data(), inv_n, problem == 0, begin, end, &ce[c], &gp[c]);
        }
      });
      double ce_total = 0, gap_total = 0;
      for (int64_t c = 0; c < chunks.count; ++c) {
        ce_total += ce[c];
        gap_total += gp[c];
      }
      obj[b] = ce_total * inv_n + (lam != 0 ? lam * fairness : 0.0);
      gap_out[b] = gap_total;
    });
  });
  return {objective, gap};
}

at::Tensor duality_gap_cpu(const at::Tensor& sigma_in, const at::Tensor& y_in, const at::Tensor& prior, double lam,
                          int64_t problem) {
  check_inputs("duality_gap", sigma_in, y_in, prior);
  TORCH_CHECK(problem == 0 || problem == 1, "duality_gap: problem must be 0 (reverse CE) or 1 (collision CE)");
  const int64_t B = sigma_in.size(0), N = sigma_in.size(1), K = sigma_in.size(2);
  const at::Tensor sigma = sigma_in.contiguous(), y = y_in.contiguous();
  const at::Tensor u = prior.to(at::kDouble).contiguous();
  at::Tensor gap = at::zeros({B}, sigma.options().dtype(at::kDouble));
  if (N == 0) return gap;
  const double* up = u.data_ptr<double>();
  double* out = gap.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "entclust_duality_gap_cpu", [&] {
    const scalar_t* s = sigma.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    const Chunks chunks(N, K);
    const double inv_n = 1.0 / static_cast<double>(N);
    each_problem(B, chunks.count, [&](int64_t b) {
      std::vector<double> col(K), omega(K), d(K), gp(chunks.count);
      const scalar_t* sb = s + b * N * K;
      const scalar_t* yb = yp + b * N * K;
      column_sums(yb, N, K, chunks, col.data());
      // w = lam u / y_bar (0 where u = 0), kept as omega = w - lam: the rows see only the distances
      // d_k = max_m omega_m - omega_k, so no term of size lam cancels
      bool empty = false;
      double total = 0, omega_max = -std::numeric_limits<double>::infinity();
      for (int64_t k = 0; k < K; ++k) {
        const double y_bar = col[k] * inv_n;
        total += y_bar;
        const bool active = up[k] > 0;
        empty = empty || (active && lam != 0 && !(y_bar > 0));
        // lam = 0: w = 0 everywhere (0 * (u / 0) would be NaN for an empty class)
        omega[k] = lam == 0 ? 0.0 : active ? lam * (up[k] / y_bar - 1) : -lam;
        omega_max = std::max(omega_max, omega[k]);
      }
      if (empty) {  // a class with u_k > 0 and no mass: the objective is infinite
        out[b] = std::numeric_limits<double>::infinity();
        return;
      }
      for (int64_t k = 0; k < K; ++k) d[k] = omega_max - omega[k];
      std::fill(gp.begin(), gp.end(), 0.0);
      at::parallel_for(0, chunks.count, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t begin = c * chunks.rows, end = std::min(N, begin + chunks.rows);
          if (problem == 0) {
            cert_rows<scalar_t>(true, sb, yb, K, d.data(), inv_n, true, begin, end, nullptr, &gp[c]);
            continue;
          }
          std::vector<double> scratch(K);
          for (int64_t i = begin; i < end; ++i)
            gp[c] += cce_dual_row(sb + i * K, yb + i * K, K, d.data(), scratch.data());
        }
      });
      double sum = 0;
      for (int64_t c = 0; c < chunks.count; ++c) sum += gp[c];
      // the identity behind the row form assumed sum_k y_bar_k = 1; what rounding leaves of it
      const double value = sum * inv_n + (omega_max + lam) * (1 - total);
      out[b] = value != value ? value : std::max(0.0, value);
    });
  });
  return gap;
}

}  // namespace

TORCH_LIBRARY_IMPL(entclust, CPU, m) {
  m.impl("certificate", &certificate_cpu);
  m.impl("duality_gap", &duality_gap_cpu);
}

}  // namespace cpu
}  // namespace entclust
