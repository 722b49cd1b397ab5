// CUDA kernels of the fused losses; same maths and outputs as cpu/losses.cpp.
// A row is handled by a group of G threads: a warp (G = 32, 8 rows per block) for short rows,
// the whole block for long ones. Up to G * VPT classes the row is cached in registers, so
// memory sees one read of logits and y and one write of each gradient; longer rows stream
// three times over the row (max, sums, gradients), relying on L2 for the re-reads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>

#include "../losses.h"
#include "common.cuh"

namespace entclust {
namespace cuda {
namespace {

// Below this p / s the collision sum has lost precision to underflow: log-domain recompute.
template <typename A>
__device__ __forceinline__ A underflow_threshold() { return sizeof(A) == 4 ? A(1e-20) : A(1e-280); }

struct Args {
  int64_t n, k;
  double scale;
  double sum_tol;
  bool grad_logits, grad_y;
};

template <typename T, typename A>
struct Ptrs {
  const T* __restrict__ l;
  const T* __restrict__ y;
  T* __restrict__ gl;
  T* __restrict__ gy;
  A* __restrict__ rows;
  A* __restrict__ ysum;
  A* __restrict__ ymin;
  A* __restrict__ bad;
};

// Loads class `k` of the row (or the neutral element past K) from registers or memory.
template <typename T, typename A, int G, int VPT, bool CACHED>
struct RowView {
  const T* l;
  const T* y;
  int64_t K;
  int lane;
  A lv[CACHED ? VPT : 1];
  A yv[CACHED ? VPT : 1];

  __device__ __forceinline__ void load() {
    if constexpr (CACHED) {
#pragma unroll
      for (int j = 0; j < VPT; ++j) {
        const int64_t k = lane + static_cast<int64_t>(j) * G;
        lv[j] = k < K ? static_cast<A>(l[k]) : -dev_inf<A>();
        yv[j] = k < K ? static_cast<A>(y[k]) : A(0);
      }
    }
  }
  // f(k, l_k, y_k) for every class of this thread's share of the row.
  template <typename F>
  __device__ __forceinline__ void for_each(F f) const {
    if constexpr (CACHED) {
#pragma unroll
      for (int j = 0; j < VPT; ++j) {
        const int64_t k = lane + static_cast<int64_t>(j) * G;
        if (k < K) f(k, lv[j], yv[j]);
      }
    } else {
      for (int64_t k = lane; k < K; k += G) f(k, static_cast<A>(l[k]), static_cast<A>(y[k]));
    }
  }
};

template <typename T, typename A, bool RCE, int G, int VPT, bool CACHED>
__global__ void __launch_bounds__(G == 32 ? 256 : G)
    loss_kernel(Ptrs<T, A> p, Args args) {
  constexpr int kGroups = G == 32 ? 8 : 1;  // rows handled by one block at a time
  __shared__ A smem[32];
  const int lane = G == 32 ? (threadIdx.x & 31) : threadIdx.x;
  const int group = G == 32 ? (threadIdx.x >> 5) : 0;
  const int64_t K = args.k;
  const A scale = static_cast<A>(args.scale);

  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kGroups + group; row < args.n;
       row += static_cast<int64_t>(gridDim.x) * kGroups) {
    RowView<T, A, G, VPT, CACHED> r{p.l + row * K, p.y + row * K, K, lane};
    r.load();

    A m = -dev_inf<A>();
    r.for_each([&](int64_t, A lk, A) { m = lk > m ? lk : m; });
    m = group_reduce<G>(m, MaxOp(), -dev_inf<A>(), smem);

    // s = sum e_k, w = sum e_k (-ln y_k) (reverse) or sum e_k y_k (collision), e_k = exp(l_k - m)
    A s = 0, w = 0, ys = 0, ym = dev_inf<A>();
    r.for_each([&](int64_t, A lk, A yk) {
      const A e = dev_exp(lk - m);
      s += e;
      if constexpr (RCE) w += e > A(0) ? e * -dev_log(yk) : A(0);  // sigma_k = 0 contributes 0
      else w += e * yk;
      ys += yk;
      ym = yk < ym ? yk : ym;
    });
    s = group_reduce<G>(s, SumOp(), A(0), smem);
    w = group_reduce<G>(w, SumOp(), A(0), smem);
    ys = group_reduce<G>(ys, SumOp(), A(0), smem);
    ym = group_reduce<G>(ym, MinOp(), dev_inf<A>(), smem);

    const bool grads = args.grad_logits || args.grad_y;
    T* gl = args.grad_logits ? p.gl + row * K : nullptr;
    T* gy = args.grad_y ? p.gy + row * K : nullptr;
    A loss;
    if (RCE) {
      loss = w / s;  // H(sigma, y)
      if (grads) {
        const A inv_s = A(1) / s;
        r.for_each([&](int64_t k, A lk, A yk) {
          const A sig = dev_exp(lk - m) * inv_s;
          const bool live = sig > A(0);
          if (gl) gl[k] = static_cast<T>(live ? scale * sig * (-dev_log(yk) - loss) : A(0));
          if (gy) gy[k] = static_cast<T>(live ? -scale * sig / yk : A(0));
        });
      }
    } else if (w > s * underflow_threshold<A>() && s < dev_inf<A>()) {
      loss = dev_log(s) - dev_log(w);  // -ln(sigma . y)
      if (grads) {
        const A inv_s = A(1) / s, inv_w = A(1) / w;
        r.for_each([&](int64_t k, A lk, A yk) {
          const A e = dev_exp(lk - m);
          if (gl) gl[k] = static_cast<T>(scale * (e * inv_s - yk * e * inv_w));
          if (gy) gy[k] = static_cast<T>(-scale * e * inv_w);
        });
      }
    } else if (w != w || s != s) {  // NaN input: propagate, the Python side reports it
      loss = w + s;
      r.for_each([&](int64_t k, A, A) {
        if (gl) gl[k] = static_cast<T>(loss);
        if (gy) gy[k] = static_cast<T>(loss);
      });
    } else {
      // sigma . y underflowed: ln p = logsumexp_{y_k > 0}(l_k + ln y_k) - logsumexp(l).
      // Rare, so it re-reads the row from memory rather than keep the cached one live.
      const RowView<T, A, G, 1, false> mem{p.l + row * K, p.y + row * K, K, lane};
      const A lse = m + dev_log(s);
      A m2 = -dev_inf<A>();
      mem.for_each([&](int64_t, A lk, A yk) {
        if (yk > A(0)) m2 = fmax(m2, lk + dev_log(yk));
      });
      m2 = group_reduce<G>(m2, MaxOp(), -dev_inf<A>(), smem);
      A t = 0;
      mem.for_each([&](int64_t, A lk, A yk) {
        if (yk > A(0)) t += dev_exp(lk + dev_log(yk) - m2);
      });
      t = group_reduce<G>(t, SumOp(), A(0), smem);
      const A ln_p = m2 == -dev_inf<A>() ? m2 : m2 + dev_log(t) - lse;
      loss = -ln_p;
      if (grads) {
        mem.for_each([&](int64_t k, A lk, A yk) {
          const A ls = lk - lse;
          const A y_ratio = yk > A(0) ? dev_exp(ls + dev_log(yk) - ln_p) : A(0);
          if (gl) gl[k] = static_cast<T>(scale * (dev_exp(ls) - y_ratio));
          if (gy) gy[k] = static_cast<T>(-scale * dev_exp(ls - ln_p));
        });
      }
    }
    if (lane == 0) {
      p.rows[row] = loss;
      p.ysum[row] = ys;
      p.ymin[row] = ym;
      // same verdict as cpu/losses.cpp record_row
      const bool ok = isfinite(loss) && isfinite(ys) && ym >= A(0) &&
                      !(fabs(static_cast<double>(ys) - 1.0) > args.sum_tol);
      p.bad[row] = ok ? A(0) : A(1);
    }
  }
}

template <typename T, typename A, bool RCE, int G, int VPT, bool CACHED>
void launch(const Ptrs<T, A>& p, const Args& args, cudaStream_t stream, int sm_count) {
  constexpr int kThreads = G == 32 ? 256 : G;
  constexpr int kGroups = G == 32 ? 8 : 1;
  const int64_t wanted = (args.n + kGroups - 1) / kGroups;
  const int blocks = static_cast<int>(std::min<int64_t>(wanted, static_cast<int64_t>(sm_count) * 32));
  loss_kernel<T, A, RCE, G, VPT, CACHED><<<blocks, kThreads, 0, stream>>>(p, args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Register-cached configurations chosen so that no instance spills (ptxas -v, sm_90): the
// 512 x 32 one needs up to 128 registers a thread, so float64 rows above 2048 stream instead.
template <typename T, typename A, bool RCE>
void dispatch_shape(const Ptrs<T, A>& p, const Args& args, cudaStream_t stream, int sm_count) {
  if (args.k <= 32 * 8) launch<T, A, RCE, 32, 8, true>(p, args, stream, sm_count);
  else if (args.k <= 256 * 8) launch<T, A, RCE, 256, 8, true>(p, args, stream, sm_count);
  else if (sizeof(A) == 4 && args.k <= 512 * 32) {
    if constexpr (sizeof(A) == 4) launch<T, A, RCE, 512, 32, true>(p, args, stream, sm_count);
  } else {
    launch<T, A, RCE, 1024, 1, false>(p, args, stream, sm_count);
  }
}

template <bool RCE>
LossResult loss_cuda(const at::Tensor& logits_in, const at::Tensor& y_in, int64_t reduction, bool grad_logits,
                     bool grad_y, double sum_tol) {
  check_loss_inputs(RCE ? "reverse_cross_entropy" : "collision_cross_entropy", logits_in, y_in, reduction);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor y = y_in.contiguous();
  LossBuffers b = allocate_loss_buffers(logits, y, reduction, grad_logits, grad_y);
  const int64_t N = logits.size(0), K = logits.size(1);
  if (N > 0) {
    int sm_count = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, logits.get_device()));
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const Args args{N, K, b.scale, sum_tol, grad_logits, grad_y};
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "entclust_loss_cuda", [&] {
      using A = at::opmath_type<scalar_t>;
      const Ptrs<scalar_t, A> p{logits.data_ptr<scalar_t>(),
                                y.data_ptr<scalar_t>(),
                                grad_logits ? b.grad_logits.data_ptr<scalar_t>() : nullptr,
                                grad_y ? b.grad_y.data_ptr<scalar_t>() : nullptr,
                                b.rows.data_ptr<A>(),
                                b.stats.data_ptr<A>(),
                                b.stats.data_ptr<A>() + N,
                                b.stats.data_ptr<A>() + 2 * N};
      dispatch_shape<scalar_t, A, RCE>(p, args, stream, sm_count);
    });
  }
  return finish(b, reduction, logits.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(entclust, CUDA, m) {
  m.impl("reverse_cross_entropy", &loss_cuda<true>);
  m.impl("collision_cross_entropy", &loss_cuda<false>);
}

}  // namespace cuda
}  // namespace entclust
