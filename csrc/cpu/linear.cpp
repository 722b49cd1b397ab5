// CPU kernel of the fused linear self-labeling op `linear_rce` (schema in entclust.cpp; shapes
// and blocking in linear.h). The B x K logits exist one block of rows at a time: per block,
// one GEMM makes the logits, the row kernel (kernel_table.h, LinearRows; per ISA for float32)
// turns them into pseudo-labels, the loss and, in place, the logits' gradient, and two GEMMs
// take that gradient to the features and the head. The head's gradient is accumulated over
// the blocks (one read and write of K x D per block), the column sums of y in float64.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>
#include <limits>

#include "../linear.h"
#include "isa/kernel_table.h"

namespace entclust {
namespace cpu {
namespace {

// float64 rows (gradcheck and reference precision): the same passes in plain scalar code.
void linear_rce_rows_f64(const LinearRows<double>& t, int64_t begin, int64_t end) {
  const int64_t K = t.K;
  const double inf = std::numeric_limits<double>::infinity();
  for (int64_t i = begin; i < end; ++i) {
    double* l = t.l + i * K;
    double* y = t.y + i * K;
    double m = -inf;
    for (int64_t k = 0; k < K; ++k) m = l[k] > m ? l[k] : m;
    double z = 0;
    for (int64_t k = 0; k < K; ++k) z += std::exp(l[k] - m);
    const double lse = m + std::log(z);
    if (!std::isfinite(lse)) {  // a NaN or +inf logit: say so (the sigma > 0 guards below would drop it)
      t.loss[i] = std::numeric_limits<double>::quiet_NaN();
      t.labels[i] = 0;
      for (int64_t k = 0; k < K; ++k) y[k] = l[k] = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    double s = 1.0;
    for (int64_t k = 0; k < K; ++k) {
      y[k] = std::exp(l[k] - lse);
      s += t.a[k] * y[k];
    }
    for (int64_t it = 0; it < t.iterations; ++it) {
      const double inv_s = 1.0 / s;
      double next = 1.0;
      for (int64_t k = 0; k < K; ++k) {
        y[k] = (std::exp(l[k] - lse) + t.a[k] * y[k]) * inv_s;
        next += t.a[k] * y[k];
      }
      s = next;
    }
    double h = 0, top = -inf;
    int64_t label = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double sig = std::exp(l[k] - lse);
      if (sig > 0) h -= sig * std::log(y[k]);
      if (y[k] > top) {
        top = y[k];
        label = k;
      }
    }
    t.loss[i] = h;
    t.labels[i] = label;
    if (!t.grad) continue;
    for (int64_t k = 0; k < K; ++k) {
      const double sig = std::exp(l[k] - lse);
      l[k] = sig > 0 ? t.scale * sig * (-std::log(y[k]) - h) : 0.0;
    }
  }
}

// out[k] += sum over the n rows of v (n, K), in float64: threads split the columns (chunks of
// 512, summed row by row in a local float64 buffer), so the result does not depend on them.
template <typename T>
void add_column_sums(const T* v, int64_t n, int64_t K, double* out) {
  constexpr int64_t kChunk = 512;
  at::parallel_for(0, (K + kChunk - 1) / kChunk, 1, [&](int64_t c0, int64_t c1) {
    double acc[kChunk];
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t k0 = c * kChunk, m = std::min(kChunk, K - k0);
      for (int64_t k = 0; k < m; ++k) acc[k] = 0;
      for (int64_t r = 0; r < n; ++r) {
        const T* row = v + r * K + k0;
        for (int64_t k = 0; k < m; ++k) acc[k] += static_cast<double>(row[k]);
      }
      for (int64_t k = 0; k < m; ++k) out[k0 + k] += acc[k];
    }
  });
}

template <typename T>
void run_rows(const LinearRows<T>& rows, int64_t n) {
  at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    if constexpr (std::is_same_v<T, float>) kernels().linear_rce_f32(rows, b, e);
    else linear_rce_rows_f64(rows, b, e);
  });
}

LinearResult linear_rce_cpu(const at::Tensor& x_in, const at::Tensor& weight_in, const std::optional<at::Tensor>& bias_in,
                            const at::Tensor& fair_in, int64_t iterations, int64_t reduction, bool grad,
                            int64_t block_rows) {
  check_linear_inputs("linear_rce", x_in, weight_in, bias_in, fair_in, iterations, reduction, block_rows);
  const at::ScalarType dtype = x_in.scalar_type();
  const int64_t K = weight_in.size(0);
  const at::Tensor a = fair_in.to(dtype).contiguous();
  const double alpha = fair_in.max().item<double>();
  const at::Tensor a_unit = alpha > 0 ? (fair_in / alpha).to(dtype).contiguous() : at::zeros_like(a);
  LinearOutputs out = allocate_linear_outputs(x_in, weight_in, bias_in, reduction, grad);
  return linear_blocks(x_in, weight_in, bias_in, reduction, grad, block_rows, out,
                       [&](at::Tensor& l, at::Tensor& yb, int64_t i0, at::Tensor& loss_rows, at::Tensor& grad_bias64) {
    const int64_t n = l.size(0);
    AT_DISPATCH_FLOATING_TYPES(dtype, "entclust_linear_rce_cpu", [&] {
      LinearRows<scalar_t> rows{l.data_ptr<scalar_t>(),
                                yb.data_ptr<scalar_t>(),
                                a.data_ptr<scalar_t>(),
                                a_unit.data_ptr<scalar_t>(),
                                alpha,
                                K,
                                iterations,
                                static_cast<scalar_t>(out.scale),
                                out.grad,
                                loss_rows.data_ptr<double>() + i0,
                                out.labels.data_ptr<int64_t>() + i0};
      run_rows(rows, n);
      add_column_sums(yb.data_ptr<scalar_t>(), n, K, out.columns.data_ptr<double>());
      if (out.grad && out.has_bias) add_column_sums(l.data_ptr<scalar_t>(), n, K, grad_bias64.data_ptr<double>());
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(entclust, CPU, m) { m.impl("linear_rce", &linear_rce_cpu); }

}  // namespace cpu
}  // namespace entclust
