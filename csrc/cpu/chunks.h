// The fixed partition of a problem's N rows (K entries each) into chunks that the CPU solvers and
// certificates sum their column sums over (cpu/solvers.cpp, cpu/certificate.cpp): each chunk adds
// its rows into its own K partial sums, and the partials are added in chunk order, so the result
// depends on the sizes alone, never on the number of threads.
#pragma once
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

}  // namespace cpu
}  // namespace entclust
