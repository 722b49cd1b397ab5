// The "avx512" capability (x86-64 with AVX-512 F, DQ, BW and VL, plus FMA): 64-byte vectors.
// As cap_avx2.cpp: only this file's functions get the target, and the dispatcher calls them
// only on a CPU (and OS) that supports it.
#include "prelude.h"

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,prefer-vector-width=512")
#endif

namespace entclust {
namespace cpu {
namespace cap_avx512 {
#include "row_kernels.h"
}  // namespace cap_avx512

extern const KernelTable kTableAvx512 = cap_avx512::make_table<64>("avx512");

}  // namespace cpu
}  // namespace entclust

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
