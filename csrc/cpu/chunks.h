// The fixed partition of a problem's N rows (K entries each) into chunks that the CPU solvers and
// certificates sum their column sums over (cpu/solvers.cpp, cpu/certificate.cpp): each chunk adds
// its rows into its own K partial sums, and the partials are added in chunk order, so the result
// depends on the sizes alone, never on the number of threads.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace entclust {
namespace cpu {

// At most 64 chunks (the partials take chunks x K doubles) and at most N; otherwise enough that
// a chunk holds at most 2048 rows or about 2^18 entries, so that one problem of a few hundred
// rows and many classes (N = 250, K = 20 000: 20 chunks) runs on every thread, not on one.
inline int64_t row_chunks(int64_t N, int64_t K) {
  const int64_t by_rows = (N + 2047) / 2048, by_entries = (N * K + (int64_t{1} << 18) - 1) >> 18;
  return std::max<int64_t>(1, std::min<int64_t>({64, N, std::max(by_rows, by_entries)}));
}

// out[k] = the chunks' partial sums (partial: chunks x K) added in chunk order, 0 + p_0 + p_1 + ...
inline void add_partials(const double* partial, int64_t chunks, int64_t K, double* out) {
  at::parallel_for(0, K, 4096, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      double sum = 0.0;
      for (int64_t c = 0; c < chunks; ++c) sum += partial[c * K + k];
      out[k] = sum;
    }
  });
}

// one(b) for each of B problems of `chunks` chunks: side by side, each on one thread, where a
// problem is one chunk or there are problems for every thread; else one after another, each over
// its chunks in parallel (a parallel_for inside a parallel region runs inline: the same chunks and
// sums either way)
template <typename One>
void each_problem(int64_t B, int64_t chunks, const One& one) {
  if (B > 1 && (chunks == 1 || B >= at::get_num_threads())) {
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) one(b);
    });
  } else {
    for (int64_t b = 0; b < B; ++b) one(b);
  }
}

}  // namespace cpu
}  // namespace entclust
