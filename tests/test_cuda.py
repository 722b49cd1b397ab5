"""CUDA kernels against the CPU kernels (and the reference) at every launch configuration.
Skipped without a GPU and a CUDA build; benchmarks/gpu_check.sh runs them on a GPU machine."""
import json
import math

import pytest
import torch

import entclust
from entclust.testing import reference

from .helpers import HALF_DTYPES, make_logits, make_simplex, requires_cuda, tolerances

pytestmark = requires_cuda

# each side of every configuration boundary: warp rows <= 256, 256-thread block <= 2048,
# 512 x 32 register-cached <= 16384 (float32), streaming beyond
KS = [1, 7, 256, 257, 1000, 2048, 2049, 16384, 16385, 100000]


def both(fn, logits, y, device, **kw):
    a = logits.detach().to(device).requires_grad_()
    b = y.detach().to(device).requires_grad_()
    loss = fn(a, b, **kw)
    loss.sum().backward()
    return [t.detach().cpu() for t in (loss, a.grad, b.grad)]


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64] + HALF_DTYPES)
@pytest.mark.parametrize("fn", [entclust.reverse_cross_entropy, entclust.collision_cross_entropy])
def test_cuda_matches_cpu(fn, dtype, k):
    n = max(1, min(67, 400000 // k))
    logits, y = make_logits((n, k), dtype), make_simplex((n, k), dtype)
    got = both(fn, logits, y, "cuda", reduction="none")
    want = both(fn, logits, y, "cpu", reduction="none")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tolerances(dtype))


@pytest.mark.parametrize("fn", [entclust.reverse_cross_entropy, entclust.collision_cross_entropy])
def test_cuda_gradcheck_and_opcheck(fn):
    logits = make_logits((3, 300), torch.float64, "cuda").requires_grad_()
    y = make_simplex((3, 300), torch.float64, "cuda").requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, sum_tol=math.inf), (logits, y))
    op = getattr(torch.ops.entclust, fn.__name__)
    torch.library.opcheck(op, (logits, y, 1, True, True, 1e-8))


@pytest.mark.parametrize("fn", [entclust.reverse_cross_entropy, entclust.collision_cross_entropy])
def test_cuda_under_torch_func(fn):
    """vmap (one kernel call for every problem), per-problem gradients and a Hessian on CUDA,
    against the same transforms on the CPU."""
    import torch.func as tf

    logits = make_logits((4, 33, 300), torch.float64)
    y = make_simplex((4, 33, 300), torch.float64)
    for transform in (tf.vmap(fn), tf.vmap(tf.grad(fn)), tf.vmap(tf.grad(fn, argnums=1))):
        torch.testing.assert_close(transform(logits.cuda(), y.cuda()).cpu(), transform(logits, y))
    small = make_simplex((3, 5), torch.float64)
    hessian = tf.hessian(lambda a: fn(a, small.to(a.device)))
    torch.testing.assert_close(hessian(logits[0, :3, :5].cuda()).cpu(), hessian(logits[0, :3, :5]))


def test_cuda_collision_underflow_and_zeros():
    logits = torch.tensor([[0.0, -80.0, 1.0], [1.0, 2.0, -math.inf]], device="cuda")
    y = torch.tensor([[0.0, 1.0, 0.0], [0.3, 0.7, 0.0]], device="cuda")
    got = both(entclust.collision_cross_entropy, logits, y, "cuda", reduction="none")
    want = both(entclust.collision_cross_entropy, logits, y, "cpu", reduction="none")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    ref = reference.collision_cross_entropy(logits.double(), y.double(), "none").cpu()
    torch.testing.assert_close(got[0].double(), ref, rtol=1e-5, atol=0)


def test_cuda_tensor_from_another_device_is_refused():
    with pytest.raises(ValueError, match="y is on cpu but logits is on cuda"):
        entclust.reverse_cross_entropy(torch.zeros(2, 3, device="cuda"), torch.full((2, 3), 1 / 3))


# ---- solvers: CUDA kernels against the CPU kernels on both launch plans ----

def solver_problem(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(shape, generator=g, dtype=torch.float64), -1).to(dtype)


# (B, N, K): one block per problem (small, many problems, y too large for shared memory in
# float64) and the per-iteration plan (warp rows, block rows, column sums in shared memory up
# to the opt-in limit, then by a separate reduction)
SOLVER_SHAPES = [(1, 1, 1), (3, 30, 4), (200, 50, 20), (150, 300, 200), (1, 250, 200), (2, 100, 3000),
                 (1, 20, 10000), (1, 8, 30000)]


@pytest.mark.parametrize("shape", SOLVER_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["em_rce", "em_cce", "pgd_cce"])
def test_cuda_solvers_match_cpu(name, dtype, shape):
    sigma = solver_problem(shape, dtype)
    fn = getattr(entclust, name)
    kw = dict(lam=10.0, tol=0.0, max_iter=25)
    if name == "pgd_cce":
        kw["step"] = 0.05
    want = fn(sigma, **kw)
    got = fn(sigma.cuda(), **kw)
    atol = 1e-11 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(got.y.cpu(), want.y, rtol=0, atol=atol)
    assert torch.equal(got.iterations.cpu(), want.iterations) and torch.equal(got.converged.cpu(), want.converged)
    torch.testing.assert_close(got.fw_gap.cpu(), want.fw_gap, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 30, 4), (2, 500, 200), (1, 20, 10000)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_certificates_match_cpu(dtype, shape):
    """The solvers' stopping certificates on CUDA (the blocked PyTorch versions) against the CPU
    kernels: objective, Frank-Wolfe gap and duality gap of both problems, far from and near the
    optimum, lam = 0."""
    sigma = solver_problem(shape, dtype, seed=5)
    for problem in ("rce", "cce"):
        near = getattr(entclust, f"em_{problem}")(sigma, lam=10.0, max_iter=200).y
        for y in (torch.full_like(sigma, 1.0 / shape[-1]), near):
            for lam in (0.0, 10.0):
                for name in ("objective", "fw_gap", "duality_gap"):
                    fn = getattr(entclust, name)
                    want = fn(sigma, y, lam=lam, problem=problem)
                    got = fn(sigma.cuda(), y.cuda(), lam=lam, problem=problem).cpu()
                    assert got.dtype == want.dtype == torch.float64
                    torch.testing.assert_close(got, want, rtol=1e-9 if dtype == torch.float64 else 1e-5, atol=1e-12,
                                               msg=lambda m: f"{problem} {name}, lam {lam}: {m}")


@pytest.mark.parametrize("shape", [(64, 40, 6), (1, 400, 300)], ids=str)
@pytest.mark.parametrize("name", ["em_rce", "em_cce"])
def test_cuda_solvers_converge_like_cpu(name, shape):
    sigma = solver_problem(shape, seed=3)
    fn = getattr(entclust, name)
    want = fn(sigma, lam=1.0, max_iter=5000)
    got = fn(sigma.cuda(), lam=1.0, max_iter=5000)
    assert bool(got.converged.all()) and bool(want.converged.all())
    assert (got.iterations.cpu() - want.iterations).abs().max() <= 1
    torch.testing.assert_close(got.objective.cpu(), want.objective, rtol=1e-10, atol=0)


def test_cuda_solver_edge_cases():
    # exact zeros and one-hot rows, lam = 0 (argmax for collision CE), a zero prior entry
    sigma = torch.tensor([[[1.0, 0.0, 0.0], [0.2, 0.8, 0.0], [0.0, 0.5, 0.5]]], dtype=torch.float64)
    prior = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    for lam in (0.0, 1.0, 1e6):
        for fn in (entclust.em_rce, entclust.em_cce):
            want = fn(sigma, prior, lam=lam, max_iter=200)
            got = fn(sigma.cuda(), prior.cuda(), lam=lam, max_iter=200)
            torch.testing.assert_close(got.y.cpu(), want.y, rtol=0, atol=1e-12)


def test_cuda_pgd_divergence_is_reported():
    sigma = solver_problem((1, 50, 20))
    res = entclust.pgd_cce(sigma.cuda(), lam=100.0, step=1e4, max_iter=50)
    assert not bool(res.converged)


@pytest.mark.parametrize("k", [1, 7, 1024, 1025, 5000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_project_simplex_matches_cpu(dtype, k):
    v = (3 * torch.randn(37, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)).to(dtype)
    torch.testing.assert_close(entclust.project_simplex(v.cuda()).cpu(), entclust.project_simplex(v),
                               rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-6)


def test_cuda_solver_opcheck():
    sigma = solver_problem((2, 16, 5)).cuda()
    prior = torch.full((5,), 0.2, dtype=torch.float64, device="cuda")
    torch.library.opcheck(torch.ops.entclust.em_rce, (sigma, prior, 5.0, 0.0, 10, None))
    torch.library.opcheck(torch.ops.entclust.em_cce, (sigma, prior, 5.0, 0.0, 10, 1e-12, 50, sigma.clone()))
    torch.library.opcheck(torch.ops.entclust.pgd_cce, (sigma, prior, 5.0, 0.1, 0.0, 10, None))
    torch.library.opcheck(torch.ops.entclust.project_simplex, (sigma[0],))


def test_cuda_self_labeling_uses_the_kernels():
    logits = make_logits((64, 10), torch.float32)
    for method in ("rce", "cce"):
        criterion = entclust.SelfLabeling(method, lam=10.0)
        loss_cpu = criterion(logits)
        loss_gpu = criterion(logits.cuda())
        assert criterion.last_result.y.is_cuda
        torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, rtol=1e-5, atol=1e-6)


def test_cuda_solver_benchmark_quick(tmp_path):
    from entclust import cli

    from .helpers import script_main

    assert script_main("benchmarks/bench_kernels.py", "--device", "cuda", "--quick", "--out", str(tmp_path)) == 0
    assert (tmp_path / "bench_solvers_cuda.json").stat().st_size > 0
    assert cli.main(["bench", "solvers", "--device", "cuda", "--k", "20", "--batch", "4", "--time-limit", "0.5",
                     "--problem", "both", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "bench_solvers.json").read_text())
    assert {c["problem"] for c in saved["comparisons"]} == {"rce", "cce"}
    assert all(c["setting"]["device"].startswith("cuda") for c in saved["comparisons"])


def test_cuda_global_pseudo_labels_and_large_k_estimator():
    """Issue 11 on the GPU: SelfLabeling(n_points) keeps its column sums on the device and matches the
    CPU update; the estimator's large-K mode trains on CUDA end to end."""
    from sklearn.datasets import make_blobs

    from entclust.metrics import clustering_accuracy

    logits = make_logits((96, 40), torch.float64)
    idx = torch.arange(96)
    cpu = entclust.SelfLabeling("rce", lam=100.0, n_points=200)
    gpu = entclust.SelfLabeling("rce", lam=100.0, n_points=200)
    y_cpu = cpu.update(logits, idx)
    y_gpu = gpu.update(logits.cuda(), idx.cuda())
    assert y_gpu.is_cuda and gpu.columns.is_cuda
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-12, atol=1e-12)
    x, t = make_blobs(3000, n_features=16, centers=100, random_state=0)
    est = entclust.EntropyClustering(100, device="cuda", random_state=0).fit(x)
    assert est.pseudo_labels_ == "global" and clustering_accuracy(t, est.labels_) >= 0.9



def test_cuda_fits_do_their_n_by_k_work_on_the_gpu():
    """Issue 14, "no silent CPU fallbacks": every op dispatched while the estimator (large-K
    global mode, and per-batch mode with batched restarts) and SelfLabeling run on CUDA data is
    recorded; entclust's own ops must run on CUDA, and nothing N x K-sized on the CPU alone."""
    from sklearn.datasets import make_blobs

    from entclust.testing.devices import OpDevices

    for n, k, d in ((3000, 100, 16), (2000, 10, 8)):  # global pseudo-labels; per batch, 10 restarts
        x, _ = make_blobs(n, n_features=d, centers=k, random_state=0)
        with OpDevices() as ops:
            est = entclust.EntropyClustering(k, device="cuda", random_state=0, epochs=2).fit(x)
        calls = ops.entclust_calls()
        assert calls and all(c.devices == {"cuda"} for c in calls), (est.pseudo_labels_, calls[:3])
        assert not ops.cpu_work(n * k // 2), (est.pseudo_labels_, ops.cpu_work(n * k // 2)[:5])
    logits = make_logits((512, 50), torch.float32, "cuda").requires_grad_()
    for method in ("rce", "cce"):
        with OpDevices() as ops:
            entclust.SelfLabeling(method, lam=10.0)(logits).backward()
        names = {c.name for c in ops.entclust_calls()}
        assert {f"entclust.em_{method}.default", f"entclust.{'reverse' if method == 'rce' else 'collision'}"
                f"_cross_entropy.default"} <= names
        assert all(c.devices == {"cuda"} for c in ops.entclust_calls()) and not ops.cpu_work(512 * 50 // 2)


def test_cuda_deep_clustering_trains_on_the_device():
    """Issue 12 on the GPU: the trainer keeps model, augmentations, pseudo-labels (per batch and
    global) and the semi-supervised clamping on CUDA, and resumes there."""
    import numpy as np

    from entclust.deep import DeepEntropyClustering, SelfLabelingTrainer, default_network
    from entclust.images import load_digit_images

    x, y = load_digit_images()
    x, y = x[:400], y[:400]
    est = DeepEntropyClustering(10, width=0.25, epochs=2, batch_size=100, device="cuda", random_state=0)
    est.fit(x, eval_labels=y)
    assert next(est.model_.parameters()).is_cuda and est.labels_.shape == (400,)
    partial = np.where(np.arange(400) < 40, y, -1)
    DeepEntropyClustering(10, width=0.25, epochs=1, batch_size=100, device="cuda", random_state=0).fit(
        x, partial_labels=partial)
    torch.manual_seed(0)
    trainer = SelfLabelingTrainer(default_network((1, 8, 8), 10, width=0.25, overcluster=30), pseudo_labels="global",
                                  epochs=1, batch_size=100, device="cuda")
    trainer.fit(torch.from_numpy(x))
    assert trainer.criterion.columns.is_cuda


def test_cuda_selective_pseudo_label_clustering_trains_on_the_device():
    """Issue 13 on the GPU: the batched MLP and the grouped-convolution ensembles train on CUDA
    and give the same kind of result as on the CPU."""
    import numpy as np
    from sklearn.datasets import make_blobs

    from entclust.deep import SelectivePseudoLabelClustering
    from entclust.metrics import clustering_accuracy

    x, t = make_blobs(300, n_features=6, centers=3, random_state=0)
    fast = dict(n_members=2, hidden=32, latent_dim=4, pretrain_epochs=3, epochs_per_round=1, max_rounds=2,
                reducer="none", clusterer="kmeans", device="cuda", random_state=0)
    est = SelectivePseudoLabelClustering(3, **fast).fit(x)
    assert clustering_accuracy(t, est.labels_) >= 0.9
    images = np.tile(x[:, None, :, None], (1, 1, 1, 4)).astype(np.float32)
    est = SelectivePseudoLabelClustering(3, conv_width=4, **fast).fit(images)
    assert est.architecture_ == "conv" and clustering_accuracy(t, est.labels_) >= 0.9
