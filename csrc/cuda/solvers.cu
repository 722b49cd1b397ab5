// CUDA kernels of the pseudo-label solvers: same maths, schemas and outputs as cpu/solvers.cpp
// (see its header for the shared E-step v_k = c u_k / sum_j y_jk).
//
// Two launch plans:
// * many problems (or small ones): one block per problem runs *all* iterations in one launch.
//   y lives in shared memory when it fits (250 x 200 float32 = 200 KB), sigma is read through
//   L1/L2, v = c u / colsum(y) sits in shared memory; a warp updates a row, then the block sums
//   the columns (a deterministic pass, no atomics) and tests max |dy| <= tol itself.
// * few large problems: per iteration one pass over memory (read sigma and y, write y) that also
//   accumulates the next column sums (block partials in shared memory, then one global atomic
//   per column and block; beyond ~28000 classes a separate reduction over y) and max |dy|, plus
//   a tiny per-problem finish kernel (v, iteration count, convergence flag).
//   A converged problem's blocks exit at once; the host checks "all converged" every
//   kCheckEvery iterations, so it synchronises with the device only that often.
// Row maths is shared by both plans: a group of G threads (a warp, or a whole block for long
// rows) owns a row and streams over it with stride G.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <cfloat>

#include "common.cuh"

namespace entclust {
namespace cuda {
namespace {

enum class Solver { kRce, kCce, kPgd };

constexpr int kBlockThreads = 512;  // one-block-per-problem plan: 16 warps, a row per warp
constexpr int kStepThreads = 256;   // per-iteration plan
constexpr int kCheckEvery = 16;     // host-side convergence checks, in iterations
constexpr double kFreeClass = 1e-12;  // as cpu/solvers.cpp: a_k <= kFreeClass * b counts as 0

// max that keeps NaN (a diverging projected gradient must not look converged)
struct NanMaxOp {
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const { return (a > b || a != a) ? a : b; }
};

struct Params {
  int64_t N, K;
  double tol;
  int64_t max_iter;
  double newton_tol;
  int64_t newton_max_iter;
  double pgd_scale;  // step / N
  double empty;      // v of a class no point uses (and u_k > 0): 0 for EM, +inf for PGD
};

// ---- row updates (group of G threads; every thread of the group returns the same delta) ----

// Reverse CE: y_k <- (s_k + y_k v_k) / sum_m (s_m + y_m v_m), row arithmetic in T as on the CPU.
template <int G, typename T>
__device__ T rce_row(const T* __restrict__ s, T* y, int64_t K, const double* v, double* col, int lane,
                     double* red) {
  T norm = 0;
  for (int64_t k = lane; k < K; k += G) norm += s[k] + y[k] * static_cast<T>(v[k]);
  norm = group_reduce<G>(norm, SumOp(), T(0), reinterpret_cast<T*>(red));
  const T inv = T(1) / norm;
  T delta = 0;
  for (int64_t k = lane; k < K; k += G) {
    const T next = (s[k] + y[k] * static_cast<T>(v[k])) * inv;
    delta = NanMaxOp()(delta, static_cast<T>(fabs(next - y[k])));
    y[k] = next;
    if (col) atomicAdd(col + k, static_cast<double>(next));
  }
  return group_reduce<G>(delta, NanMaxOp(), T(0), reinterpret_cast<T*>(red));
}

// Collision-CE M-step (seed 003 section 4 and appendix C), as em_cce_rows_impl on the CPU:
// a_k = y_k v_k, b = 1 + sum a; closed form with the free mass on c* = argmax_{a_k = 0} s_k when
// feasible, else y_k = a_k / (b - s_k / x) with x from monotone Newton (warm start x_state).
template <int G, typename T>
__device__ T cce_row(const T* __restrict__ s, T* y, int64_t K, const double* v, double* col, double* x_state,
                     const Params& p, int lane, double* red) {
  auto a_of = [=](int64_t k) { return static_cast<double>(y[k]) * v[k]; };
  double raw = 0;
  for (int64_t k = lane; k < K; k += G) raw += a_of(k);
  raw = group_reduce<G>(raw, SumOp(), 0.0, red);
  const double floor = kFreeClass * (1 + raw);
  auto live = [=](double a) { return a > floor; };  // a_k > floor, else the class is free

  double a_sum = 0, s_star = -1;
  for (int64_t k = lane; k < K; k += G) {
    const double a = a_of(k);
    if (live(a)) a_sum += a;
    else s_star = fmax(s_star, static_cast<double>(s[k]));
  }
  a_sum = group_reduce<G>(a_sum, SumOp(), 0.0, red);
  s_star = group_reduce<G>(s_star, MaxOp(), -1.0, red);
  const double b = 1 + a_sum;

  // mode 0: Newton; mode 1: closed form with c* (the lowest free index with s_k = s_star)
  int mode = 0;
  int64_t c_star = K;
  double free_mass = 0;
  if (s_star > 0) {
    for (int64_t k = lane; k < K; k += G)
      if (!live(a_of(k)) && static_cast<double>(s[k]) == s_star && k < c_star) c_star = k;
    c_star = group_reduce<G>(c_star, MinOp(), K, reinterpret_cast<int64_t*>(red));
    double total = 0;
    int bad = 0;
    for (int64_t k = lane; k < K; k += G) {
      const double a = a_of(k);
      if (live(a)) {
        const double den = b * (1 - static_cast<double>(s[k]) / s_star);
        if (den > 0) total += a / den;
        else bad = 1;
      }
    }
    total = group_reduce<G>(total, SumOp(), 0.0, red);
    bad = group_reduce<G>(bad, MaxOp(), 0, reinterpret_cast<int*>(red));
    if (!bad && total <= 1) {
      mode = 1;
      free_mass = 1 - total;
    }
  }

  double x = 0, inv_total = 1;
  if (mode == 0) {
    double lo = DBL_MIN;
    for (int64_t k = lane; k < K; k += G) {
      const double a = a_of(k);
      if (live(a)) lo = fmax(lo, static_cast<double>(s[k]) / (b - a));
    }
    lo = group_reduce<G>(lo, MaxOp(), DBL_MIN, red);
    x = fmax(lo, *x_state);
    for (int64_t it = 0; it < p.newton_max_iter; ++it) {
      const double inv_x = 1.0 / x;
      double f = 0, g = 0;
      for (int64_t k = lane; k < K; k += G) {
        const double a = a_of(k);
        if (live(a)) {
          const double sk = static_cast<double>(s[k]);
          const double inv_d = 1.0 / (b - sk * inv_x);
          f += a * inv_d;
          g += a * inv_d * sk * inv_d;
        }
      }
      f = group_reduce<G>(f, SumOp(), 0.0, red) - 1;
      g = group_reduce<G>(g, SumOp(), 0.0, red);
      if (fabs(f) <= p.newton_tol || !(g > 0)) break;
      x = fmax(lo, x + f * x * x / g);
    }
    if (lane == 0) *x_state = x;
    double total = 0;
    for (int64_t k = lane; k < K; k += G) {
      const double a = a_of(k);
      if (live(a)) total += a / (b - static_cast<double>(s[k]) / x);
    }
    inv_total = 1.0 / group_reduce<G>(total, SumOp(), 0.0, red);
  }

  T delta = 0;
  for (int64_t k = lane; k < K; k += G) {
    const double a = a_of(k);
    const double sk = static_cast<double>(s[k]);
    double next;
    if (mode == 1) next = k == c_star ? free_mass : (live(a) ? a / (b * (1 - sk / s_star)) : 0.0);
    else next = live(a) ? a / (b - sk / x) * inv_total : 0.0;
    const T value = static_cast<T>(next);
    delta = NanMaxOp()(delta, static_cast<T>(fabs(value - y[k])));
    y[k] = value;
    if (col) atomicAdd(col + k, next);
  }
  return group_reduce<G>(delta, NanMaxOp(), T(0), reinterpret_cast<T*>(red));
}

// Michelot's projection of z (z(k) gives class k) onto the simplex, on values shifted by their
// maximum (the projection is invariant to a common shift; see project_row in cpu/solvers.cpp):
// returns the shifted theta with out_k = max((z_k - top) - theta, 0) and sets top, or returns
// NaN when some z_k is not finite. theta starts at -1, a lower bound of the optimum's.
template <int G, typename Z>
__device__ double simplex_theta(const Z& z, int64_t K, int lane, double* red, double& top) {
  double high = -std::numeric_limits<double>::infinity();
  int finite = 1;
  for (int64_t k = lane; k < K; k += G) {
    const double zk = z(k);
    high = fmax(high, zk);
    finite &= isfinite(zk) ? 1 : 0;
  }
  high = group_reduce<G>(high, MaxOp(), -std::numeric_limits<double>::infinity(), red);
  finite = group_reduce<G>(finite, MinOp(), 1, reinterpret_cast<int*>(red));
  top = high;
  if (!finite) return std::numeric_limits<double>::quiet_NaN();
  double theta = -1;
  int64_t active = K + 1;
  for (int64_t pass = 0; pass <= K; ++pass) {
    double sum = 0;
    int64_t count = 0;
    for (int64_t k = lane; k < K; k += G) {
      const double shifted = z(k) - high;
      if (shifted > theta) {
        sum += shifted;
        ++count;
      }
    }
    sum = group_reduce<G>(sum, SumOp(), 0.0, red);
    count = group_reduce<G>(count, SumOp(), int64_t(0), reinterpret_cast<int64_t*>(red));
    theta = (sum - 1) / static_cast<double>(count);
    if (count == active) break;
    active = count;
  }
  return theta;
}

// Projected gradient on collision CE (strong fairness): z = y + (step / N)(s / (s . y) + v).
template <int G, typename T>
__device__ T pgd_row(const T* __restrict__ s, T* y, int64_t K, const double* v, double* col, const Params& p,
                     int lane, double* red) {
  double dot = 0;
  for (int64_t k = lane; k < K; k += G) dot += static_cast<double>(s[k]) * static_cast<double>(y[k]);
  dot = group_reduce<G>(dot, SumOp(), 0.0, red);
  const double scale = p.pgd_scale;
  auto z = [=](int64_t k) {
    return static_cast<double>(y[k]) + scale * (static_cast<double>(s[k]) / dot + static_cast<double>(static_cast<T>(v[k])));
  };
  double top;
  const double theta = simplex_theta<G>(z, K, lane, red, top);
  T delta = 0;
  for (int64_t k = lane; k < K; k += G) {
    const double next = theta == theta ? fmax((z(k) - top) - theta, 0.0) : theta;
    const T value = static_cast<T>(next);
    delta = NanMaxOp()(delta, static_cast<T>(fabs(value - y[k])));
    y[k] = value;
    if (col) atomicAdd(col + k, next);
  }
  return group_reduce<G>(delta, NanMaxOp(), T(0), reinterpret_cast<T*>(red));
}

template <Solver S, int G, typename T>
__device__ __forceinline__ T update_row(const T* s, T* y, int64_t K, const double* v, double* col, double* x_state,
                                        const Params& p, int lane, double* red) {
  if constexpr (S == Solver::kRce) return rce_row<G>(s, y, K, v, col, lane, red);
  else if constexpr (S == Solver::kCce) return cce_row<G>(s, y, K, v, col, x_state, p, lane, red);
  else return pgd_row<G>(s, y, K, v, col, p, lane, red);
}

__device__ __forceinline__ double fairness_weight(double col, double cu, double empty) {
  return col > 0 ? cu / col : (cu > 0 ? empty : 0.0);
}

// ---- plan 1: one block per problem, all iterations ----

template <Solver S, typename T>
__global__ void __launch_bounds__(kBlockThreads, 1)
    block_kernel(const T* __restrict__ sigma, T* y_out, const double* __restrict__ cu, double* x_state,
                 int64_t* iterations, bool* converged, Params p, bool y_in_smem) {
  extern __shared__ __align__(16) unsigned char dyn[];
  __shared__ double red[32];  // reductions of the whole block
  const int64_t N = p.N, K = p.K, b = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = kBlockThreads / 32;
  double* v = reinterpret_cast<double*>(dyn);
  T* const y_global = y_out + b * N * K;
  T* const y = y_in_smem ? reinterpret_cast<T*>(v + K) : y_global;
  const T* const s = sigma + b * N * K;
  double* const xs = x_state + b * N;

  if (y_in_smem)
    for (int64_t e = threadIdx.x; e < N * K; e += kBlockThreads) y[e] = y_global[e];
  __syncthreads();
  auto refresh_v = [&]() {  // v_k = c u_k / sum_i y_ik: a column pass, fixed order
    for (int64_t k = threadIdx.x; k < K; k += kBlockThreads) {
      double col = 0;
      for (int64_t i = 0; i < N; ++i) col += static_cast<double>(y[i * K + k]);
      v[k] = fairness_weight(col, cu[k], p.empty);
    }
    __syncthreads();
  };
  refresh_v();
  int64_t done_iters = 0;
  bool done = false;
  for (int64_t it = 1; it <= p.max_iter; ++it) {
    T delta = 0;
    for (int64_t i = warp; i < N; i += warps)
      delta = NanMaxOp()(delta, update_row<S, 32>(s + i * K, y + i * K, K, v, nullptr, xs + i, p, lane, nullptr));
    const double block_delta = group_reduce<kBlockThreads>(static_cast<double>(delta), NanMaxOp(), 0.0, red);
    refresh_v();
    done_iters = it;
    if (block_delta <= p.tol) {
      done = true;
      break;
    }
  }
  if (y_in_smem)
    for (int64_t e = threadIdx.x; e < N * K; e += kBlockThreads) y_global[e] = y[e];
  if (threadIdx.x == 0) {
    iterations[b] = done_iters;
    converged[b] = done;
  }
}

// ---- plan 2: one pass over memory per iteration ----

struct StepState {
  double* v;                 // (B, K) fairness weights of this iteration
  double* col;               // (B, K) column sums being accumulated
  unsigned long long* delta; // (B,) max |dy| as the bits of a non-negative double
  int* done;                 // (B,) 1 once converged
  int* done_count;           // number of converged problems
  int64_t* iterations;
  bool* converged;
  double* x_state;           // (B, N)
};

template <Solver S, int G, typename T>
__global__ void __launch_bounds__(kStepThreads, 2)
    step_kernel(const T* __restrict__ sigma, T* y_all, StepState st, Params p, bool smem_columns) {
  extern __shared__ __align__(16) unsigned char dyn[];
  __shared__ double red[32];
  const int64_t N = p.N, K = p.K, b = blockIdx.y;
  if (st.done[b]) return;  // uniform over the block
  constexpr int kGroups = kStepThreads / G;
  const int group = threadIdx.x / G, lane = threadIdx.x % G;
  double* const part = reinterpret_cast<double*>(dyn);
  double* const col_global = st.col + b * K;
  if (smem_columns) {
    for (int64_t k = threadIdx.x; k < K; k += kStepThreads) part[k] = 0;
    __syncthreads();
  }
  double* const col = smem_columns ? part : nullptr;  // else summed by the host-side reduction
  const double* const v = st.v + b * K;
  T delta = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kGroups + group; i < N;
       i += static_cast<int64_t>(gridDim.x) * kGroups) {
    const int64_t off = (b * N + i) * K;
    // G == kStepThreads: the group reductions use `red` and synchronise the block; the loop
    // condition is then uniform over the block.
    delta = NanMaxOp()(delta, update_row<S, G>(sigma + off, y_all + off, K, v, col, st.x_state + b * N + i, p, lane,
                                              G == 32 ? nullptr : red));
  }
  const double block_delta = group_reduce<kStepThreads>(static_cast<double>(delta), NanMaxOp(), 0.0, red);
  if (threadIdx.x == 0) atomicMax(st.delta + b, static_cast<unsigned long long>(__double_as_longlong(fabs(block_delta))));
  if (smem_columns) {
    __syncthreads();
    for (int64_t k = threadIdx.x; k < K; k += kStepThreads)
      if (part[k] != 0) atomicAdd(col_global + k, part[k]);
  }
}

// Per problem after each pass: v for the next iteration, reset the accumulators, count the
// iteration, test convergence.
__global__ void finish_kernel(StepState st, const double* __restrict__ cu, Params p) {
  const int64_t K = p.K, b = blockIdx.x;
  if (st.done[b]) return;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    st.v[b * K + k] = fairness_weight(st.col[b * K + k], cu[k], p.empty);
    st.col[b * K + k] = 0;
  }
  if (threadIdx.x == 0) {
    const double delta = __longlong_as_double(static_cast<long long>(st.delta[b]));
    st.delta[b] = 0;
    st.iterations[b] += 1;
    if (delta <= p.tol) {
      st.converged[b] = true;
      st.done[b] = 1;
      atomicAdd(st.done_count, 1);
    }
  }
}

using EmResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

template <Solver S, typename T>
void run_block_plan(const at::Tensor& sigma, at::Tensor& y, const at::Tensor& cu, at::Tensor& x_state,
                    at::Tensor& iterations, at::Tensor& converged, const Params& p, size_t smem, bool y_in_smem,
                    cudaStream_t stream) {
  auto kernel = block_kernel<S, T>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<static_cast<unsigned>(sigma.size(0)), kBlockThreads, smem, stream>>>(
      sigma.data_ptr<T>(), y.data_ptr<T>(), cu.data_ptr<double>(), x_state.data_ptr<double>(),
      iterations.data_ptr<int64_t>(), converged.data_ptr<bool>(), p, y_in_smem);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <Solver S, int G, typename T>
void run_step_plan(const at::Tensor& sigma, at::Tensor& y, const at::Tensor& cu, at::Tensor& x_state,
                   at::Tensor& iterations, at::Tensor& converged, const Params& p, int sm_count,
                   size_t smem_limit, cudaStream_t stream) {
  const int64_t B = sigma.size(0), N = p.N, K = p.K;
  TORCH_CHECK(B <= 65535, "entclust solver: at most 65535 problems of more than ~28000 classes per call, got ", B);
  const auto f64 = sigma.options().dtype(at::kDouble);
  // v from the start's column sums; everything else starts at 0
  const at::Tensor start_col = y.sum(1, false, at::kDouble);
  at::Tensor v = at::where(start_col > 0, cu.unsqueeze(0) / start_col,
                           at::where(cu.unsqueeze(0) > 0, at::full({1, K}, p.empty, f64), at::zeros({1, K}, f64)))
                     .contiguous();
  at::Tensor col = at::zeros({B, K}, f64);
  at::Tensor delta = at::zeros({B}, sigma.options().dtype(at::kLong));
  at::Tensor done = at::zeros({B}, sigma.options().dtype(at::kInt));
  at::Tensor done_count = at::zeros({1}, sigma.options().dtype(at::kInt));
  StepState st{v.data_ptr<double>(),
               col.data_ptr<double>(),
               reinterpret_cast<unsigned long long*>(delta.data_ptr<int64_t>()),
               done.data_ptr<int>(),
               done_count.data_ptr<int>(),
               iterations.data_ptr<int64_t>(),
               converged.data_ptr<bool>(),
               x_state.data_ptr<double>()};
  // Two resident blocks per SM (the launch bounds) fill the GPU; more blocks would only add
  // column-sum atomics.
  constexpr int kGroups = kStepThreads / G;
  const int64_t row_blocks = (N + kGroups - 1) / kGroups;
  const int64_t per_problem = std::max<int64_t>(1, static_cast<int64_t>(sm_count) * 2 / std::max<int64_t>(B, 1));
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(row_blocks, per_problem)), static_cast<unsigned>(B));
  // Column sums: block partials in shared memory, one atomic per column and block; when K
  // doubles do not fit, a separate reduction over y (one more read of y per iteration) rather
  // than N K global atomics.
  const size_t col_bytes = static_cast<size_t>(K) * sizeof(double);
  const bool smem_columns = col_bytes <= smem_limit;
  const size_t smem = smem_columns ? col_bytes : 0;
  auto kernel = step_kernel<S, G, T>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  for (int64_t it = 1; it <= p.max_iter; ++it) {
    kernel<<<grid, kStepThreads, smem, stream>>>(sigma.data_ptr<T>(), y.data_ptr<T>(), st, p, smem_columns);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (!smem_columns) at::sum_out(col, y, {1}, false, at::kDouble);
    finish_kernel<<<static_cast<unsigned>(B), 256, 0, stream>>>(st, cu.data_ptr<double>(), p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if ((it % kCheckEvery == 0 || it == p.max_iter) && done_count.item<int>() == B) break;
  }
}

template <Solver S>
EmResult solve_cuda(const char* name, const at::Tensor& sigma_in, const at::Tensor& prior, double lam, Params p,
                    const std::optional<at::Tensor>& y0) {
  TORCH_CHECK(sigma_in.dim() == 3, name, ": sigma must have shape (B, N, K), got ", sigma_in.sizes());
  TORCH_CHECK(sigma_in.scalar_type() == at::kFloat || sigma_in.scalar_type() == at::kDouble, name,
              ": sigma must be float32 or float64, got ", sigma_in.scalar_type());
  const int64_t B = sigma_in.size(0), N = sigma_in.size(1), K = sigma_in.size(2);
  TORCH_CHECK(prior.dim() == 1 && prior.size(0) == K, name, ": prior must have shape (", K, "), got ", prior.sizes());
  TORCH_CHECK(prior.device() == sigma_in.device(), name, ": prior must be on ", sigma_in.device(), ", got ",
              prior.device());
  TORCH_CHECK(lam >= 0 && p.tol >= 0 && p.max_iter >= 0, name, ": need lam >= 0, tol >= 0, max_iter >= 0");
  const c10::cuda::CUDAGuard guard(sigma_in.device());
  const at::Tensor sigma = sigma_in.contiguous();
  at::Tensor y;
  if (y0.has_value()) {
    TORCH_CHECK(y0->sizes() == sigma.sizes() && y0->scalar_type() == sigma.scalar_type() &&
                    y0->device() == sigma.device(),
                name, ": y0 must match sigma in shape, dtype and device");
    y = y0->contiguous().clone();
  } else {
    y = sigma.clone();
  }
  at::Tensor iterations = at::zeros({B}, sigma.options().dtype(at::kLong));
  at::Tensor converged = at::zeros({B}, sigma.options().dtype(at::kBool));
  if (B == 0 || N == 0 || p.max_iter == 0) return {y, iterations, converged};
  const at::Tensor cu = prior.to(at::kDouble).contiguous() * (lam * static_cast<double>(N));
  at::Tensor x_state = at::zeros({B, N}, sigma.options().dtype(at::kDouble));
  p.N = N;
  p.K = K;

  const int device = sigma.get_device();
  int sm_count = 0, smem_optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const size_t limit = static_cast<size_t>(smem_optin) - 32 * sizeof(double);  // the static `red`
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "entclust_solver_cuda", [&] {
    const size_t v_bytes = static_cast<size_t>(K) * sizeof(double);
    const size_t y_bytes = static_cast<size_t>(N) * static_cast<size_t>(K) * sizeof(scalar_t);
    // many problems, or small ones: a block each; few large problems: rows across the GPU
    const bool block_plan = v_bytes <= limit && (B * 4 >= sm_count || N * K <= (int64_t(1) << 15));
    if (block_plan) {
      const bool y_in_smem = v_bytes + y_bytes <= limit;
      run_block_plan<S, scalar_t>(sigma, y, cu, x_state, iterations, converged, p,
                                  v_bytes + (y_in_smem ? y_bytes : 0), y_in_smem, stream);
    } else if (K <= 1024) {
      run_step_plan<S, 32, scalar_t>(sigma, y, cu, x_state, iterations, converged, p, sm_count, limit, stream);
    } else {
      run_step_plan<S, kStepThreads, scalar_t>(sigma, y, cu, x_state, iterations, converged, p, sm_count, limit,
                                               stream);
    }
  });
  return {y, iterations, converged};
}

EmResult em_rce_cuda(const at::Tensor& sigma, const at::Tensor& prior, double lam, double tol, int64_t max_iter,
                     const std::optional<at::Tensor>& y0) {
  return solve_cuda<Solver::kRce>("em_rce", sigma, prior, lam, Params{0, 0, tol, max_iter, 0, 1, 0, 0.0}, y0);
}

EmResult em_cce_cuda(const at::Tensor& sigma, const at::Tensor& prior, double lam, double tol, int64_t max_iter,
                     double newton_tol, int64_t newton_max_iter, const std::optional<at::Tensor>& y0) {
  TORCH_CHECK(newton_tol >= 0 && newton_max_iter >= 1, "em_cce: need newton_tol >= 0 and newton_max_iter >= 1");
  return solve_cuda<Solver::kCce>("em_cce", sigma, prior, lam,
                                  Params{0, 0, tol, max_iter, newton_tol, newton_max_iter, 0, 0.0}, y0);
}

EmResult pgd_cce_cuda(const at::Tensor& sigma, const at::Tensor& prior, double lam, double step, double tol,
                      int64_t max_iter, const std::optional<at::Tensor>& y0) {
  TORCH_CHECK(step > 0, "pgd_cce: step must be > 0, got ", step);
  const double n = sigma.dim() == 3 ? static_cast<double>(std::max<int64_t>(sigma.size(1), 1)) : 1.0;
  return solve_cuda<Solver::kPgd>("pgd_cce", sigma, prior, lam,
                                  Params{0, 0, tol, max_iter, 0, 1, step / n, INFINITY}, y0);
}

// project_simplex: a warp per row up to 1024 classes, a 256-thread block per row beyond.
template <int G, typename T>
__global__ void __launch_bounds__(kStepThreads) project_kernel(const T* __restrict__ src, T* dst, int64_t M, int64_t K) {
  __shared__ double red[32];
  constexpr int kGroups = kStepThreads / G;
  const int group = threadIdx.x / G, lane = threadIdx.x % G;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kGroups + group; r < M;
       r += static_cast<int64_t>(gridDim.x) * kGroups) {
    const T* z_row = src + r * K;
    auto z = [=](int64_t k) { return static_cast<double>(z_row[k]); };
    double top;
    const double theta = simplex_theta<G>(z, K, lane, G == 32 ? nullptr : red, top);
    for (int64_t k = lane; k < K; k += G)
      dst[r * K + k] = static_cast<T>(theta == theta ? fmax((z(k) - top) - theta, 0.0) : theta);
  }
}

at::Tensor project_simplex_cuda(const at::Tensor& v_in) {
  TORCH_CHECK(v_in.dim() == 2, "project_simplex: v must have shape (M, K), got ", v_in.sizes());
  TORCH_CHECK(v_in.scalar_type() == at::kFloat || v_in.scalar_type() == at::kDouble,
              "project_simplex: v must be float32 or float64, got ", v_in.scalar_type());
  const c10::cuda::CUDAGuard guard(v_in.device());
  const at::Tensor v = v_in.contiguous();
  at::Tensor out = at::empty_like(v, at::MemoryFormat::Contiguous);
  const int64_t M = v.size(0), K = v.size(1);
  if (M == 0 || K == 0) return out;
  int sm_count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, v.get_device()));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "entclust_project_simplex_cuda", [&] {
    const int64_t cap = static_cast<int64_t>(sm_count) * 16;
    if (K <= 1024) {
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((M + 7) / 8, cap));
      project_kernel<32, scalar_t><<<blocks, kStepThreads, 0, stream>>>(v.data_ptr<scalar_t>(),
                                                                        out.data_ptr<scalar_t>(), M, K);
    } else {
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(M, cap));
      project_kernel<kStepThreads, scalar_t><<<blocks, kStepThreads, 0, stream>>>(v.data_ptr<scalar_t>(),
                                                                                  out.data_ptr<scalar_t>(), M, K);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(entclust, CUDA, m) {
  m.impl("em_rce", &em_rce_cuda);
  m.impl("em_cce", &em_cce_cuda);
  m.impl("pgd_cce", &pgd_cce_cuda);
  m.impl("project_simplex", &project_simplex_cuda);
}

}  // namespace cuda
}  // namespace entclust
