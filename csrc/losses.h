// Shapes, checks and output allocation shared by the CPU and CUDA loss kernels.
#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace entclust {

// Matches the Python `reduction` strings; passed as int through the op schema.
enum Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };

using LossResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Accumulation ("opmath") dtype: float32 for half/bfloat16/float32, float64 for float64.
inline at::ScalarType opmath_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_loss_inputs(const char* op, const at::Tensor& logits, const at::Tensor& y,
                              int64_t reduction) {
  TORCH_CHECK(logits.dim() == 2, op, ": logits must have shape (N, K), got ", logits.sizes());
  TORCH_CHECK(y.sizes() == logits.sizes(), op, ": y must have the shape of logits ",
              logits.sizes(), ", got ", y.sizes());
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()), op,
              ": logits must be a floating-point tensor, got ", logits.scalar_type());
  TORCH_CHECK(y.scalar_type() == logits.scalar_type(), op, ": y dtype ", y.scalar_type(),
              " differs from logits dtype ", logits.scalar_type());
  TORCH_CHECK(y.device() == logits.device(), op, ": y is on ", y.device(), ", logits on ",
              logits.device());
  TORCH_CHECK(logits.size(1) >= 1, op, ": need K >= 1 classes, got K = ", logits.size(1));
  TORCH_CHECK(reduction >= kNone && reduction <= kSum, op,
              ": reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
}

// Per-row outputs of a loss kernel, all in opmath precision:
//   rows  (N,)   loss of each row
//   stats (3, N) sum_k y_k, min_k y_k and a 0/1 flag per row (1: non-finite loss, y not
//                finite, negative, or its sum off by more than sum_tol), so that validating
//                the inputs costs no further pass over memory.
struct LossBuffers {
  at::Tensor rows, stats, grad_logits, grad_y;
  double scale;  // factor folded into the gradients: 1/N for mean, 1 otherwise
};

inline LossBuffers allocate_loss_buffers(const at::Tensor& logits, const at::Tensor& y,
                                         int64_t reduction, bool grad_logits, bool grad_y) {
  const int64_t n = logits.size(0);
  auto opts = logits.options().dtype(opmath_dtype(logits.scalar_type()));
  LossBuffers b;
  b.rows = at::empty({n}, opts);
  b.stats = at::empty({3, n}, opts);
  b.grad_logits = grad_logits ? at::empty_like(logits, at::MemoryFormat::Contiguous)
                              : at::empty({0}, logits.options());
  b.grad_y = grad_y ? at::empty_like(y, at::MemoryFormat::Contiguous) : at::empty({0}, y.options());
  b.scale = (reduction == kMean && n > 0) ? 1.0 / static_cast<double>(n) : 1.0;
  return b;
}

// Loss output: per-row losses (reduction none) or their float64-accumulated mean/sum, in the
// dtype of logits.
inline at::Tensor reduce_rows(const at::Tensor& rows, int64_t reduction, at::ScalarType dtype) {
  if (reduction == kNone) return rows.to(dtype);
  at::Tensor total = rows.sum(at::kDouble);
  if (reduction == kMean) total = total / static_cast<double>(rows.size(0));
  return total.to(dtype);
}

inline LossResult finish(LossBuffers& b, int64_t reduction, at::ScalarType dtype) {
  return {reduce_rows(b.rows, reduction, dtype), b.stats, b.grad_logits, b.grad_y};
}

}  // namespace entclust
