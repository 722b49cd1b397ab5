// The sparse rows of the large-K rounds (entclust/cluster/centroids.py, ColumnMemory.update_sparse):
// each point keeps its `top` largest logits only, and the pseudo-labels, the column sums and the
// centres' sums work on those b x top entries. Four CPU kernels, each one pass:
//   top_entries        the `top` largest entries of each row (unsorted), by a sampled threshold
//                      and one compare per entry, instead of torch.topk's per-row partial sort;
//   linear_top_entries the same of the logits x W^T + b, each compared as it is summed in
//                      registers (the per-ISA tiles of isa/row_kernels.h): no b x K logits;
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

#include "isa/kernel_table.h"

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

// The entries of a row's strided sample (0: rows of at most SAMPLE_OVER x top entries are not
// sampled). The SAMPLE_RANK-th largest of s = SAMPLE_RANK K / (3 top) strided entries has expected
// rank 3 top in the row; the number of sampled entries among the row's top is about Poisson with
// mean SAMPLE_RANK / 3, so the threshold is above the top-th entry with probability ~1e-3.
int64_t sample_size(int64_t K, int64_t top) {
  if (K <= SAMPLE_OVER * top) return 0;
  return std::min<int64_t>(K, std::max<int64_t>(SAMPLE_RANK, (SAMPLE_RANK * K) / (3 * top)));
}

// The SAMPLE_RANK-th largest of a sample a[0..s) (no NaN; min(SAMPLE_RANK, s)-th where s is
// smaller; a may be overwritten, tmp has room for 2 s). Each of 16 interleaved groups has its
// maximum, so at least 16 >= SAMPLE_RANK entries are >= the least of those maxima: the rank sought
// is among the few entries at or above it (about 45 of any s, where the sample's order is random),
// and the quickselect runs on those, not on the whole sample.
template <typename T>
T sample_threshold(T* a, int64_t s, T* tmp) {
  constexpr int64_t G = 16;
  static_assert(G >= SAMPLE_RANK, "the groups' maxima must leave SAMPLE_RANK entries at or above their least");
  const int64_t r = std::min(SAMPLE_RANK, s);
  if (s < 4 * G) return kth_largest(a, tmp, s, r);
  T group[G];
  std::copy(a, a + G, group);
  int64_t j = G;
  for (; j + G <= s; j += G)
    for (int64_t l = 0; l < G; ++l) group[l] = std::max(group[l], a[j + l]);
  for (; j < s; ++j) group[0] = std::max(group[0], a[j]);
  const T floor = *std::min_element(group, group + G);
  int64_t n = 0;
  for (j = 0; j < s; ++j) {  // branch-free: every entry written, the count advanced where it is kept
    tmp[n] = a[j];
    n += a[j] >= floor;
  }
  return kth_largest(tmp, tmp + s, n, r);
}

// The `top` largest of n candidates (values cv, classes ci in increasing order; n >= top) into
// values / index: the top-th largest value (kth_largest of a copy), then every candidate above it
// and, in class order, as many equal to it as complete the top. scratch: room for 2 n.
template <typename T>
void pick_top(const T* __restrict cv, const int32_t* __restrict ci, int64_t n, int64_t top, T* __restrict values,
              int64_t* __restrict index, T* __restrict scratch) {
  std::copy(cv, cv + n, scratch);
  const T cut = kth_largest(scratch, scratch + n, n, top);
  int64_t above_cut = 0;
  for (int64_t j = 0; j < n; ++j) above_cut += cv[j] > cut;
  int64_t m = 0, ties = top - above_cut;
  for (int64_t j = 0; j < n && m < top; ++j) {
    const bool equal = cv[j] == cut, take = (cv[j] > cut) | (equal & (ties > 0));
    ties -= equal & take;
    index[m] = ci[j];
    values[m] = cv[j];
    m += take;
  }
}

template <typename T>
bool top_row(const T* __restrict row, int64_t K, int64_t top, T* __restrict values, int64_t* __restrict index,
             std::vector<int32_t>& keep, std::vector<T>& scratch) {
  int64_t n = 0;
  if (const int64_t s = sample_size(K, top)) {
    const int64_t stride = K / s;
    for (int64_t j = 0; j < s; ++j) {
      const T v = row[j * stride];
      scratch[j] = std::isnan(v) ? -std::numeric_limits<T>::infinity() : v;  // (the pass below reports it)
    }
    if (above(row, K, sample_threshold(scratch.data(), s, scratch.data() + K), keep.data(), n)) return false;
  } else {
    for (int64_t k = 0; k < K; ++k)
      if (std::isnan(row[k])) return false;
  }
  if (n < top) {  // short rows, or the threshold was above the top-th entry
    for (int64_t k = 0; k < K; ++k) keep[k] = static_cast<int32_t>(k);
    n = K;
  }
  T* cv = scratch.data() + 2 * K;
  for (int64_t j = 0; j < n; ++j) cv[j] = row[keep[j]];
  pick_top(cv, keep.data(), n, top, values, index, scratch.data());
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
      std::vector<scalar_t> scratch(3 * K);
      for (int64_t i = r0; i < r1; ++i)
        if (!top_row(l + i * K, K, top, v + i * top, ix + i * top, keep, scratch)) nan = true;
    });
  });
  TORCH_CHECK(!nan, "top_entries: logits contain NaN");
  return {values, index};
}

// ---------------------------------------------------------------------------------------------
// linear_top_entries
//
// top_entries of the logits x W^T + b without writing them: a block of rows at a time, the logits
// of the strided sample first (their own packed panels) give each row its threshold, then every
// logit is computed in registers and compared at once (the ISA's linear_tile_f32), and only the
// candidates at or above it are kept; pick_top selects among those. A row whose candidates are
// fewer than `top` or more than the lists hold is computed whole and selected exactly. The
// logits are the same numbers whatever the blocks or threads (see LinearTile), so the result
// is too.
// Rows a thread takes at once (a multiple of every tile_rows): each block of rows reads the whole
// packed head once. A head of more than BIG_HEAD bytes is read from memory, not the L3, so a
// block takes four times the rows there (timed in docs/guides/large_k.md: faster from K = 10^5
// at D = 64, no change below; more rows a block cost time where the head is small).
constexpr int64_t LINEAR_BLOCK = 48, LINEAR_BLOCK_BIG_HEAD = 4 * LINEAR_BLOCK;
constexpr int64_t BIG_HEAD = int64_t{16} << 20;

// W (K, D) and b into panels of `cols` classes (see LinearTile); classes `pick` (n of them) or all.
void pack_panels(const float* w, const float* b, int64_t D, const int64_t* pick, int64_t n, int64_t cols,
                 float* panels, float* bias) {
  const int64_t P = (n + cols - 1) / cols;
  at::parallel_for(0, P, 16, [&](int64_t p0, int64_t p1) {
    std::vector<const float*> src(cols);
    const std::vector<float> zeros(D, 0.0f);  // a padding class's weights
    for (int64_t p = p0; p < p1; ++p) {
      float* out = panels + p * D * cols;
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t j = p * cols + c;
        const int64_t k = j < n ? (pick ? pick[j] : j) : -1;
        bias[p * cols + c] = k >= 0 ? b[k] : -std::numeric_limits<float>::infinity();
        src[c] = k >= 0 ? w + k * D : zeros.data();
      }
      // the panel in 8 x 8 blocks: its cols rows of W are read and written alongside
      for (int64_t d0 = 0; d0 < D; d0 += 8)
        for (int64_t c0 = 0; c0 < cols; c0 += 8)
          for (int64_t c = c0; c < std::min(c0 + 8, cols); ++c)
            for (int64_t d = d0; d < std::min(d0 + 8, D); ++d) out[d * cols + c] = src[c][d];
    }
  });
}

std::tuple<at::Tensor, at::Tensor> linear_top_entries_cpu(const at::Tensor& x_in, const at::Tensor& w_in,
                                                          const at::Tensor& b_in, int64_t top) {
  TORCH_CHECK(x_in.dim() == 2 && w_in.dim() == 2 && w_in.size(1) == x_in.size(1) && b_in.dim() == 1 &&
                  b_in.size(0) == w_in.size(0),
              "linear_top_entries: x (b, D), weight (K, D) and bias (K,) expected, got ", x_in.sizes(), ", ",
              w_in.sizes(), " and ", b_in.sizes());
  TORCH_CHECK(x_in.scalar_type() == at::kFloat && w_in.scalar_type() == at::kFloat && b_in.scalar_type() == at::kFloat,
              "linear_top_entries: x, weight and bias must be float32, got ", x_in.scalar_type(), ", ",
              w_in.scalar_type(), " and ", b_in.scalar_type());
  const int64_t b = x_in.size(0), D = x_in.size(1), K = w_in.size(0);
  TORCH_CHECK(top >= 1 && top <= K, "linear_top_entries: top must be in [1, K = ", K, "], got ", top);
  TORCH_CHECK(K <= std::numeric_limits<int32_t>::max(), "linear_top_entries: K above 2^31 - 1");
  at::Tensor values = at::empty({b, top}, x_in.options());
  at::Tensor index = at::empty({b, top}, x_in.options().dtype(at::kLong));
  if (b == 0) return {values, index};
  const at::Tensor x = x_in.contiguous(), w = w_in.contiguous(), bias_in = b_in.contiguous();
  {  // an infinite x would make a padding class's 0 x inf a NaN (a NaN or Inf in weight or bias
     // gives NaN or infinite logits, which the tiles report or order as top_entries does)
    const float* p = x.data_ptr<float>();
    float probe = 0.0f;  // 0 x v is NaN exactly where v is not finite
#pragma omp simd reduction(+ : probe)
    for (int64_t e = 0; e < x.numel(); ++e) probe += p[e] * 0.0f;
    TORCH_CHECK(probe == 0.0f, "linear_top_entries: x must be finite, got NaN or Inf");
  }
  const KernelTable& isa = kernels();
  const int64_t cols = isa.tile_columns, MR = isa.tile_rows;
  const int64_t row_block = K * D * int64_t{sizeof(float)} > BIG_HEAD ? LINEAR_BLOCK_BIG_HEAD : LINEAR_BLOCK;
  TORCH_CHECK(row_block % MR == 0, "linear_top_entries: block of ", row_block, " rows, tiles of ", MR);
  const int64_t P = (K + cols - 1) / cols;
  // (ATen's allocator aligns to 64 bytes: no weight load of the tiles straddles two cache lines)
  const at::Tensor panels = at::empty({P * D * cols}, x.options()), pbias = at::empty({P * cols}, x.options());
  pack_panels(w.data_ptr<float>(), bias_in.data_ptr<float>(), D, nullptr, K, cols, panels.data_ptr<float>(),
              pbias.data_ptr<float>());
  // the strided sample of top_row, as panels of its own
  const int64_t s = sample_size(K, top);
  const bool sampled = s > 0;
  const int64_t Ps = (s + cols - 1) / cols;
  const at::Tensor spanels = at::empty({Ps * D * cols}, x.options()), sbias = at::empty({Ps * cols}, x.options());
  if (sampled) {
    std::vector<int64_t> pick(s);
    for (int64_t j = 0; j < s; ++j) pick[j] = j * (K / s);
    pack_panels(w.data_ptr<float>(), bias_in.data_ptr<float>(), D, pick.data(), s, cols, spanels.data_ptr<float>(),
                sbias.data_ptr<float>());
  }
  // about 3 top candidates a row are expected; a list holds 16 top (all K without a sample)
  const int64_t cap = sampled ? std::min<int64_t>(K, 16 * top) : K;
  const float* xp = x.data_ptr<float>();
  float* vp = values.data_ptr<float>();
  int64_t* ip = index.data_ptr<int64_t>();
  std::atomic<bool> nan{false};
  // blocks of row_block rows, fewer where that leaves a thread fewer than eight blocks (the
  // threads take equal runs of blocks, and a call's rows are few at large K; the result does not
  // depend on the blocks)
  const int64_t spread = 8 * at::get_num_threads();
  const int64_t per = std::max<int64_t>(MR, std::min<int64_t>(row_block, (b + spread - 1) / spread));
  const int64_t block = (per + MR - 1) / MR * MR, blocks = (b + block - 1) / block;
  at::parallel_for(0, blocks, 1, [&](int64_t k0, int64_t k1) {
    std::vector<float> xb(row_block * D), sample(row_block * Ps * cols), thr(row_block);
    // (a list holds cap entries and `cols` of slack: the tiles may store whole vectors there)
    const int64_t ld = cap + cols;
    std::vector<float> cand_v(row_block * ld), scratch(3 * std::max(K, s) + 2 * cols);
    std::vector<int32_t> cand_i(row_block * ld), all;
    std::vector<int64_t> cand_n(row_block);
    std::vector<float> whole;  // a row computed whole: P cols logits (tile_rows rows, one used)
    LinearTile t{xb.data(), 0, D, nullptr, nullptr, 0, 0, nullptr, 0, thr.data(), K,
                 cand_v.data(), cand_i.data(), cand_n.data(), cap, ld};
    for (int64_t blk = k0; blk < k1; ++blk) {
      const int64_t r0 = blk * block, n = std::min(block, b - r0);
      const int64_t rows = (n + MR - 1) / MR * MR;
      std::copy(xp + r0 * D, xp + (r0 + n) * D, xb.data());
      std::fill(xb.data() + n * D, xb.data() + rows * D, 0.0f);
      t.rows = rows;
      if (sampled) {
        LinearTile u = t;
        u.panels = spanels.data_ptr<float>();
        u.bias = sbias.data_ptr<float>();
        u.first = 0;
        u.count = Ps;
        u.out = sample.data();
        u.ldo = Ps * cols;
        isa.linear_tile_f32(u);
        for (int64_t i = 0; i < n; ++i) {
          float* si = sample.data() + i * Ps * cols;
          for (int64_t j = 0; j < s; ++j) si[j] = std::isnan(si[j]) ? -std::numeric_limits<float>::infinity() : si[j];
          thr[i] = sample_threshold(si, s, scratch.data());
        }
      } else {
        std::fill(thr.begin(), thr.begin() + n, -std::numeric_limits<float>::infinity());
      }
      std::fill(thr.begin() + n, thr.begin() + rows, std::numeric_limits<float>::infinity());  // padding rows
      std::fill(cand_n.begin(), cand_n.end(), 0);
      t.panels = panels.data_ptr<float>();
      t.bias = pbias.data_ptr<float>();
      t.first = 0;
      t.count = P;
      t.out = nullptr;
      if (isa.linear_tile_f32(t)) {
        nan = true;
        return;
      }
      for (int64_t i = 0; i < n; ++i) {
        const float* cv = cand_v.data() + i * ld;
        const int32_t* ci = cand_i.data() + i * ld;
        int64_t m = cand_n[i];
        if (m < top || m > cap) {  // the whole row: its logits by the same tiles, every class a candidate
          whole.resize(MR * P * cols);
          all.resize(K);
          LinearTile u = t;
          std::vector<float> one(MR * D, 0.0f);
          std::copy(xb.data() + i * D, xb.data() + (i + 1) * D, one.data());
          u.x = one.data();
          u.rows = MR;
          u.out = whole.data();
          u.ldo = P * cols;
          isa.linear_tile_f32(u);
          for (int64_t k = 0; k < K; ++k) all[k] = static_cast<int32_t>(k);
          cv = whole.data();
          ci = all.data();
          m = K;
        }
        pick_top(cv, ci, m, top, vp + (r0 + i) * top, ip + (r0 + i) * top, scratch.data());
      }
    }
  });
  TORCH_CHECK(!nan, "linear_top_entries: the logits x weight^T + bias contain NaN");
  return {values, index};
}

// ---------------------------------------------------------------------------------------------
// sparse_em_rows

// col = rest + the column sums of y over the entries, and the fairness weights of the classes,
// per_class[k] = cu_k / col_k (0 where col_k <= 0), where per_class is not null. Rows are split
// into a fixed number of chunks (from the sizes alone, never the thread count), each scattering
// into its own K partial sums, added up in chunk order: the result does not depend on how many
// threads ran.
class Columns {
 public:
  Columns(int64_t b, int64_t t, int64_t K)
      : b_(b), t_(t), K_(K),
        chunks_(std::max<int64_t>(1, std::min<int64_t>({8, b, (b * t) / std::max<int64_t>(K, 4096)}))),
        partial_(chunks_ > 1 ? chunks_ * K : 0) {}

  void operator()(const double* rest, const double* y, const int64_t* index, double* col, const double* cu,
                  double* per_class) {
    if (chunks_ == 1) {  // fewer entries than max(K, 4096): no K-sized work after the first call
      if (first_) {
        std::copy(rest, rest + K_, col);
        first_ = false;
      } else {
        for (int64_t e = 0; e < b_ * t_; ++e) col[index[e]] = rest[index[e]];
      }
      for (int64_t e = 0; e < b_ * t_; ++e) col[index[e]] += y[e];
      if (per_class)
        for (int64_t k = 0; k < K_; ++k) per_class[k] = col[k] > 0 ? cu[k] / col[k] : 0.0;
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
        if (per_class) per_class[k] = sum > 0 ? cu[k] / sum : 0.0;
      }
    });
  }

 private:
  int64_t b_, t_, K_, chunks_;
  std::vector<double> partial_;
  bool first_ = true;
};

template <typename T>
std::tuple<at::Tensor, at::Tensor> sparse_em_impl(const at::Tensor& values, const at::Tensor& index,
                                                  const at::Tensor& rest, const at::Tensor& cu, int64_t iterations,
                                                  bool update) {
  const int64_t b = values.size(0), t = values.size(1), K = rest.size(0), entries = b * t;
  at::Tensor y_out = at::empty({b, t}, values.options());
  at::Tensor col_out = at::empty({K}, rest.options());
  const T* v = values.data_ptr<T>();
  T* yo = y_out.data_ptr<T>();
  const int64_t* ix = index.data_ptr<int64_t>();
  const double* rp = rest.data_ptr<double>();
  const double* cp = cu.data_ptr<double>();
  double* col = col_out.data_ptr<double>();
  std::vector<double> sigma(entries), y(entries);
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
  // The fairness weights w = c u_k / col_k (0 for a class with no mass) at each entry: one
  // division per class where the classes are fewer than the entries (per_class, computed with
  // the column sums), else one per entry. Held fixed (!update, col = rest), they are gathered
  // once into `fixed`; updated, each row pass gathers its rows' weights itself.
  std::vector<double> per_class(K <= entries ? K : 0), fixed(update ? 0 : entries);
  double* pc = per_class.empty() ? nullptr : per_class.data();
  auto weight_of = [&](const double* c, int64_t k) { return pc ? pc[k] : c[k] > 0 ? cp[k] / c[k] : 0.0; };
  if (update) {
    columns(rp, y.data(), ix, col, cp, pc);
  } else {
    if (pc)
      for (int64_t k = 0; k < K; ++k) pc[k] = rp[k] > 0 ? cp[k] / rp[k] : 0.0;
    at::parallel_for(0, entries, 16384, [&](int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) fixed[e] = weight_of(rp, ix[e]);
    });
  }
  for (int64_t it = 0; it < iterations; ++it) {
    const bool last = it + 1 == iterations;
    at::parallel_for(0, b, grain, [&](int64_t r0, int64_t r1) {
      std::vector<double> gathered(update ? t : 0);
      for (int64_t i = r0; i < r1; ++i) {
        double* yi = y.data() + i * t;
        const double* si = sigma.data() + i * t;
        const double* wi = fixed.data() + i * t;
        if (update) {
          for (int64_t j = 0; j < t; ++j) gathered[j] = weight_of(col, ix[i * t + j]);
          wi = gathered.data();
        }
        double a = 0;
        for (int64_t j = 0; j < t; ++j) a += wi[j] * yi[j];
        const double inv = 1.0 / (1.0 + a);
        for (int64_t j = 0; j < t; ++j) yi[j] = (si[j] + wi[j] * yi[j]) * inv;
        if (last)
          for (int64_t j = 0; j < t; ++j) yo[i * t + j] = static_cast<T>(yi[j]);
      }
    });
    if (update) columns(rp, y.data(), ix, col, cp, last ? nullptr : pc);
  }
  if (!update) columns(rp, y.data(), ix, col, cp, nullptr);
  if (iterations == 0)
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
// classes, in entry order, so the sums do not depend on the number of threads. float32 y and x
// (the large-K rounds) go to the ISA's kernel (isa/kernel_table.h, CentreSums), the rest here.
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
  if (y.scalar_type() == at::kFloat && x.scalar_type() == at::kFloat) {
    const CentreSums c{sums.data_ptr<double>(), mass.data_ptr<double>(), y.data_ptr<float>(),
                       index.data_ptr<int64_t>(), x.data_ptr<float>(), b * t, t, D, alpha};
    const CentreSumsFn kernel = kernels().centre_sums_f32;
    const int64_t grain = std::max<int64_t>(1, K / std::max<int64_t>(1, at::get_num_threads()));
    at::parallel_for(0, K, grain, [&](int64_t k0, int64_t k1) { kernel(c, k0, k1); });
    return;
  }
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
  m.impl("linear_top_entries", &linear_top_entries_cpu);
  m.impl("sparse_em_rows", &sparse_em_rows_cpu);
  m.impl("sparse_centre_sums_", &sparse_centre_sums_cpu);
}

}  // namespace cpu
}  // namespace entclust
