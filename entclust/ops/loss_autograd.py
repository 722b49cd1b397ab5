"""Autograd of the fused loss ops ``torch.ops.entclust.{reverse,collision}_cross_entropy``.

The ops are *fused*: when an input needs a gradient, the forward kernel writes that gradient
too (for a unit upstream gradient, already scaled by the reduction), so the backward is free
when the upstream gradient is 1 and one multiplication otherwise. Two ways in:

- the raw ops carry their formula through ``torch.library.register_autograd``, which plain
  autograd and ``torch.compile`` use (the public losses call them so in plain eager code);
- :class:`FusedLoss`, the same op as a ``torch.autograd.Function`` with ``setup_context``,
  ``jvp`` and ``vmap``, which ``torch.func``'s transforms need (``grad``, ``vmap``, ``jacrev``,
  ``jacfwd``, ``hessian``: they refuse the ops' registered formula). Its ``vmap`` puts the
  rows of every vmapped problem into one kernel call; its forward validates inside, on real
  tensors, where a data-dependent check on a batched tensor could not run.

Second derivatives (``torch.func.hessian``, ``grad`` of ``grad``, ``jacrev`` of ``jacrev``) go
through :class:`FusedLoss`: when its backward runs with grad mode on and something may
differentiate the gradient again (``_differentiated_again``, decided at the forward), the
fused gradient is the output of :class:`FusedGradient`, whose value is the kernel's and whose
own derivatives are those of the same gradient in plain PyTorch ops (:func:`plain_gradients`),
computed only when something differentiates through it; that needs the logits and y, which :class:`FusedLoss`
keeps. The raw ops keep only the gradients (the logits can be freed after the forward pass, as
the fusion intends) and refuse ``create_graph=True``. Forward mode over forward mode cannot work
(PyTorch runs a Function's ``jvp`` with forward-mode AD off) and raises.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.autograd.forward_ad as forward_ad
from torch._C._functorch import (TransformType, get_interpreter_stack, get_unwrapped, is_functorch_wrapped_tensor,
                                 is_gradtrackingtensor)

from .. import _C  # noqa: F401  (loads the library: the ops must exist to register their autograd)
from .checks import check_loss_result

REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
LOSS_OPS = ("reverse_cross_entropy", "collision_cross_entropy")
_DERIVATIVE_TRANSFORMS = (TransformType.Grad, TransformType.Jvp)


def is_unit(g: torch.Tensor) -> bool:
    """True when ``g`` is a concrete CPU scalar equal to 1 (the usual ``loss.backward()``); never
    inspects values while tracing, under functorch transforms, for tensor subclasses, or on
    an accelerator (where reading the value would synchronise the stream)."""
    if type(g) is not torch.Tensor or g.numel() != 1 or g.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    if is_functorch_wrapped_tensor(g):
        return False
    return g.item() == 1.0


def _has_tangent(t: torch.Tensor) -> bool:
    return forward_ad.unpack_dual(t).tangent is not None


def _differentiated(t: torch.Tensor) -> bool:
    """Under one torch.func derivative transform: whether it differentiates ``t`` (its wrapper of
    that level, found under any vmap wrappers, requires grad or carries a tangent)."""
    while is_functorch_wrapped_tensor(t):
        if is_gradtrackingtensor(t):
            return t.requires_grad or _has_tangent(t)
        t = get_unwrapped(t)
    return False


def derivative_flags(logits: torch.Tensor, y: torch.Tensor) -> tuple[bool, bool, bool]:
    """``(transform, want_logits, want_y)``: whether a torch.func transform is active or an input
    carries a forward-mode tangent (then the losses go through :class:`FusedLoss`; never while
    compiling), and whether the forward pass must write each input's gradient: it requires grad
    (grad mode on) or carries a tangent; under one torch.func derivative transform, that
    transform differentiates it; under several (higher derivatives), always."""
    grad_on = torch.is_grad_enabled()
    wants = [grad_on and logits.requires_grad, grad_on and y.requires_grad]
    if torch.compiler.is_compiling():
        return False, *wants
    stack = get_interpreter_stack()
    tangents = [_has_tangent(logits), _has_tangent(y)]
    if not stack and not any(tangents):  # plain eager: the common case
        return False, *wants
    levels = sum(level.key() in _DERIVATIVE_TRANSFORMS for level in stack or ())
    if levels > 1:
        return True, True, True
    if levels == 1:
        return True, *(_differentiated(t) for t in (logits, y))
    return True, *(w or t for w, t in zip(wants, tangents))


def under_transform(*tensors: torch.Tensor) -> bool:
    """Whether a torch.func transform is active or one of ``tensors`` carries a forward-mode
    tangent (never while compiling)."""
    if torch.compiler.is_compiling():
        return False
    return bool(get_interpreter_stack()) or any(_has_tangent(t) for t in tensors)


def check_forward_mode() -> None:
    """Refuse forward mode over forward mode (``jacfwd(jacfwd(f))``): PyTorch runs a Function's
    ``jvp`` with forward-mode AD off, so an outer ``jvp`` would see a zero tangent, not an error."""
    stack = get_interpreter_stack() or []
    if sum(level.key() == TransformType.Jvp for level in stack) > 1:
        raise NotImplementedError("entclust's fused losses do not support forward-mode AD over forward-mode AD "
                                  "(e.g. jacfwd(jacfwd(f))): PyTorch does not differentiate a custom Function's jvp; "
                                  "use torch.func.hessian (forward over reverse) or jacrev(jacrev(f))")


def plain_gradients(name: str, logits: torch.Tensor, y: torch.Tensor, reduction: int):
    """The gradients of the loss in plain (twice differentiable) PyTorch ops: for every row
    ``(d loss_i / d logits_i, d loss_i / d y_i)``, divided by N for the mean. Formulas:
    docs/maths.md; a class with ``sigma_k = 0`` contributes nothing, as in the kernel."""
    sigma = torch.softmax(logits, dim=-1)
    alive = sigma > 0
    if name == "reverse_cross_entropy":
        y_alive = torch.where(alive, y, 1.0)
        log_y = torch.where(alive, torch.log(y_alive), 0.0)
        entropy = -(sigma * log_y).sum(-1, keepdim=True)
        g_logits = sigma * (-log_y - entropy)
        g_y = torch.where(alive, -sigma / y_alive, 0.0)
    else:
        overlap = (sigma * y).sum(-1, keepdim=True)
        g_logits = sigma * (1 - y / overlap)
        g_y = -sigma / overlap
    if reduction == 1:
        g_logits, g_y = g_logits / logits.shape[0], g_y / logits.shape[0]
    return g_logits, g_y


def _upstream(g: torch.Tensor, reduction: int) -> torch.Tensor:
    return g.unsqueeze(-1) if reduction == 0 else g


def _scaled_plain_gradients(name: str, reduction: int):
    def gradients(logits, y, upstream):
        up = _upstream(upstream, reduction)
        g_logits, g_y = plain_gradients(name, logits, y, reduction)
        return g_logits * up, g_y * up
    return gradients


class FusedGradient(torch.autograd.Function):
    """``(g_logits, g_y) * upstream``: the value from the kernel's gradients, the derivatives in
    ``logits``, ``y`` and ``upstream`` from :func:`plain_gradients` (second derivatives of the loss).
    A gradient that was not written (empty) stays empty."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits, y, g_logits, g_y, upstream, name, reduction):
        up = _upstream(upstream, reduction)
        return tuple(g * up if g.numel() else g.new_empty(0) for g in (g_logits, g_y))

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, y, g_logits, g_y, upstream, name, reduction = inputs
        ctx.name, ctx.reduction, ctx.written = name, reduction, (g_logits.numel() > 0, g_y.numel() > 0)
        ctx.set_materialize_grads(False)  # a gradient that nothing differentiates stays None
        ctx.save_for_backward(logits, y, upstream)
        ctx.save_for_forward(logits, y, upstream)

    @staticmethod
    def backward(ctx, grad_gl, grad_gy):
        if grad_gl is None and grad_gy is None:
            return (None,) * 7
        logits, y, upstream = ctx.saved_tensors
        cotangents = tuple(torch.zeros_like(like) if g is None or g.shape != like.shape else g
                           for g, like in ((grad_gl, logits), (grad_gy, y)))
        _, pullback = torch.func.vjp(_scaled_plain_gradients(ctx.name, ctx.reduction), logits, y, upstream)
        d_logits, d_y, d_upstream = pullback(cotangents)
        return d_logits, d_y, None, None, d_upstream, None, None

    @staticmethod
    def jvp(ctx, t_logits, t_y, t_gl, t_gy, t_upstream, *_):
        check_forward_mode()
        primals = ctx.saved_tensors
        tangents = tuple(torch.zeros_like(p) if t is None else t for p, t in zip(primals, (t_logits, t_y, t_upstream)))
        out = torch.func.jvp(_scaled_plain_gradients(ctx.name, ctx.reduction), primals, tangents)[1]
        return tuple(o if written else o.new_empty(0) for o, written in zip(out, ctx.written))


def _gradients(ctx, needed, upstream):
    """The gradients for ``logits`` and ``y`` (those in ``needed``) times ``upstream``, from what
    the forward saved: ``(logits, y, g_logits, g_y)`` (:class:`FusedLoss`) or ``(g_logits, g_y)``
    (the raw ops, which keep no more than the gradients: first derivatives only); ``ctx`` has
    ``name``, ``reduction``, ``computed`` (which gradients the kernel wrote)."""
    for index, need in enumerate(needed):
        if need and not ctx.computed[index]:
            which = ("logits", "y")[index]
            raise RuntimeError(f"the gradient for {which} was not computed in the forward call "
                               f"(grad_{which}=False); call the op with grad_{which}=True when {which} requires grad")
    *inputs, g_logits, g_y = ctx.saved_tensors
    first_order = not torch.is_grad_enabled() and not is_functorch_wrapped_tensor(upstream)
    # under torch.func, FusedLoss decided at the forward (where every transform is in the stack)
    # whether anything may differentiate the gradient; if not, it needs no graph of its own either
    if first_order or (inputs and not ctx.differentiated_again):
        unit = ctx.reduction != 0 and is_unit(upstream)
        up = _upstream(upstream, ctx.reduction)
        return [None if not need else g if unit else g * up for g, need in zip((g_logits, g_y), needed)]
    # grad mode on in the backward (create_graph=True, torch.func.grad): differentiable gradients
    if not inputs:
        raise NotImplementedError(
            "entclust losses keep only their fused gradients for plain autograd (no copy of the logits), so "
            "backward with create_graph=True (double backward) is not available there; for second derivatives "
            "call the loss under torch.func (torch.func.hessian, torch.func.grad of torch.func.grad, jacrev of "
            "jacrev), which keeps what they need")
    logits, y = inputs
    # contiguous: an upstream that is an expanded view (a sum's) would be written into by
    # forward-mode AD over this function (torch.func.hessian)
    g_logits, g_y = (g if need else g.new_empty(0) for g, need in zip((g_logits, g_y), needed))
    out = FusedGradient.apply(logits, y, g_logits, g_y, upstream.contiguous(), ctx.name, ctx.reduction)
    return [g if need else None for g, need in zip(out, needed)]


def _differentiated_again(logits: torch.Tensor, y: torch.Tensor) -> bool:
    """At the forward of :class:`FusedLoss` (where the stack holds every transform; a ``vjp``'s
    backward runs after its own level has left it): whether something may differentiate the
    gradient its backward returns, which must then be :class:`FusedGradient`'s. That is a second
    derivative transform (``grad`` of ``grad``, ``hessian``, ``jacrev`` of ``jacrev``), or plain
    autograd or forward-mode AD outside the transforms (the logits' or y's unwrapped tensor
    requires grad or carries a tangent). Otherwise, as in per-sample gradients ``vmap(grad(f))``
    of a head whose weight does not require grad outside, the gradient is the kernel's times the
    upstream: a product the transform still differentiates in the upstream, without a second
    Function (0.45 ms of a 1.3 ms call at 256 rows x 10 classes)."""
    if sum(level.key() in _DERIVATIVE_TRANSFORMS for level in get_interpreter_stack() or ()) > 1:
        return True
    for t in (logits, y):
        while is_functorch_wrapped_tensor(t):
            t = get_unwrapped(t)
        if t.requires_grad or _has_tangent(t):
            return True
    return False


def _save(ctx, name, reduction, computed, output, *inputs):
    _, stats, g_logits, g_y = output
    ctx.name, ctx.reduction, ctx.computed = name, reduction, computed
    ctx.mark_non_differentiable(stats, g_logits, g_y)
    # the backward reads the loss's gradient only: left on, autograd would fill a zero tensor for
    # each of the other outputs first, two of them N x K (2.6 of 5.4 ms at 4096 x 1000)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*inputs, g_logits, g_y)


# The raw ops' registration (plain autograd, torch.compile).
def _fake_loss(logits, y, reduction, grad_logits, grad_y, sum_tol):
    n = logits.shape[0]
    loss = logits.new_empty((n,)) if reduction == 0 else logits.new_empty(())
    stats = logits.new_empty((3, n), dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32)
    gl = torch.empty_like(logits, memory_format=torch.contiguous_format) if grad_logits else logits.new_empty((0,))
    gy = torch.empty_like(y, memory_format=torch.contiguous_format) if grad_y else y.new_empty((0,))
    return loss, stats, gl, gy


def _op_setup_context(name, ctx, inputs, output):
    _, _, reduction, grad_logits, grad_y, _ = inputs
    _save(ctx, name, reduction, (grad_logits, grad_y), output)


def _op_backward(ctx, g_loss, *_):
    if g_loss is None:  # (not materialised: no gradient reached the loss)
        return None, None, None, None, None, None
    g_logits, g_y = _gradients(ctx, ctx.needs_input_grad[:2], g_loss)
    return g_logits, g_y, None, None, None, None


for _name in LOSS_OPS:
    torch.library.register_fake(f"entclust::{_name}")(_fake_loss)
    torch.library.register_autograd(f"entclust::{_name}", _op_backward,
                                    setup_context=functools.partial(_op_setup_context, _name))


class FusedLoss(torch.autograd.Function):
    """The op ``name`` for torch.func: ``(loss, stats, g_logits, g_y)`` as the op returns them
    (only ``loss`` is differentiable), with the op's input checks when ``validate``."""

    @staticmethod
    def forward(logits, y, name, reduction, want_logits, want_y, sum_tol, validate):
        out = getattr(torch.ops.entclust, name)(logits, y, reduction, want_logits, want_y, sum_tol)
        if validate and not torch.compiler.is_compiling():
            check_loss_result(name, logits, y, out[1], sum_tol)
        return out

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, y, name, reduction, want_logits, want_y, _, _ = inputs
        _save(ctx, name, reduction, (want_logits, want_y), output, logits, y)
        ctx.differentiated_again = _differentiated_again(logits, y)
        ctx.save_for_forward(logits, y, *output[2:])

    @staticmethod
    def backward(ctx, g_loss, *_):
        if g_loss is None:
            return (None,) * 8
        g_logits, g_y = _gradients(ctx, ctx.needs_input_grad[:2], g_loss)
        return g_logits, g_y, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, t_logits, t_y, *_):
        check_forward_mode()
        logits = ctx.saved_tensors[0]
        one = logits.new_ones((logits.shape[0],) if ctx.reduction == 0 else ())
        # an input without a tangent in the forward (its gradient not written) may get zeros here
        tangents = [t if computed else None for t, computed in zip((t_logits, t_y), ctx.computed)]
        g_logits, g_y = _gradients(ctx, [t is not None for t in tangents], one)
        dims = -1 if ctx.reduction == 0 else None
        tangent = sum((g * t).sum(dims) for g, t in zip((g_logits, g_y), tangents) if t is not None)
        return tangent, None, None, None

    @staticmethod
    def vmap(info, in_dims, logits, y, name, reduction, want_logits, want_y, sum_tol, validate):
        size = info.batch_size
        logits, y = (t.movedim(d, 0) if d is not None else t.expand(size, *t.shape)
                     for t, d in ((logits, in_dims[0]), (y, in_dims[1])))
        n, k = logits.shape[1:]
        loss, stats, g_logits, g_y = FusedLoss.apply(logits.reshape(size * n, k), y.reshape(size * n, k), name, 0,
                                                     want_logits, want_y, sum_tol, validate)
        scale = (1.0 / n if n else math.nan) if reduction == 1 else 1.0  # the mean over zero rows is NaN
        loss = loss.view(size, n).sum(1) * scale if reduction else loss.view(size, n)
        grads = [g if not g.numel() else g.view(size, n, k) * scale if scale != 1.0 else g.view(size, n, k)
                 for g in (g_logits, g_y)]
        return (loss, stats.view(3, size, n), *grads), (0, 1, *(0 if g.numel() else None for g in grads))
