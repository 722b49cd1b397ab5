// Prediction fairness KL(u || sigma_bar) of B problems straight from their logits (B, N, K), with its
// gradient in the same call (entclust.prediction_fairness; docs/maths.md, "Losses"):
//   ln sigma_ik    = z_ik - lse_i,                      lse_i = ln sum_k exp(z_ik)
//   ln sigma_bar_k = ln sum_i exp(ln sigma_ik) - ln N   (a column log-sum-exp: no underflow of a
//                                                       class nobody predicts)
//   value          = sum_{k: u_k > 0} u_k (ln u_k - ln sigma_bar_k)
//   d value / d z_ik = -(1/N) (r_ik - sigma_ik sum_j r_ij),  r_ik = u_k sigma_ik / sigma_bar_k <= N u_k.
// PyTorch computes it as log_softmax, logsumexp and their backward, five passes over (B, N, K);
// at B = 10, N = 250, K = 10 (a linear head's SGD step with ten restarts side by side) its
// reductions along a last dim of 10 classes took about 0.7 ms of a 4.5 ms step. Here the rows are
// split into chunks of a size set by K alone (so the result does not depend on the number of
// threads), and the row kernels of the capability in use (isa/row_kernels.h) make three passes
// over each chunk: the row log-sum-exps and column maxima of ln sigma (fairness_rows);
// e_ik = exp(ln sigma_ik - M_k) against the problem's column maxima and their column sums
// (fairness_exps), which are added per problem in chunk order (float64); and, without exp, the
// gradient from e (fairness_grad). The exps of each of the first two passes are one run of vectors
// over the chunk, so that rows of 10 classes fill them. The plain formula (the tests' ground truth)
// is entclust/testing/reference.py; CUDA tensors take the PyTorch formula in entclust/losses.py.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "isa/kernel_table.h"

namespace entclust {
namespace cpu {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Rows per chunk: about 32 768 entries (a chunk's rows stay in L2), at least 8 and at most 256 rows.
int64_t chunk_rows(int64_t K) { return std::clamp<int64_t>(32768 / std::max<int64_t>(K, 1), 8, 256); }

template <typename T>
struct Kernels {
  FairnessRowsFn<T> rows;
  FairnessExpsFn<T> exps;
  FairnessGradFn<T> grad;
};

template <typename T>
Kernels<T> fairness_kernels() {
  const KernelTable& table = kernels();
  if constexpr (std::is_same_v<T, float>) {
    return {table.fairness_rows_f32, table.fairness_exps_f32, table.fairness_grad_f32};
  } else {
    return {table.fairness_rows_f64, table.fairness_exps_f64, table.fairness_grad_f64};
  }
}

std::tuple<at::Tensor, at::Tensor> prediction_fairness_cpu(const at::Tensor& logits_in, const at::Tensor& prior_in,
                                                           bool grad) {
  TORCH_CHECK(logits_in.dim() == 3, "prediction_fairness: logits must have shape (B, N, K), got ", logits_in.sizes());
  TORCH_CHECK(logits_in.scalar_type() == at::kFloat || logits_in.scalar_type() == at::kDouble,
              "prediction_fairness: logits must be float32 or float64, got ", logits_in.scalar_type());
  const int64_t B = logits_in.size(0), N = logits_in.size(1), K = logits_in.size(2);
  TORCH_CHECK(N >= 1 && K >= 1, "prediction_fairness: logits need N >= 1 rows and K >= 1 classes, got ",
              logits_in.sizes());
  TORCH_CHECK(prior_in.dim() == 1 && prior_in.size(0) == K && prior_in.scalar_type() == at::kDouble &&
                  prior_in.device() == logits_in.device(),
              "prediction_fairness: prior must be float64 of shape (", K, ") on the logits' device, got ",
              prior_in.scalar_type(), " ", prior_in.sizes(), " on ", prior_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor prior = prior_in.contiguous();
  const int64_t rows = chunk_rows(K), chunks = (N + rows - 1) / rows, tasks = B * chunks;
  const auto f64 = logits.options().dtype(at::kDouble);
  at::Tensor value = at::empty({B}, f64);
  at::Tensor g = grad ? at::empty_like(logits) : at::empty({0}, logits.options());
  at::Tensor lse = at::empty({B, N}, f64);
  at::Tensor col = at::empty({tasks, K}, logits.options()), shift = at::empty({B, K}, logits.options());
  at::Tensor sums = at::empty({tasks, K}, f64);
  at::Tensor bad = at::empty({tasks}, logits.options().dtype(at::kByte));
  at::Tensor factors = at::empty({B, 2, K}, logits.options());
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "entclust_prediction_fairness", [&] {
    using T = scalar_t;
    const Kernels<T> kern = fairness_kernels<T>();
    const T* z = logits.data_ptr<T>();
    T* gp = grad ? g.data_ptr<T>() : nullptr;
    T* cp = col.data_ptr<T>();
    T* sp = shift.data_ptr<T>();
    double* S = sums.data_ptr<double>();
    uint8_t* flags = bad.data_ptr<uint8_t>();
    const auto each_chunk = [&](auto&& body) {
      at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
        std::vector<T> scratch(grad ? 0 : rows * K);  // e, where it is not the gradient's buffer
        for (int64_t t = begin; t < end; ++t) {
          const int64_t b = t / chunks, r0 = (t % chunks) * rows;
          body(t, b, FairnessChunk<T>{z + (b * N + r0) * K, grad ? gp + (b * N + r0) * K : scratch.data(),
                                      lse.data_ptr<double>() + b * N + r0, cp + t * K, S + t * K,
                                      std::min(rows, N - r0), K});
        }
      });
    };
    // pass 1: row log-sum-exps and the chunks' column maxima of ln sigma
    each_chunk([&](int64_t t, int64_t, const FairnessChunk<T>& c) { flags[t] = kern.rows(c); });
    // each problem's shifts: its column maxima (+inf for a column of -inf logits: e = exp(-inf) = 0)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t k = 0; k < K; ++k) {
        T m = -std::numeric_limits<T>::infinity();
        for (int64_t c = 0; c < chunks; ++c) m = std::max(m, cp[(b * chunks + c) * K + k]);
        sp[b * K + k] = m == -std::numeric_limits<T>::infinity() ? std::numeric_limits<T>::infinity() : m;
      }
    }
    // pass 2: e against the problem's shifts, and the chunks' column sums
    each_chunk([&](int64_t, int64_t b, const FairnessChunk<T>& c) {
      FairnessChunk<T> shifted = c;
      shifted.col = sp + b * K;
      kern.exps(shifted);
    });
    // per problem: ln sigma_bar_k = shift_k + ln sum_c S_ck - ln N, the value, and the gradient's
    // factors f_k = u_k N / S_k (r = f e; 0 where u_k = 0 or sigma_bar_k = 0) and g_k = exp(shift_k)
    // (sigma = g e)
    const double* u = prior.data_ptr<double>();
    double* out = value.data_ptr<double>();
    T* fp = factors.data_ptr<T>();
    const double log_n = std::log(static_cast<double>(N));
    for (int64_t b = 0; b < B; ++b) {
      bool any_bad = false;
      for (int64_t c = 0; c < chunks; ++c) any_bad |= flags[b * chunks + c] != 0;
      double total = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        double s = 0.0;
        for (int64_t c = 0; c < chunks; ++c) s += S[(b * chunks + c) * K + k];
        const double m = static_cast<double>(sp[b * K + k]);
        const bool dead = m == -kNegInf || !(s > 0);  // sigma_bar_k = 0: KL is +inf, r is set to 0
        const double log_bar = dead ? kNegInf : m + std::log(s) - log_n;
        if (u[k] > 0) total += u[k] * (std::log(u[k]) - log_bar);
        fp[b * 2 * K + k] = static_cast<T>(dead || !(u[k] > 0) ? 0.0 : u[k] * static_cast<double>(N) / s);
        fp[b * 2 * K + K + k] = static_cast<T>(dead ? 0.0 : std::exp(m));
      }
      out[b] = any_bad ? std::numeric_limits<double>::quiet_NaN() : total;
    }
    if (grad) {  // pass 3: the gradient from e, no exp
      const T scale = static_cast<T>(-1.0 / static_cast<double>(N));
      each_chunk([&](int64_t, int64_t b, const FairnessChunk<T>& c) {
        kern.grad(c.e, c.rows, K, fp + b * 2 * K, fp + b * 2 * K + K, scale);
      });
    }
  });
  return {value.to(logits.scalar_type()), g};
}

// softmax along the last dim in float64, from float32 or float64 logits: torch.softmax(z.double(), -1)
// without the float64 copy of z, in chunks of rows (the exps of a chunk one run of vectors); for the
// pseudo-label solves, which take sigma in float64 (SelfLabeling, SeLa).
at::Tensor softmax_double_cpu(const at::Tensor& logits_in) {
  TORCH_CHECK(logits_in.dim() >= 1, "softmax_double: logits must have a class dim, got a scalar");
  TORCH_CHECK(logits_in.scalar_type() == at::kFloat || logits_in.scalar_type() == at::kDouble,
              "softmax_double: logits must be float32 or float64, got ", logits_in.scalar_type());
  const at::Tensor logits = logits_in.contiguous();
  at::Tensor out = at::empty(logits.sizes(), logits.options().dtype(at::kDouble));
  const int64_t K = logits.size(-1), M = K == 0 ? 0 : logits.numel() / K;
  if (M == 0 || K == 0) return out;
  const int64_t rows = chunk_rows(K);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "entclust_softmax_double", [&] {
    const scalar_t* z = logits.data_ptr<scalar_t>();
    double* o = out.data_ptr<double>();
    const SoftmaxRowsFn<scalar_t> kernel = [] {
      if constexpr (std::is_same_v<scalar_t, float>) {
        return kernels().softmax_rows_f32;
      } else {
        return kernels().softmax_rows_f64;
      }
    }();
    at::parallel_for(0, (M + rows - 1) / rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t r0 = c * rows;
        kernel(z + r0 * K, o + r0 * K, std::min(rows, M - r0), K);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(entclust, CPU, m) {
  m.impl("prediction_fairness", &prediction_fairness_cpu);
  m.impl("softmax_double", &softmax_double_cpu);
}

}  // namespace cpu
}  // namespace entclust
