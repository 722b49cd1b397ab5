// Shapes, checks, blocking and outputs shared by the CPU and CUDA kernels of `linear_rce`, the
// fused linear self-labeling op (schema in entclust.cpp).
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "losses.h"

namespace entclust {

// (loss, labels (B,) int64, columns (K,) float64, grad_x (B, D), grad_weight (K, D), grad_bias (K,))
using LinearResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Entries of one block of logits (and as many of labels): 2^25, 128 MiB per float32 buffer, 256
// MiB of scratch in all. At K = 10^5 that is 335 rows, where the GEMMs run near their full-size
// speed; at 83 rows (2^23) the step took 1.07x as long (B = 4096, D = 256, 2-core EPYC), as the
// head's gradient (K x D) is re-read and re-written once per block.
constexpr int64_t kLinearBlockEntries = int64_t(1) << 25;

inline int64_t linear_block_rows(int64_t B, int64_t K, int64_t requested) {
  if (B == 0) return 1;
  const int64_t rows = requested > 0 ? requested : std::max<int64_t>(8, kLinearBlockEntries / std::max<int64_t>(K, 1));
  return std::min(B, rows);
}

inline void check_linear_inputs(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, const at::Tensor& fair, int64_t iterations,
                                int64_t reduction, int64_t block_rows) {
  TORCH_CHECK(x.dim() == 2, op, ": x must have shape (B, D), got ", x.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == x.size(1), op, ": weight must have shape (K, ", x.size(1),
              "), got ", weight.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), op, ": weight dtype ", weight.scalar_type(),
              " differs from x dtype ", x.scalar_type());
  TORCH_CHECK(weight.device() == x.device(), op, ": weight is on ", weight.device(), ", x on ", x.device());
  const int64_t K = weight.size(0);
  TORCH_CHECK(K >= 1, op, ": need K >= 1 classes, got K = ", K);
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == K, op, ": bias must have shape (", K, "), got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == x.scalar_type(), op, ": bias dtype ", bias->scalar_type(),
                " differs from x dtype ", x.scalar_type());
    TORCH_CHECK(bias->device() == x.device(), op, ": bias is on ", bias->device(), ", x on ", x.device());
  }
  TORCH_CHECK(fair.dim() == 1 && fair.size(0) == K && fair.scalar_type() == at::kDouble, op,
              ": fair must be float64 of shape (", K, "), got ", fair.sizes(), " ", fair.scalar_type());
  TORCH_CHECK(fair.device() == x.device(), op, ": fair is on ", fair.device(), ", x on ", x.device());
  TORCH_CHECK(iterations >= 0, op, ": iterations must be >= 0, got ", iterations);
  TORCH_CHECK(reduction == kMean || reduction == kSum, op,
              ": reduction must be 1 (mean) or 2 (sum): the gradients are formed in the forward pass, got ",
              reduction);
  TORCH_CHECK(block_rows >= 0, op, ": block_rows must be >= 0 (0: automatic), got ", block_rows);
}

struct LinearOutputs {
  at::Tensor labels, columns, grad_x, grad_weight, grad_bias;
  double scale;  // 1/B for mean, 1 for sum
  bool grad, has_bias;
};

inline LinearOutputs allocate_linear_outputs(const at::Tensor& x, const at::Tensor& weight,
                                             const std::optional<at::Tensor>& bias, int64_t reduction, bool grad) {
  const int64_t B = x.size(0), K = weight.size(0);
  LinearOutputs o;
  o.grad = grad;
  o.has_bias = bias.has_value() && bias->defined();
  o.labels = at::empty({B}, x.options().dtype(at::kLong));
  o.columns = at::zeros({K}, x.options().dtype(at::kDouble));
  o.grad_x = grad ? at::empty_like(x, at::MemoryFormat::Contiguous) : at::empty({0}, x.options());
  o.grad_weight = grad ? at::zeros_like(weight, at::MemoryFormat::Contiguous) : at::empty({0}, x.options());
  o.grad_bias = grad && o.has_bias ? at::empty({K}, x.options()) : at::empty({0}, x.options());
  o.scale = (reduction == kMean && B > 0) ? 1.0 / static_cast<double>(B) : 1.0;
  return o;
}

// The block loop both devices run: per block of rows [i0, i0 + n), the logits by one GEMM into
// `l`, then `rows(l, y, i0, loss_rows, grad_bias64)` (the device's row kernel: y, the loss and
// labels of the rows, l turned into its gradient when grad; it also adds the column sums of y to
// out.columns and, with grad and a bias, those of l to grad_bias64), then the two gradient GEMMs.
template <typename Rows>
LinearResult linear_blocks(const at::Tensor& x_in, const at::Tensor& weight_in, const std::optional<at::Tensor>& bias,
                           int64_t reduction, bool grad, int64_t block_rows, LinearOutputs& out, Rows rows) {
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  const int64_t B = x.size(0), K = weight.size(0);
  const int64_t block = linear_block_rows(B, K, block_rows);
  at::Tensor logits = at::empty({block, K}, x.options());
  at::Tensor labels_y = at::empty({block, K}, x.options());
  at::Tensor loss_rows = at::empty({B}, x.options().dtype(at::kDouble));
  at::Tensor grad_bias64 = out.grad ? at::zeros({K}, x.options().dtype(at::kDouble)) : at::Tensor();
  const at::Tensor wt = weight.t();
  for (int64_t i0 = 0; i0 < B; i0 += block) {
    const int64_t n = std::min(block, B - i0);
    at::Tensor l = logits.narrow(0, 0, n), yb = labels_y.narrow(0, 0, n), xb = x.narrow(0, i0, n);
    if (out.has_bias) at::addmm_out(l, bias->expand({n, K}), xb, wt);
    else at::mm_out(l, xb, wt);
    rows(l, yb, i0, loss_rows, grad_bias64);
    if (!out.grad) continue;
    at::Tensor gx = out.grad_x.narrow(0, i0, n);
    at::mm_out(gx, l, weight);
    out.grad_weight.addmm_(l.t(), xb);
  }
  if (out.grad && out.has_bias) out.grad_bias.copy_(grad_bias64);
  return {reduce_rows(loss_rows, reduction, x.scalar_type()), out.labels, out.columns, out.grad_x, out.grad_weight,
          out.grad_bias};
}

}  // namespace entclust
