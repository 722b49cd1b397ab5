// CUDA kernel of the fused linear self-labeling op `linear_rce`; same blocking, maths and
// outputs as cpu/linear.cpp. Per block of rows: cuBLAS makes the logits (at::addmm), one thread
// block per row runs the row passes (max; exp sums; `iterations` M-steps; H and argmax y;
// gradients in place of the logits), and cuBLAS takes the gradient to x and the head.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "../linear.h"
#include "common.cuh"

namespace entclust {
namespace cuda {
namespace {

constexpr int kRowThreads = 256;

// (value, index) arg-max over the block: the largest value, the smallest index on ties.
__device__ __forceinline__ void better(double& v, int64_t& i, double ov, int64_t oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}

template <int G>
__device__ __forceinline__ int64_t block_argmax(double v, int64_t i, double* sv, int64_t* si) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    better(v, i, __shfl_xor_sync(0xffffffffu, v, offset), __shfl_xor_sync(0xffffffffu, i, offset));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sv[warp] = v;
    si[warp] = i;
  }
  __syncthreads();
  v = lane < G / 32 ? sv[lane] : -dev_inf<double>();
  i = lane < G / 32 ? si[lane] : INT64_MAX;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    better(v, i, __shfl_xor_sync(0xffffffffu, v, offset), __shfl_xor_sync(0xffffffffu, i, offset));
  __syncthreads();
  return i;
}

template <typename T, int G>
__global__ void __launch_bounds__(G) linear_rce_rows_kernel(T* __restrict__ l_all, T* __restrict__ y_all,
                                                            const T* __restrict__ a, int64_t K, int64_t iterations,
                                                            T scale, bool grad, double* __restrict__ loss,
                                                            int64_t* __restrict__ labels) {
  __shared__ double smem[G / 32];
  __shared__ int64_t sidx[G / 32];
  const int64_t row = blockIdx.x;
  T* l = l_all + row * K;
  T* y = y_all + row * K;
  const int tid = threadIdx.x;
  double m = -dev_inf<double>();
  for (int64_t k = tid; k < K; k += G) m = fmax(m, static_cast<double>(l[k]));
  m = group_reduce<G>(m, MaxOp(), -dev_inf<double>(), smem);
  double z = 0;
  for (int64_t k = tid; k < K; k += G) z += dev_exp(static_cast<double>(l[k]) - m);
  z = group_reduce<G>(z, SumOp(), 0.0, smem);
  const T lse = static_cast<T>(m + log(z));
  if (!isfinite(static_cast<double>(lse))) {  // a NaN or +inf logit: say so (the sigma > 0 guards would drop it)
    for (int64_t k = tid; k < K; k += G) y[k] = l[k] = static_cast<T>(NAN);
    if (tid == 0) {
      loss[row] = NAN;
      labels[row] = 0;
    }
    return;
  }
  double acc = 0;
  for (int64_t k = tid; k < K; k += G) {
    const T sig = dev_exp(l[k] - lse);
    y[k] = sig;
    acc += static_cast<double>(a[k] * sig);
  }
  double s = 1.0 + group_reduce<G>(acc, SumOp(), 0.0, smem);
  for (int64_t it = 0; it < iterations; ++it) {
    const T inv_s = static_cast<T>(1.0 / s);
    acc = 0;
    for (int64_t k = tid; k < K; k += G) {
      const T yn = (dev_exp(l[k] - lse) + a[k] * y[k]) * inv_s;
      y[k] = yn;
      acc += static_cast<double>(a[k] * yn);
    }
    s = 1.0 + group_reduce<G>(acc, SumOp(), 0.0, smem);
  }
  double h = 0, best = -dev_inf<double>();
  int64_t where = INT64_MAX;
  for (int64_t k = tid; k < K; k += G) {
    const T sig = dev_exp(l[k] - lse);
    if (sig > T(0)) h -= static_cast<double>(sig * dev_log(y[k]));
    if (static_cast<double>(y[k]) > best) {
      best = static_cast<double>(y[k]);
      where = k;
    }
  }
  h = group_reduce<G>(h, SumOp(), 0.0, smem);
  where = block_argmax<G>(best, where, smem, sidx);
  if (tid == 0) {
    loss[row] = h;
    labels[row] = where;
  }
  if (!grad) return;
  const T ht = static_cast<T>(h);
  for (int64_t k = tid; k < K; k += G) {
    const T sig = dev_exp(l[k] - lse);
    l[k] = sig > T(0) ? scale * sig * (-dev_log(y[k]) - ht) : T(0);
  }
}

LinearResult linear_rce_cuda(const at::Tensor& x_in, const at::Tensor& weight_in,
                             const std::optional<at::Tensor>& bias_in, const at::Tensor& fair_in, int64_t iterations,
                             int64_t reduction, bool grad, int64_t block_rows) {
  check_linear_inputs("linear_rce", x_in, weight_in, bias_in, fair_in, iterations, reduction, block_rows);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::ScalarType dtype = x_in.scalar_type();
  const int64_t K = weight_in.size(0);
  const at::Tensor a = fair_in.to(dtype).contiguous();
  LinearOutputs out = allocate_linear_outputs(x_in, weight_in, bias_in, reduction, grad);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  return linear_blocks(x_in, weight_in, bias_in, reduction, grad, block_rows, out,
                       [&](at::Tensor& l, at::Tensor& yb, int64_t i0, at::Tensor& loss_rows, at::Tensor& grad_bias64) {
    const int64_t n = l.size(0);
    AT_DISPATCH_FLOATING_TYPES(dtype, "entclust_linear_rce_cuda", [&] {
      linear_rce_rows_kernel<scalar_t, kRowThreads><<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(
          l.data_ptr<scalar_t>(), yb.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), K, iterations,
          static_cast<scalar_t>(out.scale), out.grad, loss_rows.data_ptr<double>() + i0,
          out.labels.data_ptr<int64_t>() + i0);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    out.columns.add_(yb.sum(0, false, at::kDouble));
    if (out.grad && out.has_bias) grad_bias64.add_(l.sum(0, false, at::kDouble));
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(entclust, CUDA, m) { m.impl("linear_rce", &linear_rce_cuda); }

}  // namespace cuda
}  // namespace entclust
