"""Regression tests for the defects of the hostile audit (issue 10), one section per item."""
import errno
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import entclust
from entclust import cli

from .helpers import every_cpu_capability, run_script  # noqa: F401  (fixture)
from entclust.testing import reference as R


def problem(n, k, scale=3.0, seed=0, batch=(), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(*batch, n, k, generator=g, dtype=dtype), -1)


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "entclust", *args], capture_output=True, text=True, **kwargs)


def one_line_error(proc, status, text):
    assert proc.returncode == status, proc.stderr
    assert text in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# 1. priors given as lists or float32 arrays, float32-normalised y in float64 -----------------
def test_prior_as_a_list_or_float32_works_everywhere():
    logits = 3 * torch.randn(250, 5, generator=torch.Generator().manual_seed(0))
    loss = entclust.SelfLabeling(prior=[0.2] * 5)(logits)
    assert torch.isfinite(loss)
    sigma = problem(40, 6)
    res = entclust.em_rce(sigma, prior=torch.full((6,), 1 / 6))  # float32 prior, float64 sigma
    ref = entclust.em_rce(sigma)
    torch.testing.assert_close(res.y, ref.y, atol=1e-12, rtol=0)
    x, _ = entclust.data.make_blobs(300, 5, random_state=0)
    est = entclust.EntropyClustering(5, prior=np.full(5, 0.2, np.float32), epochs=2, random_state=0).fit(x)
    assert est.labels_.shape == (300,)
    with pytest.raises(ValueError, match="rows of prior must sum to 1"):
        entclust.em_rce(sigma, prior=[0.3] * 6)


def test_y_normalised_in_float32_is_accepted_in_float64():
    logits32 = 4 * torch.randn(64, 1000, generator=torch.Generator().manual_seed(1))
    y = torch.softmax(logits32, -1).double()  # rows off 1 by float32 rounding
    sigma = problem(64, 1000, seed=2)
    assert bool(entclust.em_rce(sigma, y0=y, max_iter=3).y.isfinite().all())
    assert torch.isfinite(entclust.reverse_cross_entropy(logits32.double(), y))
    assert torch.isfinite(entclust.fw_gap(sigma, y))


# 2. PGD's defaults work; a diverging solve says so ----------------------------------------
def test_self_labeling_pgd_defaults_work_and_divergence_is_named():
    logits = 3 * torch.randn(250, 10, generator=torch.Generator().manual_seed(0))
    criterion = entclust.SelfLabeling("cce", solver="pgd")
    loss = criterion(logits)
    res = criterion.last_result
    assert torch.isfinite(loss) and bool(res.y.isfinite().all())
    start = R.cce_objective(torch.softmax(logits.double(), -1), torch.softmax(logits.double(), -1))
    assert res.objective <= start + 1e-12
    diverging = entclust.SelfLabeling("cce", solver="pgd", solver_options={"step": 1e4})
    with pytest.raises(FloatingPointError, match=r"'pgd' solve of the pseudo-labels diverged.*step"):
        diverging(logits)


def test_pgd_auto_step_is_per_problem_and_never_worse_than_the_start():
    sigma = problem(100, 8, batch=(3,), seed=5)
    res = entclust.pgd_cce(sigma, lam=100.0, max_iter=300)
    assert bool(torch.isfinite(res.y).all()) and "step" in res.criterion
    assert torch.all(res.objective <= R.cce_objective(sigma, sigma) + 1e-12)


# 3. converged is never True for a non-finite result ---------------------------------------
@pytest.mark.parametrize("solver", [entclust.em_rce, entclust.em_cce])
def test_nan_input_without_validation_is_not_converged(solver):
    sigma = problem(20, 4, batch=(3,))
    sigma[1, 3, 2] = math.nan
    res = solver(sigma, lam=1.0, validate=False, max_iter=5000, tol=1e-7)
    assert res.converged.tolist() == [True, False, True]
    y0 = sigma.clone()
    y0[1] = problem(20, 4, seed=9)
    y0[2, 0, 0] = math.inf
    assert not bool(solver(problem(20, 4, batch=(3,)), lam=1.0, y0=y0, validate=False, max_iter=50).converged[2])


# 4. the simplex projection at any magnitude ----------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_project_simplex_huge_values(dtype):
    v = torch.tensor([[1e16, 0.0, -1e16], [3e30, 3e30, -1e30], [1e-30, -1e-30, 0.0]], dtype=dtype)
    w = entclust.project_simplex(v)
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]], dtype=dtype)
    torch.testing.assert_close(w, expected)
    big = 1e300 * torch.randn(50, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = entclust.project_simplex(big)
    assert bool(torch.isfinite(w).all()) and torch.allclose(w.sum(-1), torch.ones(50, dtype=torch.float64))
    torch.testing.assert_close(w, R.project_simplex(big / 1e300 * 1e300 - big.amax(-1, keepdim=True)))


# 5. Sinkhorn-Knopp with zero columns and one-hot rows --------------------------------------
@pytest.mark.parametrize("case", ["zero column", "one-hot rows"])
def test_sinkhorn_with_zeros_stays_finite_and_balanced(case):
    sigma = problem(60, 4, seed=3)
    if case == "zero column":
        sigma[:, 2] = 0
    else:
        sigma = torch.nn.functional.one_hot(torch.arange(60) % 3, 4).double()
    sigma = sigma / sigma.sum(-1, keepdim=True)
    result = entclust.sinkhorn(sigma, tol=1e-9, max_iter=2000, warn=False)
    q, labels = result.y / 60, result.labels
    assert bool(torch.isfinite(q).all()) and result.converged
    torch.testing.assert_close(q.sum(-1), torch.full((60,), 1 / 60, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(q.sum(0), torch.full((4,), 0.25, dtype=torch.float64), atol=1e-6, rtol=0)
    assert labels.shape == (60,)


def test_sinkhorn_warns_when_it_stops_early():
    with pytest.warns(RuntimeWarning, match="max_iter=1"):
        entclust.sinkhorn(problem(30, 3), max_iter=1)


@pytest.mark.parametrize("scale", [1.0, 3.0, 10.0])
@pytest.mark.parametrize("n, k", [(250, 10), (250, 200)])
def test_sinkhorn_defaults_converge_quietly_on_peaked_sigma(n, k, scale):
    # sigma = softmax(scale z), as a network's outputs sharpen: the defaults (tol 1e-3, 10 000
    # sweeps) meet tol without a warning; the old 1e-9 / 1000 warned from scale 3 (and for every
    # float32 sigma, below)
    z = torch.randn(n, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    sigma = torch.softmax(scale * z, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = entclust.sinkhorn(sigma.float())
    assert result.converged
    y = result.y.double()  # rows on the simplex, columns within tol (relative) of N u
    assert (y.sum(-1) - 1).abs().max() <= 1e-6 and (y.sum(0) / (n / k) - 1).abs().max() <= 1e-3 + 1e-5


def test_sinkhorn_float32_sigma_reaches_a_tight_tol():
    # the prior was used in sigma's dtype: a float32 uniform 1/10 sums to 1 + 1.5e-8, and the row
    # error stalled at 3e-8 whatever the sweeps; it is renormalised in float64 now
    sigma = torch.softmax(torch.randn(250, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1)
    float32, float64 = entclust.sinkhorn(sigma.float(), tol=1e-9), entclust.sinkhorn(sigma, tol=1e-9)
    assert float32.converged and float32.iterations == float64.iterations
    torch.testing.assert_close(float32.y.double(), float64.y, atol=1e-6, rtol=0)


# 6. second-order solvers across lambda in [0, 1e12] ------------------------------------
@pytest.mark.parametrize("lam", [0.0, 1e-3, 1.0, 100.0, 1e4, 1e8, 1e12])
@pytest.mark.parametrize("solver", ["newton_rce", "dual_newton_rce"])
def test_newton_solvers_stay_finite_and_honest(solver, lam):
    sigma = problem(250, 10, seed=7)
    res = getattr(entclust, solver)(sigma, lam=lam)
    assert bool(torch.isfinite(res.y).all()) and torch.all(res.y >= 0)
    assert torch.allclose(res.y.sum(-1), torch.ones(250, dtype=torch.float64))
    assert math.isfinite(res.objective) and res.gap >= -1e-9
    if bool(res.converged):
        assert res.gap <= 1e-10
    em = entclust.em_rce(sigma, lam=lam, max_iter=3000)
    best = min(float(em.objective), float(res.objective))  # >= the optimum
    assert res.gap >= res.objective - best - 1e-9 * (1 + best)  # the certificate is true
    if solver == "dual_newton_rce":  # the exact solver is never worse than EM, beyond EM's own gap
        assert res.objective <= em.objective + float(em.gap) + 1e-9


# 7.-9. command line: outputs checked first, atomic writes, exit statuses --------------------
@pytest.fixture
def features(tmp_path):
    x, y = entclust.data.make_blobs(200, 3, random_state=0)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path


def test_unwritable_outputs_are_refused_before_the_work(features):
    x = str(features / "x.npy")
    one_line_error(run_cli("fit", x, "--k", "3", "--out", str(features)), 2, "is a folder")
    one_line_error(run_cli("fit", x, "--k", "3", "--out", "/proc/entclust_labels.npy"), 2, "cannot write in folder")
    one_line_error(run_cli("fit", x, "--k", "3", "--out", str(features / "x.npy" / "l.npy")), 2, "is not a folder")
    one_line_error(run_cli("compare", "blobs", "--name", "a/b", "--out", str(features)), 2,
                   "--name must be a plain name")
    one_line_error(run_script("examples/plot_toy.py", "--out", x), 2, "exists and is not a folder")
    one_line_error(run_cli("compare", "blobs", "--out", "/proc/entclust_results"), 2, "cannot write in folder")


def test_fit_refuses_to_overwrite_its_input(features):
    x, y = str(features / "x.npy"), str(features / "y.npy")
    before = np.load(x)
    one_line_error(run_cli("fit", x, "--k", "3", "--out", x), 2, "would destroy the input")
    one_line_error(run_cli("fit", x, "--k", "3", "--labels", y, "--out", y), 2, "would destroy the input")
    np.testing.assert_array_equal(np.load(x), before)


def test_a_failed_write_keeps_the_old_file_and_reports_it(features, monkeypatch, capsys):
    out = features / "labels.npy"
    np.save(out, np.arange(5))

    def full_disk(path, arr, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(np, "save", full_disk)
    status = cli.main(["fit", str(features / "x.npy"), "--k", "3", "--epochs", "1", "-q", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == cli.EXIT_WRITE and "No space left on device" in captured.err
    assert "wrote" not in captured.out
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(out), np.arange(5))
    assert sorted(p.name for p in features.iterdir()) == ["labels.npy", "x.npy", "y.npy"]  # no temporaries


def test_diverging_training_is_one_line_with_its_own_status(features):
    proc = run_cli("fit", str(features / "x.npy"), "--k", "3", "--lr", "1e30", "-q", "--out", str(features / "l.npy"))
    one_line_error(proc, cli.EXIT_DIVERGED, "lower lr")
    assert not (features / "l.npy").exists()


def test_interrupt_leaves_no_partial_result_set(features, monkeypatch, capsys):
    from entclust.cluster import compare

    def interrupted_chart(result, path, title=""):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "bar_chart", interrupted_chart)
    out = features / "res"
    status = cli.main(["compare", str(features / "x.npy"), "--labels", str(features / "y.npy"), "--methods", "kmeans",
                       "--seeds", "1", "-q", "--out", str(out)])
    assert status == cli.EXIT_INTERRUPTED and "interrupted" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # neither the .md nor the .json without the .png


# 10. solver edge cases, handled the same way everywhere ---------------------------------
SOLVERS = ["em_rce", "em_cce", "pgd_cce", "newton_rce", "dual_newton_rce", "sinkhorn"]


@pytest.mark.parametrize("solver", SOLVERS)
def test_empty_problems_are_a_clear_error(solver):
    with pytest.raises(ValueError, match="N >= 1 points"):
        getattr(entclust, solver)(torch.zeros(0, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="B >= 1 problems"):
        getattr(entclust, solver)(torch.zeros(0, 4, 3, dtype=torch.float64))


@pytest.mark.parametrize("solver, kwargs, message", [
    ("em_rce", {"tol": math.nan}, "tol must be a number >= 0"),
    ("newton_rce", {"tol": math.nan}, "tol must be a finite number >= 0"),
    ("dual_newton_rce", {"tol": math.nan}, "tol must be a finite number >= 0"),
    ("dual_newton_rce", {"warm_start": -1}, "warm_start must be an int >= 0"),
    ("em_rce", {"max_iter": True}, "max_iter must be an int >= 0"),
    ("em_cce", {"lam": math.nan}, "lam must be a finite number >= 0"),
    ("sinkhorn", {"max_iter": 0}, "max_iter must be an int >= 1"),
    ("sinkhorn", {"tol": math.nan}, "tol must be a finite number >= 0"),
    ("pgd_cce", {"step": math.inf}, "step must be a finite number > 0"),
])
def test_bad_solver_arguments_are_named(solver, kwargs, message):
    with pytest.raises(ValueError, match=message):
        getattr(entclust, solver)(problem(10, 3), **kwargs)


def test_dual_newton_max_iter_caps_every_step():
    res = entclust.dual_newton_rce(problem(100, 20, seed=1), max_iter=0)
    assert int(res.iterations) == 0 and not bool(res.converged)
    assert int(entclust.dual_newton_rce(problem(100, 20, seed=1), max_iter=7).iterations) <= 7


def test_sum_tol_nan_is_refused():
    logits, y = torch.randn(4, 3), torch.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="sum_tol must be a number >= 0"):
        entclust.reverse_cross_entropy(logits, y, sum_tol=math.nan)


# 11. the default start is decided per problem -------------------------------------------
@pytest.mark.parametrize("solver", [entclust.em_rce, entclust.em_cce])
def test_one_problem_with_zeros_does_not_move_the_others(solver):
    sigma = problem(50, 5, batch=(3,), seed=11)
    sigma[1, :, 3] = 0
    sigma[1] /= sigma[1].sum(-1, keepdim=True)
    both = solver(sigma, max_iter=40, tol=0)
    for b in range(3):
        torch.testing.assert_close(both.y[b], solver(sigma[b], max_iter=40, tol=0).y, atol=1e-14, rtol=0)


# 12. the certificate and validation are lean -------------------------------------------
MEMORY_PROBE = r"""
import resource, sys, torch, entclust
torch.manual_seed(0)
n, k = 250_000, 100
sigma = torch.randn(n, k).mul_(3).exp_()  # softmax(3 z) in place: no temporary raises the baseline
sigma /= sigma.sum(1, keepdim=True)
entclust.em_rce(sigma[:100], max_iter=1)  # warm up allocator and kernels
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
res = entclust.em_rce(sigma, max_iter=int(sys.argv[1]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024 / sigma.nbytes)
"""


def test_em_peak_memory_is_a_small_multiple_of_the_input():
    for max_iter in ("0", "5"):
        proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, max_iter], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        # y itself is 1x the input; validation, start and certificate add blocks, not copies
        # (measured 1.1-1.2x; before the fix 12x)
        assert float(proc.stdout) < 1.6, f"max_iter={max_iter}: peak {float(proc.stdout):.2f}x the input"


def test_certificate_can_be_skipped_and_matches_the_reference():
    sigma = problem(300, 7, batch=(2,), seed=3)
    res = entclust.em_cce(sigma, max_iter=20)
    torch.testing.assert_close(res.objective, R.cce_objective(sigma, res.y), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(res.fw_gap, R.fw_gap(R.cce_gradient(sigma, res.y), res.y), atol=1e-12, rtol=1e-9)
    quick = entclust.em_cce(sigma, max_iter=20, certificate=False)
    assert torch.isnan(quick.objective).all() and torch.equal(quick.y, res.y)


# 13. smaller ones ------------------------------------------------------------------------
def test_fit_does_not_touch_the_global_rng():
    x, _ = entclust.data.make_blobs(200, 3, random_state=0)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    entclust.EntropyClustering(3, epochs=2, random_state=0).fit(x)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("scale", [1e160, 1e-170])
@pytest.mark.parametrize("standardize", ["global", "features"])
def test_extreme_feature_scales_cluster_like_unit_scale(scale, standardize):
    x, y = entclust.data.make_blobs(300, 3, random_state=0)
    plain = entclust.EntropyClustering(3, epochs=10, random_state=0, standardize=standardize).fit(x).labels_
    scaled = entclust.EntropyClustering(3, epochs=10, random_state=0, standardize=standardize).fit(x * scale).labels_
    assert entclust.clustering_accuracy(plain, scaled) > 0.99  # the same clustering as at unit scale
    assert entclust.clustering_accuracy(y, scaled) > 0.85


def test_cli_rejects_complex_input_and_bad_numbers(features):
    np.save(features / "c.npy", np.ones((10, 2)) + 1j)
    one_line_error(run_cli("fit", str(features / "c.npy"), "--k", "2", "--out", str(features / "l.npy")), 2, "complex")
    one_line_error(run_cli("bench", "--time-limit", "-1", "--out", str(features)), 2, "--time-limit must be")
    one_line_error(run_script("examples/losses_demo.py", "--epochs", "0", "--out", str(features)), 2,
                   "--epochs must be >= 1")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_info_to_a_full_device_is_one_line():
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "entclust", "info"], stdout=full, stderr=subprocess.PIPE, text=True)
    one_line_error(proc, cli.EXIT_WRITE, "cannot write to standard output")


def test_losses_under_autocast_take_float32_targets():
    logits = torch.randn(16, 5)
    y = torch.softmax(torch.randn(16, 5), -1)
    linear = torch.nn.Linear(5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear(logits)
        assert out.dtype == torch.bfloat16
        rce = entclust.reverse_cross_entropy(out, y)
        cce = entclust.collision_cross_entropy(out, y)
        weighted = entclust.ReverseCrossEntropyLoss(weight=torch.ones(5))(out, y)
    assert rce.dtype == cce.dtype == weighted.dtype == torch.float32
    torch.testing.assert_close(rce, R.reverse_cross_entropy(out.float(), y))
    rce.backward()
    assert linear.weight.grad is not None and bool(linear.weight.grad.isfinite().all())


def test_weighted_loss_compiles_with_fullgraph():
    criterion = entclust.ReverseCrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5]))
    logits, y = torch.randn(8, 3), torch.softmax(torch.randn(8, 3), -1)
    compiled = torch.compile(criterion, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(logits, y), criterion(logits, y))
    with pytest.raises(ValueError, match="weight must be finite and non-negative"):
        entclust.ReverseCrossEntropyLoss(weight=torch.tensor([1.0, -1.0, 0.5]))


def test_mi_loss_with_masked_classes_is_finite():
    logits = torch.randn(6, 4)
    logits[:, 3] = -math.inf
    logits[0, 1] = -math.inf
    logits.requires_grad_(True)
    loss = entclust.mi_loss(logits)
    loss.backward()
    assert math.isfinite(loss.item()) and bool(torch.isfinite(logits.grad).all())
    torch.testing.assert_close(loss, entclust.mi_loss(logits.detach()[:, :3].clone().masked_fill(
        torch.isinf(logits.detach()[:, :3]), -1e30)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("problem_name", ["rce", "cce"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lam", [0.0, 3.0, 100.0])
def test_fused_certificate_matches_the_reference(every_cpu_capability, problem_name, dtype, lam):
    from entclust.solvers.certificate import _certify_blocks, certify

    sigma = problem(5000, 7, batch=(2,), seed=4, dtype=dtype)  # several row chunks
    sigma[0, :10, 3] = 0
    sigma[0] /= sigma[0].sum(-1, keepdim=True)
    y = problem(5000, 7, batch=(2,), seed=5, dtype=dtype)
    u = torch.tensor([0.2, 0.1, 0.0, 0.2, 0.2, 0.2, 0.1], dtype=dtype)
    fused = certify(problem_name, sigma, y, u, lam)
    blocks = _certify_blocks(problem_name, sigma, y, u, lam)
    s64, y64, u64 = sigma.double(), y.double(), u.double()
    objective = (R.rce_objective if problem_name == "rce" else R.cce_objective)(s64, y64, u64, lam)
    gradient = (R.rce_gradient if problem_name == "rce" else R.cce_gradient)(s64, y64, u64, lam)
    for got in (fused, blocks):
        torch.testing.assert_close(got[0], objective, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[1], R.fw_gap(gradient, y64), rtol=1e-10, atol=1e-10)
    torch.library.opcheck(torch.ops.entclust.certificate, (sigma, y, u, lam, 0 if problem_name == "rce" else 1))


def test_fused_certificate_propagates_nan_and_infinite_values(every_cpu_capability):
    from entclust.solvers.certificate import certify

    sigma, y = problem(40, 3, batch=(3,)), problem(40, 3, batch=(3,), seed=1)
    y[1, 5, 0] = math.nan
    y[2, 6] = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)  # y = 0 where sigma > 0: H = +inf
    u = torch.full((3,), 1 / 3, dtype=torch.float64)
    objective, gap = certify("rce", sigma, y, u, 1.0)
    assert math.isfinite(objective[0]) and math.isfinite(gap[0])
    assert math.isnan(objective[1]) and math.isnan(gap[1])
    assert objective[2] == math.inf and gap[2] == math.inf
