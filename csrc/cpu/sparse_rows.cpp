// The sparse rows of the large-K rounds (entclust/cluster/centroids.py, ColumnMemory.update_sparse):
// each point keeps its `top` largest logits only, and the pseudo-labels, the column sums and the
// centres' sums work on those b x top entries. Three CPU kernels, each one pass:
//   top_entries        the `top` largest entries of each row (unsorted), by a sampled threshold
//                      and one compare per entry, instead of torch.topk's per-row partial sort;
//   sparse_em_rows     softmax over a row's entries, then `iterations` reverse-CE M-steps with the
//                      fairness weights c u_k / col_k of the column sums (updated after each
//                      step, or held fixed at `rest`), all in float64 (MATH.md, "RCE problem");
//   sparse_centre_sums_ sums_k += alpha sum_i y_ik x_i and mass_k += alpha sum_i y_ik over the entries.
// PyTorch equivalents (the ground truth of the tests): entclust/testing/reference.py.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace entclust {
namespace cpu {
namespace {

// ---------------------------------------------------------------------------------------------
// top_entries
//
// Rows longer than SAMPLE_OVER x top: the threshold is an order statistic of a strided sample of
// 4 K / top entries, chosen so that about 3 top entries are expected to pass it; one pass (four
// SSE compares and a bit scan per 16 entries) keeps the indices at or above it, and a
// quickselect (kth_largest) picks the top among those. Where fewer than `top` pass (an unlucky
// sample, or a row whose order defeats the stride), the whole row is selected instead: the
// result is exact either way, only the time depends on the sample. A NaN anywhere is refused
// (it has no place in an order).
constexpr int64_t SAMPLE_OVER = 4, SAMPLE_RANK = 12;

// indices k of row[k] >= threshold into out; true where the row holds a NaN
template <typename T>
bool above(const T* __restrict row, int64_t K, T threshold, int32_t* __restrict out, int64_t& n) {
  int64_t k = 0;
  n = 0;
  bool nan = false;
#if defined(__SSE2__)
  if constexpr (std::is_same_v<T, float>) {
    const __m128 t = _mm_set1_ps(threshold);
    __m128 unordered = _mm_setzero_ps();
    for (; k + 16 <= K; k += 16) {
      const __m128 a = _mm_loadu_ps(row + k), b = _mm_loadu_ps(row + k + 4);
      const __m128 c = _mm_loadu_ps(row + k + 8), d = _mm_loadu_ps(row + k + 12);
      unordered = _mm_or_ps(unordered, _mm_or_ps(_mm_or_ps(_mm_cmpunord_ps(a, a), _mm_cmpunord_ps(b, b)),
                                                 _mm_or_ps(_mm_cmpunord_ps(c, c), _mm_cmpunord_ps(d, d))));
      unsigned m = static_cast<unsigned>(_mm_movemask_ps(_mm_cmpge_ps(a, t))) |
                   static_cast<unsigned>(_mm_movemask_ps(_mm_cmpge_ps(b, t))) << 4 |
                   static_cast<unsigned>(_mm_movemask_ps(_mm_cmpge_ps(c, t))) << 8 |
                   static_cast<unsigned>(_mm_movemask_ps(_mm_cmpge_ps(d, t))) << 12;
      while (m) {
        out[n++] = static_cast<int32_t>(k + __builtin_ctz(m));
        m &= m - 1;
      }
    }
    nan = _mm_movemask_ps(unordered) != 0;
  }
#endif
  for (; k < K; ++k) {
    nan |= std::isnan(row[k]);
    if (row[k] >= threshold) out[n++] = static_cast<int32_t>(k);
  }
  return nan;
}

// The r-th largest (1-based) of a[0..n) (a is overwritten; tmp has room for n): quickselect
// with a median-of-three pivot and a branch-free three-way partition (each value is written to
// both ends of tmp and one end advances), so random data costs no mispredicted branches, where
// std::nth_element pays one for about every other comparison. No NaN in a.
template <typename T>
T kth_largest(T* a, T* tmp, int64_t n, int64_t r) {
  for (int pass = 0; n > 16; ++pass) {
    if (pass > 64) {  // pivots that keep failing (adversarial order): the library's select
      std::nth_element(a, a + (r - 1), a + n, std::greater<T>());
      return a[r - 1];
    }
    const T x = a[0], y = a[n / 2], z = a[n - 1];
    const T pivot = std::max(std::min(x, y), std::min(std::max(x, y), z));
    int64_t lo = 0, hi = n;
    for (int64_t j = 0; j < n; ++j) {
      const T v = a[j];
      tmp[lo] = v;
      tmp[hi - 1] = v;
      lo += v > pivot;
      hi -= v < pivot;
    }
    if (r <= lo) {
      n = lo;
    } else if (r <= hi) {
      return pivot;  // ranks lo + 1 .. hi hold the pivot's value
    } else {
      r -= hi;
      tmp += hi;
      n -= hi;
    }
    std::swap(a, tmp);
  }
  std::sort(a, a + n, std::greater<T>());
  return a[r - 1];
}

template <typename T>
bool top_row(const T* __restrict row, int64_t K, int64_t top, T* __restrict values, int64_t* __restrict index,
             std::vector<int32_t>& keep, std::vector<T>& scratch) {
  int64_t n = 0;
  if (K > SAMPLE_OVER * top) {
    // the SAMPLE_RANK-th largest of s = SAMPLE_RANK K / (3 top) strided entries has expected rank
    // 3 top in the row; the number of sampled entries among the row's top is about Poisson with
    // mean SAMPLE_RANK / 3, so the threshold is above the top-th entry with probability ~1e-3
    const int64_t s = std::min<int64_t>(K, std::max<int64_t>(SAMPLE_RANK, (SAMPLE_RANK * K) / (3 * top)));
    const int64_t stride = K / s, r = SAMPLE_RANK;
    for (int64_t j = 0; j < s; ++j) {
      const T v = row[j * stride];
      scratch[j] = std::isnan(v) ? -std::numeric_limits<T>::infinity() : v;  // (the pass below reports it)
    }
    if (above(row, K, kth_largest(scratch.data(), scratch.data() + K, s, r), keep.data(), n)) return false;
  } else {
    for (int64_t k = 0; k < K; ++k)
      if (std::isnan(row[k])) return false;
  }
  if (n < top) {  // short rows, or the threshold was above the top-th entry
    for (int64_t k = 0; k < K; ++k) keep[k] = static_cast<int32_t>(k);
    n = K;
  }
  // the top-th largest value among the candidates (kth_largest of a copy of their values), then
  // every candidate above it and, in index order, as many equal to it as complete the top
  for (int64_t j = 0; j < n; ++j) scratch[j] = row[keep[j]];
  const T cut = kth_largest(scratch.data(), scratch.data() + K, n, top);
  int64_t above_cut = 0;
  for (int64_t j = 0; j < n; ++j) above_cut += row[keep[j]] > cut;
  int64_t m = 0, ties = top - above_cut;
  for (int64_t j = 0; j < n; ++j) {  // branch-free compaction in place (m <= j)
    const int32_t k = keep[j];
    const T v = row[k];
    const bool equal = v == cut, take = (v > cut) | (equal & (ties > 0));
    ties -= equal & take;
    keep[m] = k;
    m += take;
  }
  for (int64_t j = 0; j < top; ++j) {
    index[j] = keep[j];
    values[j] = row[keep[j]];
  }
  return true;
}

std::tuple<at::Tensor, at::Tensor> top_entries_cpu(const at::Tensor& logits_in, int64_t top) {
  TORCH_CHECK(logits_in.dim() == 2, "top_entries: logits must be 2-D (b, K), got ", logits_in.sizes());
  TORCH_CHECK(logits_in.scalar_type() == at::kFloat || logits_in.scalar_type() == at::kDouble,
              "top_entries: logits must be float32 or float64, got ", logits_in.scalar_type());
  const int64_t b = logits_in.size(0), K = logits_in.size(1);
  TORCH_CHECK(top >= 1 && top <= K, "top_entries: top must be in [1, K = ", K, "], got ", top);
  TORCH_CHECK(K <= std::numeric_limits<int32_t>::max(), "top_entries: K above 2^31 - 1");
  const at::Tensor logits = logits_in.contiguous();
  at::Tensor values = at::empty({b, top}, logits.options());
  at::Tensor index = at::empty({b, top}, logits.options().dtype(at::kLong));
  if (b == 0) return {values, index};
  std::atomic<bool> nan{false};
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "entclust_top_entries_cpu", [&] {
    const scalar_t* l = logits.data_ptr<scalar_t>();
    scalar_t* v = values.data_ptr<scalar_t>();
    int64_t* ix = index.data_ptr<int64_t>();
    at::parallel_for(0, b, std::max<int64_t>(1, 16384 / K), [&](int64_t r0, int64_t r1) {
      std::vector<int32_t> keep(K);
      std::vector<scalar_t> scratch(2 * K);
      for (int64_t i = r0; i < r1; ++i)
        if (!top_row(l + i * K, K, top, v + i * top, ix + i * top, keep, scratch)) nan = true;
    });
  });
  TORCH_CHECK(!nan, "top_entries: logits contain NaN");
  return {values, index};
}

// ---------------------------------------------------------------------------------------------
// sparse_em_rows

// col = rest + the column sums of y over the entries. Rows are split into a fixed number of
// chunks (from the sizes alone, never the thread count), each scattering into its own K partial
// sums, added up in chunk order: the result does not depend on how many threads ran.
class Columns {
 public:
  Columns(int64_t b, int64_t t, int64_t K)
      : b_(b), t_(t), K_(K),
        chunks_(std::max<int64_t>(1, std::min<int64_t>({8, b, (b * t) / std::max<int64_t>(K, 4096)}))),
        partial_(chunks_ > 1 ? chunks_ * K : 0) {}

  void operator()(const double* rest, const double* y, const int64_t* index, double* col) {
    if (chunks_ == 1) {
      std::copy(rest, rest + K_, col);
      for (int64_t e = 0; e < b_ * t_; ++e) col[index[e]] += y[e];
      return;
    }
    const int64_t rows = (b_ + chunks_ - 1) / chunks_;
    at::parallel_for(0, chunks_, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double* p = partial_.data() + c * K_;
        std::fill(p, p + K_, 0.0);
        const int64_t end = std::min(b_, (c + 1) * rows) * t_;
        for (int64_t e = c * rows * t_; e < end; ++e) p[index[e]] += y[e];
      }
    });
    at::parallel_for(0, K_, 2048, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        double sum = rest[k];
        for (int64_t c = 0; c < chunks_; ++c) sum += partial_[c * K_ + k];
        col[k] = sum;
      }
    });
  }

 private:
  int64_t b_, t_, K_, chunks_;
  std::vector<double> partial_;
};

template <typename T>
std::tuple<at::Tensor, at::Tensor> sparse_em_impl(const at::Tensor& values, const at::Tensor& index,
                                                  const at::Tensor& rest, const at::Tensor& cu, int64_t iterations,
                                                  bool update) {
  const int64_t b = values.size(0), t = values.size(1), K = rest.size(0), entries = b * t;
  at::Tensor y_out = at::empty({b, t}, values.options());
  at::Tensor col_out = at::empty({K}, rest.options());
  const T* v = values.data_ptr<T>();
  const int64_t* ix = index.data_ptr<int64_t>();
  const double* rp = rest.data_ptr<double>();
  const double* cp = cu.data_ptr<double>();
  double* col = col_out.data_ptr<double>();
  std::vector<double> sigma(entries), y(entries), w(entries);
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, t));
  std::atomic<bool> finite{true};
  at::parallel_for(0, b, grain, [&](int64_t r0, int64_t r1) {  // softmax of each row's entries
    for (int64_t i = r0; i < r1; ++i) {
      const T* vi = v + i * t;
      double m = -std::numeric_limits<double>::infinity();
      bool ok = true;
      for (int64_t j = 0; j < t; ++j) {
        ok &= std::isfinite(vi[j]);
        m = std::max(m, static_cast<double>(vi[j]));
      }
      if (!ok) {
        finite = false;
        continue;
      }
      double z = 0;
      for (int64_t j = 0; j < t; ++j) z += (sigma[i * t + j] = std::exp(static_cast<double>(vi[j]) - m));
      for (int64_t j = 0; j < t; ++j) y[i * t + j] = (sigma[i * t + j] /= z);
    }
  });
  TORCH_CHECK(finite, "sparse_em_rows: values contain NaN or Inf");
  Columns columns(b, t, K);
  // fairness weights w = c u_k / col_k (0 for a class with no mass), read at every entry: one
  // division per class where the classes are fewer than the entries, else one per entry
  std::vector<double> per_class(K <= entries ? K : 0);
  auto weights = [&](const double* c) {
    if (!per_class.empty()) {
      at::parallel_for(0, K, 4096, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) per_class[k] = c[k] > 0 ? cp[k] / c[k] : 0.0;
      });
      at::parallel_for(0, entries, 16384, [&](int64_t e0, int64_t e1) {
        for (int64_t e = e0; e < e1; ++e) w[e] = per_class[ix[e]];
      });
    } else {
      for (int64_t e = 0; e < entries; ++e) w[e] = c[ix[e]] > 0 ? cp[ix[e]] / c[ix[e]] : 0.0;
    }
  };
  if (update) {
    columns(rp, y.data(), ix, col);
  } else {
    weights(rp);  // held fixed: the column sums are `rest`
  }
  for (int64_t it = 0; it < iterations; ++it) {
    if (update) weights(col);
    at::parallel_for(0, b, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i) {
        double* yi = y.data() + i * t;
        const double* si = sigma.data() + i * t;
        const double* wi = w.data() + i * t;
        double a = 0;
        for (int64_t j = 0; j < t; ++j) a += wi[j] * yi[j];
        const double inv = 1.0 / (1.0 + a);
        for (int64_t j = 0; j < t; ++j) yi[j] = (si[j] + wi[j] * yi[j]) * inv;
      }
    });
    if (update) columns(rp, y.data(), ix, col);
  }
  if (!update) columns(rp, y.data(), ix, col);
  T* yo = y_out.data_ptr<T>();
  for (int64_t e = 0; e < entries; ++e) yo[e] = static_cast<T>(y[e]);
  return {y_out, col_out};
}

std::tuple<at::Tensor, at::Tensor> sparse_em_rows_cpu(const at::Tensor& values_in, const at::Tensor& index_in,
                                                      const at::Tensor& rest_in, const at::Tensor& cu_in,
                                                      int64_t iterations, bool update) {
  TORCH_CHECK(values_in.dim() == 2 && index_in.sizes() == values_in.sizes(),
              "sparse_em_rows: values and index must have one shape (b, top), got ", values_in.sizes(), " and ",
              index_in.sizes());
  TORCH_CHECK(values_in.scalar_type() == at::kFloat || values_in.scalar_type() == at::kDouble,
              "sparse_em_rows: values must be float32 or float64, got ", values_in.scalar_type());
  TORCH_CHECK(index_in.scalar_type() == at::kLong, "sparse_em_rows: index must be int64, got ", index_in.scalar_type());
  TORCH_CHECK(rest_in.dim() == 1 && rest_in.scalar_type() == at::kDouble && cu_in.sizes() == rest_in.sizes() &&
                  cu_in.scalar_type() == at::kDouble,
              "sparse_em_rows: rest and cu must be float64 of one shape (K,), got ", rest_in.sizes(), " ",
              rest_in.scalar_type(), " and ", cu_in.sizes(), " ", cu_in.scalar_type());
  TORCH_CHECK(iterations >= 0, "sparse_em_rows: iterations must be >= 0, got ", iterations);
  const at::Tensor index = index_in.contiguous();
  const int64_t K = rest_in.size(0);
  if (index.numel()) {
    const auto [lo, hi] = std::minmax_element(index.data_ptr<int64_t>(), index.data_ptr<int64_t>() + index.numel());
    TORCH_CHECK(*lo >= 0 && *hi < K, "sparse_em_rows: index entries must be in [0, K = ", K, "), got ", *lo, " .. ",
                *hi);
  }
  const at::Tensor values = values_in.contiguous(), rest = rest_in.contiguous(), cu = cu_in.contiguous();
  return AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "entclust_sparse_em_rows_cpu", [&] {
    return sparse_em_impl<scalar_t>(values, index, rest, cu, iterations, update);
  });
}

// ---------------------------------------------------------------------------------------------
// sparse_centre_sums_
//
// Parallel over ranges of classes: every thread reads all entries and adds those of its own
// classes, in entry order, so the sums do not depend on the number of threads.
template <typename T, typename X>
void centre_sums(double* sums, double* mass, const T* y, const int64_t* ix, const X* x, int64_t b, int64_t t,
                 int64_t D, int64_t K, double alpha) {
  const int64_t grain = std::max<int64_t>(1, K / std::max<int64_t>(1, at::get_num_threads()));
  at::parallel_for(0, K, grain, [&](int64_t k0, int64_t k1) {
    for (int64_t i = 0; i < b; ++i) {
      const X* xi = x + i * D;
      for (int64_t j = 0; j < t; ++j) {
        const int64_t k = ix[i * t + j];
        if (k < k0 || k >= k1) continue;
        const double a = alpha * static_cast<double>(y[i * t + j]);
        mass[k] += a;
        double* s = sums + k * D;
        for (int64_t d = 0; d < D; ++d) s[d] += a * static_cast<double>(xi[d]);
      }
    }
  });
}

void sparse_centre_sums_cpu(const at::Tensor& sums, const at::Tensor& mass, const at::Tensor& y_in,
                            const at::Tensor& index_in, const at::Tensor& x_in, double alpha) {
  TORCH_CHECK(sums.dim() == 2 && sums.scalar_type() == at::kDouble && sums.is_contiguous(),
              "sparse_centre_sums_: sums must be a contiguous float64 (K, D) tensor, got ", sums.sizes(), " ",
              sums.scalar_type());
  const int64_t K = sums.size(0), D = sums.size(1);
  TORCH_CHECK(mass.dim() == 1 && mass.size(0) == K && mass.scalar_type() == at::kDouble && mass.is_contiguous(),
              "sparse_centre_sums_: mass must be a contiguous float64 (", K, ",) tensor, got ", mass.sizes(), " ",
              mass.scalar_type());
  TORCH_CHECK(y_in.dim() == 2 && index_in.sizes() == y_in.sizes() && index_in.scalar_type() == at::kLong,
              "sparse_centre_sums_: y and index (int64) must have one shape (b, top), got ", y_in.sizes(), " and ",
              index_in.sizes(), " ", index_in.scalar_type());
  TORCH_CHECK(x_in.dim() == 2 && x_in.size(0) == y_in.size(0) && x_in.size(1) == D,
              "sparse_centre_sums_: x must have shape (", y_in.size(0), ", ", D, "), got ", x_in.sizes());
  TORCH_CHECK((y_in.scalar_type() == at::kFloat || y_in.scalar_type() == at::kDouble) &&
                  (x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble),
              "sparse_centre_sums_: y and x must be float32 or float64, got ", y_in.scalar_type(), " and ",
              x_in.scalar_type());
  const at::Tensor y = y_in.contiguous(), index = index_in.contiguous(), x = x_in.contiguous();
  if (index.numel()) {
    const auto [lo, hi] = std::minmax_element(index.data_ptr<int64_t>(), index.data_ptr<int64_t>() + index.numel());
    TORCH_CHECK(*lo >= 0 && *hi < K, "sparse_centre_sums_: index entries must be in [0, K = ", K, "), got ", *lo,
                " .. ", *hi);
  }
  const int64_t b = y.size(0), t = y.size(1);
  if (b == 0 || t == 0) return;
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "entclust_sparse_centre_sums_y", [&] {
    using Y = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "entclust_sparse_centre_sums_x", [&] {
      centre_sums<Y, scalar_t>(sums.data_ptr<double>(), mass.data_ptr<double>(), y.data_ptr<Y>(),
                               index.data_ptr<int64_t>(), x.data_ptr<scalar_t>(), b, t, D, K, alpha);
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(entclust, CPU, m) {
  m.impl("top_entries", &top_entries_cpu);
  m.impl("sparse_em_rows", &sparse_em_rows_cpu);
  m.impl("sparse_centre_sums_", &sparse_centre_sums_cpu);
}

}  // namespace cpu
}  // namespace entclust
