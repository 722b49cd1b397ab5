// Which per-ISA kernel table runs: the best capability that this CPU (and its OS) supports,
// unless ENTCLUST_CPU_CAPABILITY names another, as ATEN_CPU_CAPABILITY does for ATen. Unlike
// ATen, a name this machine cannot run is an error, not a silent fallback: the override exists
// so that tests and benchmarks can force each path, and a forced path must be the one measured.
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

#include "kernel_table.h"

namespace entclust {
namespace cpu {

extern const KernelTable kTableDefault;
#if defined(__x86_64__) || defined(_M_X64)
extern const KernelTable kTableAvx2;
extern const KernelTable kTableAvx512;
#endif

namespace {

struct Capability {
  const KernelTable* table;
  bool (*supported)();
};

bool always() { return true; }

#if defined(__x86_64__) || defined(_M_X64)
// libgcc's / compiler-rt's feature bits include the OS check (XGETBV) for AVX and AVX-512 state.
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
bool has_avx512() {
  return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
#endif

// Best last.
const std::vector<Capability>& compiled() {
  static const std::vector<Capability> caps = {
      {&kTableDefault, &always},
#if defined(__x86_64__) || defined(_M_X64)
      {&kTableAvx2, &has_avx2},
      {&kTableAvx512, &has_avx512},
#endif
  };
  return caps;
}

std::string names(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

const KernelTable* find(const std::string& requested, const char* origin) {
  std::string name = requested;
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  if (name.empty()) {
    const KernelTable* best = nullptr;
    for (const auto& c : compiled())
      if (c.supported()) best = c.table;
    return best;
  }
  for (const auto& c : compiled()) {
    if (name != c.table->name) continue;
    if (!c.supported())
      throw std::runtime_error(std::string(origin) + ": CPU capability '" + requested +
                               "' is not supported by this CPU; supported: " + names(supported_cpu_capabilities()));
    return c.table;
  }
  throw std::runtime_error(std::string(origin) + ": unknown CPU capability '" + requested +
                           "'; this build has: " + names(compiled_cpu_capabilities()) +
                           ", of which this CPU supports: " + names(supported_cpu_capabilities()));
}

std::atomic<const KernelTable*> current{nullptr};
std::mutex init_mutex;

}  // namespace

std::vector<std::string> compiled_cpu_capabilities() {
  std::vector<std::string> out;
  for (const auto& c : compiled()) out.emplace_back(c.table->name);
  return out;
}

std::vector<std::string> supported_cpu_capabilities() {
  std::vector<std::string> out;
  for (const auto& c : compiled())
    if (c.supported()) out.emplace_back(c.table->name);
  return out;
}

const KernelTable& kernels() {
  const KernelTable* t = current.load(std::memory_order_acquire);
  if (t != nullptr) return *t;
  std::lock_guard<std::mutex> lock(init_mutex);
  t = current.load(std::memory_order_acquire);
  if (t == nullptr) {
    const char* env = std::getenv("ENTCLUST_CPU_CAPABILITY");
    t = find(env ? env : "", "ENTCLUST_CPU_CAPABILITY");
    current.store(t, std::memory_order_release);
  }
  return *t;
}

std::string cpu_capability() { return kernels().name; }

void set_cpu_capability(const std::string& name) {
  const KernelTable* t = find(name, "set_cpu_capability");
  std::lock_guard<std::mutex> lock(init_mutex);
  current.store(t, std::memory_order_release);
}

}  // namespace cpu
}  // namespace entclust
