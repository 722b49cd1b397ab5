// Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; the `trials` local candidates of
// scikit-learn's version), many seeds a call: the large-K start seeds K centres, and in PyTorch ops
// each seed cost about ten small ops (benchmarks/bench_sparse_rows.py times both). A call continues
// from d2, the squared distance of each point to its nearest seed so far, and returns the new
// seeds and d2 after them, so the caller can cut the K seeds into calls (and report progress
// between them: at K = 10^5 the loop takes minutes) with the same result as one call.
// Per seed: draw `trials` candidates with probability proportional to the squared distance d2 to
// the nearest seed so far (inverse CDF of the draws given), the squared distance of every point
// to each candidate (|x|^2 + |c|^2 - 2 x.c), each clipped at d2; the candidate of the lowest total
// (float64, summed over a fixed partition of the points: independent of the number of threads)
// becomes the seed, and d2 its clipped distances. In float64 by one matrix product a seed, as
// the PyTorch version does. In float32 by the ISA's kpp_gains_f32 and kpp_update_f32 over the
// points transposed once (seed_f32): what each candidate takes off sum(d2), with no distance
// written, then the chosen candidate's distances where they are below d2; the draws search
// per-chunk sums of d2, not a cumulative sum over all points (at K = 10^5 a seed is about a
// millisecond, and the 2 * 10^5 points' cumulative sum, one thread's serial pass, was a tenth of it).
// PyTorch equivalent (ground truth of the tests): entclust/testing/reference.py, kmeans_plusplus.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "isa/kernel_table.h"

namespace entclust {
namespace cpu {
namespace {

// The `trials` candidates of one seed: for each draw u, the first point whose cumulative sum of d2
// reaches u * sum(d2) (cumulative: room for m).
template <typename T>
void draw_candidates(const T* d2, int64_t m, const double* u, int64_t trials, double* cumulative, int64_t* out) {
  double total = 0;
  for (int64_t i = 0; i < m; ++i) cumulative[i] = (total += static_cast<double>(d2[i]));
  for (int64_t t = 0; t < trials; ++t)
    out[t] = std::min<int64_t>(m - 1, std::lower_bound(cumulative, cumulative + m, u[t] * total) - cumulative);
}

// The candidate of the lowest total (sign -1) or the highest (sign 1):
// partial[(h * trials + t) * lanes + l] summed over h, then l, in that fixed order (the first of
// equal totals).
int64_t best_total(const double* partial, int64_t chunks, int64_t trials, int64_t lanes, double sign) {
  int64_t best = 0;
  double top = 0;
  for (int64_t t = 0; t < trials; ++t) {
    double sum = 0;
    for (int64_t h = 0; h < chunks; ++h)
      for (int64_t l = 0; l < lanes; ++l) sum += partial[(h * trials + t) * lanes + l];
    if (t == 0 || sign * sum > top) {
      top = sign * sum;
      best = t;
    }
  }
  return best;
}

// Whether every entry is finite (and, with non_negative, >= 0), without a temporary: the op runs
// hundreds of times in one seeding at K = 10^5, and at::isfinite's (m, D) mask a call grew the
// process's heap by megabytes a call (freed in the allocator's arenas of other threads, not returned).
template <typename T>
bool all_finite(const T* p, int64_t n, bool non_negative = false) {
  return at::parallel_reduce(
      0, n, int64_t{1} << 16, true,
      [&](int64_t b, int64_t e, bool ok) {
        int bad = 0;
        for (int64_t i = b; i < e; ++i) {
          const bool nonfinite = !(p[i] - p[i] == 0);
          bad |= nonfinite | (non_negative && p[i] < 0);
        }
        return ok && bad == 0;
      },
      [](bool a, bool b) { return a && b; });
}

// float64: the candidates' distances by one matrix product, then a pass that clips and sums them.
void seed_f64(const at::Tensor& points, double* d2, const double* draws, int64_t k, int64_t trials,
              int64_t* chosen) {
  using T = double;
  const int64_t m = points.size(0);
  // a fixed partition of the points into chunks of >= 1024 points (at most 64)
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(64, m / 1024)), per = (m + chunks - 1) / chunks;
  const at::Tensor norms_t = points.square().sum(1);
  const T* norms = norms_t.data_ptr<T>();
  std::vector<double> cumulative(m), partial(chunks * trials);
  at::Tensor candidates_t = at::empty({trials}, points.options().dtype(at::kLong));
  int64_t* candidates = candidates_t.data_ptr<int64_t>();
  for (int64_t c = 0; c < k; ++c) {
    draw_candidates(d2, m, draws + c * trials, trials, cumulative.data(), candidates);
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
    const int64_t best = best_total(partial.data(), chunks, trials, 1, -1.0);
    for (int64_t i = 0; i < m; ++i) d2[i] = dist[i * trials + best];
    chosen[c] = candidates[best];
  }
}

// The `trials` candidates of one seed, as draw_candidates, from the d2 of points cut into chunks of
// chunk_points and each chunk's sum of d2 (lanes[h * L + l], reduced over l in order), without a
// pass over all points: for each draw u, the first chunk whose running total reaches u * total,
// then in it the first point whose running sum of d2 from the chunk's start reaches the rest (the
// chunk's last point with d2 > 0 where rounding leaves the sum short). totals: room for chunks.
void draw_in_chunks(const float* d2, int64_t m, int64_t chunk_points, int64_t chunks, const double* lanes, int64_t L,
                    const double* u, int64_t trials, double* totals, int64_t* out) {
  double total = 0;
  for (int64_t h = 0; h < chunks; ++h) {
    double sum = 0;
    for (int64_t l = 0; l < L; ++l) sum += lanes[h * L + l];
    totals[h] = (total += sum);
  }
  for (int64_t t = 0; t < trials; ++t) {
    const double target = u[t] * total;
    const int64_t h = std::min<int64_t>(chunks - 1, std::lower_bound(totals, totals + chunks, target) - totals);
    const double rest = target - (h > 0 ? totals[h - 1] : 0.0);
    const int64_t begin = std::min(m - 1, h * chunk_points), end = std::min(m, (h + 1) * chunk_points);
    int64_t pick = -1, last = begin;
    double sum = 0;
    for (int64_t i = begin; i < end; ++i) {
      sum += static_cast<double>(d2[i]);
      if (d2[i] > 0) last = i;
      if (sum >= rest) {
        pick = i;
        break;
      }
    }
    out[t] = pick >= 0 ? pick : last;
  }
}

// float32: per seed one pass of the ISA's kpp_gains_f32 over the points (transposed once; a block
// of `lanes` points against up to 12, or 16, candidates in registers), which writes no distances,
// then kpp_update_f32 recomputes the chosen candidate's on the blocks it changes (after the
// first few hundred seeds a small share of them) and sums the new d2 per chunk for the next draws.
// The candidate that takes most off sum(d2) is the one of the lowest total.
void seed_f32(const at::Tensor& points, float* d2_io, const double* draws, int64_t k, int64_t trials,
              int64_t* chosen) {
  const KernelTable& isa = kernels();
  const int64_t m = points.size(0), D = points.size(1), L = isa.lanes;
  const int64_t blocks = (m + L - 1) / L, mp = blocks * L;
  // a fixed partition of the blocks into chunks of >= 1024 points (at most 64)
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(64, m / 1024)), per = (blocks + chunks - 1) / chunks;
  const float* x = points.data_ptr<float>();
  // xt uninitialised: the threads of the transposition touch its pages first, and every lane is
  // written (the padding ones 0). A zeroed vector was one thread's memset and page faults over the
  // 51 MB of 2 * 10^5 x 64 points, in every call: ~30 ms a call at K = 10^5, 485 calls.
  std::unique_ptr<float[]> xt(new float[mp * D]);
  std::vector<float> norms(mp, 0.0f), d2(mp, 0.0f);
  at::parallel_for(0, blocks, 64, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g)
      for (int64_t l = 0; l < L; ++l) {
        if (g * L + l >= m) {
          for (int64_t d = 0; d < D; ++d) xt[(g * D + d) * L + l] = 0.0f;
          continue;
        }
        const float* xi = x + (g * L + l) * D;
        float norm = 0;
        for (int64_t d = 0; d < D; ++d) {
          xt[(g * D + d) * L + l] = xi[d];
          norm += xi[d] * xi[d];
        }
        norms[g * L + l] = norm;
      }
  });
  std::vector<float> cand(D * trials), cnorm(trials);
  std::vector<uint8_t> flags(blocks * trials, 0);
  std::vector<double> gains(chunks * trials * L), lanes(chunks * L, 0.0), totals(chunks);
  std::vector<int64_t> candidates(trials);
  std::copy(d2_io, d2_io + m, d2.begin());  // (the padding lanes stay 0: their distances are 0)
  const KppDistances job{xt.get(), norms.data(), d2.data(), D, cand.data(), cnorm.data(), trials,
                         flags.data(), gains.data()};
  // each chunk's lanes of sum(d2), then of the new d2 after every seed; no flag is set before the first
  const auto update = [&](int64_t t) {
    at::parallel_for(0, chunks, 1, [&](int64_t h0, int64_t h1) {
      for (int64_t h = h0; h < h1; ++h) {
        double* sums = lanes.data() + h * L;
        std::fill(sums, sums + L, 0.0);
        isa.kpp_update_f32(job, t, sums, std::min(blocks, h * per), std::min(blocks, (h + 1) * per));
      }
    });
  };
  update(0);
  for (int64_t c = 0; c < k; ++c) {
    draw_in_chunks(d2.data(), m, per * L, chunks, lanes.data(), L, draws + c * trials, trials, totals.data(),
                   candidates.data());
    for (int64_t t = 0; t < trials; ++t) {
      for (int64_t d = 0; d < D; ++d) cand[d * trials + t] = x[candidates[t] * D + d];
      cnorm[t] = norms[candidates[t]];
    }
    at::parallel_for(0, chunks, 1, [&](int64_t h0, int64_t h1) {
      for (int64_t h = h0; h < h1; ++h) {
        KppDistances part = job;
        part.gains = gains.data() + h * trials * L;
        std::fill(part.gains, part.gains + trials * L, 0.0);
        isa.kpp_gains_f32(part, std::min(blocks, h * per), std::min(blocks, (h + 1) * per));
      }
    });
    const int64_t best = best_total(gains.data(), chunks, trials, L, 1.0);
    update(best);
    chosen[c] = candidates[best];
  }
  std::copy(d2.begin(), d2.begin() + m, d2_io);
}

std::tuple<at::Tensor, at::Tensor> kmeans_plusplus_cpu(const at::Tensor& points_in, const at::Tensor& d2_in,
                                                       const at::Tensor& draws_in) {
  TORCH_CHECK(points_in.dim() == 2 && (points_in.scalar_type() == at::kFloat || points_in.scalar_type() == at::kDouble),
              "kmeans_plusplus: points must be a float32 or float64 (m, D) tensor, got ", points_in.sizes(), " ",
              points_in.scalar_type());
  const int64_t m = points_in.size(0);
  TORCH_CHECK(m >= 1, "kmeans_plusplus: points must hold at least one point");
  TORCH_CHECK(d2_in.dim() == 1 && d2_in.size(0) == m && d2_in.scalar_type() == points_in.scalar_type(),
              "kmeans_plusplus: d2 must be an (m,) tensor of the points' dtype (m = ", m, ", ",
              points_in.scalar_type(), "), got ", d2_in.sizes(), " ", d2_in.scalar_type());
  TORCH_CHECK(draws_in.dim() == 2 && draws_in.scalar_type() == at::kDouble,
              "kmeans_plusplus: draws must be a float64 (seeds, trials) tensor, got ", draws_in.sizes(), " ",
              draws_in.scalar_type());
  const int64_t k = draws_in.size(0), trials = draws_in.size(1);
  TORCH_CHECK(trials >= 1 || k == 0, "kmeans_plusplus: draws need at least one trial per seed");
  const at::Tensor points = points_in.contiguous(), draws = draws_in.contiguous();
  at::Tensor d2 = d2_in.contiguous().clone();  // the input is not modified
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "kmeans_plusplus", [&] {
    TORCH_CHECK(all_finite(points.data_ptr<scalar_t>(), points.numel()), "kmeans_plusplus: points contain NaN or Inf");
    TORCH_CHECK(all_finite(d2.data_ptr<scalar_t>(), m, true), "kmeans_plusplus: d2 must be finite and non-negative");
  });
  at::Tensor chosen = at::empty({k}, points.options().dtype(at::kLong));
  if (k > 0) {
    if (points.scalar_type() == at::kFloat)
      seed_f32(points, d2.data_ptr<float>(), draws.data_ptr<double>(), k, trials, chosen.data_ptr<int64_t>());
    else
      seed_f64(points, d2.data_ptr<double>(), draws.data_ptr<double>(), k, trials, chosen.data_ptr<int64_t>());
  }
  return {chosen, d2};
}

}  // namespace

TORCH_LIBRARY_IMPL(entclust, CPU, m) { m.impl("kmeans_plusplus", &kmeans_plusplus_cpu); }

}  // namespace cpu
}  // namespace entclust
