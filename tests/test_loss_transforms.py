"""The fused losses under torch.func (grad, vjp, jacrev, jacfwd, vmap, hessian) and with
second derivatives, against the plain-PyTorch reference of entclust.testing."""
import math

import pytest
import torch
import torch.autograd.forward_ad as forward_ad
import torch.func as tf

import entclust
from entclust.testing import reference

from .helpers import make_logits, make_simplex, script_main

LOSSES = {
    "rce": (entclust.reverse_cross_entropy, reference.reverse_cross_entropy),
    "cce": (entclust.collision_cross_entropy, reference.collision_cross_entropy),
}
REDUCTIONS = ["mean", "sum", "none"]

# float64 problems; y off the simplex is allowed where a transform perturbs it
X = make_logits((5, 4), torch.float64)
Y = make_simplex((5, 4), torch.float64)


def pair(name, reduction):
    fused, ref = LOSSES[name]
    return (lambda x, y: fused(x, y, reduction=reduction, sum_tol=math.inf),
            lambda x, y: ref(x, y, reduction=reduction))


def scalar(f):
    return lambda x, y: f(x, y).sum()


TRANSFORMS = {
    "grad": lambda f: tf.grad(scalar(f), argnums=(0, 1))(X, Y),
    "vjp": lambda f: tf.vjp(f, X, Y)[1](torch.ones_like(f(X, Y))),
    "jacrev": lambda f: tf.jacrev(f, argnums=(0, 1))(X, Y),
    "jacfwd": lambda f: tf.jacfwd(f, argnums=(0, 1))(X, Y),
    "jvp": lambda f: tf.jvp(f, (X, Y), (X.cos(), Y.sin()))[1],
    "hessian": lambda f: tf.hessian(scalar(f), argnums=(0, 1))(X, Y),
    "jacrev_jacrev": lambda f: tf.jacrev(tf.jacrev(scalar(f)))(X, Y),
    "jacrev_jacfwd": lambda f: tf.jacrev(tf.jacfwd(scalar(f)), argnums=1)(X, Y),
    "grad_grad": lambda f: tf.grad(lambda x: tf.grad(scalar(f), argnums=1)(x, Y).pow(2).sum())(X),
    "vmap_grad": lambda f: tf.vmap(tf.grad(scalar(f)))(X[:, None], Y[:, None]),
    # plain autograd outside a transform: backward through torch.func.grad's result
    "backward_through_grad": lambda f: _backward_through_grad(f),
    "jvp_of_grad": lambda f: tf.jvp(lambda x: tf.grad(scalar(f))(x, Y), (X,), (X.sin(),))[1],
}


def _backward_through_grad(f):
    x = X.clone().requires_grad_()
    tf.grad(scalar(f))(x, Y).pow(2).sum().backward()
    return x.grad


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSSES)
def test_transform_matches_reference(name, reduction, transform):
    fused, ref = pair(name, reduction)
    torch.testing.assert_close(TRANSFORMS[transform](fused), TRANSFORMS[transform](ref))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSSES)
def test_vmap_runs_all_problems_and_matches_reference(name, reduction):
    fused, ref = pair(name, reduction)
    x = make_logits((3, 6, 4), torch.float64)
    y = make_simplex((3, 6, 4), torch.float64)
    for in_dims, args in [((0, 0), (x, y)), ((0, None), (x, y[0])), ((None, 0), (x[0], y)),
                          ((1, 1), (x.transpose(0, 1), y.transpose(0, 1)))]:
        torch.testing.assert_close(tf.vmap(fused, in_dims=in_dims)(*args), tf.vmap(ref, in_dims=in_dims)(*args))
    nested = tf.vmap(tf.vmap(fused))(x[:, :, None], y[:, :, None])
    torch.testing.assert_close(nested, tf.vmap(tf.vmap(ref))(x[:, :, None], y[:, :, None]))


@pytest.mark.parametrize("name", LOSSES)
def test_per_sample_gradients_of_a_linear_head(name):
    """The use torch.func is for: per-sample gradients (vmap of grad) of a model's parameters."""
    fused, ref = LOSSES[name]
    weight = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    features = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def per_sample(loss):
        return tf.vmap(tf.grad(lambda w, f, t: loss((f @ w.T)[None], t[None])), in_dims=(None, 0, 0))(weight, features, Y)

    got = per_sample(fused)
    torch.testing.assert_close(got, per_sample(ref))
    assert got.shape == (5, 4, 6)


def test_second_function_only_where_something_differentiates_the_gradient(monkeypatch):
    """The backward under torch.func returns the kernel's gradient times the upstream, and only
    where a second derivative transform or autograd outside may differentiate it does it go
    through FusedGradient (whose own derivatives are the plain formulas)."""
    from entclust.ops import loss_autograd

    calls = []
    original = loss_autograd.FusedGradient.apply
    monkeypatch.setattr(loss_autograd.FusedGradient, "apply", lambda *a: calls.append(1) or original(*a))
    fused = pair("rce", "mean")[0]
    for name in ("vmap_grad", "grad", "vjp", "jacrev"):
        calls.clear()
        TRANSFORMS[name](fused)
        assert not calls, name
    for name in ("grad_grad", "hessian", "jacrev_jacrev", "backward_through_grad", "jvp_of_grad"):
        calls.clear()
        TRANSFORMS[name](fused)
        assert calls, name


@pytest.mark.parametrize("name", LOSSES)
def test_vmap_with_dim_and_single_rows(name):
    fused, ref = LOSSES[name]
    x = make_logits((3, 4, 5), torch.float64)
    y = make_simplex((3, 4, 5), torch.float64, dim=1)
    kw = dict(dim=0, reduction="none")
    torch.testing.assert_close(tf.vmap(lambda a, b: fused(a, b, **kw))(x, y), tf.vmap(lambda a, b: ref(a, b, **kw))(x, y))
    torch.testing.assert_close(tf.vmap(fused)(X, Y), tf.vmap(ref)(X, Y))  # a (K,) row each


def test_vmap_validates_every_problem():
    x = make_logits((3, 5, 4), torch.float64)
    y = make_simplex((3, 5, 4), torch.float64)
    nan = y.clone()
    nan[1, 2, 0] = math.nan
    with pytest.raises(ValueError, match="y must be finite"):
        tf.vmap(entclust.reverse_cross_entropy)(x, nan)
    off = y.clone()
    off[2, 1] *= 2
    with pytest.raises(ValueError, match="must sum to 1"):
        tf.vmap(entclust.collision_cross_entropy)(x, off)
    with pytest.raises(ValueError, match="must sum to 1"):
        tf.vmap(tf.grad(entclust.collision_cross_entropy))(x, off)


def test_vmap_of_class_index_targets():
    x = make_logits((3, 5, 4), torch.float64)
    targets = torch.randint(0, 4, (3, 5), generator=torch.Generator().manual_seed(0))
    for fused, kw in [(entclust.collision_cross_entropy, {}), (entclust.reverse_cross_entropy, {"label_smoothing": 0.1})]:
        got = tf.vmap(lambda a, t: fused(a, t, **kw))(x, targets)
        torch.testing.assert_close(got, torch.stack([fused(x[i], targets[i], **kw) for i in range(3)]))
    targets[1, 2] = 7
    with pytest.raises(ValueError, match=r"class indices must lie in 0 \.\. 3, got values in \[0, 7\]"):
        tf.vmap(entclust.collision_cross_entropy)(x, targets)
    with pytest.raises(ValueError, match="class indices must lie in"):
        tf.vmap(tf.vmap(entclust.collision_cross_entropy))(x, targets)  # a 0-d target each


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("name", LOSSES)
def test_hessian_vector_products_under_torch_func(name, reduction):
    """Reverse over reverse (vjp of grad) and forward over reverse (jvp of grad) in logits and y."""
    fused, ref = pair(name, reduction)
    results = []
    for f in (fused, ref):
        gradient = tf.grad(scalar(f), argnums=(0, 1))
        results.append(tf.vjp(gradient, X, Y)[1]((X.sin(), Y.cos())))
        results.append(tf.jvp(gradient, (X, Y), (X.cos(), Y.sin()))[1])
    torch.testing.assert_close(results[:2], results[2:])


def test_plain_double_backward_points_to_torch_func():
    """The plain path keeps only the fused gradients (the logits may be freed after the forward)."""
    logits = X.clone().requires_grad_()
    loss = entclust.collision_cross_entropy(logits, Y)
    with pytest.raises(NotImplementedError, match="create_graph=True.*torch.func"):
        torch.autograd.grad(loss, logits, create_graph=True)


@pytest.mark.parametrize("name", LOSSES)
def test_forward_mode_matches_reference(name):
    fused, ref = LOSSES[name]
    tangent = X.cos()
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(X, tangent)
        got = forward_ad.unpack_dual(fused(dual, Y, reduction="none")).tangent
        want = forward_ad.unpack_dual(ref(dual, Y, reduction="none")).tangent
    torch.testing.assert_close(got, want)


def test_forward_over_forward_raises_instead_of_returning_zeros():
    with pytest.raises(NotImplementedError, match="forward-mode AD over forward-mode AD"):
        tf.jacfwd(tf.jacfwd(lambda x: entclust.reverse_cross_entropy(x, Y)))(X)


def test_masked_classes_under_grad_and_hessian():
    """-inf logits (sigma_k = 0) contribute nothing, with zeros in y where they are."""
    x = X.clone()
    x[:, 0] = -math.inf
    y = Y.clone()
    y[:, 0] = 0
    y = y / y.sum(1, keepdim=True)
    for fused in (entclust.reverse_cross_entropy, entclust.collision_cross_entropy):
        eager = x.clone().requires_grad_()
        fused(eager, y).backward()
        torch.testing.assert_close(tf.grad(fused)(x, y), eager.grad)
        finite = tf.hessian(lambda a: fused(torch.cat([x[:, :1], a], 1), y))(x[:, 1:])
        want = tf.hessian(lambda a: fused(a, y[:, 1:]))(x[:, 1:])  # the same loss without the masked class
        torch.testing.assert_close(finite, want)


def test_plain_autograd_does_not_keep_the_logits():
    """Outside torch.func the loss's graph holds the fused gradient only: logits that nothing else
    needs are freed after the forward pass."""
    import weakref

    x = X.clone().requires_grad_()
    logits = x * 2
    alive = weakref.ref(logits)
    loss = entclust.reverse_cross_entropy(logits, Y)
    del logits
    assert alive() is None
    loss.backward()
    assert x.grad is not None


def test_vmap_is_one_kernel_call():
    x = make_logits((8, 5, 4), torch.float64)
    y = make_simplex((8, 5, 4), torch.float64)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        tf.vmap(entclust.reverse_cross_entropy)(x, y)
    calls = [e for e in prof.events() if e.name == "entclust::reverse_cross_entropy"]
    assert len(calls) == 1


@pytest.mark.parametrize("fairness", [entclust.strong_fairness, entclust.weak_fairness])
def test_fairness_under_vmap_matches_batched_and_validates(fairness):
    p = make_simplex((3, 6, 4), torch.float64)
    torch.testing.assert_close(tf.vmap(fairness)(p), fairness(p, batched=True))
    torch.testing.assert_close(tf.vmap(tf.grad(fairness))(p), torch.stack([tf.grad(fairness)(q) for q in p]))
    off = p.clone()
    off[2, 1] *= 2
    with pytest.raises(ValueError, match="rows of p must sum to 1"):
        tf.vmap(fairness)(off)
    with pytest.raises(ValueError, match="rows of p must sum to 1"):
        tf.vmap(tf.grad(fairness))(off)


def test_bench_func_runs(capsys):
    """benchmarks/bench_func.py checks fused against reference under every transform it times."""
    assert script_main("benchmarks/bench_func.py", "--quick", "--loss", "cce") == 0
    assert "| vmap grad, 4 x 16 x 10 |" in capsys.readouterr().out


def test_vmap_of_empty_problems_gives_nan_means_as_torch_does():
    x = torch.zeros(3, 0, 4, dtype=torch.float64)
    for reduction, want in (("mean", math.nan), ("sum", 0.0)):
        got = tf.vmap(lambda a, b: entclust.reverse_cross_entropy(a, b, reduction=reduction))(x, x)
        torch.testing.assert_close(got, torch.full((3,), want, dtype=torch.float64), equal_nan=True)


@pytest.mark.parametrize("method", ["rce", "cce"])
def test_self_labeling_under_grad_of_a_functional_call(method):
    """SelfLabeling (labels solved on the batch, then the fused loss) differentiated by
    torch.func.grad over a module's parameters gives loss.backward()'s gradients."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 5).double()
    x = torch.randn(40, 8, dtype=torch.float64)
    criterion = entclust.SelfLabeling(method)
    params = dict(head.named_parameters())
    got = tf.grad(lambda p: criterion(torch.func.functional_call(head, p, (x,))))(params)
    criterion(head(x)).backward()
    for name, parameter in head.named_parameters():
        torch.testing.assert_close(got[name], parameter.grad)


def test_class_index_targets_compile_fullgraph():
    """The bounds check of class-index targets is eager-only, as the losses' validation."""
    targets = torch.tensor([0, 3, 1, 2, 2, 0])
    fn = torch.compile(lambda a: entclust.collision_cross_entropy(a, targets), backend="aot_eager", fullgraph=True)
    x = make_logits((6, 4))
    torch.testing.assert_close(fn(x), entclust.collision_cross_entropy(x, targets))
