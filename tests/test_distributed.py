"""Issue 11: pseudo-labels over all points and across torch.distributed ranks (gloo on CPU).

A problem split over 2 or 3 processes (uneven shards, one of them possibly empty) must give the
single-process solve on the concatenated rows, up to the order of floating-point sums."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import entclust
from entclust.solvers.sharded import em_rce_sharded

SHARDS = {2: [70, 130], 3: [0, 111, 89]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _problem(n=200, k=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    sigma = torch.softmax(3 * torch.randn(n, k, generator=g, dtype=torch.float64), 1)
    prior = torch.softmax(torch.randn(k, generator=g, dtype=torch.float64), 0)
    return sigma, prior


def _worker(rank, world, port, task, out, shards=None):
    """One rank: joins the gloo group, runs ``task(its rows, group)``, saves the result."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        sizes = (shards or SHARDS)[world]
        begin = sum(sizes[:rank])
        rows = slice(begin, begin + sizes[rank])
        result = task(rows, dist.group.WORLD)
        torch.save(result, os.path.join(out, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()
    os._exit(0)  # no interpreter teardown: see entclust.cli.fit._exit_now


def _run(world, task, tmp_path, shards=None):
    mp.spawn(_worker, args=(world, _free_port(), task, str(tmp_path), shards), nprocs=world, join=True)
    return [torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in range(world)]


def _solve_task(rows, group):
    sigma, prior = _problem()
    res = em_rce_sharded(sigma[rows], prior, 100.0, group=group, max_iter=300)
    return res.y, res.iterations, res.objective, res.fw_gap, res.converged


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_em_equals_single_process(world, tmp_path):
    sigma, prior = _problem()
    single = entclust.em_rce(sigma, prior, 100.0, max_iter=300)
    parts = _run(world, _solve_task, tmp_path)
    y = torch.cat([p[0] for p in parts])
    # 300 contracting EM steps: differences of the sums' order stay at rounding level
    assert torch.allclose(y, single.y, rtol=0, atol=1e-12)
    for p in parts:  # the whole problem's numbers, identical on every rank
        assert int(p[1]) == int(single.iterations)
        assert float(p[2]) == pytest.approx(float(single.objective), rel=1e-12)
        assert float(p[3]) == pytest.approx(float(single.fw_gap), rel=1e-9, abs=1e-14)
        assert bool(p[4]) == bool(single.converged)


def test_sharded_em_single_process_matches_em_rce():
    sigma, prior = _problem(300, 20, seed=1)
    for kwargs in ({"max_iter": 50}, {"tol": 1e-9}):
        a = entclust.em_rce(sigma, prior, 100.0, **kwargs)
        b = em_rce_sharded(sigma, prior, 100.0, **kwargs)
        assert int(a.iterations) == int(b.iterations) and bool(a.converged) == bool(b.converged)
        assert torch.allclose(a.y, b.y, rtol=0, atol=1e-13)
        assert float(b.fw_gap) == pytest.approx(float(a.fw_gap), rel=1e-9)
        assert float(b.objective) == pytest.approx(float(a.objective), rel=1e-12)


def test_sharded_em_zero_start_and_bad_input():
    sigma, prior = _problem(50, 5)
    sigma[0] = torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64)
    a, b = entclust.em_rce(sigma, prior, 10.0, max_iter=40), em_rce_sharded(sigma, prior, 10.0, max_iter=40)
    assert torch.allclose(a.y, b.y, rtol=0, atol=1e-13)  # the same mixed start
    with pytest.raises(ValueError, match="sigma"):
        em_rce_sharded(sigma[:, :, None], prior)
    with pytest.raises(ValueError, match="no rows"):
        em_rce_sharded(sigma[:0], prior)


def _memory_batches(n, world_sizes, steps, seed=0):
    """Per step, the global batch's indices split over the ranks (uneven, one rank may get none)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(steps):
        idx = torch.randperm(n, generator=g)[:45]
        batches.append(idx)
    return batches


def _memory_task(rows, group):
    sigma, prior = _problem(200, 12)
    logits = torch.log(sigma)
    crit = entclust.SelfLabeling("rce", lam=100.0, prior=prior, n_points=rows.stop - rows.start, group=group,
                                 max_iter=4)
    out = []
    for idx in _memory_batches(200, None, 6):
        mine = idx[(idx >= rows.start) & (idx < rows.stop)]
        loss, y = crit(logits[mine], index=mine - rows.start, return_labels=True)
        out.append((mine, y.detach(), float(loss)))
    return out, crit.columns


@pytest.mark.parametrize("world", [2, 3])
def test_global_self_labeling_across_ranks(world, tmp_path):
    """SelfLabeling(n_points, group): each rank updates its rows of the global batch against the
    all-reduced column sums; the labels equal one process holding all points."""
    sigma, prior = _problem(200, 12)
    logits = torch.log(sigma)
    crit = entclust.SelfLabeling("rce", lam=100.0, prior=prior, n_points=200, max_iter=4)
    single = []
    for idx in _memory_batches(200, None, 6):
        _, y = crit(logits[idx], index=idx, return_labels=True)
        single.append(dict(zip(idx.tolist(), y.detach())))
    parts = _run(world, _memory_task, tmp_path)
    for step in range(6):
        for out, _ in parts:
            mine, y, _ = out[step]
            for i, row in zip(mine.tolist(), y):
                assert torch.allclose(row, single[step][i], rtol=0, atol=1e-12)
    for _, columns in parts:
        assert torch.allclose(columns, crit.columns, rtol=1e-12, atol=1e-9)


ESTIMATOR_SHARDS = {2: [400, 500], 3: [250, 350, 300]}


def _blobs():
    from sklearn.datasets import make_blobs

    x, _ = make_blobs(900, n_features=8, centers=40, random_state=0)
    return x.astype(np.float32)


def _estimator_task(rows, group):
    est = entclust.EntropyClustering(40, random_state=0, epochs=4, group=group).fit(_blobs()[rows])
    return {"labels": est.labels_, "sizes": est.cluster_sizes_, "objective": est.objective_,
            "history": est.history_, "weight": est.head_.weight.detach()}


@pytest.mark.parametrize("world", [2, 3])
def test_estimator_across_ranks_equals_one_process(world, tmp_path):
    """EntropyClustering(group=...) on uneven shards gives the clustering of one process on all
    rows: same labels, cluster sizes, objective and head up to float32 summation order."""
    torch.set_num_threads(1)
    single = entclust.EntropyClustering(40, random_state=0, epochs=4).fit(_blobs())
    assert single.pseudo_labels_ == "global"
    parts = _run(world, _estimator_task, tmp_path, ESTIMATOR_SHARDS)
    assert np.array_equal(np.concatenate([p["labels"] for p in parts]), single.labels_)
    for p in parts:
        assert np.array_equal(p["sizes"], single.cluster_sizes_)
        assert p["objective"] == pytest.approx(single.objective_, rel=1e-4)
        assert torch.allclose(p["weight"], single.head_.weight.detach(), rtol=1e-3, atol=1e-4)
        assert [h["empty_clusters"] for h in p["history"]] == [h["empty_clusters"] for h in single.history_]


def test_cli_under_torchrun_equals_one_process(tmp_path):
    """``torchrun --nproc_per_node 2 -m entclust fit x.npy ...`` writes the labels of one process."""
    import subprocess
    import sys

    from sklearn.datasets import make_blobs

    x, _ = make_blobs(1500, n_features=8, centers=60, random_state=2)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    common = ["-m", "entclust", "fit", str(tmp_path / "x.npy"), "--k", "60", "-q"]
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one.npy")], env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *common, "--out", str(tmp_path / "two.npy")], env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("wrote") == 1  # rank 0 alone reports and writes
    assert np.array_equal(np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy"))


def _disagreeing_task(rows, group):
    """Rank 1 passes one more feature than rank 0: both must stop with the same one-line error."""
    x = _blobs()[rows]
    if dist.get_rank(group) == 1:
        x = np.concatenate([x, x[:, :1]], 1)
    try:
        entclust.EntropyClustering(40, random_state=0, epochs=1, group=group).fit(x)
    except ValueError as err:
        return str(err)
    return "no error"


def test_ranks_that_disagree_on_their_data_layout_stop_before_work(tmp_path):
    torch.set_num_threads(1)
    for message in _run(2, _disagreeing_task, tmp_path, ESTIMATOR_SHARDS):
        assert "disagree on the number of features" in message and "\n" not in message


def _hung_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import datetime
    import time

    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=3))
    if rank == 1:
        time.sleep(30)  # a hung rank
        os._exit(0)
    start = time.perf_counter()
    try:
        dist.all_reduce(torch.ones(1))
        outcome = "completed"
    except Exception as err:  # gloo's timeout error
        outcome = type(err).__name__
    with open(os.path.join(out, "rank0.txt"), "w") as f:
        f.write(f"{outcome} {time.perf_counter() - start:.1f}")
    os._exit(0)


def test_a_hung_rank_fails_the_others_after_the_timeout(tmp_path):
    """The CLI passes --timeout to init_process_group; with it a collective waiting on a hung rank
    fails after seconds, not torch's default 30 minutes."""
    ctx = mp.spawn(_hung_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False)
    ctx.processes[0].join(60)
    outcome, seconds = (tmp_path / "rank0.txt").read_text().split()
    for p in ctx.processes:
        p.kill()
    assert outcome != "completed" and float(seconds) < 20
