// The CPU kernels that exist once per instruction set ("capability", as ATen's
// ATEN_CPU_CAPABILITY): plain C++ on raw pointers, compiled in isa/cap_*.cpp with that ISA's
// target, and reached through the table of the capability in use (isa/capability.cpp).
// Everything else of the CPU ops (checks, allocation, threading) lives in losses.cpp and
// solvers.cpp and is ISA-independent.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace entclust {
namespace cpu {

// Rows [begin, end) of a float32 fused loss. Per row: loss, sum and minimum of y, and the
// verdict flag (1: non-finite loss, y not finite or negative, or |sum y - 1| > sum_tol);
// gradients for a unit upstream gradient times `scale` when gl / gy are not null.
// `scratch` holds 2 K floats.
struct LossRows {
  const float* l;
  const float* y;
  int64_t K;
  float scale;
  float* gl;
  float* gy;
  float* rows;
  float* ysum;
  float* ymin;
  float* bad;
  double sum_tol;
};
using LossRowsFn = void (*)(const LossRows&, int64_t begin, int64_t end, float* scratch);

// One EM iteration over rows [begin, end) of one problem (MATH.md, solvers.cpp): updates y in
// place, adds the new column sums to col_out (float64), returns max |dy|. The collision-CE
// M-step keeps each row's Newton root in x_state and needs 3 K doubles of scratch.
template <typename T>
using EmRceRowsFn = T (*)(const T* sigma, T* y, int64_t K, int64_t begin, int64_t end, const T* v,
                          double* col_out);
template <typename T>
using EmCceRowsFn = T (*)(const T* sigma, T* y, int64_t K, int64_t begin, int64_t end, const T* v,
                          double* col_out, double* x_state, double newton_tol, int64_t newton_max_iter,
                          double* scratch);

// One projected-gradient iteration on the collision-CE problem over rows [begin, end) (step,
// N: the problem's rows), with the exact simplex projection of each row (project_row, which
// project_simplex uses too); 2 K doubles of scratch. As EM: updates y, adds the column sums to
// col_out, returns max |dy|.
template <typename T>
using PgdCceRowsFn = T (*)(const T* sigma, T* y, int64_t K, int64_t N, double step, int64_t begin, int64_t end,
                           const T* v, double* col_out, double* scratch);
using ProjectRowFn = void (*)(const double* z, int64_t K, double* out);

// The rows of the two certificates (cpu/certificate.cpp, docs/maths.md) over rows [begin, end)
// of one problem, in float64, added to *ce and *gap. Frank-Wolfe (cert_fw): per row the
// cross-entropy term (reverse CE: -sum_k s_k ln y_k over s_k > 0; collision CE: -ln s . y) and
// y . g - min_k g (NaN where a g_k is NaN), with the gradient g_k = w_k + (reverse CE: -s_k inv_n
// / y_k where s_k > 0, else 0; collision CE: -s_k inv_n / s . y), w the fairness part. Duality
// gap (cert_dual, reverse CE; ce unused): per row, with w the distances d_k >= 0 of the
// multipliers to their maximum, the tau >= 0 maximising sum_k s_k ln(tau + d_k) - tau and
// sum_k s_k ln(s_k / ((tau + d_k) y_k)) + tau - sum_k s_k + d . y. A row's sums go through
// vectors in a fixed order: the result does not depend on the rows' split. `scratch` holds
// 3 (K + 8) doubles.
template <typename T>
struct CertRows {
  const T* sigma;
  const T* y;
  int64_t K;
  const double* w;
  double inv_n;
  bool reverse;
  double* scratch;
};
template <typename T>
using CertRowsFn = void (*)(const CertRows<T>&, int64_t begin, int64_t end, double* ce, double* gap);

// One pass of a Sinkhorn-Knopp sweep (cpu/solvers.cpp, sinkhorn) over rows [begin, end) of
// log_p (N, K), float64, or of the scaled plan q (N, K) (docs/maths.md, "Sinkhorn-Knopp"):
// kColumnMax: out[k] = max(out[k], log_p_ik + alpha_i) over the rows;
// kColumnExpSum: out[k] += exp(log_p_ik + alpha_i - column_k) (column: the maxima), rows in order;
// kAbsorb: rows[i] = m_i = max_k(log_p_ik + column_k) and q_ik = exp(log_p_ik + column_k - m_i)
//   (column: the shifts absorbed);
// kScaling: rows[i] = s_i = sum_k q_ik column_k (column: the scalings v), then
//   out[k] += q_ik / (N s_i) (1/N: scale), the rows in order; no exp.
struct SinkhornPass {
  enum Mode { kColumnMax, kColumnExpSum, kAbsorb, kScaling };
  Mode mode;
  int64_t K;
  const double* log_p;
  double* q;
  const double* alpha;   // (N,) row shifts: the column modes
  const double* column;  // (K,): see the modes
  double* rows;          // (N,): kAbsorb, kScaling
  double* out;           // (K,): kColumnMax, kColumnExpSum, kScaling
  double scale;          // kScaling
};
using SinkhornPassFn = void (*)(const SinkhornPass&, int64_t begin, int64_t end);

// Rows [begin, end) of the fused linear self-labeling op (cpu/linear.cpp, MATH.md "RCE
// problem"): per row, sigma = softmax(l); y = `iterations` reverse-CE M-steps from y = sigma
// against the fixed fairness weights a, y <- (sigma + a y) / (1 + a . y); loss[i] =
// H(sigma, y) = -sum_k sigma_k ln y_k (sigma_k = 0 contributes 0); labels[i] = argmax_k y_k
// (the first on ties). With `grad`, l is overwritten by scale * dH/dl = scale sigma (-ln y - H)
// (y held fixed, as in the self-labeling step).
template <typename T>
struct LinearRows {
  T* l;         // (rows, K): logits in, gradients out when grad
  T* y;         // (rows, K): pseudo-labels out
  const T* a;       // (K,): fairness weights c u_k / col_k
  const T* a_unit;  // (K,): a / alpha (0 when alpha = 0)
  double alpha;     // max_k a_k
  int64_t K;
  int64_t iterations;
  T scale;
  bool grad;
  double* loss;     // (rows,)
  int64_t* labels;  // (rows,)
};
template <typename T>
using LinearRowsFn = void (*)(const LinearRows<T>&, int64_t begin, int64_t end);

// Logit tiles of linear_top_entries (cpu/sparse_rows.cpp): rows of x against a weight packed in
// panels of `tile_columns` classes (panel p: D groups of tile_columns floats, then its bias; a
// padding class has weight 0 and bias -inf). Every logit is the same sum whatever the tile, block
// or thread: acc = 0, acc += x_d w_d for d = 0, 1, ... (one fused multiply-add where the ISA has
// one), then acc + bias. Over panels [first, first + count) and `rows` rows (a multiple of
// tile_rows; the caller pads), either stores the logits (out != null: row i, panel first + q,
// column c at out[i * ldo + q * tile_columns + c]), or appends each class k < K whose logit is
// >= threshold[i] to row i's list (cand_v / cand_i at i * ld, ld >= cap + tile_columns; cand_n[i]
// counts them all, also past cap; entries past cap are not kept). Returns true where a logit is NaN.
struct LinearTile {
  const float* x;
  int64_t rows, D;
  const float* panels;
  const float* bias;
  int64_t first, count;
  float* out;
  int64_t ldo;
  const float* threshold;
  int64_t K;
  float* cand_v;
  int32_t* cand_i;
  int64_t* cand_n;
  int64_t cap, ld;
};
using LinearTileFn = bool (*)(const LinearTile&);

// Greedy k-means++ (cpu/kmeanspp.cpp), float32, over blocks [begin, end) of `lanes` points. Points are
// stored transposed a block at a time (block g: D groups of lanes floats at xt + g D lanes); norms
// and d2 (each point's squared distance to its nearest seed so far) are padded to whole blocks
// with zeros, which gives the padding points distance 0. The squared distance of a point to
// candidate t (coordinates cand[d * T + t], squared norm cnorm[t]) is
// dist = max(0, |x|^2 + |c|^2 - 2 x.c), the dot product a multiply-add per coordinate in order.
// kpp_gains_f32: what each candidate takes off the points' d2, max(0, d2 - dist) in float64,
// added to gains[t * lanes + its lane] (the caller reduces the lanes, so a sum depends on the
// blocks and the lanes only, never on threads); flags[g * T + t] = 1 where candidate t takes
// something off a point of block g, else 0.
// kpp_update_f32: d2 = min(d2, dist) for candidate t on the blocks whose flag of t is set (the
// same operations as kpp_gains_f32, so the same distances), and each lane's sum of the new d2
// over all blocks [begin, end) added in float64 to sums[lane].
struct KppDistances {
  const float* xt;
  const float* norms;
  float* d2;
  int64_t D;
  const float* cand;
  const float* cnorm;
  int64_t T;
  uint8_t* flags;
  double* gains;
};
using KppGainsFn = void (*)(const KppDistances&, int64_t begin, int64_t end);
using KppUpdateFn = void (*)(const KppDistances&, int64_t t, double* sums, int64_t begin, int64_t end);

// sparse_centre_sums_ (cpu/sparse_rows.cpp), float32 y and x: for the entries e (of b x t) whose
// class k = index[e] is in [k0, k1), in entry order, mass[k] += a and sums[k, :] += a x[e / t, :]
// with a = alpha y[e], in float64 (a multiply-add per coordinate, fused where the ISA has one).
// A class's sums are added in entry order by the one call whose range holds it, so the result
// does not depend on how the classes are split between calls.
struct CentreSums {
  double* sums;
  double* mass;
  const float* y;
  const int64_t* index;
  const float* x;
  int64_t entries, t, D;
  double alpha;
};
using CentreSumsFn = void (*)(const CentreSums&, int64_t k0, int64_t k1);

// Prediction fairness KL(u || sigma_bar) from logits (cpu/fairness.cpp), over one chunk of `rows`
// rows of a problem, in three passes. fairness_rows: each row's log-sum-exp lse_i (float64; `e` is
// scratch) and the chunk's column maxima col_k of z_ik - lse_i (in T: -inf for a column of -inf
// logits); returns true where a row's lse is NaN (a NaN or +inf logit). fairness_exps: with the
// problem's shifts col_k (its column maxima; +inf for a column of -inf logits), e_ik = exp(z_ik -
// lse_i - col_k) and their column sums S_k (float64, rows in order). The row's lse_i is applied in
// T (float32: as float32 log_softmax does). fairness_grad: per row, with R = sum_k f_k e_k,
// e_k <- scale e_k (f_k - g_k R) (the gradient, from the chunk's e).
template <typename T>
struct FairnessChunk {
  const T* z;    // (rows, K)
  T* e;          // (rows, K)
  double* lse;   // (rows,)
  T* col;        // (K,)
  double* S;     // (K,)
  int64_t rows, K;
};
template <typename T>
using FairnessRowsFn = bool (*)(const FairnessChunk<T>&);
template <typename T>
using FairnessExpsFn = void (*)(const FairnessChunk<T>&);
template <typename T>
using FairnessGradFn = void (*)(T* e, int64_t rows, int64_t K, const T* f, const T* g, T scale);

// softmax of rows [0, rows) of z (rows, K) in float64 (cpu/fairness.cpp, softmax_double): out_ik =
// exp(z_ik - max_k z_ik) / sum, the differences formed in float64 (as softmax of z.double()), the
// exps one run of vectors over the rows. A NaN or +inf logit, or a row of -inf, gives a NaN row.
template <typename T>
using SoftmaxRowsFn = void (*)(const T* z, double* out, int64_t rows, int64_t K);

struct KernelTable {
  const char* name;
  LossRowsFn rce_f32;
  LossRowsFn cce_f32;
  EmRceRowsFn<float> em_rce_f32;
  EmRceRowsFn<double> em_rce_f64;
  EmCceRowsFn<float> em_cce_f32;
  EmCceRowsFn<double> em_cce_f64;
  PgdCceRowsFn<float> pgd_cce_f32;
  PgdCceRowsFn<double> pgd_cce_f64;
  ProjectRowFn project_row;
  CertRowsFn<float> cert_fw_f32;
  CertRowsFn<double> cert_fw_f64;
  CertRowsFn<float> cert_dual_f32;
  CertRowsFn<double> cert_dual_f64;
  SinkhornPassFn sinkhorn_pass;
  LinearRowsFn<float> linear_rce_f32;
  LinearTileFn linear_tile_f32;
  int tile_rows, tile_columns;
  KppGainsFn kpp_gains_f32;
  KppUpdateFn kpp_update_f32;
  CentreSumsFn centre_sums_f32;
  int lanes;  // float32 lanes of a vector
  FairnessRowsFn<float> fairness_rows_f32;
  FairnessRowsFn<double> fairness_rows_f64;
  FairnessExpsFn<float> fairness_exps_f32;
  FairnessExpsFn<double> fairness_exps_f64;
  FairnessGradFn<float> fairness_grad_f32;
  FairnessGradFn<double> fairness_grad_f64;
  SoftmaxRowsFn<float> softmax_rows_f32;
  SoftmaxRowsFn<double> softmax_rows_f64;
};

// The table in use: the best capability this CPU supports, or ENTCLUST_CPU_CAPABILITY
// (read once, at the first call); throws std::runtime_error for a name that is unknown or
// that this CPU or build cannot run.
const KernelTable& kernels();
std::string cpu_capability();
void set_cpu_capability(const std::string& name);  // "" picks the best supported again
std::vector<std::string> compiled_cpu_capabilities();
std::vector<std::string> supported_cpu_capabilities();

}  // namespace cpu
}  // namespace entclust
