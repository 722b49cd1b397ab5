"""Hypothesis property tests: inequalities the losses satisfy for every input."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import entclust
from entclust.testing import reference

from .helpers import every_cpu_capability  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("every_cpu_capability")

problems = st.tuples(
    st.integers(1, 6),  # N
    st.integers(1, 40),  # K
    st.floats(0.1, 8.0),  # logit scale
    st.floats(0.1, 6.0),  # label temperature
    st.integers(0, 2**31 - 1),
)


def draw(n, k, scale, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.softmax(temperature * torch.randn(n, k, generator=g, dtype=torch.float64), 1)
    return logits, y


@settings(max_examples=60, deadline=None)
@given(problems)
def test_kernels_equal_reference(problem):
    logits, y = draw(*problem)
    for fused, ref in [(entclust.reverse_cross_entropy, reference.reverse_cross_entropy),
                       (entclust.collision_cross_entropy, reference.collision_cross_entropy)]:
        torch.testing.assert_close(fused(logits, y, reduction="none"), ref(logits, y, reduction="none"),
                                   rtol=1e-10, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(problems)
def test_entropy_le_collision_le_reverse_bounds(problem):
    """Jensen: H2(y, sigma) = -ln E_sigma[y] <= E_sigma[-ln y] = H(sigma, y); Gibbs:
    H(sigma, y) >= H(sigma); and H2 >= 0 for normalised y."""
    logits, y = draw(*problem)
    rce = entclust.reverse_cross_entropy(logits, y, reduction="none")
    cce = entclust.collision_cross_entropy(logits, y, reduction="none")
    entropy = entclust.shannon_entropy(torch.softmax(logits, 1))
    assert torch.all(cce >= -1e-12)
    assert torch.all(cce <= rce + 1e-9)
    assert torch.all(rce >= entropy - 1e-9)


@settings(max_examples=40, deadline=None)
@given(problems)
def test_gradient_rows_of_logits_sum_to_zero(problem):
    """Both losses are invariant to adding a constant to a row of logits."""
    logits, y = draw(*problem)
    for fused in (entclust.reverse_cross_entropy, entclust.collision_cross_entropy):
        x = logits.clone().requires_grad_()
        fused(x, y, reduction="sum").backward()
        assert torch.allclose(x.grad.sum(1), torch.zeros(x.shape[0], dtype=x.dtype), atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(problems, st.floats(0.0, 30.0))
def test_renyi_is_non_increasing_in_alpha(problem, alpha):
    logits, _ = draw(*problem)
    p = torch.softmax(logits, 1)
    lo = entclust.renyi_entropy(p, alpha)
    hi = entclust.renyi_entropy(p, alpha + 0.5)
    assert torch.all(hi <= lo + 1e-9)
    assert torch.all(entclust.renyi_entropy(p, math.inf) <= hi + 1e-9)


@settings(max_examples=40, deadline=None)
@given(problems)
def test_mi_loss_is_non_positive_and_fairness_non_negative(problem):
    logits, _ = draw(*problem)
    assert entclust.mi_loss(logits) <= 1e-12
    p = torch.softmax(logits, 1)
    assert entclust.strong_fairness(p) >= -1e-12
    assert entclust.weak_fairness(p) >= -1e-12


@st.composite
def sinkhorn_problems(draw):
    """A batch of transport problems for SeLa's Sinkhorn-Knopp: sigma from logits of any scale
    (peaked rows whose sigma^lam_sk underflows far below float64's range), a power lam_sk up to
    300, optionally a class of prior 0, a class nobody predicts (sigma 1e-40) and one-hot rows."""
    b, n, k = draw(st.integers(1, 2)), draw(st.integers(1, 40)), draw(st.integers(1, 12))
    scale = draw(st.floats(0.1, 60.0))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    sigma = torch.softmax(scale * torch.randn(b, n, k, generator=g, dtype=torch.float64), -1)
    if k > 1 and draw(st.booleans()):
        sigma[..., draw(st.integers(0, k - 1))] = 1e-40
    if draw(st.booleans()):
        sigma[:, : n // 2] = torch.nn.functional.one_hot(sigma[:, : n // 2].argmax(-1), k).double()
    sigma = sigma / sigma.sum(-1, keepdim=True)
    u = torch.rand(k, generator=g, dtype=torch.float64) + 0.05
    if k > 1 and draw(st.booleans()):
        u[draw(st.integers(0, k - 1))] = 0.0
    return sigma, u / u.sum(), draw(st.floats(1.0, 300.0))


@settings(max_examples=60, deadline=None)
@given(sinkhorn_problems())
def test_sinkhorn_op_follows_the_log_domain_sweeps(problem):
    """The op's sweeps on its rescaled plan are the log-domain sweeps (the PyTorch ones, float64),
    whatever the range: the same shifts to rounding after 30 sweeps, the same row errors, every
    value finite (a class of prior 0 gets -inf)."""
    import importlib

    S = importlib.import_module("entclust.solvers.sinkhorn")
    sigma, u, lam_sk = problem
    log_u = torch.where(u > 0, torch.log(u), -math.inf)
    log_p = lam_sk * torch.log(sigma.clamp_min(torch.finfo(torch.float64).tiny))
    fused = S._solve(S._op_sweep(log_p, log_u), log_p, 0.0, 30, None)
    plain = S._solve(S._torch_sweep(log_p, log_u), log_p, 0.0, 30, None)
    assert bool(torch.isfinite(fused[0]).all()) and bool(torch.isfinite(fused[3]).all())
    assert torch.equal(torch.isneginf(fused[1]), torch.isneginf(plain[1]))
    finite = torch.isfinite(plain[1])
    size = 1.0 + float(log_p.abs().max())  # the shifts' scale: rounding grows with it
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-10, atol=1e-11 * size)
    torch.testing.assert_close(fused[1][finite], plain[1][finite], rtol=1e-10, atol=1e-11 * size)
    torch.testing.assert_close(fused[3], plain[3], rtol=1e-6, atol=1e-9)
