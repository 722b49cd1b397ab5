"""Issue 29: every solver stops on the relative gap of its problem's certificate (``tol_gap``), reports to a
``callback``, returns Python scalars for one problem; ``entclust.solvers.compare`` and
``entclust bench solvers`` run them side by side on a user's sigma."""
import json
import math
import os

import numpy as np
import pytest
import torch

import entclust
from entclust import cli, solvers
from entclust.solvers.sharded import em_rce_sharded
from entclust.testing import reference as R

from .helpers import every_cpu_capability  # noqa: F401  (fixture)


def problem(shape, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(*shape, generator=g, dtype=torch.float64), -1)


RCE = [("em_rce", {}), ("em_rce", {"accel": "squarem"}), ("newton_rce", {}), ("dual_newton_rce", {})]
CCE = [("em_cce", {}), ("em_cce", {"accel": "squarem"}), ("pgd_cce", {}), ("pgd_cce", {"step": 1.0})]


@pytest.mark.parametrize("name,extra", RCE + CCE)
def test_every_solver_stops_on_the_relative_gap(name, extra):
    sigma = problem((60, 4))
    res = getattr(entclust, name)(sigma, lam=5.0, tol_gap=1e-6, max_iter=200_000, **extra)
    assert res.converged is True and "relative duality gap <= 1e-06" in res.criterion
    assert res.relative_gap <= 1e-6
    # the gaps in the result are the certificates of the returned y
    assert float(entclust.fw_gap(sigma, res.y, lam=5.0, problem=name[-3:])) == pytest.approx(res.fw_gap, rel=1e-9,
                                                                                           abs=1e-15)
    dual = float(entclust.duality_gap(sigma, res.y, lam=5.0, problem=name[-3:]))
    assert dual == pytest.approx(res.duality_gap, rel=1e-9, abs=1e-15)
    assert res.gap == min(res.fw_gap, res.duality_gap)
    assert res.relative_gap == pytest.approx(res.gap / (1 + abs(res.objective)))


@pytest.mark.parametrize("name,extra", RCE + CCE)
def test_scalars_are_python_numbers_for_one_problem_and_tensors_for_a_batch(name, extra):
    sigma = problem((3, 30, 4))
    one = getattr(entclust, name)(sigma[0], lam=5.0, max_iter=30, **extra)
    assert (type(one.iterations), type(one.objective), type(one.fw_gap), type(one.converged)) == (int, float, float,
                                                                                                 bool)
    assert isinstance(one.relative_gap, float)
    batch = getattr(entclust, name)(sigma, lam=5.0, max_iter=30, **extra)
    for value in (batch.iterations, batch.objective, batch.fw_gap, batch.converged, batch.relative_gap):
        assert isinstance(value, torch.Tensor) and value.shape == (3,)


def test_the_gap_stop_is_the_first_check_below_the_target(every_cpu_capability):  # noqa: F811
    sigma = problem((80, 6))
    res = entclust.em_rce(sigma, lam=20.0, tol_gap=1e-5, max_iter=100_000, check_every=7)
    assert res.converged and res.iterations % 7 == 0
    before = entclust.em_rce(sigma, lam=20.0, tol=0, max_iter=res.iterations - 7)
    assert before.relative_gap > 1e-5  # the check before did not meet it
    same = entclust.em_rce(sigma, lam=20.0, tol=0, max_iter=res.iterations)
    torch.testing.assert_close(res.y, same.y, rtol=0, atol=1e-13)  # chunks warm-started = one run


def test_a_batch_stops_each_problem_on_its_own(every_cpu_capability):  # noqa: F811
    sigma = torch.stack([problem((50, 5), seed=s, scale=c) for s, c in [(1, 1.0), (2, 2.0), (3, 3.0)]])
    res = entclust.em_rce(sigma, lam=10.0, tol_gap=1e-6, max_iter=100_000)
    assert bool(res.converged.all()) and bool((res.relative_gap <= 1e-6).all())
    for i in range(3):
        alone = entclust.em_rce(sigma[i], lam=10.0, tol_gap=1e-6, max_iter=100_000)
        assert alone.iterations == int(res.iterations[i])
        torch.testing.assert_close(alone.y, res.y[i], rtol=0, atol=1e-13)
    assert len(set(res.iterations.tolist())) > 1


def test_iteration_limit_under_tol_gap_is_not_converged_and_inputs_are_untouched():
    sigma = problem((40, 8))
    y0 = problem((40, 8), seed=5)
    keep, keep_y0 = sigma.clone(), y0.clone()
    res = entclust.em_cce(sigma, lam=100.0, tol_gap=1e-12, max_iter=25, y0=y0)
    assert res.converged is False and res.iterations == 25 and res.relative_gap > 1e-12
    assert torch.equal(sigma, keep) and torch.equal(y0, keep_y0)


def test_a_step_tolerance_given_with_tol_gap_still_stops_but_is_not_convergence():
    sigma = problem((40, 5))
    res = entclust.em_rce(sigma, lam=50.0, tol_gap=1e-14, tol=1e-3, max_iter=10_000)
    assert res.iterations < 10_000 and res.converged is False and "max|dy| <= 0.001" in res.criterion


def test_callback_sees_the_start_and_every_check_and_can_stop():
    sigma = problem((3, 40, 5))
    seen = []

    def callback(state):
        assert isinstance(state, entclust.SolverResult) and state.y.shape == (3, 40, 5)
        seen.append(state.iterations.clone())
        return len(seen) == 4

    res = entclust.em_rce(sigma, lam=50.0, callback=callback, check_every=5, max_iter=1000)
    assert [int(s.max()) for s in seen] == [0, 5, 10, 15] and bool((res.iterations == 15).all())
    newton_seen = []
    entclust.newton_rce(sigma[0], lam=50.0, callback=lambda s: newton_seen.append((s.iterations, s.gap)))
    assert newton_seen[0][0] == 0 and [i for i, _ in newton_seen] == list(range(len(newton_seen)))
    assert newton_seen[-1][1] <= 1e-10
    dual_seen = []
    entclust.dual_newton_rce(sigma, lam=50.0, callback=lambda s: dual_seen.append(s.gap.clone()))
    assert float(dual_seen[-1].max()) <= 1e-10  # the batch's state, problem after problem


def test_sharded_em_stops_on_the_gap_as_the_fused_solver_does():
    sigma = problem((70, 6))
    a = entclust.em_rce(sigma, lam=40.0, tol_gap=1e-7, max_iter=100_000)
    b = em_rce_sharded(sigma, lam=40.0, tol_gap=1e-7, max_iter=100_000)
    assert b.converged is True and b.iterations == a.iterations and type(b.objective) is float
    torch.testing.assert_close(a.y, b.y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs,message", [
    (dict(tol_gap=-1.0), "tol_gap must be"), (dict(tol_gap=float("nan")), "tol_gap must be"),
    (dict(check_every=0), "check_every must be an int >= 1 or .auto."), (dict(check_every="often"), "check_every must be"), (dict(callback=3), "callback must be callable"),
])
def test_bad_gap_options_are_named(kwargs, message):
    sigma = problem((10, 3))
    for fn in (entclust.em_rce, entclust.em_cce, entclust.pgd_cce):
        with pytest.raises(ValueError, match=message):
            fn(sigma, **kwargs)
    if "check_every" not in kwargs:
        for fn in (entclust.newton_rce, entclust.dual_newton_rce):
            with pytest.raises(ValueError, match=message):
                fn(sigma, **kwargs)


def test_compare_runs_every_solver_to_one_certificate(tmp_path):
    sigma = problem((100, 6))
    out = solvers.compare(sigma, lam=50.0, target_gap=1e-7, time_limit=3.0)
    rows = {r["solver"]: r for r in out.rows}
    assert set(rows) == set(solvers.RCE_SOLVERS)
    for name in ("newton_rce", "dual_newton_rce", "em_rce", "em_rce_squarem", "em_rce_compiled"):
        r = rows[name]
        assert r["converged"] is True and r["stop"] == "target gap" and r["relative_gap"] <= 1e-7
        times = [r["seconds_to"][f"{lv:.0e}"] for lv in out.setting["levels"]]
        assert all(t is not None for t in times) and times == sorted(times) and times[-1] <= r["seconds"]
        assert r["checks"] == len(out.traces[name]) and r["check_s"] > 0
        assert r["objective"] == pytest.approx(rows["dual_newton_rce"]["objective"], rel=1e-6)
    assert rows["sinkhorn_knopp"]["objective_kind"] == "own"
    assert rows["em_rce_compiled"]["setup_s"] > 0
    table = out.table()
    assert "| newton_rce |" in table and "sinkhorn_knopp (own objective)" in table
    json.dumps(out.to_dict())  # plain values
    out.plot(str(tmp_path / "gap.png"))
    assert (tmp_path / "gap.png").stat().st_size > 0


def test_a_baseline_that_fails_to_compile_is_a_row_not_a_crash(monkeypatch, tmp_path):
    """torch.compile needs a C++ toolchain; where it fails, its row says so and the rest still run."""
    from entclust.solvers import comparison

    def broken(*args, **kwargs):
        raise RuntimeError("C++ compile error\n(details)")

    monkeypatch.setattr(comparison, "em_rce_compiled", broken)
    out = solvers.compare(problem((50, 4)), lam=10.0, time_limit=1.0, solvers=["em_rce", "em_rce_compiled"])
    rows = {r["solver"]: r for r in out.rows}
    assert rows["em_rce"]["stop"] == "target gap"
    assert rows["em_rce_compiled"]["stop"] == "not run: torch.compile failed (RuntimeError: C++ compile error)"
    assert "torch.compile failed" in out.table()
    out.plot(str(tmp_path / "gap.png"))


def test_compare_states_why_a_solver_stopped_short():
    sigma = problem((200, 30), scale=3.0)
    out = solvers.compare(sigma, lam=100.0, problem="cce", solvers=["em_cce", "pgd_cce"], target_gap=1e-12,
                          time_limit=0.3, warmup=False)
    for r in out.rows:
        assert r["converged"] is False and r["stop"] == "time limit" and r["seconds"] < 2.0
        assert r["seconds_to"]["1e-12"] is None
    zeros = sigma.clone()
    zeros[0] = torch.nn.functional.one_hot(torch.tensor(0), 30).double()
    rows = {r["solver"]: r for r in solvers.compare(zeros, solvers=["em_rce", "newton_rce"], time_limit=0.2).rows}
    assert rows["newton_rce"]["stop"] == "not run: needs sigma > 0" and rows["em_rce"]["checks"] > 0


def test_compare_on_a_batch_and_float32():
    sigma = problem((3, 60, 5)).float()
    out = solvers.compare(sigma, lam=20.0, solvers=["em_rce", "newton_rce", "sinkhorn_knopp"], target_gap=1e-5,
                          time_limit=3.0)
    assert out.setting["shape"] == "3×60×5" and all(r["converged"] for r in out.rows)
    # Sinkhorn on a batch reports its slowest problem's sweeps (it stopped with a crash before)
    assert out.rows[-1]["solver"] == "sinkhorn_knopp" and out.rows[-1]["iterations"] >= 1


def test_compare_rejects_bad_arguments():
    sigma = problem((20, 3))
    with pytest.raises(ValueError, match="does not solve the 'rce' problem"):
        solvers.compare(sigma, solvers=["pgd_cce"])
    with pytest.raises(ValueError, match="target_gap must be"):
        solvers.compare(sigma, target_gap=0)
    with pytest.raises(ValueError, match="sigma"):
        solvers.compare(sigma * 2)


def test_cli_bench_solvers_on_a_users_sigma_into_a_new_folder(tmp_path, capsys):
    sigma = problem((80, 5)).numpy()
    np.save(tmp_path / "sigma.npy", sigma)
    np.save(tmp_path / "prior.npy", np.array([0.4, 0.3, 0.1, 0.1, 0.1]))
    out = tmp_path / "not" / "yet"
    assert cli.main(["bench", "solvers", "--sigma", str(tmp_path / "sigma.npy"), "--prior", str(tmp_path / "prior.npy"),
                     "--lam", "20", "--time-limit", "1", "--solvers", "em_rce", "newton_rce", "--out", str(out)]) == 0
    saved = json.loads((out / "bench_solvers.json").read_text())
    (comparison,) = saved["comparisons"]
    assert {r["solver"] for r in comparison["rows"]} == {"em_rce", "newton_rce"}
    assert all(r["converged"] for r in comparison["rows"])
    assert (out / "bench_solvers_gap.png").stat().st_size > 0 and (out / "bench_solvers.md").exists()
    assert "| newton_rce |" in capsys.readouterr().out
    # logits in a .pt file, both problems
    torch.save(torch.randn(40, 3, dtype=torch.float64), tmp_path / "logits.pt")
    assert cli.main(["bench", "--sigma", str(tmp_path / "logits.pt"), "--logits", "--problem", "both",
                     "--solvers", "em_rce", "em_cce", "--time-limit", "0.5", "--out", str(out)]) == 0
    saved = json.loads((out / "bench_solvers.json").read_text())
    assert [c["problem"] for c in saved["comparisons"]] == ["rce", "cce"]


def test_cli_bench_solvers_family_writes_the_k_plot(tmp_path):
    assert cli.main(["bench", "solvers", "--k", "2", "5", "--n", "40", "--batch", "2", "--prior-kind", "skewed",
                     "--time-limit", "0.3", "--problem", "rce", "--solvers", "em_rce", "dual_newton_rce",
                     "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "bench_solvers.json").read_text())
    assert [c["k"] for c in saved["comparisons"]] == [2, 5]
    assert (tmp_path / "bench_solvers_k.png").stat().st_size > 0


def test_cli_bench_solvers_checks_everything_before_the_work(tmp_path, capsys):
    assert cli.main(["bench", "solvers", "--sigma", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "o")]) == 2
    assert "--sigma: no file" in capsys.readouterr().err and not (tmp_path / "o").exists()
    np.save(tmp_path / "ints.npy", np.ones((4, 2), dtype=np.int64))
    assert cli.main(["bench", "solvers", "--sigma", str(tmp_path / "ints.npy"), "--out", str(tmp_path)]) == 2
    assert "expected floating point" in capsys.readouterr().err
    assert cli.main(["bench", "solvers", "--solvers", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown solver 'nope'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["bench", "solvers", "--k", "2", "--out", str(blocker / "sub")]) == 2
    assert "not a folder" in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert cli.main(["bench", "solvers", "--k", "2", "--out", str(ro / "sub")]) == 2


def test_the_relative_gap_is_the_same_number_everywhere():
    assert solvers.relative_gap(2e-6, 1.0) == pytest.approx(1e-6)
    assert solvers.relative_gap(1e-6, -3.0) == pytest.approx(2.5e-7)
    t = solvers.relative_gap(torch.tensor([2e-6, 0.0], dtype=torch.float64), torch.tensor([1.0, 0.0]))
    assert torch.allclose(t, torch.tensor([1e-6, 0.0], dtype=torch.float64)) and not math.isnan(float(t[1]))


def test_auto_checks_grow_with_the_iterations_run():
    sigma = problem((3, 30, 4))
    seen = []
    entclust.em_rce(sigma, lam=50.0, tol=0, max_iter=200, check_every="auto",
                    callback=lambda s: seen.append(int(s.iterations.max())))
    assert seen[:10] == list(range(10)) and seen[-1] == 200
    assert all(b - a == min(max(1, a // 8), 200 - a) for a, b in zip(seen, seen[1:]))
    res = entclust.pgd_cce(sigma[0], lam=5.0, step=1.0, tol_gap=1e-6, check_every="auto", max_iter=100_000)
    assert res.converged and res.relative_gap <= 1e-6


def test_sinkhorn_reports_its_own_criterion_and_stops_on_the_time_limit():
    sigma = problem((200, 50), scale=4.0)
    seen = []
    sweeps = entclust.sinkhorn(sigma, tol=0.0, max_iter=50, warn=False,
                               callback=lambda it, err: seen.append((it, err)) or it == 7).iterations
    assert sweeps == 7 and [it for it, _ in seen] == list(range(1, 8)) and all(e >= 0 for _, e in seen)
    with pytest.raises(ValueError, match="callback must be callable"):
        entclust.sinkhorn(sigma, callback="no")
    out = solvers.compare(sigma, solvers=["sinkhorn_knopp"], target_gap=1e-15, time_limit=0.2)
    (row,) = out.rows
    assert row["stop"] == "time limit" and row["seconds"] < 1.0 and row["converged"] is False
    assert row["own_error"] == out.traces["sinkhorn_knopp"][-1][2] > 1e-15


@pytest.mark.parametrize("name, extra", [("em_rce", {}), ("em_cce", {}), ("pgd_cce", {"step": 0.01}),
                                         ("em_rce", {"accel": "squarem"})])
def test_tol_progress_stops_each_problem_on_a_tenth_of_its_decrease(name, extra):
    """gap <= p (f0 - f), per problem of a batch; f0 is the start's objective."""
    sigma = torch.softmax(3 * torch.randn(3, 120, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64), -1)
    problem = R.rce_objective if name == "em_rce" else R.cce_objective
    res = getattr(entclust, name)(sigma, lam=50.0, tol_progress=0.1, max_iter=20_000, check_every=5, **extra)
    assert bool(res.converged.all()) and "duality gap <= 0.1 x decrease" in res.criterion
    for b in range(3):
        f0 = float(problem(sigma[b], sigma[b], None, 50.0))
        assert float(res.gap[b]) <= 0.1 * (f0 - float(res.objective[b])) + 1e-12
        alone = getattr(entclust, name)(sigma[b], lam=50.0, tol_progress=0.1, max_iter=20_000, check_every=5, **extra)
        assert alone.iterations == int(res.iterations[b])
    both = entclust.em_rce(sigma, lam=50.0, tol_progress=0.1, tol_gap=1e-12, max_iter=20_000, check_every=5)
    assert both.criterion == "relative duality gap <= 1e-12 or duality gap <= 0.1 x decrease"
    with pytest.raises(ValueError, match="tol_progress"):
        getattr(entclust, name)(sigma, lam=50.0, tol_progress=-0.5, **extra)
