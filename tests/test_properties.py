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
