"""SelfLabeling and the solvers in real training (issue 15): precision under autocast, results
independent of the thread count, convergence reported, one argument order."""
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import entclust
from entclust.testing import reference

THREAD_PROBE = r"""
import hashlib, sys, torch, entclust
torch.set_num_threads(int(sys.argv[1]))
g = torch.Generator().manual_seed(0)
sigma = torch.softmax(3 * torch.randn(20000, 30, generator=g, dtype=torch.float64), -1)
for solver in (entclust.em_rce, entclust.em_cce):
    res = solver(sigma, max_iter=15, tol=0)
    print(hashlib.sha256(res.y.numpy().tobytes()).hexdigest()[:16], float(res.objective), float(res.fw_gap))
"""


def test_solvers_do_not_depend_on_the_thread_count():
    out = [subprocess.run([sys.executable, "-c", THREAD_PROBE, t], capture_output=True, text=True, check=True).stdout
           for t in ("1", "2")]
    assert out[0] == out[1]


def test_fairness_is_float32_under_autocast():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, generator=g)
    head = torch.nn.Linear(32, 10)
    criterion = entclust.SelfLabeling("rce", lam=100.0, on_unconverged="ignore")
    exact = criterion(head(x)).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = criterion(head(x))
    assert mixed.dtype == torch.float32
    # the cross-entropy runs on bf16 logits; the fairness term no longer adds bf16 noise times lam
    assert abs(mixed.item() - exact) < 0.02 * abs(exact)
    y = torch.softmax(torch.randn(256, 10, generator=g), -1)
    torch.testing.assert_close(entclust.strong_fairness(y.bfloat16()), entclust.strong_fairness(y), atol=5e-4, rtol=0)


def test_arguments_after_lam_are_keyword_only():
    with pytest.raises(TypeError):
        entclust.SelfLabeling("rce", 100.0, 0.01)  # used to set prior=0.01
    with pytest.raises(TypeError):
        entclust.SelfLabelingLoss("rce", 100.0, 0.01)
    criterion = entclust.SelfLabeling("rce", 100.0, gamma=0.01, prior=[0.5, 0.5])
    assert criterion.gamma == criterion.loss.gamma == 0.01


def test_the_estimator_prior_error_does_not_mention_sum_tol():
    x, _ = entclust.data.make_blobs(50, 3, random_state=0)
    with pytest.raises(ValueError, match="rows of prior must sum to 1") as err:
        entclust.EntropyClustering(3, prior=[0.5, 0.3, 0.3]).fit(x)
    assert "sum_tol" not in str(err.value)


def test_unconverged_solves_are_counted_and_reported():
    logits = 3 * torch.randn(250, 10, generator=torch.Generator().manual_seed(0))
    criterion = entclust.SelfLabeling("rce", max_iter=2)  # 2 EM iterations meet neither default target here
    with pytest.warns(RuntimeWarning, match=r"1 of 1 pseudo-label solve\(s\) stopped before") as record:
        criterion(logits)
    assert record[0].filename == __file__  # the user's line, not torch's module.py
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per module, the count goes on
        criterion(logits)
    assert criterion.stats["solves"] == 2 and criterion.stats["unconverged"] == 2
    assert criterion.stats["max_gap"] == pytest.approx(float(criterion.last_result.gap))
    with pytest.raises(RuntimeError, match="stopped before"):
        entclust.SelfLabeling("rce", max_iter=2, on_unconverged="raise")(logits)
    quiet = entclust.SelfLabeling("rce", lam=1.0, max_iter=5000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet(logits)
    assert quiet.stats["unconverged"] == 0
    quiet.reset_stats()
    assert quiet.stats == {"solves": 0, "unconverged": 0, "max_gap": 0.0, "empty_clusters": 0}


def test_empty_clusters_are_visible_in_the_stats_and_the_history():
    logits = torch.zeros(100, 4)
    logits[:, 0] = 5
    criterion = entclust.SelfLabeling("rce", on_unconverged="ignore")
    criterion(logits)
    assert criterion.stats["empty_clusters"] == 3
    x, _ = entclust.data.make_blobs(300, 3, random_state=0)
    est = entclust.EntropyClustering(3, epochs=3, random_state=0).fit(x)
    assert {"empty_clusters", "solves", "unconverged_solves", "max_gap"} <= set(est.history_[-1])
    assert est.history_[-1]["solves"] == 1  # one batch of 300 points per epoch


def test_empty_clusters_count_every_batch_since_the_last_reset():
    criterion = entclust.SelfLabeling("rce", on_unconverged="ignore")
    for cls in (0, 1):
        logits = torch.zeros(50, 4)
        logits[:, cls] = 5
        criterion(logits)
    assert criterion.stats["empty_clusters"] == 2  # classes 2 and 3 over both batches
    criterion.reset_stats()
    criterion(logits)
    assert criterion.stats["empty_clusters"] == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prediction_fairness_matches_the_plain_formula(dtype):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(2, 40, 7, generator=g, dtype=torch.float64)).to(dtype)
    prior = [0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1]
    # float32: the reference's own rounding of a 7-class mean is ~1e-6 relative
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    for u in (None, prior):
        torch.testing.assert_close(entclust.prediction_fairness(logits, u),
                                   reference.prediction_fairness(logits, u).to(dtype), **tol)
    leaf = logits.double().detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: entclust.prediction_fairness(t, prior), (leaf,))


def test_prediction_fairness_keeps_a_gradient_for_a_class_nobody_predicts():
    logits = torch.zeros(64, 4)
    logits[:, 3] = -200.0  # sigma_3 = e^-200: underflows in float32, the class is dead
    leaf = logits.requires_grad_(True)
    value = entclust.prediction_fairness(leaf)
    value.backward()
    assert bool(torch.isfinite(value)) and float(value.detach()) > 10
    # the gradient pushes the dead class up, by u_k / N per row, however small sigma_3 is
    torch.testing.assert_close(leaf.grad[:, 3], torch.full((64,), -0.25 / 64), rtol=1e-4, atol=0)
    papers = entclust.SelfLabeling("rce", prediction_fairness=0.0, on_unconverged="ignore")
    leaf.grad = None
    papers(leaf).backward()
    assert float(leaf.grad[:, 3].abs().max()) < 1e-30  # the reverse-CE gradient alone has vanished


def test_self_labeling_adds_prediction_fairness_by_default_per_batch_only():
    g = torch.Generator().manual_seed(1)
    logits = 2 * torch.randn(100, 5, generator=g, dtype=torch.float64)
    default = entclust.SelfLabeling("rce", on_unconverged="ignore")
    papers = entclust.SelfLabeling("rce", prediction_fairness=0.0, on_unconverged="ignore")
    assert default.prediction_fairness == 0.5
    assert entclust.SelfLabeling("rce", n_points=10).prediction_fairness == 0.0
    loss, y = default(logits, return_labels=True)
    torch.testing.assert_close(loss, papers(logits, y=y) + 0.5 * reference.prediction_fairness(logits))
    with pytest.raises(ValueError, match="prediction_fairness must be >= 0"):
        entclust.SelfLabeling("rce", prediction_fairness=-1.0)


def test_batched_problems_have_their_own_fairness_terms():
    g = torch.Generator().manual_seed(2)
    logits = 2 * torch.randn(3, 60, 4, generator=g, dtype=torch.float64)
    criterion = entclust.SelfLabeling("rce", on_unconverged="ignore")
    loss, y = criterion(logits, return_labels=True)
    each = [criterion(logits[b], y=y[b]) for b in range(3)]
    torch.testing.assert_close(loss, torch.stack(each).mean())


def test_prediction_fairness_revives_a_dead_class():
    """A linear head on three separated blobs, one class's bias at -12 (never predicted): with the
    papers' objective the class stays dead; with the default term it comes back."""
    x, labels = entclust.data.make_blobs(300, 3, random_state=0)
    x = torch.as_tensor(x, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std()
    empty = {}
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        head = torch.nn.Linear(x.shape[1], 3)
        with torch.no_grad():
            head.bias[2] = -12.0
        criterion = entclust.SelfLabeling("rce", prediction_fairness=weight, on_unconverged="ignore")
        optimizer = torch.optim.SGD(head.parameters(), lr=1.0)  # (Adam would rescale even a vanished gradient)
        for _ in range(300):
            loss = criterion(head(x))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        empty[weight] = 3 - len(torch.unique(head(x).argmax(1)))
    assert empty == {0.0: 1, 0.5: 0}


def test_accumulated_micro_batches_solve_one_problem():
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(256, 10, generator=g, dtype=torch.float64)
    criterion = entclust.SelfLabeling("rce", on_unconverged="ignore")
    whole, y_whole = criterion(logits, return_labels=True)
    blocks = criterion.labels(list(logits.split(64)))
    torch.testing.assert_close(torch.cat(blocks), y_whole, rtol=0, atol=0)  # the same problem, the same labels
    # per micro-batch losses with the joint labels: the cross-entropy parts average to the whole batch's
    ce = [entclust.reverse_cross_entropy(part, y.clamp_min(torch.finfo(y.dtype).tiny))
          for part, y in zip(logits.split(64), blocks)]
    torch.testing.assert_close(torch.stack(ce).mean(), entclust.reverse_cross_entropy(logits, y_whole))
    leaf = logits[:64].clone().requires_grad_(True)
    criterion(leaf, y=blocks[0]).backward()
    assert leaf.grad is not None and bool(leaf.grad.isfinite().all())
    separate = criterion.labels([logits[:64]])[0]  # a micro-batch alone is a different problem
    assert not torch.allclose(separate, blocks[0])
    with pytest.raises(TypeError, match="non-empty list"):
        criterion.labels(logits)


@pytest.mark.parametrize("method", ["rce", "cce"])
def test_a_training_step_with_self_labeling_compiles_with_fullgraph(method):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 6))
    criterion = entclust.SelfLabeling(method, lam=10.0, gamma=0.01, on_unconverged="ignore",
                                      prior=[0.25, 0.25, 0.2, 0.1, 0.1, 0.1])  # the prior used to break the trace
    x = torch.randn(128, 16, generator=g)

    def step(x):
        return criterion(model(x), head=model[2])

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(x)
    torch.testing.assert_close(loss, step(x), rtol=1e-5, atol=1e-6)
    loss.backward()
    assert all(p.grad is not None and bool(p.grad.isfinite().all()) for p in model.parameters())
    torch.library.opcheck(torch.ops.entclust.self_labeling_solve,
                          (model(x).detach(), torch.full((6,), 1 / 6, dtype=torch.float64), 10.0, method, "em", 50,
                           -1.0, 1e-2, 0.1, '{"check_every": 25}'))


@pytest.mark.parametrize("scale", [10.0, 30.0, 50.0])
def test_no_solver_returns_nan_on_confident_predictions(scale):
    sigma = torch.softmax(scale * torch.randn(256, 10, generator=torch.Generator().manual_seed(0),
                                              dtype=torch.float64), -1)
    for name in ("em_rce", "em_cce", "pgd_cce", "newton_rce", "dual_newton_rce"):
        res = getattr(entclust, name)(sigma, lam=100.0)
        assert bool(torch.isfinite(res.y).all()) and torch.allclose(res.y.sum(-1), torch.ones(256, dtype=torch.float64))
        assert math.isfinite(res.objective) and res.fw_gap >= 0
    for solver in ("em", "newton", "dual_newton"):
        loss = entclust.SelfLabeling("rce", solver=solver, on_unconverged="ignore")(sigma.log().float())
        assert torch.isfinite(loss)


def test_imbalanced_blobs_with_their_prior_at_the_defaults():
    """Issue 15, item 4 (benchmarks/tabular_vs_gmm.py has all seeds): 1500/400/100 points with
    the true prior; the default restarts (n_init "auto": 10 random heads side by side) keep all
    three clusters where one run merged the 400-point one in 2 of 4 seeds."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=[1500, 400, 100], centers=[[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], random_state=0)
    est = entclust.EntropyClustering(3, prior=[0.75, 0.2, 0.05], random_state=0).fit(x)
    assert est.n_init_ == 10
    assert entclust.clustering_accuracy(y, est.labels_) > 0.93
    assert est.cluster_sizes_.min() >= 40
    with pytest.warns(entclust.EmptyClusterWarning, match="1 of 3 clusters are empty"):  # one run merged one away
        one = entclust.EntropyClustering(3, prior=[0.75, 0.2, 0.05], n_init=1, random_state=0).fit(x)
    assert est.objective_ <= one.objective_ + 1e-6  # the kept restart is the best objective


@pytest.mark.parametrize("method", ["rce", "cce"])
def test_per_problem_losses_are_each_problems_own(method):
    """reduction="none" on (B, N, K): the b-th loss is the 2-D loss of problem b with head b."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, 5, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    criterion = entclust.SelfLabeling(method, gamma=0.01, prior=[0.1, 0.2, 0.3, 0.2, 0.2], on_unconverged="ignore")
    losses, y = criterion(logits, weight, reduction="none", return_labels=True)
    assert losses.shape == (3,)
    for b in range(3):
        alone = criterion.loss(logits[b], y[b], weight[b])
        assert torch.allclose(losses[b], alone, rtol=1e-12, atol=1e-12)
    # the sum's gradient in head b is head b's own gradient
    grad = torch.autograd.grad(losses.sum(), weight)[0]
    for b in range(3):
        own = torch.autograd.grad(criterion.loss(logits[b], y[b], weight[b]), weight, retain_graph=True)[0][b]
        assert torch.allclose(grad[b], own)
    assert torch.allclose(criterion.loss(logits, y, weight[0]) - 0.01 * weight[0].pow(2).sum(),
                          (losses - 0.01 * weight.pow(2).sum((1, 2))).mean())
    with pytest.raises(ValueError, match="reduction='none' needs \\(B, N, K\\)"):
        criterion(logits[0], weight[0], reduction="none")
    with pytest.raises(ValueError, match="\\(B, K, D\\) weight"):
        criterion(logits, weight[0], reduction="none")
    with pytest.raises(ValueError, match="reduction must be"):
        criterion(logits, weight, reduction="sum")


@pytest.mark.parametrize("method", ["mi-gd", "sela", "mi-adm"])
def test_baseline_losses_per_problem(method):
    from entclust.cluster import get

    class Settings:
        lam, gamma, prior, n_clusters = 100.0, 0.01, None, 5

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 40, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    m = get(method)
    criterion = m.build(Settings, dict(m.defaults))
    losses = criterion(logits, weight, reduction="none")
    for b in range(3):
        assert torch.allclose(losses[b], criterion(logits[b], weight[b]), rtol=1e-10)


@pytest.mark.parametrize("method", ["rce", "cce", "mi-gd", "sela", "mi-adm"])
def test_one_batched_restart_is_the_plain_run(method):
    """The batched path with one restart draws the same head and the same batches as the plain
    loop and steps the same gradients: the heads agree to rounding."""
    from sklearn.datasets import load_iris

    from entclust.cluster.scale import Shard

    x = torch.from_numpy(load_iris().data).float()
    est = entclust.EntropyClustering(3, method=method, epochs=4, batch_size=50, random_state=0)
    est.fit(load_iris().data)  # resolves the settings (n_init_, lr_, ...)
    method_, params = est._method()
    from entclust.cluster.estimator import _Settings

    features = torch.from_numpy(est.scaler_.transform(x.numpy(), np.float32))
    plain = est._train(features, method_.build(_Settings(est), params), torch.Generator().manual_seed(5), 0,
                       Shard(150, None))
    (batched,) = est._train_batched(features, method_.build(_Settings(est), params),
                                    torch.Generator().manual_seed(5), 1, Shard(150, None))
    assert torch.allclose(plain[0].weight, batched[0].weight, atol=1e-5)
    assert torch.allclose(plain[0].bias, batched[0].bias, atol=1e-5)
    assert [h["empty_clusters"] for h in plain[1]] == [h["empty_clusters"] for h in batched[1]]
    assert [h["loss"] for h in plain[1]] == pytest.approx([h["loss"] for h in batched[1]], rel=1e-4)


def test_n_init_auto_and_bad_values():
    x = np.random.default_rng(0).normal(size=(60, 3))
    assert entclust.EntropyClustering(2, epochs=1, random_state=0).fit(x).n_init_ == 10
    assert entclust.EntropyClustering(2, epochs=1, init="kmeans++", random_state=0).fit(x).n_init_ == 1
    assert entclust.EntropyClustering(2, epochs=1, n_init=3, random_state=0).fit(x).n_init_ == 3
    for bad in ("many", 0, 2.5, True):
        with pytest.raises(ValueError, match="n_init must be"):
            entclust.EntropyClustering(2, epochs=1, n_init=bad).fit(x)


def test_solves_inside_a_compiled_step_are_counted_and_said_at_the_next_reset():
    """Issue 28: under torch.compile(fullgraph=True) criterion.stats stayed at 0. The traced solve
    now counts into a buffer, in place; a graph cannot warn, so reset_stats() says it."""
    torch._dynamo.reset()
    model = torch.nn.Linear(8, 5)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    tight = entclust.SelfLabeling("rce", tol_gap=1e-12, max_iter=2)  # cannot meet its rule in 2 steps
    compiled = torch.compile(lambda x: tight(model(x)), fullgraph=True, backend="aot_eager")
    compiled(x)
    compiled(x)
    assert tight.stats["solves"] == 2 and tight.stats["unconverged"] == 2 and tight.stats["max_gap"] > 0
    with pytest.warns(RuntimeWarning, match=r"2 of 2 pseudo-label solve\(s\) of the compiled step stopped"):
        tight.reset_stats()
    assert tight.stats["solves"] == 0
    default = entclust.SelfLabeling("rce")
    torch.compile(lambda x: default(model(x)), fullgraph=True, backend="aot_eager")(x)
    assert default.stats["solves"] == 1 and default.stats["unconverged"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default.reset_stats()  # met its rule: nothing to say
