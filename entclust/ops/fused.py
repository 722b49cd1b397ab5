"""Typed access to the compiled ops ``torch.ops.entclust.*``: fake (meta) kernels for
torch.compile and autograd formulas. The public, validated API is in :mod:`entclust.losses` and :mod:`entclust.solvers`.

The loss ops are *fused* (the forward writes the gradients: half the memory traffic of
recomputing softmax in the backward); their autograd is in :mod:`.loss_autograd`.
"""
from __future__ import annotations

import math

import torch

from .. import _C  # noqa: F401  (loads the library: registers torch.ops.entclust.*)

from .loss_autograd import is_unit


def reverse_cross_entropy_kernel(logits: torch.Tensor, y: torch.Tensor, reduction: int, grad_logits: bool,
                                 grad_y: bool, sum_tol: float):
    """Raw fused op on ``(N, K)`` inputs; returns ``(loss, stats, grad_logits, grad_y)``."""
    return torch.ops.entclust.reverse_cross_entropy(logits, y, reduction, grad_logits, grad_y, sum_tol)


def collision_cross_entropy_kernel(logits: torch.Tensor, y: torch.Tensor, reduction: int, grad_logits: bool,
                                   grad_y: bool, sum_tol: float):
    """Raw fused op on ``(N, K)`` inputs; returns ``(loss, stats, grad_logits, grad_y)``."""
    return torch.ops.entclust.collision_cross_entropy(logits, y, reduction, grad_logits, grad_y, sum_tol)


def _fake_em(sigma):
    b = sigma.shape[0]
    return (torch.empty_like(sigma, memory_format=torch.contiguous_format),
            sigma.new_empty((b,), dtype=torch.int64), sigma.new_empty((b,), dtype=torch.bool))


@torch.library.register_fake("entclust::em_rce")
def _fake_em_rce(sigma, prior, lam, tol, max_iter, y0):
    return _fake_em(sigma)


@torch.library.register_fake("entclust::em_cce")
def _fake_em_cce(sigma, prior, lam, tol, max_iter, newton_tol, newton_max_iter, y0):
    return _fake_em(sigma)


@torch.library.register_fake("entclust::pgd_cce")
def _fake_pgd_cce(sigma, prior, lam, step, tol, max_iter, y0):
    return _fake_em(sigma)


@torch.library.register_fake("entclust::project_simplex")
def _fake_project_simplex(v):
    return torch.empty_like(v, memory_format=torch.contiguous_format)


@torch.library.register_fake("entclust::certificate")
def _fake_certificate(sigma, y, prior, lam, problem):
    b = sigma.shape[0]
    return sigma.new_empty((b,), dtype=torch.float64), sigma.new_empty((b,), dtype=torch.float64)


@torch.library.register_fake("entclust::duality_gap")
def _fake_duality_gap(sigma, y, prior, lam, problem=0):
    return sigma.new_empty((sigma.shape[0],), dtype=torch.float64)


@torch.library.register_fake("entclust::sinkhorn")
def _fake_sinkhorn(log_p, log_u, log_beta, tol, max_iter):
    b, n, k = log_p.shape
    return (log_p.new_empty((b, n)), log_p.new_empty((b, k)), log_p.new_empty((b,), dtype=torch.int64),
            log_p.new_empty((b,)))


@torch.library.register_fake("entclust::em_rce_rows")
def _fake_em_rce_rows(sigma, y, weights):
    return torch.empty_like(y, memory_format=torch.contiguous_format), weights.new_empty(weights.shape)


@torch.library.register_fake("entclust::top_entries")
def _fake_top_entries(logits, top):
    return logits.new_empty((logits.shape[0], top)), logits.new_empty((logits.shape[0], top), dtype=torch.int64)


@torch.library.register_fake("entclust::linear_top_entries")
def _fake_linear_top_entries(x, weight, bias, top):
    return x.new_empty((x.shape[0], top)), x.new_empty((x.shape[0], top), dtype=torch.int64)


@torch.library.register_fake("entclust::sparse_em_rows")
def _fake_sparse_em_rows(values, index, rest, cu, iterations, update):
    return torch.empty_like(values, memory_format=torch.contiguous_format), rest.new_empty(rest.shape)


@torch.library.register_fake("entclust::sparse_centre_sums_")
def _fake_sparse_centre_sums_(sums, mass, y, index, x, alpha):
    return None


@torch.library.register_fake("entclust::kmeans_plusplus")
def _fake_kmeans_plusplus(points, d2, draws):
    return points.new_empty((draws.shape[0],), dtype=torch.int64), torch.empty_like(d2)


@torch.library.register_fake("entclust::linear_rce")
def _fake_linear_rce(x, weight, bias, fair, iterations, reduction, grad, block_rows):
    b, k = x.shape[0], weight.shape[0]
    return (x.new_empty(()), x.new_empty((b,), dtype=torch.int64), x.new_empty((k,), dtype=torch.float64),
            torch.empty_like(x, memory_format=torch.contiguous_format) if grad else x.new_empty((0,)),
            torch.empty_like(weight, memory_format=torch.contiguous_format) if grad else x.new_empty((0,)),
            x.new_empty((k,)) if grad and bias is not None else x.new_empty((0,)))


def _linear_setup_context(ctx, inputs, output):
    _, _, bias, _, _, _, grad, _ = inputs
    _, labels, columns, gx, gw, gb = output
    ctx.computed = grad
    ctx.mark_non_differentiable(labels, columns, gx, gw, gb)
    ctx.set_materialize_grads(False)  # no zero tensors for the outputs the backward does not read
    ctx.save_for_backward(gx, gw, gb)


def _linear_backward(ctx, g_loss, *_):
    if g_loss is None:
        return (None,) * 8
    if torch.is_grad_enabled():
        raise NotImplementedError("linear_rce has first derivatives only: backward with create_graph=True "
                                  "(double backward) through it is not implemented")
    if any(ctx.needs_input_grad[:3]) and not ctx.computed:
        raise RuntimeError("the gradients of linear_rce were not computed in the forward call (grad=False); call "
                           "the op with grad=True when x, weight or bias requires grad")
    unit = is_unit(g_loss)
    grads = [None] * 8
    for index, saved in enumerate(ctx.saved_tensors):
        if ctx.needs_input_grad[index]:
            grads[index] = saved if unit else saved * g_loss
    return tuple(grads)


torch.library.register_autograd("entclust::linear_rce", _linear_backward, setup_context=_linear_setup_context)


def linear_rce_kernel(x: torch.Tensor, weight: torch.Tensor, bias, fair: torch.Tensor, iterations: int,
                      reduction: int, grad: bool, block_rows: int = 0):
    """Raw fused linear self-labeling op: ``(loss, labels, columns, grad_x, grad_weight, grad_bias)``."""
    return torch.ops.entclust.linear_rce(x, weight, bias, fair, iterations, reduction, grad, block_rows)


@torch.library.register_fake("entclust::prediction_fairness")
def _fake_prediction_fairness(logits, prior, grad):
    return (logits.new_empty((logits.shape[0],)),
            torch.empty_like(logits, memory_format=torch.contiguous_format) if grad else logits.new_empty((0,)))


def _fairness_setup_context(ctx, inputs, output):
    logits, prior, grad = inputs
    _, g = output
    ctx.computed = grad
    ctx.mark_non_differentiable(g)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(logits, prior, g)


def plain_fairness_gradient(logits: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """The gradient of each problem's ``KL(u || sigma_bar)`` in its logits ``(B, N, K)`` in plain
    (twice differentiable) PyTorch ops: ``-(1/N) (r_ik - sigma_ik sum_j r_ij)``, ``r_ik = u_k
    sigma_ik / sigma_bar_k`` (0 where ``u_k = 0``)."""
    log_sigma = torch.log_softmax(logits, -1)
    log_bar = torch.logsumexp(log_sigma, -2, keepdim=True) - math.log(logits.shape[-2])
    u = prior.to(logits.dtype)
    r = torch.where(u > 0, u * torch.exp(log_sigma - log_bar), 0.0)
    return -(r - log_sigma.exp() * r.sum(-1, keepdim=True)) / logits.shape[-2]


def _fairness_backward(ctx, g_value, _):
    if g_value is None:
        return None, None, None
    logits, prior, g = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: a gradient that is itself differentiable
        return plain_fairness_gradient(logits, prior) * g_value[:, None, None], None, None
    if not ctx.computed:
        raise RuntimeError("the gradient of prediction_fairness was not computed in the forward call (grad=False); "
                           "call the op with grad=True when the logits require grad")
    # always a new tensor: handing autograd the saved gradient itself (as the loss ops do for a unit
    # upstream) lets a reshape's backward pass a view of it into a leaf's .grad, which a second
    # backward of a retained graph then adds to in place
    return g * g_value.to(g.dtype)[:, None, None], None, None


torch.library.register_autograd("entclust::prediction_fairness", _fairness_backward,
                                setup_context=_fairness_setup_context)


def prediction_fairness_kernel(logits: torch.Tensor, prior: torch.Tensor, grad: bool):
    """Raw op (CPU) on ``(B, N, K)`` float32/float64 logits and the float64 prior ``(K,)``: each
    problem's ``KL(u || sigma_bar)`` ``(B,)`` and, with ``grad``, its gradient in the logits
    (else an empty tensor)."""
    return torch.ops.entclust.prediction_fairness(logits, prior, grad)


@torch.library.register_fake("entclust::softmax_double")
def _fake_softmax_double(logits):
    return logits.new_empty(logits.shape, dtype=torch.float64)


def softmax_double(logits: torch.Tensor) -> torch.Tensor:
    """``torch.softmax(logits.double(), -1)`` of the detached logits, the float64 sigma the pseudo-label
    solvers take: the CPU kernel for float32 and float64 logits (no float64 copy of the logits, the
    exps in vectors: 4.7-6.3x PyTorch's speed at 10 x 250 x 10, docs/benchmarks.md), PyTorch elsewhere."""
    logits = logits.detach()
    if logits.device.type == "cpu" and logits.dtype in (torch.float32, torch.float64):
        return torch.ops.entclust.softmax_double(logits)
    return torch.softmax(logits.double(), dim=-1)


def argmax_rows(t: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``t.argmax(dim)`` as ``torch.max(t, dim).indices``: the same indices (the first maximum; a
    NaN counts as the maximum), 1.4-3.2x faster on the CPU in torch 2.13 (10 x 250 x 10: 28 against
    89 us; 4096 x 1000: 1.3 against 3.2 ms), where argmax along a short last dim is slow."""
    return torch.max(t, dim).indices


def em_rce_rows_kernel(sigma: torch.Tensor, y: torch.Tensor, weights: torch.Tensor):
    """Raw block M-step op (CPU): ``(y_new (M, K), column sums (K,) float64)`` of
    ``y_ik <- (sigma_ik + w_k y_ik) / (1 + sum_m w_m y_im)``."""
    return torch.ops.entclust.em_rce_rows(sigma, y, weights)


def top_entries_kernel(logits: torch.Tensor, top: int):
    """Raw op (CPU): the ``top`` largest entries of each row of ``logits`` ``(b, K)``, unsorted, ties
    at the cut to the lower class: ``(values (b, top), index (b, top) int64)``."""
    return torch.ops.entclust.top_entries(logits, top)


def linear_top_entries_kernel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, top: int):
    """Raw op (CPU, float32): :func:`top_entries_kernel` of the logits ``x @ weight.T + bias``
    (``x`` ``(b, D)``, ``weight`` ``(K, D)``, ``bias`` ``(K,)``) without forming the ``b x K`` of them;
    every logit is summed over ``d`` in order and then added to its bias, the same number in every
    block and thread (it may differ from ``torch.addmm``'s in the last bits)."""
    return torch.ops.entclust.linear_top_entries(x, weight, bias, top)


def sparse_em_rows_kernel(values: torch.Tensor, index: torch.Tensor, rest: torch.Tensor, cu: torch.Tensor,
                          iterations: int, update: bool = True):
    """Raw op (CPU): reverse-CE pseudo-labels on each row's entries ``values`` at the classes
    ``index`` ``(b, top)``, against the column sums ``rest`` ``(K,)`` float64 of the other rows
    (``cu = c u``); ``(y (b, top), rest + column sums of y)``. Not ``update``: the weights of ``rest``
    alone, held fixed."""
    return torch.ops.entclust.sparse_em_rows(values, index, rest, cu, iterations, update)


def sparse_centre_sums_kernel(sums: torch.Tensor, mass: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                              x: torch.Tensor, alpha: float = 1.0) -> None:
    """Raw op (CPU), in place: ``sums[index_ij] += alpha y_ij x_i``, ``mass[index_ij] += alpha y_ij``
    (``sums`` ``(K, D)`` and ``mass`` ``(K,)`` contiguous float64)."""
    torch.ops.entclust.sparse_centre_sums_(sums, mass, y, index, x, alpha)


def kmeans_plusplus_kernel(points: torch.Tensor, d2: torch.Tensor,
                           draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw op (CPU): ``draws.shape[0]`` more greedy k-means++ seeds of ``points`` ``(m, D)``, given
    ``d2`` ``(m,)`` (the points' dtype), each point's squared distance to its nearest seed so far:
    each seed the best of ``draws.shape[1]`` candidates drawn by the uniform numbers ``draws``
    ``(seeds, trials)`` float64. Returns ``(indices (seeds,), d2 after them)``; ``d2`` is not
    modified, and calls that carry d2 from one to the next pick the seeds of one call."""
    return torch.ops.entclust.kmeans_plusplus(points, d2, draws)


def certificate_kernel(sigma: torch.Tensor, y: torch.Tensor, prior: torch.Tensor, lam: float, problem: int):
    """Raw certificate op on ``(B, N, K)``: ``(objective, fw_gap)``, each ``(B,)`` float64; problem 0 reverse CE, 1 collision CE."""
    return torch.ops.entclust.certificate(sigma, y, prior, lam, problem)


def duality_gap_kernel(sigma: torch.Tensor, y: torch.Tensor, prior: torch.Tensor, lam: float, problem: int = 0):
    """Raw duality-gap op on ``(B, N, K)`` (CPU): ``(B,)`` float64; problem 0 reverse CE, 1 collision CE."""
    return torch.ops.entclust.duality_gap(sigma, y, prior, lam, problem)


def em_rce_kernel(sigma: torch.Tensor, prior: torch.Tensor, lam: float, tol: float, max_iter: int, y0=None):
    """Raw EM op on ``(B, N, K)``; returns ``(y, iterations, converged)``."""
    return torch.ops.entclust.em_rce(sigma, prior, lam, tol, max_iter, y0)


def em_cce_kernel(sigma: torch.Tensor, prior: torch.Tensor, lam: float, tol: float, max_iter: int, newton_tol: float,
                  newton_max_iter: int, y0=None):
    """Raw EM op for collision CE on ``(B, N, K)``; returns ``(y, iterations, converged)``."""
    return torch.ops.entclust.em_cce(sigma, prior, lam, tol, max_iter, newton_tol, newton_max_iter, y0)


def pgd_cce_kernel(sigma: torch.Tensor, prior: torch.Tensor, lam: float, step: float, tol: float, max_iter: int, y0=None):
    """Raw projected-gradient op for collision CE on ``(B, N, K)``; returns ``(y, iterations, converged)``."""
    return torch.ops.entclust.pgd_cce(sigma, prior, lam, step, tol, max_iter, y0)


def sinkhorn_kernel(log_p: torch.Tensor, log_u: torch.Tensor, log_beta: torch.Tensor, tol: float, max_iter: int):
    """Raw Sinkhorn-Knopp op (CPU), float64: from the column shifts ``log_beta`` ``(B, K)``, the
    log-domain sweeps of ``log_p`` ``(B, N, K)`` towards row sums 1/N and column sums ``exp(log_u)``,
    each problem until its relative row-sum error is ``<= tol`` or ``max_iter`` sweeps. Returns
    ``(log_alpha (B, N), log_beta (B, K), sweeps (B,) int64, error (B,))``; the inputs are not
    modified. The sweeps run on the plan rescaled by absorbed shifts (docs/maths.md,
    "Sinkhorn-Knopp"): one more ``N x K`` float64 buffer for each problem being solved."""
    return torch.ops.entclust.sinkhorn(log_p, log_u, log_beta, tol, max_iter)


def project_simplex_kernel(v: torch.Tensor) -> torch.Tensor:
    """Raw projection op on ``(M, K)`` rows."""
    return torch.ops.entclust.project_simplex(v)
