// Every op schema of entclust, in one place. Kernels live in cpu/*.cpp and cuda/*.cu and are
// registered with TORCH_LIBRARY_IMPL, so the dispatcher picks the device.
#include <torch/extension.h>

#include "cpu/isa/kernel_table.h"

#ifndef ENTCLUST_BUILD_TORCH_VERSION
#define ENTCLUST_BUILD_TORCH_VERSION "unknown"
#endif

TORCH_LIBRARY(entclust, m) {
  // Fused loss ops. `reduction`: 0 none, 1 mean, 2 sum. Returns
  //   (loss, stats, grad_logits, grad_y)
  // loss: (N,) or scalar in the dtype of logits; stats: (3, N) row sums of y, row minima of y
  // and a 0/1 "report this row" flag (float32, float64 for float64 inputs; see losses.h);
  // grad_*: gradient of `loss` for a unit upstream gradient, already scaled for the
  // reduction, or an empty tensor when not requested. `sum_tol`: allowed |sum_k y_k - 1|.
  m.def(
      "reverse_cross_entropy(Tensor logits, Tensor y, int reduction, bool grad_logits, "
      "bool grad_y, float sum_tol) -> (Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "collision_cross_entropy(Tensor logits, Tensor y, int reduction, bool grad_logits, "
      "bool grad_y, float sum_tol) -> (Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});

  // EM for the reverse-CE pseudo-label problem (MATH.md), all iterations in one call.
  // sigma (B, N, K), prior (K,), c = lam * N; stops a problem when max |dy| <= tol.
  // Returns (y (B, N, K), iterations (B,) int64, converged (B,) bool).
  m.def(
      "em_rce(Tensor sigma, Tensor prior, float lam, float tol, int max_iter, Tensor? y0) "
      "-> (Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // EM for the collision-CE problem, M-step by per-row Newton (|sum_k y_k - 1| <= newton_tol).
  m.def(
      "em_cce(Tensor sigma, Tensor prior, float lam, float tol, int max_iter, float newton_tol, "
      "int newton_max_iter, Tensor? y0) -> (Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // Projected gradient on the collision-CE problem (strong fairness), fixed step.
  m.def(
      "pgd_cce(Tensor sigma, Tensor prior, float lam, float step, float tol, int max_iter, Tensor? y0) "
      "-> (Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // Sinkhorn-Knopp in the log domain (SeLa's transport problem): from log_beta (B, K), sweeps of the
  // row and column shifts of log_p (B, N, K) to row sums 1/N and column sums exp(log_u), each
  // problem until its row sums are within tol (relative) or max_iter sweeps; float64.
  // Returns (log_alpha (B, N), log_beta (B, K), sweeps (B,) int64, error (B,) float64).
  m.def("sinkhorn(Tensor log_p, Tensor log_u, Tensor log_beta, float tol, int max_iter) "
        "-> (Tensor, Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // Exact Euclidean projection of each row of v (M, K) onto the probability simplex.
  m.def("project_simplex(Tensor v) -> Tensor", {at::Tag::pt2_compliant_tag});
  // Certificate of a pseudo-label solve (MATH.md): per problem the objective
  // (1/N) sum_i CE(sigma_i, y_i) + lam KL(u || y_bar) and the Frank-Wolfe gap, float64, in two
  // passes over sigma and y. problem: 0 reverse CE, 1 collision CE. Returns (objective, gap), (B,).
  m.def("certificate(Tensor sigma, Tensor y, Tensor prior, float lam, int problem) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // Lagrangian duality gap at y (docs/maths.md, "A tighter certificate", "A duality gap for the CCE
  // problem"), with the multipliers w = lam u / y_bar read off y and each row's dual maximised exactly: an
  // upper bound on objective(y) - min, never above the Frank-Wolfe gap. problem: 0 reverse CE, 1
  // collision CE. float64, (B,).
  m.def("duality_gap(Tensor sigma, Tensor y, Tensor prior, float lam, int problem=0) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // One reverse-CE M-step on a block of rows (M, K) of a larger problem, with the fairness
  // weights w_k = c u_k / col_k (float64, (K,)) of the whole problem's column sums:
  // y_ik <- (sigma_ik + w_k y_ik) / (1 + sum_m w_m y_im). Returns (new y, its column sums float64).
  m.def("em_rce_rows(Tensor sigma, Tensor y, Tensor weights) -> (Tensor, Tensor)", {at::Tag::pt2_compliant_tag});
  // The sparse rows of the large-K rounds (cpu/sparse_rows.cpp; CPU kernels, PyTorch elsewhere).
  // The `top` largest entries of each row of logits (b, K), in no particular order; ties at the
  // cut go to the lower class index. Returns (values (b, top), index (b, top) int64).
  m.def("top_entries(Tensor logits, int top) -> (Tensor, Tensor)", {at::Tag::pt2_compliant_tag});
  // top_entries of the logits x weight^T + bias (x (b, D), weight (K, D), bias (K,), float32) without
  // forming them (CPU); each logit summed over d in order, then + bias, the same in every block.
  m.def("linear_top_entries(Tensor x, Tensor weight, Tensor bias, int top) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // Reverse-CE pseudo-labels on each row's entries (values, index (b, top)): sigma = softmax of the
  // values, then `iterations` M-steps y <- (sigma + w y) / (1 + sum w y) with w = cu_k / col_k,
  // col = rest + the column sums of y over the entries (float64 (K,)), recomputed after every step
  // (update), or col = rest held fixed (not update). Returns (y (b, top), rest + the column sums of
  // the final y (K,) float64).
  m.def("sparse_em_rows(Tensor values, Tensor index, Tensor rest, Tensor cu, int iterations, bool update) "
        "-> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // In place: sums (K, D) += alpha sum over entries y_ij x_i at class index_ij, mass (K,) += alpha y_ij
  // (float64 both).
  m.def("sparse_centre_sums_(Tensor(a!) sums, Tensor(b!) mass, Tensor y, Tensor index, Tensor x, float alpha) -> ()",
        {at::Tag::pt2_compliant_tag});
  // Greedy k-means++ seeds of points (m, D) (cpu/kmeanspp.cpp), continuing from d2 (m,), each point's
  // squared distance to its nearest seed so far: seed c is the best of draws.size(1) candidates drawn
  // by inverse CDF of the uniform draws[c] over d2 (best: lowest total distance). Returns the
  // draws.size(0) indices of the new seeds (int64) and d2 after them (a new tensor).
  m.def("kmeans_plusplus(Tensor points, Tensor d2, Tensor draws) -> (Tensor, Tensor)", {at::Tag::pt2_compliant_tag});
  // Prediction fairness KL(u || sigma_bar) of B problems from their logits (B, N, K) float32/64,
  // sigma_bar the mean of softmax over each problem's N rows, prior u (K,) float64 (cpu/fairness.cpp;
  // CPU kernel, PyTorch elsewhere). Returns (value (B,) in the logits' dtype, the gradient of each
  // problem's value in its logits (B, N, K), or an empty tensor without `grad`).
  m.def("prediction_fairness(Tensor logits, Tensor prior, bool grad) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // softmax along the last dim in float64 from float32/float64 logits (cpu/fairness.cpp; CPU kernel,
  // PyTorch elsewhere): torch.softmax(logits.double(), -1) without the float64 copy of the logits.
  m.def("softmax_double(Tensor logits) -> Tensor", {at::Tag::pt2_compliant_tag});
  // Fused linear self-labeling (linear.h): logits l = x weight^T + bias one block of rows at a
  // time, sigma = softmax(l), pseudo-labels y = `iterations` reverse-CE M-steps from sigma
  // against the fixed fairness weights `fair` (float64 (K,), c u_k / col_k of the global column
  // sums), loss mean (reduction 1) or sum (2) of H(sigma_i, y_i) with y held fixed. With `grad`
  // the gradients to x, weight and bias (for a unit upstream gradient) are formed in the same
  // pass. block_rows 0: automatic. Returns (loss, labels = argmax y (B,) int64, column sums of
  // y (K,) float64, grad_x, grad_weight, grad_bias; empty when not computed).
  m.def(
      "linear_rce(Tensor x, Tensor weight, Tensor? bias, Tensor fair, int iterations, int reduction, bool grad, "
      "int block_rows) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
}

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  info["torch_version"] = ENTCLUST_BUILD_TORCH_VERSION;
#ifdef ENTCLUST_WITH_CUDA
  info["cuda"] = true;
  info["cuda_arch_list"] = ENTCLUST_CUDA_ARCH_LIST;
#else
  info["cuda"] = false;
  info["cuda_arch_list"] = "";
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("build_info", &build_info, "What this build of entclust._C was compiled with.");
  m.def("cpu_capability", &entclust::cpu::cpu_capability,
        "The instruction set of the CPU kernels in use (ENTCLUST_CPU_CAPABILITY, else the best supported).");
  m.def("set_cpu_capability", &entclust::cpu::set_cpu_capability, pybind11::arg("name"),
        "Switch the CPU kernels to a capability this CPU supports; '' picks the best again.");
  m.def("compiled_cpu_capabilities", &entclust::cpu::compiled_cpu_capabilities,
        "Capabilities this build has kernels for, from the baseline up.");
  m.def("supported_cpu_capabilities", &entclust::cpu::supported_cpu_capabilities,
        "Capabilities of this build that this CPU can run, from the baseline up.");
}
