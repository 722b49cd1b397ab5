// One reverse-CE M-step on a block of rows with given fairness weights (MATH.md, "RCE
// problem"; issue 11's global pseudo-labels): w_k = c u_k / col_k comes from the column sums of
// the whole problem (all rows, all ranks), so the rows of one block can be updated alone:
//   y_ik <- (sigma_ik + w_k y_ik) / (1 + sum_m w_m y_im)
// One pass over the block; the new column sums are accumulated in float64 per chunk of a fixed
// partition of the rows, so they do not depend on the number of threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace entclust {
namespace cpu {
namespace {

template <typename T>
void step_rows(const T* __restrict s, const T* __restrict y, T* __restrict out, const double* __restrict w, int64_t K,
               int64_t begin, int64_t end, double* __restrict col) {
  for (int64_t i = begin; i < end; ++i) {
    const T* __restrict si = s + i * K;
    const T* __restrict yi = y + i * K;
    T* __restrict oi = out + i * K;
    // sum_m w_m y_im with four partial sums (vectorisable without reassociating one sum)
    double t0 = 0, t1 = 0, t2 = 0, t3 = 0;
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
      t0 += w[k] * static_cast<double>(yi[k]);
      t1 += w[k + 1] * static_cast<double>(yi[k + 1]);
      t2 += w[k + 2] * static_cast<double>(yi[k + 2]);
      t3 += w[k + 3] * static_cast<double>(yi[k + 3]);
    }
    for (; k < K; ++k) t0 += w[k] * static_cast<double>(yi[k]);
    const double inv = 1.0 / (1.0 + ((t0 + t1) + (t2 + t3)));
    for (k = 0; k < K; ++k)
      oi[k] = static_cast<T>((static_cast<double>(si[k]) + w[k] * static_cast<double>(yi[k])) * inv);
    for (k = 0; k < K; ++k) col[k] += static_cast<double>(oi[k]);  // the sums of the values as stored
  }
}

std::tuple<at::Tensor, at::Tensor> em_rce_rows_cpu(const at::Tensor& sigma_in, const at::Tensor& y_in,
                                                   const at::Tensor& weights_in) {
  TORCH_CHECK(sigma_in.dim() == 2 && y_in.sizes() == sigma_in.sizes(),
              "em_rce_rows: sigma and y must have the same shape (M, K), got ", sigma_in.sizes(), " and ",
              y_in.sizes());
  TORCH_CHECK(sigma_in.scalar_type() == y_in.scalar_type() &&
                  (sigma_in.scalar_type() == at::kFloat || sigma_in.scalar_type() == at::kDouble),
              "em_rce_rows: sigma and y must both be float32 or both float64");
  const int64_t M = sigma_in.size(0), K = sigma_in.size(1);
  TORCH_CHECK(weights_in.dim() == 1 && weights_in.size(0) == K && weights_in.scalar_type() == at::kDouble,
              "em_rce_rows: weights must be float64 of shape (", K, "), got ", weights_in.sizes(), " ",
              weights_in.scalar_type());
  const at::Tensor sigma = sigma_in.contiguous(), y = y_in.contiguous(), weights = weights_in.contiguous();
  at::Tensor out = at::empty_like(y, at::MemoryFormat::Contiguous);
  at::Tensor col = at::zeros({K}, sigma.options().dtype(at::kDouble));
  if (M == 0 || K == 0) return {out, col};
  // a fixed partition into chunks of about 2^16 entries (at most 64): thread-count independent
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>({64, M, (M * K + 65535) / 65536}));
  const int64_t rows = (M + chunks - 1) / chunks;
  std::vector<double> partial(chunks * K, 0.0);
  const double* w = weights.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "entclust_em_rce_rows_cpu", [&] {
    const scalar_t* s = sigma.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c)
        step_rows(s, yp, op, w, K, c * rows, std::min(M, (c + 1) * rows), partial.data() + c * K);
    });
  });
  double* cp = col.data_ptr<double>();
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t k = 0; k < K; ++k) cp[k] += partial[c * K + k];
  return {out, col};
}

}  // namespace

TORCH_LIBRARY_IMPL(entclust, CPU, m) { m.impl("em_rce_rows", &em_rce_rows_cpu); }

}  // namespace cpu
}  // namespace entclust
