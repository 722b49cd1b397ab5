// The "default" capability: the baseline ISA of the build target (SSE2 on x86-64, NEON on
// aarch64), 16-byte vectors. Runs on every CPU the extension loads on.
#include "prelude.h"

namespace entclust {
namespace cpu {
namespace cap_default {
#include "row_kernels.h"
}  // namespace cap_default

extern const KernelTable kTableDefault = cap_default::make_table<16>("default");

}  // namespace cpu
}  // namespace entclust
