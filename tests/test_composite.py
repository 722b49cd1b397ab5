"""Composite losses (fairness, MI, Rényi, margin) and the nn.Module wrappers."""
import math

import pytest
import torch
from torch import nn

import entclust
from entclust.testing import reference

from .helpers import make_logits, make_simplex


def test_strong_and_weak_fairness_by_hand():
    p = torch.tensor([[0.7, 0.3], [0.1, 0.9]], dtype=torch.float64)  # mean (0.4, 0.6)
    u = torch.tensor([0.5, 0.5], dtype=torch.float64)
    strong = 0.5 * math.log(0.5 / 0.4) + 0.5 * math.log(0.5 / 0.6)
    weak = 0.4 * math.log(0.4 / 0.5) + 0.6 * math.log(0.6 / 0.5)
    assert entclust.strong_fairness(p).item() == pytest.approx(strong, rel=1e-12)
    assert entclust.strong_fairness(p, u).item() == pytest.approx(strong, rel=1e-12)
    assert entclust.weak_fairness(p).item() == pytest.approx(weak, rel=1e-12)


def test_fairness_prior_with_zero_entry_and_empty_class():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    prior = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    assert entclust.strong_fairness(p, prior).item() == pytest.approx(0.0, abs=1e-15)
    assert entclust.strong_fairness(p).item() == math.inf  # uniform prior, class 2 never used


def test_fairness_validates_prior_and_p():
    p = make_simplex((4, 3), torch.float64)
    with pytest.raises(ValueError, match=r"prior must have shape \(3,\), got \(2,\)"):
        entclust.strong_fairness(p, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="rows of prior must sum to 1"):
        entclust.strong_fairness(p, torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="p must be non-negative"):
        entclust.strong_fairness(-p)


def test_mi_loss_matches_formula():
    logits = make_logits((10, 4), torch.float64)
    sigma = torch.softmax(logits, 1)
    mean_entropy = (-(sigma * sigma.log()).sum(1)).mean()
    s_bar = sigma.mean(0)
    want = mean_entropy + (s_bar * s_bar.log()).sum()
    assert entclust.mi_loss(logits).item() == pytest.approx(want.item(), rel=1e-12)


def test_renyi_limits_are_exact():
    p = torch.tensor([[0.5, 0.25, 0.25, 0.0]], dtype=torch.float64)
    shannon = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert entclust.renyi_entropy(p, 1).item() == pytest.approx(shannon)
    assert entclust.renyi_entropy(p, 1 + 1e-7).item() == pytest.approx(shannon, rel=1e-5)
    assert entclust.renyi_entropy(p, math.inf).item() == pytest.approx(math.log(2))
    assert entclust.renyi_entropy(p, 0).item() == pytest.approx(math.log(3))
    assert entclust.renyi_entropy(p, 2).item() == pytest.approx(-math.log(0.25 + 2 * 0.0625))
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        entclust.renyi_entropy(p, -1)


def test_renyi_gradient_finite_with_zeros():
    p = torch.tensor([[0.6, 0.4, 0.0]], dtype=torch.float64, requires_grad=True)
    entclust.renyi_entropy(p, 2.0).sum().backward()
    assert torch.isfinite(p.grad).all() and p.grad[0, 2] == 0


def test_margin_penalty_excludes_bias():
    head = nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.fill_(2.0)
        head.bias.fill_(100.0)
    assert entclust.margin_penalty(head).item() == 24.0
    assert entclust.margin_penalty(head.weight).item() == 24.0
    with pytest.raises(TypeError, match="nn.Linear or a weight tensor"):
        entclust.margin_penalty(nn.ReLU())


def test_modules_match_functions():
    logits, y = make_logits((6, 5), torch.float64), make_simplex((6, 5), torch.float64)
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(entclust.ReverseCrossEntropyLoss(reduction=reduction)(logits, y),
                                   reference.reverse_cross_entropy(logits, y, reduction))
        torch.testing.assert_close(entclust.CollisionCrossEntropyLoss(reduction=reduction)(logits, y),
                                   reference.collision_cross_entropy(logits, y, reduction))
    with pytest.raises(ValueError, match="reduction must be"):
        entclust.ReverseCrossEntropyLoss(reduction="avg")


def test_class_weight_of_reverse_ce():
    logits = make_logits((6, 5), torch.float64).requires_grad_()
    y = make_simplex((6, 5), torch.float64).requires_grad_()
    w = torch.tensor([1.0, 0.0, 2.0, 0.5, 1.0], dtype=torch.float64)
    got = entclust.ReverseCrossEntropyLoss(weight=w)(logits, y)
    want = (-(torch.softmax(logits, 1) * w * y.log()).sum(1)).mean()
    torch.testing.assert_close(got, want)
    g1 = torch.autograd.grad(got, (logits, y))
    g2 = torch.autograd.grad(want, (logits, y))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="weight must be finite and non-negative"):
        entclust.reverse_cross_entropy(logits, y, weight=-w)


def test_self_labeling_loss_is_the_sum_of_its_terms():
    logits, y = make_logits((8, 4), torch.float64), make_simplex((8, 4), torch.float64)
    head = nn.Linear(3, 4).double()
    prior = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    for method, ce in [("rce", entclust.reverse_cross_entropy), ("cce", entclust.collision_cross_entropy)]:
        loss = entclust.SelfLabelingLoss(method, lam=3.0, gamma=0.5, prior=prior)(logits, y, head=head)
        want = ce(logits, y) + 3.0 * entclust.strong_fairness(y, prior) + 0.5 * head.weight.pow(2).sum()
        prediction = reference.prediction_fairness(logits, prior)
        torch.testing.assert_close(loss, want + 0.5 * prediction)  # the default prediction_fairness
        papers = entclust.SelfLabelingLoss(method, lam=3.0, gamma=0.5, prior=prior, prediction_fairness=0.0)
        torch.testing.assert_close(papers(logits, y, head=head), want)
    with pytest.raises(ValueError, match="gamma > 0 needs the linear head"):
        entclust.SelfLabelingLoss(gamma=0.1)(logits, y)
    with pytest.raises(ValueError, match="method must be 'rce' or 'cce'"):
        entclust.SelfLabelingLoss("mse")


def test_self_labeling_loss_trains_a_linear_head():
    """A few SGD steps on fixed pseudo-labels lower the loss (the module is usable in a loop)."""
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = torch.softmax(3 * torch.randn(64, 3), 1)
    head = nn.Linear(5, 3)
    crit = entclust.SelfLabelingLoss("rce", lam=1.0, gamma=1e-3)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = crit(head(x), y, head=head)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < first
