// The "avx2" capability (x86-64 with AVX2 and FMA): 32-byte vectors. Only the functions of this
// file are compiled for that target (pragma after the standard headers, see prelude.h); the
// dispatcher calls them only on a CPU that reports AVX2 and FMA.
#include "prelude.h"

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

namespace entclust {
namespace cpu {
namespace cap_avx2 {
#include "row_kernels.h"
}  // namespace cap_avx2

extern const KernelTable kTableAvx2 = cap_avx2::make_table<32>("avx2");

}  // namespace cpu
}  // namespace entclust

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
