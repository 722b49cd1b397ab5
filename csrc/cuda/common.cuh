// Device helpers shared by the CUDA kernels: warp and group reductions, math overloads.
#pragma once
#include <cuda_runtime.h>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>

namespace entclust {
namespace cuda {

struct SumOp {
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const { return a + b; }
};
struct MaxOp {
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const { return a > b ? a : b; }
};
struct MinOp {
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const { return a < b ? a : b; }
};

template <typename A, typename Op>
__device__ __forceinline__ A warp_reduce(A v, Op op) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Reduction over a group of G threads: one warp (G = 32, no block synchronisation, so
// several groups can share a block) or the whole block (G = blockDim.x, a multiple of 32).
// Every thread of the group receives the result. `smem` holds at least G / 32 values.
template <int G, typename A, typename Op>
__device__ __forceinline__ A group_reduce(A v, Op op, A identity, A* smem) {
  v = warp_reduce(v, op);
  if (G == 32) return v;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = lane < G / 32 ? smem[lane] : identity;
  v = warp_reduce(v, op);
  __syncthreads();  // smem is reused by the next reduction
  return v;
}

__device__ __forceinline__ float dev_exp(float x) { return expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }
__device__ __forceinline__ float dev_log(float x) { return logf(x); }
__device__ __forceinline__ double dev_log(double x) { return log(x); }

template <typename A>
__device__ __forceinline__ A dev_inf() { return std::numeric_limits<A>::infinity(); }

}  // namespace cuda
}  // namespace entclust
