// Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; the `trials` local candidates of
// scikit-learn's version), the whole loop in one call: the large-K start seeds K centres, and in
// PyTorch ops each seed cost about ten small ops (benchmarks/bench_sparse_rows.py times both).
// Per seed: draw `trials` candidates with probability proportional to the squared distance d2 to
// the nearest seed so far (inverse CDF of the draws given), the squared distance of every point
// to each candidate (|x|^2 + |c|^2 - 2 x.c by one matrix product, as the PyTorch version did),
// each clipped at d2; the candidate of the lowest total (float64, summed over a fixed partition of
// the points: independent of the number of threads) becomes the seed, and d2 its clipped distances.
// PyTorch equivalent (ground truth of the tests): entclust/testing/reference.py, kmeans_plusplus.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace entclust {
namespace cpu {
namespace {

template <typename T>
void seed(const at::Tensor& points, int64_t first, const double* draws, int64_t k, int64_t trials, int64_t* chosen) {
  const int64_t m = points.size(0);
  // a fixed partition of the points into chunks of >= 1024 points (at most 64)
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(64, m / 1024)), per = (m + chunks - 1) / chunks;
  const at::Tensor norms_t = points.square().sum(1);
  const T* norms = norms_t.data_ptr<T>();
  std::vector<T> d2(m);
  std::vector<double> cumulative(m), partial(chunks * trials);
  at::Tensor candidates_t = at::empty({trials}, points.options().dtype(at::kLong));
  int64_t* candidates = candidates_t.data_ptr<int64_t>();
  chosen[0] = first;
  {
    const at::Tensor dot = at::mv(points, points[first]);
    const T* g = dot.data_ptr<T>();
    for (int64_t i = 0; i < m; ++i) d2[i] = std::max<T>(0, norms[i] - 2 * g[i] + norms[first]);
  }
  for (int64_t c = 1; c < k; ++c) {
    double total = 0;
    for (int64_t i = 0; i < m; ++i) cumulative[i] = (total += static_cast<double>(d2[i]));
    for (int64_t t = 0; t < trials; ++t) {  // the first point whose cumulative sum reaches the draw
      const double target = draws[(c - 1) * trials + t] * total;
      candidates[t] = std::min<int64_t>(m - 1, std::lower_bound(cumulative.begin(), cumulative.end(), target) -
                                                   cumulative.begin());
    }
    // |x_i - x_t|^2 = |x_i|^2 + |x_t|^2 - 2 x_i . x_t: one (m, D) x (D, trials) product, then one pass
    at::Tensor dist_t = at::mm(points, points.index_select(0, candidates_t).t()).contiguous();
    T* dist = dist_t.data_ptr<T>();
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t h = c0; h < c1; ++h) {
        double* sums = partial.data() + h * trials;
        std::fill(sums, sums + trials, 0.0);
        const int64_t end = std::min(m, (h + 1) * per);
        for (int64_t i = h * per; i < end; ++i) {
          T* di = dist + i * trials;
          for (int64_t t = 0; t < trials; ++t) {
            const T d = std::min(std::max<T>(0, norms[i] + norms[candidates[t]] - 2 * di[t]), d2[i]);
            di[t] = d;
            sums[t] += static_cast<double>(d);
          }
        }
      }
    });
    int64_t best = 0;
    double lowest = 0;
    for (int64_t t = 0; t < trials; ++t) {
      double sum = 0;
      for (int64_t h = 0; h < chunks; ++h) sum += partial[h * trials + t];
      if (t == 0 || sum < lowest) {
        lowest = sum;
        best = t;
      }
    }
    for (int64_t i = 0; i < m; ++i) d2[i] = dist[i * trials + best];
    chosen[c] = candidates[best];
  }
}

at::Tensor kmeans_plusplus_cpu(const at::Tensor& points_in, int64_t first, const at::Tensor& draws_in) {
  TORCH_CHECK(points_in.dim() == 2 && (points_in.scalar_type() == at::kFloat || points_in.scalar_type() == at::kDouble),
              "kmeans_plusplus: points must be a float32 or float64 (m, D) tensor, got ", points_in.sizes(), " ",
              points_in.scalar_type());
  const int64_t m = points_in.size(0);
  TORCH_CHECK(m >= 1, "kmeans_plusplus: points must hold at least one point");
  TORCH_CHECK(first >= 0 && first < m, "kmeans_plusplus: first must be in [0, ", m, "), got ", first);
  TORCH_CHECK(draws_in.dim() == 2 && draws_in.scalar_type() == at::kDouble,
              "kmeans_plusplus: draws must be a float64 (K - 1, trials) tensor, got ", draws_in.sizes(), " ",
              draws_in.scalar_type());
  const int64_t k = draws_in.size(0) + 1, trials = draws_in.size(1);
  TORCH_CHECK(trials >= 1 || k == 1, "kmeans_plusplus: draws need at least one trial per seed");
  const at::Tensor points = points_in.contiguous(), draws = draws_in.contiguous();
  TORCH_CHECK(at::isfinite(points).all().item<bool>(), "kmeans_plusplus: points contain NaN or Inf");
  at::Tensor chosen = at::empty({k}, points.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "entclust_kmeans_plusplus_cpu", [&] {
    seed<scalar_t>(points, first, draws.data_ptr<double>(), k, trials, chosen.data_ptr<int64_t>());
  });
  return chosen;
}

}  // namespace

TORCH_LIBRARY_IMPL(entclust, CPU, m) { m.impl("kmeans_plusplus", &kmeans_plusplus_cpu); }

}  // namespace cpu
}  // namespace entclust
